"""Cost of the voice changer, karaoke presets, equalizer and soundtrack per 20 ms frame, and the
delay the pitch shifter adds (in-ear monitoring hears it too).

Every type runs on 5 s of a steady voiced sound (150 Hz and harmonics) at both codec rates
(FLUENCY 16 kHz, STANDARD/HIGHQUALITY 48 kHz), frame by frame as the send path calls it; the figure
is the mean wall time per frame (the budget is 1 ms). The delay is where a click comes out.

    python bench/bench_effects.py
"""
from __future__ import annotations

import time

import numpy as np

from opengme.core.effects import KaraokeType, PitchShifter, VoiceEffects, VoiceType, to_float
from opengme.core.soundtrack import Soundtrack, Track

SECONDS = 5


def voiced(rate: int) -> np.ndarray:
    t = np.arange(SECONDS * rate) / rate
    x = sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 6))
    return (6000 * x / np.max(np.abs(x))).astype(np.int16)


def per_frame_ms(fx: VoiceEffects, pcm: np.ndarray, rate: int) -> float:
    n = rate // 50
    frames = [pcm[i:i + n] for i in range(0, len(pcm) - n + 1, n)]
    start = time.perf_counter()
    for frame in frames:
        fx.process(frame, rate)
    return (time.perf_counter() - start) * 1000 / len(frames)


def main() -> None:
    rates = (16_000, 48_000)
    signals = {rate: voiced(rate) for rate in rates}
    print(f"{'voice type':<16}" + "".join(f"{r // 1000:>5} kHz ms" for r in rates))
    worst = 0.0
    for voice_type in VoiceType:
        costs = []
        for rate in rates:
            fx = VoiceEffects()
            fx.set_voice_type(voice_type)
            costs.append(per_frame_ms(fx, signals[rate], rate))
        worst = max(worst, *costs)
        print(f"{voice_type.name:<16}" + "".join(f"{c:>12.3f}" for c in costs))
    for karaoke in KaraokeType:
        costs = []
        for rate in rates:
            fx = VoiceEffects()
            fx.set_karaoke_type(karaoke)
            costs.append(per_frame_ms(fx, signals[rate], rate))
        worst = max(worst, *costs)
        print(f"karaoke {karaoke.name:<8}" + "".join(f"{c:>12.3f}" for c in costs))
    costs = []
    for rate in rates:
        fx = VoiceEffects()
        fx.set_voice_type(VoiceType.HUANG)
        fx.set_karaoke_type(KaraokeType.HEAVEN)
        fx.set_equalizer([6, 3, 0, -3, 0, 3, 6, 3, 0, -6])
        costs.append(per_frame_ms(fx, signals[rate], rate))
    worst = max(worst, *costs)
    print(f"{'all three':<16}" + "".join(f"{c:>12.3f}" for c in costs))
    track_costs = []
    for rate in rates:
        soundtrack = Soundtrack()
        pcm = {r: voiced(r) for r in rates}
        soundtrack.accompany = Track("song", pcm, plays=-1)
        soundtrack.accompany.set_key(3.0)
        for sound_id in range(4):
            soundtrack.effects[sound_id] = Track("fx", pcm, plays=-1, pan=0.5)
        n = rate // 50
        frame = to_float(np.zeros(n, np.int16))
        start = time.perf_counter()
        for _ in range(250):
            soundtrack.mix(frame, rate)
            soundtrack.play_local()
        track_costs.append((time.perf_counter() - start) * 1000 / 250)
    print(f"{'accomp.+4 fx':<16}" + "".join(f"{c:>12.3f}" for c in track_costs))
    print(f"worst effect cost per 20 ms frame: {worst:.3f} ms (budget 1 ms)")
    for rate in rates:
        shifter = PitchShifter(rate, 7.0)
        click = np.zeros(rate, np.float32)
        click[rate // 2] = 1.0
        out = np.concatenate([shifter.process(click[i:i + rate // 50]) for i in range(0, rate, rate // 50)])
        delay_ms = (int(np.argmax(np.abs(out))) - rate // 2) * 1000 / rate
        print(f"pitch shifter delay at {rate // 1000} kHz: {delay_ms:.1f} ms (≤ {shifter.window * 1000 / rate:.0f} ms)")


if __name__ == "__main__":
    main()
