"""Per-frame cost of the receive path's pure DSP: jitter buffer, mixer, level meters.

Prints microseconds per 20 ms frame (best of several runs; the machine is shared and noisy, so
compare figures from one run). Usage: .venv/bin/python bench/bench_jitter_mixer.py
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable

import numpy as np

from opengme.core.jitter import JitterBuffer
from opengme.core.levels import SpeakingDetector, audio_level, mic_level
from opengme.core.mixer import Mixer

REPEATS = 5


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Best over REPEATS of the mean time of ``calls`` calls, in microseconds (least noisy)."""
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter_ns() - start) / calls / 1000.0)
    return min(runs)


def bench_jitter(frames: int = 20_000) -> float:
    """push + pop per frame on a path with 0..30 ms jitter and 2 % loss."""
    rng = random.Random(1)
    packets = sorted((k * 0.02 + 0.04 + rng.uniform(0, 0.03), k)
                     for k in range(frames) if rng.random() > 0.02)
    payload = bytes(60)

    def run() -> None:
        jb = JitterBuffer()
        i, t = 0, 0.007
        for _ in range(frames):
            while i < len(packets) and packets[i][0] <= t:
                k = packets[i][1]
                jb.push(k & 0xFFFF, (k * 960) & 0xFFFFFFFF, payload, packets[i][0], 30)
                i += 1
            jb.pop(t)
            t += 0.02

    return per_call_us(run, 1) / frames


def speech_like(rng: np.random.Generator, n: int, streams: int, channels: int = 1) -> dict[int, np.ndarray]:
    """Noise at different loudness per member (mixing cost does not depend on the content)."""
    shape = (n,) if channels == 1 else (n, channels)
    return {m: (rng.standard_normal(shape) * 3000 / (1 + m)).astype(np.int16) for m in range(streams)}


def bench_mix(rate: int, streams: int, max_streams: int, channels: int = 1) -> float:
    n = rate // 50
    rng = np.random.default_rng(2)
    pool = [speech_like(rng, n, streams, channels) for _ in range(8)]
    mixer: Mixer[int] = Mixer(max_streams=max_streams, frame_samples=n, channels=channels)
    it = iter(range(1 << 62))
    return per_call_us(lambda: mixer.mix(pool[next(it) % 8]), 2000)


def row(label: str, micros: float) -> None:
    print(f"  {label:44s}{micros:8.2f}")


def main() -> None:
    print("OpenGME receive-path DSP: microseconds per 20 ms frame (best of 5 runs)")
    row("jitter buffer push+pop (one member)", bench_jitter())
    for rate in (48000, 16000):
        for streams, mixed in ((6, 6), (20, 6), (20, 20)):
            label = f"mix {streams:2d} streams -> {mixed:2d} @ {rate // 1000} kHz"
            row(label, bench_mix(rate, streams, mixed))
    row("mix  6 stereo streams ->  6 @ 48 kHz (3D)", bench_mix(48000, 6, 6, channels=2))
    rng = np.random.default_rng(3)
    for rate in (48000, 16000):
        frame = (rng.standard_normal(rate // 50) * 3000).astype(np.int16)
        row(f"RFC 6464 audio_level @ {rate // 1000} kHz", per_call_us(lambda: audio_level(frame), 5000))
        row(f"mic_level (0..100) @ {rate // 1000} kHz", per_call_us(lambda: mic_level(frame), 5000))
    detector: SpeakingDetector[int] = SpeakingDetector()
    clock = iter(range(1 << 62))
    row("SpeakingDetector.on_packet",
        per_call_us(lambda: detector.on_packet(1, 30, next(clock) * 0.02), 20000))


if __name__ == "__main__":
    main()
