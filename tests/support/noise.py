"""Noisy speech for the FLUENCY noise suppressor, and the usual speech-enhancement measures.

The clean reference is the recorded clip; noise is white, pink (1/f) or a fan (mains hum harmonics
plus low-passed airflow). Quality is segmental SNR over active frames, correlation with the clean
speech (support.audio.correlation) and wideband PESQ (ITU-T P.862.2) against the clean reference.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pesq import pesq

from opengme.core.ns import NoiseSuppressor
from support.audio import speech

RATE = 16000
FRAME = 320
MIX_SNR_DB = 5.0
SEGMENT = 320  # 20 ms segments for segmental SNR at 16 kHz

NoiseMaker = Callable[[int, int, np.random.Generator], np.ndarray]


def load_speech() -> np.ndarray:
    """The test clip as float samples (int16 scale), trimmed to whole 20 ms frames."""
    pcm = speech(RATE)
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


def pesq_wb(clean: np.ndarray, test: np.ndarray) -> float:
    return float(pesq(RATE, clean, test, "wb"))


def attenuation_db(before: np.ndarray, after: np.ndarray) -> float:
    """How much quieter ``after`` is than ``before`` (positive = attenuated)."""
    return float(10 * np.log10(np.mean(before**2) / np.mean(after**2)))
