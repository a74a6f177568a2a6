"""Noise suppression (FLUENCY ANS) on real speech mixed with stationary noise.

The clean reference is the recorded espeak-ng clip; noise is white, pink (1/f) or a fan (mains hum
harmonics plus low-passed airflow), mixed at 5 dB SNR. Quality is judged the way speech
enhancement is usually judged: segmental SNR over active frames, correlation with the clean
speech, and wideband PESQ (ITU-T P.862.2) against the clean reference.
"""
from __future__ import annotations

import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pesq import pesq

from opengme.core.ns import NoiseSuppressor

SPEECH = Path(__file__).resolve().parent / "data" / "speech_en_16k.wav"
RATE = 16000
FRAME = 320
MIX_SNR_DB = 5.0
SEGMENT = 320  # 20 ms segments for segmental SNR at 16 kHz

NoiseMaker = Callable[[int, int, np.random.Generator], np.ndarray]


def load_speech() -> np.ndarray:
    """The test clip as float samples (int16 scale), trimmed to whole 20 ms frames."""
    with wave.open(str(SPEECH)) as clip:
        assert (clip.getnchannels(), clip.getsampwidth(), clip.getframerate()) == (1, 2, RATE)
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    return pcm[: pcm.size // FRAME * FRAME].astype(np.float64)


def white_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum (-3 dB/octave), flat below 20 Hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / rate), 20.0)
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def fan_noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A desk fan: 50 Hz motor hum with harmonics, plus airflow rumble low-passed at 400 Hz."""
    t = np.arange(n) / rate
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    spectrum = np.fft.rfft(rng.standard_normal(n))
    airflow = np.fft.irfft(spectrum / (1 + (np.fft.rfftfreq(n, 1.0 / rate) / 400) ** 2), n)
    return hum / np.std(hum) + airflow / np.std(airflow)


NOISES: dict[str, NoiseMaker] = {"white": white_noise, "pink": pink_noise, "fan": fan_noise}


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Clean speech plus noise scaled to ``snr_db`` below the speech power, as int16-range floats."""
    scale = np.sqrt(np.mean(clean**2) / np.mean(noise**2)) / 10 ** (snr_db / 20)
    return np.clip(np.rint(clean + scale * noise), -32768, 32767)


def noisy_speech(clean: np.ndarray, noise: str, snr_db: float = MIX_SNR_DB) -> np.ndarray:
    """The clip in one of ``NOISES`` (a fixed seed per noise, so every run measures the same mix)."""
    rng = np.random.default_rng(sorted(NOISES).index(noise) + 1)
    return mix(clean, NOISES[noise](clean.size, RATE, rng), snr_db)


def noise_alone(make: NoiseMaker, seconds: int, rate: int, seed: int, rms: float = 1000.0) -> np.ndarray:
    """Noise with no speech at ``rms`` (1000 = -30 dBov, a talker's level), in int16 steps."""
    noise = make(seconds * rate, rate, np.random.default_rng(seed))
    return np.rint(noise * rms / np.std(noise))


def suppress(ns: NoiseSuppressor, signal: np.ndarray) -> np.ndarray:
    """Run a whole signal through ``ns`` frame by frame; output aligned with the input (delay removed)."""
    delay = ns.latency_samples
    padded = np.concatenate((signal, np.zeros(-(-delay // ns.frame_samples) * ns.frame_samples)))
    frames = padded.astype(np.int16).reshape(-1, ns.frame_samples)
    out = np.concatenate([ns.process(frame) for frame in frames]).astype(np.float64)
    return out[delay: delay + signal.size]


def segmental_snr(clean: np.ndarray, test: np.ndarray, segment: int = SEGMENT) -> float:
    """Mean per-segment SNR in dB, each clipped to -10..35, over segments within 40 dB of the loudest."""
    ref = clean.reshape(-1, segment)
    err = (clean - test).reshape(-1, segment)
    energy = np.sum(ref**2, axis=1)
    active = energy > energy.max() * 1e-4
    snr = 10 * np.log10(energy[active] / np.maximum(np.sum(err[active] ** 2, axis=1), 1e-9))
    return float(np.mean(np.clip(snr, -10.0, 35.0)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def pesq_wb(clean: np.ndarray, test: np.ndarray) -> float:
    return float(pesq(RATE, clean, test, "wb"))


def attenuation_db(before: np.ndarray, after: np.ndarray) -> float:
    """How much quieter ``after`` is than ``before`` (positive = attenuated)."""
    return float(10 * np.log10(np.mean(before**2) / np.mean(after**2)))


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
    pieces = [ns.process(pcm[a:b]) for a, b in zip(edges[:-1], edges[1:])]
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
