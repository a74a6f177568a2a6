"""A simulated acoustic echo path for the echo canceller's test and bench: far-end speech (what the
speaker plays) through a room impulse response into the mic, plus a near-end talker who starts
while the far end is still talking (double talk) and goes on alone.

The room impulse response follows Polack's statistical model (exponentially decaying Gaussian
noise, RT60 300 ms, a living room) after a direct path; the device buffers add 40 ms between what
is handed to the speaker and the echo reaching the mic. Far end: LibriVox clip B; near end: clip A.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from pesq import pesq

from opengme.core.apm import CaptureProcessor, Processing
from support.audio import resample
from support.speech import real_clip

RT60_S = 0.3
DEVICE_DELAY_S = 0.04
ECHO_DB = -12.0  # echo level against the far-end speech (a laptop's speaker-to-mic coupling)
CONVERGED_S = 3.0  # ERLE counts from here on


class EchoScene(NamedTuple):
    rate: int
    far: np.ndarray  # what the speaker plays
    echo: np.ndarray  # what of it the mic hears
    near: np.ndarray  # the near-end talker at the mic, zero outside the utterance
    near_start: int  # sample where the near end starts talking
    double_end: int  # sample where the far end's echo has died away (double talk ends)


class EchoResult(NamedTuple):
    erle_db: float  # echo return loss enhancement over far-end single talk after convergence
    pesq_double: float  # PESQ-WB of the near end during double talk
    pesq_double_mic: float  # ... of the raw mic signal (near end plus echo) there, for comparison
    pesq_single: float  # PESQ-WB of the near end talking alone, after the far end stopped
    us_per_10ms: float  # processing cost (capture + reference) per 10 ms


def scene(rate: int = 16_000, echo_db: float = ECHO_DB, seed: int = 7) -> EchoScene:
    far = resample(real_clip("librivox-B"), 16_000, rate).astype(np.float64)
    near = resample(real_clip("librivox-A"), 16_000, rate).astype(np.float64)
    frame = rate // 50
    total = (far.size + near.size // 2 + rate) // frame * frame
    far_padded = np.zeros(total)
    far_padded[:far.size] = far
    taps = np.arange(int(RT60_S * rate)) / rate
    rir = np.random.default_rng(seed).standard_normal(taps.size) * np.exp(-6.9 * taps / RT60_S) * 0.3
    rir[int(0.005 * rate)] = 1.0  # direct path, 5 ms (1.7 m)
    delay = int(DEVICE_DELAY_S * rate)
    echo = np.concatenate((np.zeros(delay), np.convolve(far_padded, rir)))[:total]
    echo *= np.std(far) / np.std(echo[:far.size]) * 10 ** (echo_db / 20)
    near_start = total - near.size - rate // 2
    near_padded = np.zeros(total)
    near_padded[near_start:near_start + near.size] = near
    return EchoScene(rate, far_padded, echo, near_padded, near_start, far.size + delay + rir.size)


def cancel(s: EchoScene, processing: Processing | None = None) -> tuple[np.ndarray, float]:
    """The mic signal through a capture processor fed the far end as reference, frame by frame;
    output aligned with the input, and the cost in microseconds per 10 ms."""
    frame = s.rate // 50
    cp = CaptureProcessor(s.rate, frame, processing or Processing(aec=True, agc=False, ns=False))
    mic = np.clip(np.rint(s.echo + s.near), -32768, 32767).astype(np.int16)
    far = np.rint(s.far).astype(np.int16)
    out = []
    started = time.perf_counter()
    for k in range(mic.size // frame):
        cp.reference(far[k * frame:(k + 1) * frame], s.rate)
        out.append(cp.process(mic[k * frame:(k + 1) * frame]))
    cost = (time.perf_counter() - started) / (mic.size / s.rate * 100) * 1e6
    lat = cp.latency_samples
    return np.concatenate((np.concatenate(out)[lat:], np.zeros(lat, np.int16))).astype(np.float64), cost


def measure_echo(rate: int = 16_000, processing: Processing | None = None) -> EchoResult:
    s = scene(rate)
    out, cost = cancel(s, processing)
    mic = s.echo + s.near
    conv = slice(int(CONVERGED_S * s.rate), s.near_start)
    erle = 10 * np.log10(np.sum(s.echo[conv] ** 2) / max(np.sum(out[conv] ** 2), 1e-9))

    def wb(ref: np.ndarray, test: np.ndarray, part: slice) -> float:
        r = resample(np.rint(ref[part]).astype(np.int16), s.rate, 16_000)
        t = resample(np.clip(np.rint(test[part]), -32768, 32767).astype(np.int16), s.rate, 16_000)
        return float(pesq(16_000, r, t[:r.size], "wb"))

    double = slice(s.near_start, s.double_end)
    single = slice(s.double_end + s.rate // 2, s.near_start + np.count_nonzero(s.near[s.near_start:]))
    return EchoResult(float(erle), wb(s.near, out, double), wb(s.near, mic, double),
                      wb(s.near, out, single), cost)
