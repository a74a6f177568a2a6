"""The pure relay: sessions, address learning, routing, mute, counters (opengme.core.relay)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.core.relay import CHALLENGE_INTERVAL, MAX_CHALLENGES, Addr, Relay, SessionIdTaken
from opengme.protocol.media import (
    BIND_MAGIC,
    CHALLENGE_SIZE,
    Direction,
    MediaCrypto,
    MediaHeader,
    PacketType,
    session_id,
)


@dataclass
class Client:
    """A member as the relay sees it: tinyid, key, UDP address, and its own send state. Its packets
    name its session id (derived from the key), as the SDK's do."""

    tinyid: int
    key: bytes
    addr: Addr
    crypto: MediaCrypto = field(init=False)
    session: int = field(init=False)
    seq: int = 0

    def __post_init__(self) -> None:
        self.crypto = MediaCrypto.for_client(self.key)
        self.session = session_id(self.key)

    def voice(self, payload: bytes = b"opus", level: int = 30, voice: bool = True) -> bytes:
        self.seq += 1
        return self.crypto.seal(
            MediaHeader(PacketType.DATA, self.session, seq=self.seq, timestamp=self.seq * 960, level=level,
                        voice=voice),
            payload,
        )

    def bind(self) -> bytes:
        return self.crypto.seal_bind(self.session)

    def keepalive(self, timestamp: int = 0) -> bytes:
        return self.crypto.seal(MediaHeader(PacketType.KEEPALIVE, self.session, timestamp=timestamp), b"")

    def answer(self, challenge: bytes) -> bytes:
        """The CHALLENGE answer the SDK sends: the relay's nonce, back under our key."""
        header, nonce = self.crypto.open(challenge)
        assert header.ptype is PacketType.CHALLENGE and header.tinyid == self.tinyid and len(nonce) == CHALLENGE_SIZE
        return self.crypto.seal(MediaHeader(PacketType.CHALLENGE, self.session), nonce)


def join(relay: Relay, room: str, tinyid: int, port: int, bind: bool = True) -> Client:
    client = Client(tinyid, os.urandom(32), ("127.0.0.1", port))
    relay.add_member(room, tinyid, client.key)
    if bind:
        [(ack, to)] = relay.handle_datagram(client.bind(), client.addr, 0.0)
        assert to == client.addr and client.crypto.open(ack)[1] == BIND_MAGIC
    return client


def open_all(clients: dict[Addr, Client], out: list[tuple[bytes, Addr]]) -> dict[int, tuple[int, bytes]]:
    """Listener tinyid -> (speaker tinyid, payload), opened with each listener's own key."""
    got = {}
    for datagram, addr in out:
        listener = clients[addr]
        header, payload = listener.crypto.open(datagram)
        assert header.direction is Direction.SERVER_TO_CLIENT
        assert listener.tinyid not in got
        got[listener.tinyid] = (header.tinyid, payload)
    return got


def test_room_of_five_each_speaker_reaches_the_four_others_only() -> None:
    relay = Relay()
    room = [join(relay, "r1", 100 + i, 5000 + i) for i in range(5)]
    other = [join(relay, "r2", 200 + i, 6000 + i) for i in range(3)]
    by_addr = {c.addr: c for c in room + other}
    for speaker in room:
        payload = os.urandom(80)
        out = relay.handle_datagram(speaker.voice(payload), speaker.addr, 1.0)
        got = open_all(by_addr, out)
        assert set(got) == {c.tinyid for c in room} - {speaker.tinyid}
        assert all(v == (speaker.tinyid, payload) for v in got.values())
    assert relay.counters.forwarded == 20


def test_forwarded_header_keeps_speaker_media_fields() -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    a.seq = 41
    [(datagram, _)] = relay.handle_datagram(a.voice(level=12), a.addr, 0.0)
    header, _ = b.crypto.open(datagram)
    assert (header.tinyid, header.seq, header.timestamp, header.level, header.voice) == (1, 42, 42 * 960, 12, True)


def test_each_listener_gets_its_own_counter_sequence() -> None:
    """Downlink nonces come from the listener's counter, so two speakers never collide under its key."""
    relay = Relay()
    a, b, c = (join(relay, "r", t, t) for t in (1, 2, 3))
    counters = []
    for speaker in (a, b, a, b):
        for datagram, addr in relay.handle_datagram(speaker.voice(), speaker.addr, 0.0):
            if addr == c.addr:
                counters.append(c.crypto.open(datagram)[0].counter)
    assert counters == [1, 2, 3, 4]  # 0 was c's BIND ack


def test_bind_learns_address_and_is_acknowledged() -> None:
    relay = Relay()
    a = join(relay, "r", 1, 1, bind=False)
    b = join(relay, "r", 2, 2)
    assert relay.handle_datagram(a.voice(), a.addr, 0.0) == []  # valid DATA, but no BIND yet
    assert relay.counters.dropped_unknown_addr == 1
    assert relay.handle_datagram(b.voice(), b.addr, 0.0) == []  # a is not reachable yet
    [(ack, to)] = relay.handle_datagram(a.bind(), a.addr, 0.0)
    assert to == a.addr
    header, payload = a.crypto.open(ack)
    assert (header.ptype, payload) == (PacketType.BIND, BIND_MAGIC)
    assert relay.activity(1).addr == a.addr
    assert [to for _, to in relay.handle_datagram(b.voice(), b.addr, 0.0)] == [a.addr]


def test_forged_bind_does_not_learn_an_address() -> None:
    relay = Relay()
    a = join(relay, "r", 1, 1, bind=False)
    impostor = Client(1, os.urandom(32), ("127.0.0.1", 666))
    impostor.session = a.session  # knows (or guessed) the session id, not the key
    assert relay.handle_datagram(impostor.bind(), impostor.addr, 0.0) == []
    assert relay.activity(1).addr is None
    assert relay.counters.dropped_auth == 1
    relay.handle_datagram(a.bind(), a.addr, 0.0)
    assert relay.activity(1).addr == a.addr


def test_a_new_address_is_challenged_and_moves_only_when_it_answers() -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    moved = ("127.0.0.1", 9999)
    stale = a.voice()
    forged = bytearray(a.voice())
    forged[-1] ^= 1
    assert relay.handle_datagram(bytes(forged), moved, 0.0) == []
    assert relay.activity(1).addr == a.addr and relay.counters.challenges == 0
    # Genuine fresh voice from the new address (a NAT rebinding): forwarded, and the address challenged.
    out = relay.handle_datagram(a.voice(), moved, 0.0)
    assert [to for _, to in out] == [moved, b.addr]
    challenge = out[0][0]
    assert relay.activity(1).addr == a.addr and relay.counters.challenges == 1
    assert [to for _, to in relay.handle_datagram(b.voice(), b.addr, 0.0)] == [a.addr]  # still the old one
    # More voice within CHALLENGE_INTERVAL is forwarded without another challenge.
    assert [to for _, to in relay.handle_datagram(a.voice(), moved, 0.1)] == [b.addr]
    # The answer from the new address moves the downlink there, acknowledged with a BIND.
    [(ack, to)] = relay.handle_datagram(a.answer(challenge), moved, 0.1)
    assert to == moved and a.crypto.open(ack)[0].ptype is PacketType.BIND
    assert relay.activity(1).addr == moved and relay.counters.rebinds == 1
    # An older genuine packet still on the old path is accepted as audio but cannot move the address back.
    assert relay.handle_datagram(stale, a.addr, 0.2) == []
    assert relay.activity(1).addr == moved
    assert [to for _, to in relay.handle_datagram(b.voice(), b.addr, 0.2)] == [moved]


def test_a_captured_packet_from_another_socket_moves_nothing() -> None:
    """Issue 9 item 3: one authenticated KEEPALIVE from another socket no longer redirects the
    downlink; the attacker gets one CHALLENGE it cannot read, and no echo."""
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    attacker = ("127.0.0.1", 6666)
    captured = a.keepalive(1234)  # an on-path attacker races the member's own packet
    [(challenge, to)] = relay.handle_datagram(captured, attacker, 1.0)
    assert to == attacker and MediaHeader.unpack(challenge).ptype is PacketType.CHALLENGE
    assert relay.activity(1).addr == a.addr
    assert relay.handle_datagram(captured, a.addr, 1.0) == []  # the member's copy is now a replay
    # The member carries on from its own address: its downlink never moved.
    assert [to for _, to in relay.handle_datagram(b.voice(), b.addr, 1.1)] == [a.addr]
    [(_, to)] = relay.handle_datagram(a.keepalive(), a.addr, 1.1)
    assert to == a.addr
    # A wrong answer (a replayed challenge, or another nonce) from the attacker moves nothing.
    bogus = a.crypto.seal(MediaHeader(PacketType.CHALLENGE, a.session), bytes(CHALLENGE_SIZE))
    assert relay.handle_datagram(bogus, attacker, 1.2) == []
    assert relay.handle_datagram(challenge, attacker, 1.2) == []  # the relay's own datagram sent back
    # Even the member's genuine answer, relayed by the attacker from its socket, is checked against
    # the address it was meant for: answered from the member's address it moves nothing.
    assert relay.handle_datagram(a.answer(challenge), a.addr, 1.3) == []
    assert relay.activity(1).addr == a.addr and relay.counters.rebinds == 0
    assert relay.counters.dropped_challenge == 2


def test_challenges_are_paced_and_bounded_per_member() -> None:
    relay = Relay()
    a = join(relay, "r", 1, 1)
    spots = [("127.0.0.1", 7000 + i) for i in range(MAX_CHALLENGES + 2)]
    first = relay.handle_datagram(a.keepalive(), spots[0], 0.0)
    assert relay.handle_datagram(a.keepalive(), spots[0], CHALLENGE_INTERVAL / 2) == []  # paced
    again = relay.handle_datagram(a.keepalive(), spots[0], CHALLENGE_INTERVAL)
    nonce = a.crypto.open(again[0][0])[1]
    assert a.crypto.open(first[0][0])[1] == nonce  # the same nonce, resent
    for spot in spots[1:]:
        assert len(relay.handle_datagram(a.keepalive(), spot, 1.0)) == 1
    assert relay.counters.challenges == 2 + len(spots) - 1
    # The oldest outstanding challenges were forgotten: their answers move nothing.
    answer = a.crypto.seal(MediaHeader(PacketType.CHALLENGE, a.session), nonce)
    assert relay.handle_datagram(answer, spots[0], 1.1) == []
    assert relay.activity(1).addr == a.addr


def test_an_unreachable_address_gets_nothing_until_it_speaks_again() -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    assert relay.address_unreachable(a.addr) == 1 and relay.counters.unreachable == 1
    assert relay.activity(1).addr is None
    assert relay.handle_datagram(b.voice(), b.addr, 0.0) == []  # nothing goes to a dead port
    # The same address speaking again takes its downlink back at once.
    assert [to for _, to in relay.handle_datagram(a.voice(), a.addr, 0.1)] == [b.addr]
    assert [to for _, to in relay.handle_datagram(b.voice(), b.addr, 0.1)] == [a.addr]
    # Another address after a loss is challenged, like any move.
    relay.address_unreachable(a.addr)
    moved = ("127.0.0.1", 4242)
    [(challenge, to)] = relay.handle_datagram(a.keepalive(), moved, 0.2)
    relay.address_unreachable(moved)  # the challenge bounced too: forgotten
    assert relay.handle_datagram(a.answer(challenge), moved, 0.3) == []
    assert relay.activity(1).addr is None
    [(challenge, _)] = relay.handle_datagram(a.keepalive(), moved, 0.4)
    [(_, to)] = relay.handle_datagram(a.answer(challenge), moved, 0.4)
    assert to == moved and relay.activity(1).addr == moved


def test_packets_name_the_session_id_not_the_guessable_tinyid() -> None:
    relay = Relay()
    a, _ = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    by_tinyid = a.crypto.seal(MediaHeader(PacketType.DATA, 1, level=30), b"opus")
    assert relay.handle_datagram(by_tinyid, a.addr, 0.0) == []
    assert relay.counters.dropped_unknown_member == 1 and relay.counters.dropped_auth == 0
    [(down, _)] = relay.handle_datagram(a.voice(), a.addr, 0.0)
    assert MediaHeader.unpack(down).tinyid == 1  # listeners see the tinyid, never a's session id
    with pytest.raises(SessionIdTaken):
        relay.add_member("r", 3, a.key)


def test_replayed_data_is_dropped_and_counted() -> None:
    relay = Relay()
    a, _ = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    packet = a.voice()
    assert len(relay.handle_datagram(packet, a.addr, 0.0)) == 1
    assert relay.handle_datagram(packet, a.addr, 0.0) == []
    assert relay.counters.dropped_replay == 1 and relay.counters.forwarded == 1


def test_reordered_data_within_window_is_forwarded() -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    packets = [a.voice(bytes([i])) for i in range(10)]
    got = []
    for p in reversed(packets):
        [(datagram, _)] = relay.handle_datagram(p, a.addr, 0.0)
        got.append(b.crypto.open(datagram)[1][0])
    assert got == list(range(9, -1, -1))


def test_muted_member_is_dropped_but_still_hears() -> None:
    relay = Relay()
    a, b, c = (join(relay, "r", t, t) for t in (1, 2, 3))
    relay.set_muted(1, True)
    assert relay.handle_datagram(a.voice(), a.addr, 0.0) == []
    assert relay.counters.dropped_muted == 1
    assert {to for _, to in relay.handle_datagram(b.voice(), b.addr, 0.0)} == {a.addr, c.addr}
    relay.set_muted(1, False)
    assert {to for _, to in relay.handle_datagram(a.voice(), a.addr, 0.0)} == {b.addr, c.addr}


@dataclass
class Teams:
    """A route policy as range/team voice will bring one: answers from its own state, counts its calls."""

    teams: dict[int, str]
    calls: int = 0

    def __call__(self, speaker: int, listener: int) -> bool:
        self.calls += 1
        return self.teams[speaker] == self.teams[listener]


def test_route_policy_decides_who_hears_whom_and_is_asked_only_on_changes() -> None:
    relay = Relay()
    clients = [join(relay, "r", t, t) for t in (1, 2, 3, 4)]
    outsider = join(relay, "elsewhere", 9, 9)
    policy = Teams({1: "red", 2: "red", 3: "blue", 4: "blue", 5: "red"})
    relay.set_route_policy("r", policy)
    assert policy.calls == 4 * 3  # every ordered pair of the room, once
    assert [to for _, to in relay.handle_datagram(clients[0].voice(), clients[0].addr, 0.0)] == [clients[1].addr]
    assert {to for _, to in relay.handle_datagram(clients[3].voice(), clients[3].addr, 0.0)} == {clients[2].addr}
    assert policy.calls == 12  # forwarding asks nothing
    late = join(relay, "r", 5, 5)  # a joiner is routed by the room's policy: 2 calls per other member
    assert policy.calls == 12 + 2 * 4
    assert sorted(relay.listeners(5)) == [1, 2] and 5 in relay.listeners(1) and 5 not in relay.listeners(3)
    policy.teams[5] = "blue"  # one member changes team: only its row and column are asked again
    relay.update_routes(5)
    assert policy.calls == 20 + 2 * 4
    assert sorted(relay.listeners(5)) == [3, 4] and 5 not in relay.listeners(1) and 5 in relay.listeners(4)
    assert {to for _, to in relay.handle_datagram(late.voice(), late.addr, 0.0)} == {clients[2].addr, clients[3].addr}
    relay.remove_member(3)
    assert relay.listeners(5) == [4] and 3 not in relay.listeners(4)
    assert relay.listeners(9) == [] and outsider.tinyid not in relay.listeners(1)  # rooms never mix
    relay.set_route_policy("r", None)
    assert len(relay.handle_datagram(clients[0].voice(), clients[0].addr, 0.0)) == 3


def test_a_route_policy_set_before_anyone_joins_applies_to_the_joiners() -> None:
    relay = Relay()
    relay.set_route_policy("r", Teams({1: "red", 2: "blue", 3: "red", 4: "blue", 5: "blue"}))
    a, _, c = (join(relay, "r", t, t) for t in (1, 2, 3))
    assert [to for _, to in relay.handle_datagram(a.voice(), a.addr, 0.0)] == [c.addr]
    for t in (1, 2, 3):
        relay.remove_member(t)
    d, e = join(relay, "r", 4, 4), join(relay, "r", 5, 5)  # the policy outlives the room's members
    assert [to for _, to in relay.handle_datagram(d.voice(), d.addr, 0.0)] == [e.addr]


def test_unknown_member_wrong_key_and_garbage_are_counted() -> None:
    relay = Relay()
    a, _ = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    stranger = Client(55, os.urandom(32), ("127.0.0.1", 55))
    relay.handle_datagram(stranger.voice(), stranger.addr, 0.0)
    wrong_key = Client(1, os.urandom(32), a.addr)
    wrong_key.session = a.session  # names a's session, sealed with another key
    wrong_key.crypto.send_index = 10  # a fresh index, so it reaches the AEAD rather than the window
    relay.handle_datagram(wrong_key.voice(), a.addr, 0.0)
    relay.handle_datagram(b"\x00" * 5, a.addr, 0.0)
    c = relay.counters
    assert (c.dropped_unknown_member, c.dropped_auth, c.dropped_malformed, c.forwarded) == (1, 1, 1, 0)


def test_speaking_detection_from_the_level_byte() -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    relay.handle_datagram(a.voice(level=25, voice=True), a.addr, 10.0)
    relay.handle_datagram(b.voice(level=90, voice=False), b.addr, 10.0)
    assert relay.speakers("r", 10.2) == [1]
    assert relay.speakers("r", 11.0) == []
    act = relay.activity(2)
    assert (act.level, act.last_voice, act.last_packet) == (90, None, 10.0)
    assert relay.activity(1).level == 25


def test_keepalive_is_echoed_to_the_sender() -> None:
    relay = Relay()
    a = join(relay, "r", 1, 1)
    ka = a.keepalive(1234)
    [(reply, to)] = relay.handle_datagram(ka, a.addr, 3.0)
    header, _ = a.crypto.open(reply)
    assert (to, header.ptype, header.timestamp) == (a.addr, PacketType.KEEPALIVE, 1234)
    assert relay.activity(1).last_packet == 3.0


def test_membership_changes() -> None:
    relay = Relay()
    a, b, c = (join(relay, "r", t, t) for t in (1, 2, 3))
    with pytest.raises(ValueError):
        relay.add_member("x", 1, os.urandom(32))
    with pytest.raises(ValueError):
        relay.add_member("x", 1 << 32, os.urandom(32))
    assert relay.remove_member(2) and not relay.remove_member(2)
    assert relay.members("r") == [1, 3]
    assert [to for _, to in relay.handle_datagram(a.voice(), a.addr, 0.0)] == [c.addr]
    assert relay.handle_datagram(b.voice(), b.addr, 0.0) == []  # session gone
    relay.remove_member(1)
    relay.remove_member(3)
    assert relay.members("r") == []
    with pytest.raises(KeyError):
        relay.set_muted(1, True)


@settings(max_examples=400)
@given(st.binary(max_size=200), st.integers(0, 3))
def test_garbage_never_raises(blob: bytes, splice: int) -> None:
    relay = Relay()
    a, _ = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    # Splice a known session id / valid first byte into some inputs so they reach the AEAD.
    data = bytearray(blob)
    if splice and len(data) >= 16:
        data[8:12] = a.session.to_bytes(4, "big")
        if splice > 1:
            data[0] = 0x41
    before = relay.counters.received
    assert relay.handle_datagram(bytes(data), a.addr, 0.0) == []
    c = relay.counters
    assert c.received == before + 1
    dropped = c.dropped_malformed + c.dropped_unknown_member + c.dropped_auth + c.dropped_replay
    assert dropped == 1


@settings(max_examples=60)
@given(st.permutations(list(range(40))), st.lists(st.integers(0, 39), max_size=20))
def test_any_arrival_order_forwards_each_packet_exactly_once(order: list[int], repeats: list[int]) -> None:
    relay = Relay()
    a, b = join(relay, "r", 1, 1), join(relay, "r", 2, 2)
    packets = [a.voice(bytes([i])) for i in range(40)]
    heard = []
    for i in order + repeats:
        for datagram, _ in relay.handle_datagram(packets[i], a.addr, 0.0):
            heard.append(b.crypto.open(datagram)[1][0])
    assert sorted(heard) == list(range(40))
    assert relay.counters.dropped_replay == len(repeats)


def test_uplink_quality_counts_gaps_in_the_packet_index_per_window() -> None:
    relay = Relay()
    speaker = join(relay, "r1", 1, 5000)  # the BIND is index 0
    join(relay, "r1", 2, 5001)
    for i in range(1, 101):
        datagram = speaker.voice()
        if i % 10 != 5:  # one packet in ten is lost on the way
            relay.handle_datagram(datagram, speaker.addr, 1.0)
    [first] = [q for q in relay.take_uplink_quality() if q.tinyid == 1]
    assert (first.received, first.expected) == (91, 101)
    assert first.loss == pytest.approx(10 / 101)
    assert {q.tinyid for q in relay.take_uplink_quality()} == set()  # nobody sent anything since
    for _ in range(20):
        relay.handle_datagram(speaker.voice(), speaker.addr, 2.0)
    [second] = relay.take_uplink_quality()
    assert (second.tinyid, second.received, second.expected, second.loss) == (1, 20, 20, 0.0)


def test_uplink_quality_ignores_forgeries_and_clamps_late_arrivals() -> None:
    relay = Relay()
    speaker = join(relay, "r1", 1, 5000)
    relay.take_uplink_quality()
    late = speaker.voice()
    relay.handle_datagram(speaker.voice(), speaker.addr, 1.0)
    relay.handle_datagram(b"\x41" + os.urandom(40), speaker.addr, 1.0)
    [q] = relay.take_uplink_quality()
    assert (q.received, q.expected) == (1, 2)
    relay.handle_datagram(late, speaker.addr, 1.5)  # arrives one window late: received, nothing new expected
    [q] = relay.take_uplink_quality()
    assert (q.received, q.expected, q.loss) == (1, 0, 0.0)


def test_a_tapped_room_hands_each_forwarded_voice_packet_on() -> None:
    """Server-side recording's hook: the relay forwards as before and hands the tap what it forwarded."""
    relay = Relay()
    got: list[tuple[int, int, bytes, float]] = []
    relay.set_room_tap("r1", lambda tinyid, header, payload, now: got.append(  # header + an empty tag: a datagram's shape
        (tinyid, MediaHeader.unpack(header + bytes(16)).timestamp, payload, now)))
    a, b = join(relay, "r1", 1, 5001), join(relay, "r1", 2, 5002)
    other = join(relay, "r2", 3, 5003)
    join(relay, "r2", 4, 5004)
    assert len(relay.handle_datagram(a.voice(b"hello"), a.addr, 1.0)) == 1  # b hears it as before
    relay.handle_datagram(other.voice(b"untapped"), other.addr, 1.5)
    relay.set_muted(2, True)
    relay.handle_datagram(b.voice(b"muted"), b.addr, 2.0)  # not forwarded, so not recorded
    assert got == [(1, 960, b"hello", 1.0)]
    relay.remove_member(1)
    relay.remove_member(2)  # the room empties and comes back: the tap is kept for it
    c = join(relay, "r1", 5, 5005)
    join(relay, "r1", 6, 5006)
    relay.handle_datagram(c.voice(b"again"), c.addr, 3.0)
    relay.set_room_tap("r1", None)
    relay.handle_datagram(c.voice(b"after"), c.addr, 4.0)
    assert [g[2] for g in got] == [b"hello", b"again"]
