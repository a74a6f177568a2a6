"""Recording beside the relay: the forwarding rate of plain rooms with one room of 5 recorded.

One process, as in ``opengme serve``: the relay's hot path (``Relay.handle_datagram``) runs flat out on
pre-sealed packets of plain rooms of 5 (the main thread stands in for the event loop), while a room of 5
speaks real Opus at 50 packets/s per member. With recording on, that room is tapped and the real
recorder process (fed in batches by its feeder thread, as in the server) decodes, mixes and writes mp3
(mode 3: a file per member and a mixed one) into a real storage. The figures are the plain rooms' forwarded packets per second with and without the
recording, per second of the relay thread's CPU (what recording costs the hot path: the tap and the
GIL) and per second of wall time (which also counts the recorder process's share of a busy machine);
the issue's target is a drop of at most 10 %.

    python bench/bench_recording.py [--seconds 4] [--rooms 20] [--runs 3]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from opengme.codec.opus import FLUENCY, OpusEncoder
from opengme.core.recording import RecordMode, Subscription
from opengme.core.relay import Relay
from opengme.protocol.media import MediaCrypto, MediaHeader, PacketType, session_id
from opengme.server.recording import RecorderProcess, RecordingDB
from opengme.store import AppStore

ROOM_SIZE = 5
FRAME_S = 0.02
PAYLOAD_SIZE = 80
MAX_DROP = 0.10
CHUNK = 200  # plain packets between two looks at the clock
STARTUP_S = 2.0


def key_of(tinyid: int) -> bytes:
    return hashlib.sha256(f"bench-recording:{tinyid}".encode()).digest()


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Syllable-paced harmonics at 16 kHz: enough like speech for Opus to code it as speech."""
    rate = 16_000
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * seed + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    gate = (np.sin(2 * np.pi * 3.3 * t + seed) > -0.2).astype(np.float64)
    return (6000 * voiced * gate).astype(np.int16)


def sealed(tinyid: int, payloads: list[bytes]) -> tuple[list[bytes], bytes, tuple[str, int]]:
    """A member's uplink datagrams, its BIND and its address."""
    key = key_of(tinyid)
    crypto, session = MediaCrypto.for_client(key), session_id(key)
    bind = crypto.seal_bind(session)  # first: packet indexes must rise
    packets = [crypto.seal(MediaHeader(PacketType.DATA, session, seq=s & 0xFFFF, timestamp=s * 320, level=30,
                                       voice=True), p) for s, p in enumerate(payloads)]
    return packets, bind, ("127.0.0.1", 20_000 + tinyid)


def build(rooms: int, seconds: float, plain_rate: float) -> tuple[list[tuple[bytes, tuple[str, int]]],
                                                                  list[list[bytes]], list[tuple[int, bytes, tuple[str, int]]]]:
    """Plain rooms' packets interleaved as they would arrive, the recorded room's per-frame packets, binds."""
    frames = int(plain_rate * seconds / (rooms * ROOM_SIZE)) + 1
    payload = bytes(PAYLOAD_SIZE)
    binds, streams = [], []
    for tinyid in range(1, rooms * ROOM_SIZE + 1):
        packets, bind, addr = sealed(tinyid, [payload] * frames)
        binds.append((tinyid, bind, addr))
        streams.append([(p, addr) for p in packets])
    plain = [streams[m][f] for f in range(frames) for m in range(len(streams))]
    recorded = []
    for n in range(ROOM_SIZE):
        tinyid = 100_000 + n
        encoder = OpusEncoder(FLUENCY)
        pcm = speechlike(seconds + 1, n)
        opus = [encoder.encode(pcm[i:i + 320]) for i in range(0, len(pcm) - 319, 320)]
        packets, bind, addr = sealed(tinyid, opus)
        binds.append((tinyid, bind, addr))
        recorded.append([(p, addr) for p in packets])
    frames_rec = [[stream[f] for stream in recorded] for f in range(min(len(s) for s in recorded))]
    return plain, frames_rec, binds  # type: ignore[return-value]


def run(rooms: int, seconds: float, plain: list[tuple[bytes, tuple[str, int]]], rec_frames: list[list[bytes]],
        binds: list[tuple[int, bytes, tuple[str, int]]], record: bool, workdir: Path) -> tuple[float, float]:
    """Plain rooms' forwarded packets per second while the recorded room speaks in real time: per
    second of wall time, and per second of the relay thread's own CPU time (its capacity, whatever
    else the machine runs)."""
    relay = Relay()
    for tinyid, bind, addr in binds:
        room = "rec" if tinyid >= 100_000 else f"room{(tinyid - 1) // ROOM_SIZE}"
        relay.add_member(room, tinyid, key_of(tinyid))
        relay.handle_datagram(bind, addr, 0.0)
    recorder = None
    if record:
        AppStore(workdir).close()  # the data directory as the server keeps it
        db = RecordingDB(workdir)
        task = db.create_task("1400000001", "rec", RecordMode.BOTH, Subscription(), False, time.time())
        db.close()
        recorder = RecorderProcess(workdir, retention_days=0)
        time.sleep(STARTUP_S)  # the process's imports are not what is measured
        members = {100_000 + n: str(10_001 + n) for n in range(ROOM_SIZE)}
        recorder.send(("start", task, members, time.monotonic(), time.time()))
        relay.set_room_tap("rec", recorder.tap(task.task_id))
    handle = relay.handle_datagram
    start, cpu_start = time.monotonic(), time.thread_time()
    deadline, next_frame, frame = start + seconds, start, 0
    plain_forwarded = index = 0
    while True:
        now = time.monotonic()
        if now >= deadline or index + CHUNK > len(plain):
            break
        while now >= next_frame and frame < len(rec_frames):
            for data, addr in rec_frames[frame]:  # type: ignore[misc]
                handle(data, addr, now)
            frame += 1
            next_frame += FRAME_S
        for data, addr in plain[index:index + CHUNK]:
            plain_forwarded += len(handle(data, addr, now))
        index += CHUNK
    elapsed, cpu = time.monotonic() - start, time.thread_time() - cpu_start
    if recorder is not None:
        recorder.close()
        written = sum(1 for _ in (workdir / "messages").rglob("*") if _.is_file())
        assert written >= ROOM_SIZE + 1, f"expected {ROOM_SIZE + 1} mp3 files, got {written}"
    return plain_forwarded / elapsed, plain_forwarded / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rooms", type=int, default=20, help="plain rooms of 5 beside the recorded one")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    plain, rec_frames, binds = build(args.rooms, args.seconds, plain_rate=120_000)
    print(f"{args.rooms} plain rooms of {ROOM_SIZE} relayed flat out, 1 room of {ROOM_SIZE} speaking Opus "
          f"at 50 packets/s per member; {args.runs} alternating runs of {args.seconds:g} s")
    rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            for record in (False, True):
                workdir = Path(tmp) / f"run{n}-{int(record)}"
                workdir.mkdir()
                rates[record].append(run(args.rooms, args.seconds, plain, rec_frames, binds, record, workdir))
    for index, what in ((1, "per second of the relay thread's CPU (its capacity)"), (0, "per second of wall time")):
        off = statistics.median(r[index] for r in rates[False])
        on = statistics.median(r[index] for r in rates[True])
        drop = 1 - on / off
        print(f"  plain rooms' packets forwarded {what}:")
        print(f"    not recorded {off:10,.0f}   (runs: {', '.join(f'{r[index]:,.0f}' for r in rates[False])})")
        print(f"    recorded     {on:10,.0f}   (runs: {', '.join(f'{r[index]:,.0f}' for r in rates[True])})")
        print(f"    drop {100 * drop:.1f} %  (target ≤ {100 * MAX_DROP:.0f} %: {'met' if drop <= MAX_DROP else 'NOT met'})")

if __name__ == "__main__":
    main()
