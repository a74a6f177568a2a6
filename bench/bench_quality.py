"""Voice quality on real speech (issue 11): the whole table, the capture chain's comparison, the echo
figure and the latency budget.

Run: .venv/bin/python bench/bench_quality.py [seeds]   (default 10 seeds for the lossy column; 0: the
latency budget alone)

1. Per clip (the espeak-ng clip and the two LibriVox clips): PESQ-WB through Uplink → Relay →
   Downlink with the real codec (tests/support/sim_room.py's ``measure``): FLUENCY clean with ANS on
   and off, STANDARD clean, FLUENCY at 10 % loss + 30 ms jitter (mean / min over the seeds). "before"
   is the issue's row for the clip where it had one (its real clips were other recordings).
2. FLUENCY in noise (pink, fan, white at 5 and 15 dB SNR): PESQ against the clean speech, ANS on/off.
3. Noise suppressor comparison on the bare capture chain (no codec): OpenGME's own against the
   WebRTC module's, PESQ against the clean speech, and the cost per 10 ms of each function.
4. Echo: ERLE and near-end PESQ on the simulated echo path (tests/support/echo.py).
5. The FLUENCY mouth-to-ear budget, item by item (bench_mouth_to_ear.py measures the total).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

from opengme.codec.opus import FLUENCY, FRAME_MS, OpusEncoder
from opengme.core.apm import CaptureProcessor, Processing, Switches, webrtc_available
from opengme.core.downlink import MIN_DELAY_MS
from opengme.core.impair import Impairment
from opengme.events import RoomType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.audio import speech
from support.echo import measure_echo
from support.noise import NOISES, mix, pesq_wb
from support.sim_room import measure, mouth_to_ear_ms
from support.speech import REAL_CLIPS, real_clip

BEFORE = {"espeak": "3.72 / – / 4.33 / 2.94 (5 seeds) / 2.71"}
NO_NS = Switches(ns=False)


def clips() -> dict[str, np.ndarray]:
    return {"espeak": speech(16_000), **{name: real_clip(name) for name in REAL_CLIPS}}


def table(seeds: int) -> None:
    print("| clip | FLUENCY clean, ANS on | ANS off | STANDARD clean | FLUENCY 10 % loss + 30 ms jitter "
          f"(mean / min, {seeds} seeds) | before (issue) |")
    print("|---|---|---|---|---|---|")
    for name, clip in clips().items():
        on = measure(RoomType.FLUENCY, clip=clip).pesq
        off = measure(RoomType.FLUENCY, clip=clip, switches=NO_NS).pesq
        std = measure(RoomType.STANDARD, clip=clip).pesq
        lossy = [measure(RoomType.FLUENCY, Impairment(loss=0.10, jitter_ms=30.0, seed=s), clip=clip).pesq
                 for s in range(1, seeds + 1)]
        print(f"| {name} | {on:.2f} | {off:.2f} | {std:.2f} | {np.mean(lossy):.2f} / {min(lossy):.2f} | "
              f"{BEFORE.get(name, 'other clips')} |", flush=True)


def noisy(clean: np.ndarray, noise: str, snr_db: float) -> np.ndarray:
    return mix(clean.astype(np.float64), NOISES[noise](clean.size, 16_000, np.random.default_rng(3)), snr_db)


def noise_table() -> None:
    clean = real_clip("librivox-A")
    print("\nFLUENCY in noise, clip librivox-A, PESQ-WB against the clean speech (ANS on / off):")
    for noise in ("pink", "fan", "white"):
        cells = []
        for snr in (5.0, 15.0):
            sent = noisy(clean, noise, snr).astype(np.int16)
            on = measure(RoomType.FLUENCY, clip=clean, sent=sent).pesq
            off = measure(RoomType.FLUENCY, clip=clean, sent=sent, switches=NO_NS).pesq
            cells.append(f"{snr:.0f} dB {on:.2f} / {off:.2f}")
        print(f"  {noise:6s} " + "   ".join(cells), flush=True)


def chain(processing: Processing, signal: np.ndarray) -> tuple[np.ndarray, float]:
    """``signal`` through a capture processor; output aligned, and µs per 10 ms."""
    cp = CaptureProcessor(16_000, 320, processing)
    frames = signal[: signal.size // 320 * 320].astype(np.int16).reshape(-1, 320)
    started = time.perf_counter()
    out = np.concatenate([cp.process(f) for f in frames])
    cost = (time.perf_counter() - started) / (frames.shape[0] * 2) * 1e6
    lat = cp.latency_samples
    return np.concatenate((out[lat:], np.zeros(lat, np.int16))), cost


def webrtc_ns(signal: np.ndarray) -> tuple[np.ndarray, float]:
    """The WebRTC module's own suppressor (with its high-pass filter), for the comparison."""
    from livekit import rtc
    apm = rtc.AudioProcessingModule(noise_suppression=True, high_pass_filter=True)
    blocks = signal[: signal.size // 160 * 160].astype(np.int16).reshape(-1, 160)
    out = []
    started = time.perf_counter()
    for block in blocks:
        data = bytearray(block.tobytes())
        apm.process_stream(rtc.AudioFrame(data, 16_000, 1, 160))
        out.append(np.frombuffer(data, np.int16))
    return np.concatenate(out), (time.perf_counter() - started) / blocks.shape[0] * 1e6


def ns_comparison() -> None:
    clean = real_clip("librivox-A")
    clean = clean[: clean.size // 320 * 320]
    own = Processing(aec=False, agc=False, ns=True)
    print("\nNoise suppressors on the bare capture chain, librivox-A, PESQ-WB against the clean speech "
          "(own / WebRTC):")
    inputs = {"clean": clean.astype(np.float64)}
    inputs.update({f"{n} {s:.0f} dB": noisy(clean, n, s) for n in ("pink", "fan") for s in (5.0, 15.0)})
    costs_own, costs_webrtc = [], []
    for label, signal in inputs.items():
        mine, cost = chain(own, signal)
        costs_own.append(cost)
        if webrtc_available():
            theirs, cost_w = webrtc_ns(signal)
            costs_webrtc.append(cost_w)
            their_pesq = f"{pesq_wb(clean, theirs[:clean.size].astype(np.float64)):.2f}"
        else:
            their_pesq = "n/a"
        print(f"  {label:12s} input {pesq_wb(clean, signal):.2f}   own {pesq_wb(clean, mine.astype(np.float64)):.2f}"
              f"   WebRTC {their_pesq}")
    print(f"  cost per 10 ms: own {statistics.median(costs_own):.0f} µs"
          + (f", WebRTC NS+HPF {statistics.median(costs_webrtc):.0f} µs" if costs_webrtc else ""))
    if webrtc_available():
        for label, processing in (("AEC (capture side)", Processing(aec=True, agc=False, ns=False)),
                                  ("AGC", Processing(aec=False, agc=True, ns=False))):
            print(f"  cost per 10 ms, WebRTC {label}: {chain(processing, clean)[1]:.0f} µs")


def echo() -> None:
    if not webrtc_available():
        print("\nEcho: the WebRTC module did not load here")
        return
    for rate in (16_000, 48_000):
        e = measure_echo(rate)
        print(f"\nEcho ({rate // 1000} kHz, simulated room, echo 12 dB under the far end): ERLE {e.erle_db:.1f} dB "
              f"after 3 s; near-end PESQ-WB alone {e.pesq_single:.2f}, in double talk {e.pesq_double:.2f} "
              f"(raw mic {e.pesq_double_mic:.2f}); {e.us_per_10ms:.0f} µs per 10 ms (capture + reference)")


def latency_budget() -> None:
    lookahead_ms = OpusEncoder(FLUENCY).lookahead * 1000 / FLUENCY.sample_rate
    ns_ms = CaptureProcessor(16_000, 320, Switches().resolve(RoomType.FLUENCY)).latency_samples / 16
    phases = [p / 1000 for p in range(0, 20, 2)]

    def simulated(room_type: RoomType, floor_ms: float, aligned: bool = False) -> float:
        return float(np.mean([mouth_to_ear_ms(room_type, p, min_delay_ms=floor_ms, aligned=aligned)
                              for p in phases]))

    rows = [
        ("capture block (a frame is sent once complete)", "20.0"),
        ("noise suppressor (ANS, FLUENCY only)", f"{ns_ms:.1f}"),
        ("Opus lookahead (encoder; the decoder adds none at 16 → 48 kHz)", f"{lookahead_ms:.1f}"),
        ("network (loopback)", "≈ 0"),
        ("wait for the listener's render (moved to the talkspurt's start)", "0"),
        ("  (with fixed render periods: the phase between the clients' ticks)", "(0–20)"),
        (f"jitter-buffer target on a clean path (floor {MIN_DELAY_MS} ms, was {FRAME_MS})", "0 + jitter"),
    ]
    print("\nFLUENCY mouth-to-ear budget (loopback; device buffers not included):")
    for what, ms in rows:
        print(f"  {what:72s} {ms:>10s} ms")
    for room_type in (RoomType.FLUENCY, RoomType.STANDARD):
        print(f"  {room_type.name} total, simulated clock, mean over tick phases: "
              f"{simulated(room_type, MIN_DELAY_MS, aligned=True):.1f} ms (fixed render periods "
              f"{simulated(room_type, MIN_DELAY_MS):.1f} ms, and with the old one-frame floor "
              f"{simulated(room_type, FRAME_MS):.1f} ms); bench_mouth_to_ear.py measures the real one")


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if seeds == 0:  # the latency budget alone
        latency_budget()
        return
    table(seeds)
    noise_table()
    ns_comparison()
    echo()
    latency_budget()


if __name__ == "__main__":
    main()
