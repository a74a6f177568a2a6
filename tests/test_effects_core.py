"""The pure effect cores: voice types shift the fundamental by their semitones at both codec rates,
presets keep frames whole and bounded, the equalizer's arguments, and the soundtrack's clock (loops,
seek, the local queue, pan, what in-ear monitoring already plays)."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from opengme.core.effects import (
    KARAOKE_PRESETS,
    VOICE_PRESETS,
    PitchShifter,
    VoiceEffects,
    VoiceType,
    check_gains,
    to_float,
)
from opengme.core.soundtrack import DecodeFailure, Soundtrack, Track, decode_file, pan_gains


def voiced(rate: int, seconds: float = 2.0, f0: float = 150.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    return (6000 * x / np.max(np.abs(x))).astype(np.int16)


def fundamental(x: np.ndarray, rate: int) -> float:
    x = x.astype(np.float64) - np.mean(x)
    ac = np.fft.irfft(np.abs(np.fft.rfft(x, 2 * len(x))) ** 2)[: len(x)]
    lo, hi = rate // 1000, rate // 60
    k = lo + int(np.argmax(ac[lo:hi]))
    a, b, c = ac[k - 1], ac[k], ac[k + 1]
    return rate / (k + 0.5 * (a - c) / (a - 2 * b + c))


def run(fx: VoiceEffects, pcm: np.ndarray, rate: int) -> np.ndarray:
    n = rate // 50
    out = [fx.process(pcm[i:i + n], rate) for i in range(0, len(pcm) - n + 1, n)]
    assert all(o.dtype == np.int16 and o.shape == (n,) for o in out)
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [16_000, 48_000])
@pytest.mark.parametrize("voice_type", [t for t in VoiceType if VOICE_PRESETS[t].semitones])
def test_pitched_types_move_the_fundamental_by_their_semitones(voice_type: VoiceType, rate: int) -> None:
    fx = VoiceEffects()
    fx.set_voice_type(voice_type)
    out = run(fx, voiced(rate), rate)
    expected = 150.0 * 2 ** (VOICE_PRESETS[voice_type].semitones / 12)
    assert abs(fundamental(out[rate:], rate) / expected - 1) < 0.02


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_every_preset_changes_the_sound_and_stays_bounded(rate: int) -> None:
    pcm = voiced(rate, 1.0)
    for kind, presets in (("voice", VOICE_PRESETS), ("karaoke", KARAOKE_PRESETS)):
        for value in presets:
            fx = VoiceEffects()
            (fx.set_voice_type if kind == "voice" else fx.set_karaoke_type)(value)
            out = run(fx, pcm, rate)
            changed = np.mean(np.abs(out.astype(np.int32) - pcm[: len(out)]))
            assert (changed == 0) == (value == 0), (kind, value)  # 0 is the untouched original
            assert np.max(np.abs(out)) < 32767  # no preset drives a normal voice into clipping


def test_equalizer_gains_are_checked_and_a_band_boost_shows() -> None:
    with pytest.raises(ValueError, match="10 gains"):
        check_gains([0.0] * 3)
    with pytest.raises(ValueError, match="±12 dB"):
        check_gains([0, 0, 0, 0, 0, 12.5, 0, 0, 0, 0])
    rate = 48_000
    t = np.arange(rate) / rate
    pcm = (3000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    fx = VoiceEffects()
    fx.set_equalizer([0, 0, 0, 0, 0, 12, 0, 0, 0, 0])
    out = run(fx, pcm, rate)
    gain_db = 20 * np.log10(np.std(out[rate // 2:]) / np.std(pcm[rate // 2:]))
    assert 10 < gain_db < 13  # +12 dB at the 1 kHz band's centre


def test_pitch_shifter_keeps_block_lengths_and_refuses_absurd_shifts() -> None:
    shifter = PitchShifter(16_000, 5.0)
    assert [len(shifter.process(np.zeros(n, np.float32))) for n in (320, 1, 0, 1000)] == [320, 1, 0, 1000]
    with pytest.raises(ValueError, match="semitones"):
        PitchShifter(16_000, 30.0)
    flat = np.ones(320, np.float32)
    assert PitchShifter(16_000, 0.0).process(flat) is flat


def track(seconds: float, plays: int) -> Track:
    pcm = {r: (1000 * np.ones(int(r * seconds))).astype(np.int16) for r in (16_000, 48_000)}
    return Track("t", pcm, plays=plays)


def test_a_track_loops_seeks_and_finishes() -> None:
    t = track(0.1, plays=2)  # 5 frames, twice
    assert (t.frames, t.duration_ms) == (5, 100)
    for _ in range(9):
        t.advance()
    assert not t.finished and t.played == 1 and t.position_ms == 80
    t.advance()
    assert t.finished
    forever = track(0.1, plays=-1)
    for _ in range(50):
        forever.advance()
    assert not forever.finished and forever.played == 10
    forever.seek(10_000)
    assert forever.position_ms == 100


def test_soundtrack_mixes_queues_locally_and_reports_the_end() -> None:
    st = Soundtrack()
    st.accompany = track(0.04, plays=1)
    voice = to_float(np.zeros(320, np.int16))
    out = st.mix(voice, 16_000)
    assert np.allclose(out, 1000 / 32768, atol=1e-4)  # the accompaniment at unity volume
    local = st.play_local()
    assert local is not None and local.shape == (960, 2) and np.allclose(local, 1000 / 32768, atol=1e-4)
    st.mix(voice, 16_000, heard_in_monitor=True)  # monitoring already plays what is sent
    assert st.play_local() is None
    assert st.accompany is None and [t.path for t in st.finished] == ["t"]
    assert pan_gains(-1.0)[1] == pytest.approx(0.0, abs=1e-9) and pan_gains(1.0)[0] == pytest.approx(0.0, abs=1e-9)


def test_decode_failures_say_which_kind(tmp_path: Path) -> None:
    with pytest.raises(DecodeFailure) as missing:
        decode_file(str(tmp_path / "none.wav"), 10)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00" * 300)
    with pytest.raises(DecodeFailure) as bad:
        decode_file(str(junk), 10)
    long = tmp_path / "long.wav"
    with wave.open(str(long), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(bytes(2 * 16_000 * 3))
    with pytest.raises(DecodeFailure) as too_long:
        decode_file(str(long), 2)
    assert (missing.value.kind, bad.value.kind, too_long.value.kind) == ("open", "format", "decode")
    assert {r: len(p) for r, p in decode_file(str(long), 10).items()} == {16_000: 48_000, 48_000: 144_000}
