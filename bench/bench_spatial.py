"""3D voice benchmark: binaural render cost per source per 20 ms frame, batched (opengme.core.spatial).

For 1, 8 and 64 simultaneous sources, at 16 kHz (FLUENCY, the range-voice room type) and 48 kHz
(STANDARD/HD), with the built-in KEMAR HRTF: "static" sources keep their direction and gain (one
filter per source), "moving" ones get a new direction every frame (a second, cross-faded filter
per source); "per voice" is ``render_each``, what the SDK's downlink stage calls (each voice's
stereo frame apart, for the mixer's N-loudest choice). Best of 5 runs of 100 frames. Target: ≤ 30 µs per source when batched.

    python bench/bench_spatial.py
"""
from __future__ import annotations

import timeit

import numpy as np

from opengme.core.spatial import BinauralRenderer, load_hrtf

TARGET_US = 30.0


def cost_us(renderer: BinauralRenderer, sources: int, moving: bool, each: bool = False) -> float:
    rng = np.random.default_rng(sources)
    frames = (rng.standard_normal((sources, renderer.frame)) * 0.1).astype(np.float32)
    directions = [rng.standard_normal((sources, 3)) for _ in range(2)]
    gains = rng.uniform(0.1, 1.0, sources)
    ids = list(range(sources))
    turn = [0]

    def frame() -> None:
        if moving:
            turn[0] ^= 1
        (renderer.render_each if each else renderer.render)(ids, frames, directions[turn[0]], gains)

    frame()
    return min(timeit.repeat(frame, number=100, repeat=5)) / 100 / sources * 1e6


def main() -> None:
    hrtf = load_hrtf("")
    print(f"built-in HRTF: {hrtf.ir.shape[0]} directions, {hrtf.ir.shape[2]} taps at {hrtf.sample_rate:g} Hz")
    for rate in (16000, 48000):
        renderer = BinauralRenderer(hrtf, rate, rate // 50)
        print(f"{rate} Hz, frame {renderer.frame}, FFT {renderer.nfft}, HRIR {renderer.tail + 1} taps:")
        for sources in (1, 8, 64):
            static, moving = cost_us(renderer, sources, False), cost_us(renderer, sources, True)
            each = cost_us(renderer, sources, False, each=True)
            over = [name for name, cost in (("static", static), ("moving", moving)) if cost > TARGET_US]
            mark = "one source: not batched" if sources == 1 else f"over target: {', '.join(over)}" if over else "ok"
            print(f"  {sources:3d} sources: static {static:6.1f} µs/source   moving {moving:6.1f} µs/source   "
                  f"static, per voice (the SDK's stage) {each:6.1f} µs/source   ({mark})")


if __name__ == "__main__":
    main()
