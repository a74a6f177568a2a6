"""Cost of the real-time Opus codec per 20 ms frame: encode, decode, PLC, FEC decode.

Run: .venv/bin/python bench/bench_codec.py [frames]. Prints the median µs per frame of each step
for the 16 kHz (FLUENCY) and 48 kHz (STANDARD, HIGHQUALITY) profiles, and the real-time factor
(CPU time / audio time; 0.01 means one core carries 100 such streams). Loss steps are timed in
their real context: each PLC or FEC call follows a normally decoded packet.
"""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opengme.codec.opus import FRAME_MS, OpusDecoder, OpusEncoder, profile_for
from opengme.events import RoomType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.audio import frames_of, speech_like


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - start) / 1000


def bench(room_type: RoomType, count: int) -> dict[str, float]:
    """Median µs per frame of each codec step over ``count`` frames of speech-like audio."""
    profile = profile_for(room_type)
    seconds = count * FRAME_MS / 1000 + 0.1
    pcm = frames_of(speech_like(profile.sample_rate, seconds=seconds), profile.frame_samples)[:count]
    encoder = OpusEncoder(profile)
    packets: list[bytes] = []
    encode = [timed(lambda f=f: packets.append(encoder.encode(f))) for f in pcm]

    plain = OpusDecoder(profile)
    decode = [timed(lambda p=p: plain.decode(p)) for p in packets]

    lossy = OpusDecoder(profile)
    plc, fec = [], []
    for i in range(0, count - 2, 2):
        lossy.decode(packets[i])
        plc.append(timed(lossy.conceal))
        fec.append(timed(lambda i=i: lossy.decode_fec(packets[i + 2])))
        lossy.decode(packets[i + 2])
    return {name: statistics.median(values) for name, values in
            (("encode", encode), ("decode", decode), ("plc", plc), ("fec", fec))}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    frame_us = FRAME_MS * 1000
    print(f"median µs per {FRAME_MS} ms mono frame over {count} frames; RTF = µs / {frame_us} µs")
    print(f"{'profile':<12} {'rate':>6} {'encode':>8} {'decode':>8} {'PLC':>8} {'FEC':>8} {'RTF enc+dec':>12}")
    for room_type in RoomType:
        r = bench(room_type, count)
        rtf = (r["encode"] + r["decode"]) / frame_us
        rate = profile_for(room_type).sample_rate
        print(f"{room_type.name:<12} {rate:>6} {r['encode']:>8.1f} "
              f"{r['decode']:>8.1f} {r['plc']:>8.1f} {r['fec']:>8.1f} {rtf:>12.4f}")


if __name__ == "__main__":
    main()
