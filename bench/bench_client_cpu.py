"""CPU cost of one client's media pipelines per 20 ms tick, and the voice quality they deliver.

* Uplink: one member sending speech (ANS + Opus + seal in FLUENCY; Opus + seal in STANDARD).
* Downlink: one member hearing 6 members talking at once (open + jitter buffer per packet, then per
  tick decode/FEC/PLC of 6 streams, mix, meters). The 6 talkers' packets are made and re-sealed by
  the real relay beforehand, outside the timed part.
CPU is ``time.process_time`` over SECONDS of simulated audio, printed as % of one core (20 ms of
CPU per 20 ms tick = 100 %), the best of RUNS runs (the machine is shared: the least disturbed run is
the one that tells the code's cost). PESQ-WB and the listener's mean jitter-buffer delay as in
tests/test_voice_quality.py, clean and with 10 % loss + 30 ms jitter (seeds 1-10: the spread matters
more than one figure).
Usage: .venv/bin/python bench/bench_client_cpu.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from opengme.codec.opus import profile_for
from opengme.core.impair import Impairment
from opengme.events import RoomType
from support.audio import frames_of, speech
from support.sim_room import START, TICK, SimRoom, measure

SECONDS = 30
RUNS = 3
TALKERS = 6
SEEDS = tuple(range(1, 11))


def looped_frames(rate: int, n: int, offset_s: float = 0.0) -> list[np.ndarray]:
    """SECONDS of speech (the clip repeated), starting ``offset_s`` in, as 20 ms frames."""
    clip = speech(rate)
    start = round(offset_s * rate) % len(clip)
    pcm = np.tile(np.roll(clip, -start), SECONDS // 16 + 2)[: SECONDS * rate]
    return frames_of(pcm, n)


def uplink_percent(room_type: RoomType) -> float:
    room = SimRoom(room_type, (1,))
    up = room.clients[1].uplink
    frames = looped_frames(up.sample_rate, up.frame_samples)
    begin = time.process_time()
    for k, frame in enumerate(frames):
        up.process(frame, START + k * TICK)
    return (time.process_time() - begin) / (len(frames) * TICK) * 100


def downlink_percent(room_type: RoomType) -> float:
    listener = TALKERS + 1
    room = SimRoom(room_type, (*range(1, TALKERS + 1), listener))
    n = profile_for(room_type).frame_samples
    talk = {t: looped_frames(profile_for(room_type).sample_rate, n, offset_s=2.5 * t) for t in range(1, TALKERS + 1)}
    ticks = len(talk[1])
    arriving: list[list[bytes]] = []
    for k in range(ticks):  # untimed: talkers encode, the relay re-seals for the listener
        now = START + k * TICK
        this_tick = []
        for tinyid, frames in talk.items():
            datagram = room.clients[tinyid].uplink.process(frames[k], now)
            if datagram is not None:
                this_tick += [d for d, addr in room.relay.handle_datagram(datagram, room.clients[tinyid].addr, now)
                              if addr == room.clients[listener].addr]
        arriving.append(this_tick)
    down = room.clients[listener].downlink
    begin = time.process_time()
    for k, datagrams in enumerate(arriving):
        now = START + k * TICK
        for datagram in datagrams:
            down.receive(datagram, now)
        down.render(now)
    assert len(down.members()) == TALKERS and down.counters.dropped_auth == 0
    return (time.process_time() - begin) / (ticks * TICK) * 100


def main() -> None:
    print(f"CPU per 20 ms tick, % of one core, over {SECONDS} s of audio (best of {RUNS})")
    for room_type in (RoomType.FLUENCY, RoomType.STANDARD):
        up = min(uplink_percent(room_type) for _ in range(RUNS))
        down = min(downlink_percent(room_type) for _ in range(RUNS))
        ns = "with ANS" if room_type is RoomType.FLUENCY else "no ANS"
        print(f"  {room_type.name:9s} uplink ({ns}): {up:5.2f} %   downlink ({TALKERS} talkers, 48 kHz mix): "
              f"{down:5.2f} %   total {up + down:5.2f} %")
    print("PESQ-WB (16 kHz) of the heard speech; longest gap and mean jitter-buffer delay in ms")
    for room_type in (RoomType.FLUENCY, RoomType.STANDARD):
        clean = measure(room_type)
        print(f"  {room_type.name:9s} clean: {clean.pesq:.2f} (gap {clean.gap_ms:.0f} ms, delay {clean.delay_ms:.0f} ms)")
        lossy = [measure(room_type, Impairment(loss=0.10, jitter_ms=30.0, seed=s)) for s in SEEDS]
        scores = [h.pesq for h in lossy]
        print(f"  {room_type.name:9s} 10 % loss + 30 ms jitter, seeds {SEEDS[0]}-{SEEDS[-1]}: "
              + " ".join(f"{s:.2f}" for s in scores)
              + f"  (mean {np.mean(scores):.2f}, min {min(scores):.2f}; longest gap {max(h.gap_ms for h in lossy):.0f} ms,"
              + f" delay {np.mean([h.delay_ms for h in lossy]):.0f} ms)")


if __name__ == "__main__":
    main()
