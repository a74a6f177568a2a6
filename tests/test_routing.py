"""GME's hearing rules (opengme.core.routing): the truth table, server audio routes, the 20-voice cap,
and ``RoomRouting`` as the real pure relay's route policy."""
from __future__ import annotations

import os
import random

import pytest

from opengme.core.relay import Relay
from opengme.core.routing import (
    MAX_VOICES,
    AudioRoute,
    HearingState,
    RangeMode,
    RecvType,
    RoomRouting,
    SendType,
    distance,
    hears,
)
from opengme.errors import ErrorCode, GmeError
from test_relay_core import join, open_all

W, T = RangeMode.WORLD, RangeMode.TEAM


def member(openid: str, team: int, mode: RangeMode = W, recv_range: float = 10.0, x: float | None = 0.0,
           entered_with_team: bool | None = None, route: AudioRoute | None = None) -> HearingState:
    return HearingState(openid, team, mode, recv_range, None if x is None else (x, 0.0, 0.0),
                        team != 0 if entered_with_team is None else entered_with_team, route or AudioRoute())


# Reference §5.2, row by row: (speaker, listener, hears).
TRUTH_TABLE = [
    # The same non-zero team always hears, whatever the distance or mode.
    ("same team, both WORLD, far apart", member("a", 1, W, x=0), member("b", 1, W, x=1000), True),
    ("same team, both TEAM, far apart", member("a", 1, T, x=0), member("b", 1, T, x=1000), True),
    ("same team, speaker TEAM, listener WORLD, far", member("a", 1, T, x=0), member("b", 1, W, x=1000), True),
    ("same team, speaker WORLD, listener TEAM, far", member("a", 1, W, x=0), member("b", 1, T, x=1000), True),
    # Different teams: only both WORLD and within the listener's range.
    ("other team, both WORLD, in range", member("a", 1, W, x=0), member("b", 2, W, x=8), True),
    ("other team, both WORLD, at exactly the range", member("a", 1, W, x=0), member("b", 2, W, x=10), True),
    ("other team, both WORLD, out of range", member("a", 1, W, x=0), member("b", 2, W, x=11), False),
    ("other team, speaker TEAM, in range", member("a", 1, T, x=0), member("b", 2, W, x=1), False),
    ("other team, listener TEAM, in range", member("a", 1, W, x=0), member("b", 2, T, x=1), False),
    ("other team, both TEAM, in range", member("a", 1, T, x=0), member("b", 2, T, x=1), False),
    # Range is the listener's: A (range 10) hears B at 8, B (range 5) does not hear A.
    ("listener's range 10 covers 8", member("b", 2, W, 5, x=8), member("a", 1, W, 10, x=0), True),
    ("listener's range 5 does not cover 8", member("a", 1, W, 10, x=0), member("b", 2, W, 5, x=8), False),
    ("no position yet is out of range", member("a", 1, W, x=None), member("b", 2, W, x=0), False),
    # TeamID 0 (host/broadcast): everyone hears it, whatever their mode or distance.
    ("TeamID 0 speaker, TEAM-mode listener far away", member("s", 0, W, x=0), member("b", 2, T, x=1000), True),
    ("TeamID 0 speaker in TEAM mode, WORLD listener", member("s", 0, T, x=0), member("b", 2, W, x=1000), True),
    ("TeamID 0 speaker, TeamID 0 listener", member("s", 0, W, x=0), member("t", 0, W, x=1000), True),
    # TeamID 0 at entry: hears only TeamID-0 members.
    ("entered with 0, WORLD speaker in range", member("a", 1, W, x=0), member("t", 0, W, x=1), False),
    # Non-zero at entry, 0 later: also hears WORLD-mode players within range.
    ("switched to 0, WORLD speaker in range", member("a", 1, W, x=0), member("t", 0, W, x=1, entered_with_team=True), True),
    ("switched to 0, WORLD speaker out of range", member("a", 1, W, x=0), member("t", 0, W, x=11, entered_with_team=True), False),
    ("switched to 0, TEAM speaker in range", member("a", 1, T, x=0), member("t", 0, W, x=1, entered_with_team=True), False),
    ("switched to 0 in TEAM mode, WORLD speaker in range", member("a", 1, W, x=0),
     member("t", 0, T, x=1, entered_with_team=True), False),
    ("switched to 0, TeamID 0 speaker far away", member("s", 0, T, x=0), member("t", 0, T, x=1000, entered_with_team=True), True),
    # Teammates need no position at all.
    ("same team, speaker without a position", member("a", 1, W, x=None), member("b", 1, W, x=0), True),
    ("same team, listener without a position", member("a", 1, T, x=0), member("b", 1, T, x=None), True),
]


@pytest.mark.parametrize(("speaker", "listener", "expected"), [row[1:] for row in TRUTH_TABLE],
                         ids=[row[0] for row in TRUTH_TABLE])
def test_truth_table(speaker: HearingState, listener: HearingState, expected: bool) -> None:
    assert hears(speaker, listener) is expected


def routed(send: SendType, send_list: list[str], recv: RecvType, recv_list: list[str]) -> AudioRoute:
    return AudioRoute.of(send, send_list, recv, recv_list)


# (speaker's send route, listener's recv route, hears) for speaker "a" and listener "b", same team.
ROUTES = [
    (AudioRoute(), AudioRoute(), True),
    (routed(SendType.NOT_SEND_TO_ANYONE, [], RecvType.RECV_FROM_ALL, []), AudioRoute(), False),
    (routed(SendType.SEND_BLACK_LIST, ["b"], RecvType.RECV_FROM_ALL, []), AudioRoute(), False),
    (routed(SendType.SEND_BLACK_LIST, ["c"], RecvType.RECV_FROM_ALL, []), AudioRoute(), True),
    (routed(SendType.SEND_WHITE_LIST, ["b"], RecvType.RECV_FROM_ALL, []), AudioRoute(), True),
    (routed(SendType.SEND_WHITE_LIST, ["c"], RecvType.RECV_FROM_ALL, []), AudioRoute(), False),
    (AudioRoute(), routed(SendType.SEND_TO_ALL, [], RecvType.NOT_RECV_FROM_ANYONE, []), False),
    (AudioRoute(), routed(SendType.SEND_TO_ALL, [], RecvType.RECV_BLACK_LIST, ["a"]), False),
    (AudioRoute(), routed(SendType.SEND_TO_ALL, [], RecvType.RECV_BLACK_LIST, ["c"]), True),
    (AudioRoute(), routed(SendType.SEND_TO_ALL, [], RecvType.RECV_WHITE_LIST, ["a"]), True),
    (AudioRoute(), routed(SendType.SEND_TO_ALL, [], RecvType.RECV_WHITE_LIST, ["c"]), False),
    # A listener's receive rule does not affect what it sends, nor a speaker's send rule what it hears.
    (routed(SendType.SEND_TO_ALL, [], RecvType.NOT_RECV_FROM_ANYONE, []),
     routed(SendType.NOT_SEND_TO_ANYONE, [], RecvType.RECV_FROM_ALL, []), True),
]


@pytest.mark.parametrize(("send", "recv", "expected"), ROUTES)
def test_server_audio_routes_combine_with_the_rules(send: AudioRoute, recv: AudioRoute, expected: bool) -> None:
    assert hears(member("a", 1, route=send), member("b", 1, route=recv)) is expected
    # Routes only ever take away: a pair the rules refuse stays refused.
    assert not hears(member("a", 1, T, route=send), member("b", 2, route=recv))


@pytest.mark.parametrize(("args", "fix"), [
    ((0, [], 2, []), "must each be 1-4"),
    ((2, [], 5, []), "must each be 1-4"),
    ((4, [f"p{i}" for i in range(11)], 2, []), "at most 10"),
    ((2, [], 3, [""]), "non-empty openid"),
])
def test_bad_routes_answer_1004_with_what_to_fix(args: tuple[int, list[str], int, list[str]], fix: str) -> None:
    with pytest.raises(GmeError) as caught:
        AudioRoute.of(*args)
    assert caught.value.code is ErrorCode.AV_ERR_INVALID_ARGUMENT and fix in caught.value.detail


def test_a_listener_receives_the_nearest_twenty_voices() -> None:
    routing = RoomRouting(move_threshold=0.0)
    routing.update(1, member("me", 1, W, recv_range=1000, x=0))
    for tinyid in range(2, 32):  # 30 speakers of other teams at distances 30, 29, ... 1
        routing.update(tinyid, member(f"p{tinyid}", tinyid, W, x=32 - tinyid))
    heard = {s for s in range(2, 32) if routing.policy(s, 1)}
    assert len(heard) == MAX_VOICES and heard == set(range(12, 32))
    # The listener moves to the far side: now the other end is nearest.
    changed = routing.update(1, member("me", 1, W, recv_range=1000, x=40))
    assert changed == {1}
    assert {s for s in range(2, 32) if routing.policy(s, 1)} == set(range(2, 22))


def test_update_says_whose_routes_change() -> None:
    routing = RoomRouting(move_threshold=2.0)
    assert routing.update(1, member("a", 1, W, x=0)) == {1}
    assert routing.update(2, member("b", 2, W, x=50)) == {2}
    assert not routing.policy(1, 2)
    assert routing.update(2, member("b", 2, W, x=51)) == set()  # shorter than the threshold
    assert routing.update(2, member("b", 2, W, x=5)) == {2}
    assert routing.policy(1, 2) and routing.policy(2, 1)
    assert routing.update(2, member("b", 2, T, x=5)) == {2}  # mode change
    assert not routing.policy(1, 2)
    assert routing.update(2, member("b", 2, T, x=5)) == set()  # no change at all
    assert routing.remove(2) == set() and routing.remove(2) == set()
    assert routing.policy(1, 2)  # unknown members are not filtered


def test_cap_changes_rebuild_the_listeners_whose_selection_moved() -> None:
    routing = RoomRouting(move_threshold=0.0, max_voices=2)
    routing.update(1, member("me", 1, W, recv_range=100, x=0))
    routing.update(2, member("b", 2, W, x=10))
    routing.update(3, member("c", 3, W, x=20))
    assert routing.update(4, member("d", 4, W, x=30)) == {4}  # third-nearest for 1: not selected
    assert not routing.policy(4, 1)
    # 4 comes nearest: 1 now receives 4 and 2, no longer 3, so 1's routes (3 → 1) must be rebuilt too.
    assert routing.update(4, member("d", 4, W, x=5)) >= {4, 1}
    assert routing.policy(4, 1) and routing.policy(2, 1) and not routing.policy(3, 1)


class Room:
    """A real pure relay with one room whose route policy is a ``RoomRouting``."""

    def __init__(self, size: int, max_voices: int = MAX_VOICES) -> None:
        self.relay = Relay()
        self.routing = RoomRouting(move_threshold=0.0, max_voices=max_voices)
        self.relay.set_route_policy("r", self.routing.policy)
        self.clients = {t: join(self.relay, "r", t, 7000 + t) for t in range(1, size + 1)}
        self.by_addr = {c.addr: c for c in self.clients.values()}

    def set(self, tinyid: int, state: HearingState, pairs: bool = False) -> None:
        """Through ``update`` + ``update_routes``, or (``pairs``) ``update_pairs`` + ``set_routes``."""
        changes = self.routing.update_pairs(tinyid, state) if pairs else None
        if changes is not None:
            self.relay.set_routes(changes)
            return
        for changed in self.routing.update(tinyid, state):
            self.relay.update_routes(changed)

    def receivers(self, speaker: int) -> set[int]:
        client = self.clients[speaker]
        out = self.relay.handle_datagram(client.voice(os.urandom(40)), client.addr, 1.0)
        return set(open_all(self.by_addr, out))


def test_relay_forwards_data_only_where_the_rules_say() -> None:
    room = Room(4)
    room.set(1, member("a", 1, W, 10, x=0))
    room.set(2, member("b", 1, T, 10, x=500))  # a's teammate, far away
    room.set(3, member("c", 2, W, 10, x=8))  # other team, in range of a
    room.set(4, member("d", 3, W, 5, x=8))  # other team, in c's range but with a short range of its own
    assert room.receivers(1) == {2, 3}
    assert room.receivers(3) == {1, 4}
    assert room.receivers(4) == {1, 3}
    room.set(4, member("d", 3, W, 10, x=8))  # d widens its range: now hears a
    assert room.receivers(1) == {2, 3, 4}
    room.set(3, member("c", 2, T, 10, x=8))  # c goes TEAM only: nobody else is on team 2
    assert room.receivers(1) == {2, 4} and room.receivers(3) == set()
    room.set(2, member("b", 1, T, 10, x=500, route=routed(SendType.SEND_TO_ALL, [], RecvType.RECV_BLACK_LIST, ["a"])))
    assert room.receivers(1) == {4}
    room.set(1, member("a", 0, W, 10, x=0, entered_with_team=True))  # a switches to TeamID 0: a broadcaster
    assert room.receivers(1) == {3, 4}  # everyone but b, who blacklisted a
    room.routing.remove(4)
    room.relay.remove_member(4)
    assert room.receivers(1) == {3}


@pytest.mark.parametrize("pairs", [False, True], ids=["rebuilds", "pairs"])
@pytest.mark.parametrize("cap", [MAX_VOICES, 4, 1])
def test_relay_routes_match_the_pure_rules_as_members_move(cap: int, pairs: bool) -> None:
    rng = random.Random(14)
    size = 30
    room = Room(size, cap)
    states = {}
    for step in range(600):
        tinyid = rng.randrange(1, size + 1) if step >= size else step + 1
        route = None
        if rng.random() < 0.2:  # now and then a server audio route naming a few members
            names = [f"p{rng.randrange(1, size + 1)}" for _ in range(3)]
            route = routed(rng.choice(list(SendType)), names, rng.choice(list(RecvType)), names[::-1])
        states[tinyid] = member(f"p{tinyid}", rng.choice([0, 1, 2, 3]), rng.choice([W, T]), rng.choice([5.0, 20.0]),
                                x=rng.uniform(0, 40) if rng.random() < 0.95 else None,
                                entered_with_team=rng.random() < 0.5, route=route)
        room.set(tinyid, states[tinyid], pairs)
        if step % 20 == 19 or cap == 1:
            for listener, me in states.items():
                audible = sorted((distance(s.position, me.position), sid) for sid, s in states.items()
                                 if sid != listener and hears(s, me))
                expected = {sid for _, sid in audible[:cap]}
                assert {s for s in states if s != listener and listener in room.relay.listeners(s)} == expected
