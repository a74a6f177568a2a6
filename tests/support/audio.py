"""Test signals and the measures that compare what was heard with what was said.

Two sources of speech: the recorded clip (``speech``/``clip``, real speech for PESQ and correlation)
and ``speech_like`` (a synthetic, seedable utterance the codec tests and bench render at any rate).
"""
from __future__ import annotations

import wave
from functools import cache
from pathlib import Path

import av
import numpy as np

from support.paths import SPEECH_WAV

OUT_RATE = 48_000  # the downlink's (and the speaker's) rate
SPEECH_TOP_HZ = 7000.0


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Whole-signal resampling with FFmpeg's resampler (the same one PyAV ships)."""
    if src == dst:
        return pcm
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="mono")
    frame.sample_rate = src
    parts = [f.to_ndarray().reshape(-1) for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(parts)


@cache
def speech(rate: int = 16_000) -> np.ndarray:
    """The whole recorded clip (int16) at ``rate``."""
    with wave.open(str(SPEECH_WAV)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return resample(pcm, wav.getframerate(), rate)


def clip(seconds: float, offset_s: float = 0.0, rate: int = 16_000) -> np.ndarray:
    start = round(offset_s * rate)
    return speech(rate)[start:start + round(seconds * rate)]


def speech_like(rate: int, seconds: float = 2.0, noise: float = 0.003, seed: int = 1) -> np.ndarray:
    """Speech-like int16 signal: gliding pitch, formant-shaped harmonics up to 7 kHz, four
    syllables a second separated by pauses, over a faint noise floor. The harmonic part is a
    function of time only, so the same "utterance" can be rendered at any rate."""
    t = np.arange(int(rate * seconds)) / rate
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros_like(t)
    for k in range(1, 48):
        centre = k * 150.0
        formants = (np.exp(-(((centre - 700) / 400) ** 2)) + 0.6 * np.exp(-(((centre - 1800) / 500) ** 2))
                    + 0.3 * np.exp(-(((centre - 2800) / 600) ** 2)) + 0.05)
        voiced += np.where(k * f0 < SPEECH_TOP_HZ, formants * np.sin(k * phase) / np.sqrt(k), 0.0)
    syllables = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None) ** 0.7
    floor = np.random.default_rng(seed).normal(0, noise, t.size)
    x = 0.5 * voiced * syllables / np.max(np.abs(voiced)) + floor
    return np.round(x * 32767).astype(np.int16)


def frames_of(pcm: np.ndarray, n: int) -> list[np.ndarray]:
    """Whole ``n``-sample frames (a partial last one is dropped)."""
    return [pcm[i:i + n] for i in range(0, len(pcm) - n + 1, n)]


def align(out: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[int, np.ndarray]:
    """The lag (samples) at which ``out`` best matches ``ref`` and ``out`` cut to ``ref`` there."""
    probe = ref[: min(len(ref), 4 * max_lag + 32_000)].astype(np.float64)
    window = np.pad(out[: len(probe) + max_lag], (0, max(0, len(probe) + max_lag - len(out))))
    scores = np.correlate(window.astype(np.float64), probe, "valid")
    lag = int(np.argmax(scores))
    cut = out[lag:lag + len(ref)]
    return lag, np.pad(cut, (0, len(ref) - len(cut)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def write_wav(path: Path, samples: np.ndarray, rate: int = OUT_RATE) -> Path:
    """A mono 16-bit WAV file of ``samples``."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())
    return path


def tone(freq: float, seconds: float, rate: int = OUT_RATE, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def band(samples: np.ndarray, freq: float, rate: int = OUT_RATE) -> float:
    """RMS amplitude of ``samples`` within ±20 Hz of ``freq``."""
    if len(samples) == 0:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) / len(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(np.sqrt(2 * np.sum(spectrum[np.abs(freqs - freq) < 20] ** 2)))
