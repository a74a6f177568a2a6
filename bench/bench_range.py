"""Range/team voice benchmark: the pure relay with ``RoomRouting`` as its route policy, members moving.

One room of 100 members (10 teams of 10, WORLD mode, receive range 100 on a 300 × 300 field), each
sending 50 voice packets/s and moving at 5 units/s with 10 position updates/s. Every update goes
through ``RoomRouting.update_pairs`` and the relay changes the pairs it names (``Relay.set_routes``),
interleaved with the voice packets as the server does; one line shows the older way (``update`` +
``Relay.update_routes``, a member's routes rebuilt whenever they change) for comparison. Compared, in the same run, with the same room
without a policy (everyone hears everyone) and with ``bench_relay.py``'s plain-room figure (rooms of
5): forwarded packets per second of relay CPU. The issue's bar: within 20 % of the plain figure.
Move thresholds shown: 0 (every update re-decides), 1 unit and range/20 (a member's routes are
re-decided once it moved that far from where they were last decided).

    python bench/bench_range.py [--seconds 2] [--threshold 1.0]
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time

from bench_relay import FRAME_SAMPLES, PAYLOAD_SIZE, bench_pure, session_key

from opengme.core.relay import Relay
from opengme.core.routing import HearingState, RangeMode, RoomRouting
from opengme.protocol.media import MediaCrypto, MediaHeader, PacketType, session_id

MEMBERS, TEAMS, FIELD, RANGE, SPEED = 100, 10, 300.0, 100.0, 5.0
PACKETS_PER_SECOND, UPDATES_PER_SECOND = 50, 10


def walk(seconds: float, seed: int = 14) -> list[list[tuple[float, float, float]]]:
    """Positions per update tick, per member: a random walk at SPEED, bouncing off the field's edges."""
    rng = random.Random(seed)
    pos = [[rng.uniform(0, FIELD), rng.uniform(0, FIELD)] for _ in range(MEMBERS)]
    heading = [rng.uniform(0, 2 * math.pi) for _ in range(MEMBERS)]
    step = SPEED / UPDATES_PER_SECOND
    ticks = []
    for _ in range(int(seconds * UPDATES_PER_SECOND)):
        for i, p in enumerate(pos):
            heading[i] += rng.gauss(0, 0.3)
            for axis, delta in enumerate((math.cos(heading[i]) * step, math.sin(heading[i]) * step)):
                p[axis] = min(FIELD, max(0.0, p[axis] + delta))
        ticks.append([(p[0], p[1], 0.0) for p in pos])
    return ticks


def run(seconds: float, threshold: float | None, pairs_mode: bool = True) -> tuple[float, int, int, float]:
    """(wall seconds, forwarded, route changes, seconds spent on routes) for ``seconds`` of room time;
    ``threshold`` None = no policy. ``pairs_mode``: moves change routes pair by pair
    (``update_pairs`` + ``set_routes``, as the server does), else each member named by ``update`` has
    its routes rebuilt (``update_routes``)."""
    clients = {t: MediaCrypto.for_client(session_key(1, t)) for t in range(1, MEMBERS + 1)}
    sessions = {t: session_id(session_key(1, t)) for t in clients}  # what a member's packets name
    addrs = {t: ("127.0.0.1", 20_000 + t) for t in clients}
    payload = os.urandom(PAYLOAD_SIZE)
    frames = int(seconds * PACKETS_PER_SECOND)
    packets = [[(c.seal(MediaHeader(PacketType.DATA, sessions[t], seq=s, timestamp=s * FRAME_SAMPLES, level=30,
                                    voice=True), payload), addrs[t]) for t, c in clients.items()] for s in range(frames)]
    moves = walk(seconds)
    best, forwarded, rebuilds, routing_time = math.inf, 0, 0, 0.0
    for _ in range(3):
        relay = Relay()
        for t, c in clients.items():
            relay.add_member("arena", t, session_key(1, t))
            relay.handle_datagram(c.seal_bind(sessions[t]), addrs[t], 0.0)
        routing = RoomRouting(move_threshold=threshold or 0.0)
        if threshold is not None:
            relay.set_route_policy("arena", routing.policy)
        handle, update_routes, set_routes = relay.handle_datagram, relay.update_routes, relay.set_routes
        forwarded = rebuilds = 0
        every = PACKETS_PER_SECOND // UPDATES_PER_SECOND
        in_routes = 0.0
        if threshold is not None:  # the members entered and stood somewhere before the measured time
            for t, position in enumerate(moves[0], start=1):
                for changed in routing.update(t, HearingState(f"p{t}", 1 + t % TEAMS, RangeMode.WORLD, RANGE,
                                                              position, True)):
                    update_routes(changed)
        start = time.perf_counter()
        for s, batch in enumerate(packets):
            if threshold is not None and s % every == 0:
                began = time.perf_counter()
                for t, position in enumerate(moves[s // every], start=1):
                    state = HearingState(f"p{t}", 1 + t % TEAMS, RangeMode.WORLD, RANGE, position, True)
                    pairs = routing.update_pairs(t, state) if pairs_mode else None
                    if pairs is not None:  # a move changes the pairs it changed, nothing else
                        set_routes(pairs)
                        rebuilds += len(pairs)
                        continue
                    for changed in routing.update(t, state):
                        update_routes(changed)
                        rebuilds += 1
                in_routes += time.perf_counter() - began
            for data, addr in batch:
                forwarded += len(handle(data, addr, 1.0))
        took = time.perf_counter() - start
        if took < best:
            best, routing_time = took, in_routes
    return best, forwarded, rebuilds, routing_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="room time simulated per pass")
    parser.add_argument("--threshold", type=float, default=1.0, help="RoomRouting move threshold (units)")
    args = parser.parse_args()
    plain_us = bench_pure()
    print(f"\nOne room of {MEMBERS} ({TEAMS} teams, range {RANGE:g}, {SPEED:g} units/s, "
          f"{UPDATES_PER_SECOND} updates/s, {PACKETS_PER_SECOND} packets/s each; best of 3):")
    wall, fwd, _, _ = run(args.seconds, None)
    room_rate = fwd / wall
    print(f"  no policy (everyone hears):  {room_rate:10,.0f} forwarded/s  {wall / fwd * 1e6:.2f} µs per forwarded")
    cases = [(t, True) for t in sorted({0.0, args.threshold, RANGE / 20})] + [(args.threshold, False)]
    for threshold, pairs_mode in cases:
        wall, fwd, rebuilds, in_routes = run(args.seconds, threshold, pairs_mode)
        rate = fwd / wall
        how = "pair changes" if pairs_mode else "member rebuilds"
        print(f"  RoomRouting, threshold {threshold:g}: {rate:10,.0f} forwarded/s  {wall / fwd * 1e6:.2f} µs per forwarded,"
              f" {rebuilds / args.seconds:,.0f} {how}/s, {fwd / (MEMBERS * PACKETS_PER_SECOND * args.seconds):.1f}"
              f" listeners per packet, {in_routes / wall:.0%} of the time on routes; vs bench_relay plain {plain_us / (wall / fwd * 1e6):.0%},"
              f" vs this room without policy {rate / room_rate:.0%}")


if __name__ == "__main__":
    main()
