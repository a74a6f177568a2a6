"""Noise suppression (FLUENCY ANS) on real speech mixed with stationary noise.

The clean reference is the recorded espeak-ng clip; noise is white, pink (1/f) or a fan (mains hum
harmonics plus low-passed airflow), mixed at 5 dB SNR. Quality is judged the way speech
enhancement is usually judged: segmental SNR over active frames, correlation with the clean
speech, and wideband PESQ (ITU-T P.862.2) against the clean reference.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.core.ns import NoiseSuppressor
from support.audio import correlation
from support.noise import (
    FRAME,
    MIX_SNR_DB,
    NOISES,
    RATE,
    attenuation_db,
    load_speech,
    mix,
    noise_alone,
    noisy_speech,
    pesq_wb,
    pink_noise,
    segmental_snr,
    suppress,
    white_noise,
)


@dataclass
class Enhanced:
    clean: np.ndarray
    noisy: np.ndarray
    output: np.ndarray


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return load_speech()


@pytest.fixture(scope="module", params=sorted(NOISES))
def enhanced(request: pytest.FixtureRequest, clean: np.ndarray) -> Enhanced:
    noisy = noisy_speech(clean, request.param)
    return Enhanced(clean, noisy, suppress(NoiseSuppressor(RATE, FRAME), noisy))


def test_segmental_snr_improves_clearly(enhanced: Enhanced) -> None:
    before = segmental_snr(enhanced.clean, enhanced.noisy)
    after = segmental_snr(enhanced.clean, enhanced.output)
    assert after - before >= 3.0, (before, after)  # measured +4.0 (pink) .. +6.2 dB (white)


def test_speech_is_preserved(enhanced: Enhanced) -> None:
    assert correlation(enhanced.clean, enhanced.output) >= correlation(enhanced.clean, enhanced.noisy) + 0.04
    before, after = pesq_wb(enhanced.clean, enhanced.noisy), pesq_wb(enhanced.clean, enhanced.output)
    assert after >= before + 0.1, (before, after)  # measured +0.19 (white) .. +0.52 (fan)


@pytest.mark.parametrize("rate", [16000, 48000])
@pytest.mark.parametrize("noise", sorted(NOISES))
def test_noise_alone_is_attenuated_after_convergence(rate: int, noise: str) -> None:
    signal = noise_alone(NOISES[noise], 3, rate, seed=7)
    out = suppress(NoiseSuppressor(rate), signal)
    converged = slice(rate, None)  # after the first second
    assert attenuation_db(signal[converged], out[converged]) >= 10.0


def test_clean_speech_is_not_damaged(clean: np.ndarray) -> None:
    out = suppress(NoiseSuppressor(RATE, FRAME), clean)
    assert pesq_wb(clean, out) >= 3.8  # measured 4.08; identical signals score 4.64
    assert correlation(clean, out) >= 0.99


def test_48k_speech_in_noise_improves(clean: np.ndarray) -> None:
    """The same clip upsampled to 48 kHz (band-limited FFT resampling), white noise at 5 dB."""
    speech48 = np.fft.irfft(np.fft.rfft(clean), 3 * clean.size) * 3
    noisy = mix(speech48, white_noise(speech48.size, 48000, np.random.default_rng(4)), MIX_SNR_DB)
    ns = NoiseSuppressor(48000)
    assert ns.frame_samples == 960 and ns.latency_samples == 960
    out = suppress(ns, noisy)
    assert segmental_snr(speech48, out, 960) >= segmental_snr(speech48, noisy, 960) + 3.0
    assert correlation(speech48, out) >= correlation(speech48, noisy) + 0.04


def test_latency_is_one_frame(clean: np.ndarray) -> None:
    ns = NoiseSuppressor(RATE, FRAME)
    assert ns.latency_samples == FRAME
    frames = clean[: 50 * FRAME].astype(np.int16).reshape(-1, FRAME)
    out = np.concatenate([ns.process(frame) for frame in frames]).astype(np.float64)
    assert not out[:FRAME].any()  # nothing comes out before a whole frame has gone in
    x = clean[: out.size]
    lags = np.arange(0, 2 * FRAME)
    xcorr = [np.dot(x[: x.size - lag], out[lag:]) for lag in lags]
    assert lags[int(np.argmax(xcorr))] == ns.latency_samples


def test_streaming_equals_offline(clean: np.ndarray) -> None:
    noisy = mix(clean, pink_noise(clean.size, RATE, np.random.default_rng(2)), MIX_SNR_DB).astype(np.int16)
    ns = NoiseSuppressor()
    streamed = np.concatenate([ns.process(frame) for frame in noisy.reshape(-1, FRAME)])
    offline = NoiseSuppressor().process(noisy)
    assert offline.dtype == np.int16 and offline.shape == noisy.shape
    np.testing.assert_array_equal(streamed, offline)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_any_chunking_of_whole_frames_gives_the_same_output(chunks: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pcm = (rng.standard_normal(sum(chunks) * FRAME) * rng.uniform(10, 8000)).astype(np.int16)
    whole = NoiseSuppressor().process(pcm)
    ns = NoiseSuppressor()
    edges = np.cumsum([0, *chunks]) * FRAME
    pieces = [ns.process(pcm[a:b]) for a, b in itertools.pairwise(edges)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_reset_starts_a_new_stream(clean: np.ndarray) -> None:
    noisy = mix(clean, white_noise(clean.size, RATE, np.random.default_rng(3)), MIX_SNR_DB).astype(np.int16)
    first, second = noisy[: 100 * FRAME], noisy[100 * FRAME: 200 * FRAME]
    ns = NoiseSuppressor()
    ns.process(first)
    carried = ns.process(second)
    ns.reset()
    np.testing.assert_array_equal(ns.process(second), NoiseSuppressor().process(second))
    assert not np.array_equal(carried, NoiseSuppressor().process(second))  # state did carry before


def test_loud_speech_saturates_instead_of_wrapping(clean: np.ndarray) -> None:
    loud = np.clip(clean * (32767 / np.abs(clean).max()) * 1.5, -32768, 32767)
    out = suppress(NoiseSuppressor(), loud)
    peaks = np.abs(loud) > 30000
    assert np.all(np.sign(out[peaks]) == np.sign(loud[peaks]))
    assert correlation(loud, out) >= 0.99


def test_digital_silence_stays_silent() -> None:
    assert not NoiseSuppressor().process(np.zeros(10 * FRAME, dtype=np.int16)).any()


@pytest.mark.parametrize(("pcm", "message"), [
    (np.zeros(FRAME, dtype=np.float32), "int16"),
    (np.zeros(FRAME, dtype=np.int32), "int16"),
    (np.zeros((FRAME, 1), dtype=np.int16), "shape"),
    (np.zeros((2, FRAME), dtype=np.int16), "shape"),
    (np.zeros(FRAME - 1, dtype=np.int16), "320-sample frames"),
    (np.zeros(FRAME + 160, dtype=np.int16), "320-sample frames"),
    (np.zeros(0, dtype=np.int16), "320-sample frames"),
    ([0] * FRAME, "numpy"),
])
def test_bad_frames_are_rejected(pcm: object, message: str) -> None:
    ns = NoiseSuppressor()
    with pytest.raises(ValueError, match=message):
        ns.process(pcm)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sample_rate": 44100.0}, "sample rate"),
    ({"sample_rate": 4000}, "sample rate"),
    ({"sample_rate": 96000}, "sample rate"),
    ({"sample_rate": True}, "sample rate"),
    ({"frame_samples": 320.0}, "frame_samples"),
    ({"frame_samples": 16}, "ms"),
    ({"frame_samples": 1600}, "ms"),
    ({"sample_rate": 48000, "frame_samples": 0}, "ms"),
])
def test_bad_configurations_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseSuppressor(**kwargs)  # type: ignore[arg-type]


def test_default_frame_is_20_ms_at_each_rate() -> None:
    frames = [NoiseSuppressor(rate).frame_samples for rate in (8000, 16000, 24000, 48000)]
    assert frames == [160, 320, 480, 960]
