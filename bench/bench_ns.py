"""Cost and effect of the FLUENCY noise suppressor (opengme.core.ns).

Run: .venv/bin/python bench/bench_ns.py [frames]. Prints the median µs per 20 ms frame at 16 kHz
and 48 kHz (with the real-time factor, CPU time / audio time), then the quality figures on the test
clip mixed with white, pink and fan noise at 5 and 10 dB SNR: segmental SNR, correlation with the
clean speech and wideband PESQ, before -> after; PESQ of processed clean speech; and how far noise
alone is pushed down once the noise floor has converged.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from opengme.core.ns import NoiseSuppressor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.audio import correlation
from support.noise import (
    NOISES,
    RATE,
    attenuation_db,
    load_speech,
    mix,
    noise_alone,
    noisy_speech,
    pesq_wb,
    segmental_snr,
    suppress,
)


def frame_cost_us(sample_rate: int, speech: np.ndarray, count: int) -> float:
    """Median µs of one ``process`` call on noisy speech resampled to ``sample_rate``."""
    factor = sample_rate // RATE
    signal = np.fft.irfft(np.fft.rfft(speech), factor * speech.size) * factor
    noisy = mix(signal, np.random.default_rng(0).standard_normal(signal.size), 10.0).astype(np.int16)
    ns = NoiseSuppressor(sample_rate)
    frames = np.resize(noisy, count * ns.frame_samples).reshape(count, ns.frame_samples)
    times = []
    for frame in frames:
        start = time.perf_counter_ns()
        ns.process(frame)
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    clean = load_speech()
    print(f"median µs per 20 ms frame over {count} frames (RTF = µs / 20000 µs)")
    for rate in (16000, 48000):
        us = frame_cost_us(rate, clean, count)
        print(f"  {rate:>5} Hz: {us:7.1f} µs  RTF {us / 20000:.4f}")

    print("\nnoisy -> suppressed, test clip at 16 kHz (segSNR over active 20 ms frames)")
    print(f"{'noise':<6} {'SNR':>4} {'segSNR dB':>16} {'correlation':>16} {'PESQ-WB':>14}")
    for name in sorted(NOISES):
        for snr_db in (5.0, 10.0):
            noisy = noisy_speech(clean, name, snr_db)
            out = suppress(NoiseSuppressor(RATE), noisy)
            print(f"{name:<6} {snr_db:>4.0f} "
                  f"{segmental_snr(clean, noisy):7.2f} -> {segmental_snr(clean, out):5.2f} "
                  f"{correlation(clean, noisy):7.3f} -> {correlation(clean, out):5.3f} "
                  f"{pesq_wb(clean, noisy):6.2f} -> {pesq_wb(clean, out):4.2f}")
    print(f"clean speech processed: PESQ-WB {pesq_wb(clean, suppress(NoiseSuppressor(RATE), clean)):.2f} "
          "(identical = 4.64)")

    print("\nnoise alone, attenuation after the first second (dB)")
    for rate in (16000, 48000):
        figures = []
        for name, make in sorted(NOISES.items()):
            noise = noise_alone(make, 3, rate, seed=7)
            out = suppress(NoiseSuppressor(rate), noise)
            figures.append(f"{name} {attenuation_db(noise[rate:], out[rate:]):.1f}")
        print(f"  {rate:>5} Hz: " + ", ".join(figures))


if __name__ == "__main__":
    main()
