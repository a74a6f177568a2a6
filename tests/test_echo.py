"""Echo cancellation (issue 11): ERLE and the near-end talker on a simulated echo path through the
capture chain alone, then the same in a room: a member whose speaker leaks into its own mic stops
sending the others' voices back once the media session knows the echo path.

Measured here (bench/bench_quality.py prints them): ERLE 46.9 dB after 3 s, near-end PESQ-WB
4.64 talking alone after the far end stopped, 1.27 in double talk (the raw mic there: 1.93; AEC3's
residual echo suppressor ducks the near end while the far end talks); 0.1-0.15 ms per 10 ms.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from opengme.core.apm import CaptureProcessor, Processing, webrtc_available
from opengme.devices import Frame
from opengme.events import RoomType
from opengme.sdk.audio_settings import AudioSettings
from support.audio import resample
from support.echo import measure_echo
from support.speech import real_clip
from test_media_session import RATE, Net

A, B = 101, 102

needs_webrtc = pytest.mark.skipif(not webrtc_available(), reason="the WebRTC audio processing module did not load")


@needs_webrtc
def test_erle_after_convergence_and_the_near_end_talker() -> None:
    heard = measure_echo()
    assert heard.erle_db >= 20.0, heard
    assert heard.pesq_single >= 4.0, heard  # talking alone after the far end stopped: untouched
    assert heard.pesq_double >= 1.1, heard  # double talk: still heard, though ducked


def test_without_the_module_the_suppressor_still_runs_and_aec_is_reported_off() -> None:
    wanted = Processing(aec=True, agc=True, ns=True)
    fallback = CaptureProcessor(16_000, 320, wanted, use_webrtc=False)
    assert fallback.active == Processing(aec=False, agc=False, ns=True) and fallback.requested == wanted
    assert fallback.latency_samples == 320  # the suppressor's one frame
    noise = np.random.default_rng(1).normal(0, 1000, 16_000 * 2).astype(np.int16)
    out = np.concatenate([fallback.process(f) for f in noise.reshape(-1, 320)])
    assert np.std(out[8000:]) < np.std(noise) / 3  # steady noise suppressed
    fallback.reference(noise[:960], 48_000)  # no canceller: ignored, no error
    with pytest.raises(ValueError, match="10 ms"):
        CaptureProcessor(16_000, 300, wanted)


def speech_frames(rate: int = RATE) -> Iterator[Frame]:
    pcm = resample(real_clip("librivox-A"), 16_000, rate)
    n = rate // 50
    while True:
        yield from (pcm[i:i + n] for i in range(0, pcm.size - n + 1, n))


def echoed_back(echo_path: bool) -> float:
    """B talks; A's speaker leaks into A's mic (two frames late, 6 dB down): the RMS of what B hears
    back from A over the last 5 s."""
    net = Net(A, B, room_type=RoomType.STANDARD)
    a, b = net.sessions[A], net.sessions[B]
    a.apply(AudioSettings(send=True, recv=True), {"b": B})
    b.apply(AudioSettings(send=True, recv=True), {"a": A})
    a.set_echo_path(echo_path)
    leak: list[Frame] = [np.zeros(RATE // 50, np.int16)] * 2

    def a_mic() -> Iterator[Frame]:
        while True:
            played = net.heard[A][-1] if net.heard[A] else np.zeros(RATE // 50, np.int16)
            leak.append((played // 2).astype(np.int16))
            yield leak.pop(0)

    net.run(10.0, {B: speech_frames(), A: a_mic()})
    return float(np.std(net.last(B, 5.0).astype(np.float64)))


@needs_webrtc
@pytest.mark.slow
def test_a_leaking_speaker_is_not_sent_back_once_the_echo_path_is_known() -> None:
    without, with_aec = echoed_back(False), echoed_back(True)
    assert without > 300  # B hears itself back through A's speaker and mic
    assert 20 * np.log10(without / max(with_aec, 1.0)) >= 20, (without, with_aec)
