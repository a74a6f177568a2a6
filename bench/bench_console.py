"""The console's live view on the event loop: time of one ``Console.snapshot`` (every room, member,
speaking flag and level), which the live WebSocket runs every 0.5 s per open view, with the server
full of members.

Builds a real server in process (``build_server``; no socket is opened), fills its room registry and
its media relay with ROOMS x MEMBERS members through their own calls, marks a tenth of them speaking
through real sealed media datagrams, and times the snapshot.

    python bench/bench_console.py [--rooms 100] [--members 10]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from opengme.config import Settings
from opengme.events import RoomType
from opengme.protocol.media import MediaCrypto, MediaHeader, PacketType, session_id
from opengme.server import console, media, signalling
from opengme.server.app import build_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--members", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        server = build_server(Settings(port=0, data_dir=Path(data)))
        registry = signalling.get(server).registry
        relay = media.get(server).relay
        speakers = []
        for r in range(args.rooms):
            for m in range(args.members):
                entered = registry.enter("1400000001", f"room{r}", str(10001 + r * args.members + m), RoomType.FLUENCY,
                                         r * 1000 + m, time.time())
                key = os.urandom(32)
                relay.add_member(f"1400000001\0room{r}", entered.member.tinyid, key)
                if m == 0:
                    speakers.append((MediaCrypto.for_client(key), session_id(key)))
        now = time.monotonic()
        for crypto, sid in speakers:  # one speaker per room: a voice packet with the voice-activity bit
            relay.handle_datagram(crypto.seal_bind(sid), ("ws", sid), now)
            relay.handle_datagram(crypto.seal(MediaHeader(PacketType.DATA, sid, level=20, voice=True), b"\0" * 40),
                                  ("ws", sid), now)
        view = console.get(server)
        rounds = 20
        started = time.perf_counter()
        for _ in range(rounds):
            shot = view.snapshot()
        took = (time.perf_counter() - started) / rounds
        speaking = sum(m["speaking"] for room in shot["rooms"] for m in room["members"])
        print(f"console snapshot: {shot['members_total']} members in {shot['rooms_total']} rooms, "
              f"{len(shot['rooms'])} rooms detailed ({speaking} speakers seen): {took * 1000:.2f} ms per snapshot, "
              f"{took / 0.5 * 100:.2f} % of the event loop (one snapshot per 0.5 s, shared by every open live view)")
        server.store.close()


if __name__ == "__main__":
    main()
