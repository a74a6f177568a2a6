"""The media relay core: authenticate, route and re-seal voice datagrams (pure: no sockets, no clock).

The UDP server (``server.media``) feeds every datagram to ``Relay.handle_datagram`` with the sender
address and the current time, and sends what comes back. The relay never decodes audio: it opens
the sender's packet with the sender's key, then seals one copy per listener with that listener's
key and counter, keeping the speaker's tinyid, sequence, timestamp and audio level in the header.

Members are found by the header's session id (``protocol.media.session_id`` of their key), not by
their public, sequential tinyid: a datagram that names no session costs one dict lookup, so forging
datagrams for a member means guessing 32 random bits first. Downlink headers carry the speaker's
tinyid instead (the relay rewrites the field), so listeners never learn another member's session id.

Address rules (WireGuard roaming / ICE consent, docs/protocol.md "Media"): a member's UDP address is
unknown until an authenticated BIND arrives from it (the relay acknowledges each BIND, so the client
knows the path works). After that, an authenticated packet that advances the member's packet index
from another address does not move anything: the relay sends a CHALLENGE (a random nonce, sealed with
the member's key) to that address, at most every CHALLENGE_INTERVAL per address, and moves the
member's downlink only when the matching CHALLENGE answer comes back from there (then acknowledges
it with a BIND). Voice from the new address is forwarded meanwhile (it is authentic and fresh), so a
client whose NAT rebinds keeps talking and hears again one round trip later. ``address_unreachable``
(the shell calls it for ICMP errors) stops sending to an address; a packet from that address brings
it back, one from another address is challenged. Forged, replayed or stale packets never move or
challenge anything. Nothing that arrives from the network can make ``handle_datagram`` raise.

Routing: each speaker keeps its route table, the list of members that hear it. Tables are rebuilt
only when something they depend on changes (a member joins or leaves, a room's ``RoutePolicy`` is set,
or ``update_routes`` says one member's hearing rules changed), and only for the members concerned, so
the per-packet path never asks a policy anything. Server mute is a flag of the speaker checked once per
packet (its drops are counted apart), not a route.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opengme.core.custom_data import MAX_CUSTOM_DATA, RELAY_MIN_INTERVAL_S
from opengme.protocol.media import (
    BIND_MAGIC,
    CHALLENGE_SIZE,
    DIRECTION_BIT,
    HEADER_SIZE,
    TYPE_MASK,
    VERSION,
    DropReason,
    MediaCrypto,
    MediaPacketError,
    PacketType,
    session_id,
)

Addr = tuple[str, int]
Outgoing = list[tuple[bytes, Addr]]
RoomTap = Callable[[int, bytes, bytes, float], None]
"""``(speaker tinyid, uplink header, Opus payload, now)``, called for each voice packet of a tapped room
that the relay forwards (server-side recording). It must only hand the packet on (an append): it runs
on the hot path."""
RoutePolicy = Callable[[int, int], bool]
"""``(speaker tinyid, listener tinyid) -> hears`` within one room: the hook for hearing rules (teams,
range, blocked speakers). Asked only when route tables are rebuilt, never per packet; it must answer
from its own state, without calling back into the relay."""
VoiceTap = Callable[[bytes, bool], None]
"""``(Opus payload, voice bit)`` of one speaker's forwarded voice: live captions listen through it.
Like :data:`RoomTap` it must only keep the payload for later work."""
LinkTap = Callable[[bytes, bytes], None]
"""``(uplink header, Opus payload)`` of a speaker whose room-sharing partner's room is served by another
relay (``opengme serve --workers N``): that relay's :meth:`Relay.inject` forwards it there."""

_DATA = int(PacketType.DATA)
_BIND = int(PacketType.BIND)
_KEEPALIVE = int(PacketType.KEEPALIVE)
_CHALLENGE = int(PacketType.CHALLENGE)
_CUSTOM = int(PacketType.CUSTOM)
_DOWNLINK_FIRST = tuple(bytes((b | DIRECTION_BIT,)) for b in range(256))
_DOWNLINK_BIND = bytes(((VERSION << 6) | DIRECTION_BIT | _BIND,))
_DOWNLINK_CHALLENGE = bytes(((VERSION << 6) | DIRECTION_BIT | _CHALLENGE,))
CHALLENGE_INTERVAL = 0.25
"""Seconds between two CHALLENGEs to the same new address of a member (so a burst of voice from a
rebound NAT port costs one challenge, and the relay never answers a packet with more than one)."""
MAX_CHALLENGES = 4
"""New addresses with a challenge outstanding, per member; the least recently challenged goes first."""


class SessionIdTaken(ValueError):
    """Another member's key gives the same session id: draw another key."""


@dataclass(slots=True)
class RelayCounters:
    """Packets seen and why dropped; ``forwarded`` counts datagrams sent to listeners."""

    received: int = 0
    forwarded: int = 0
    replies: int = 0
    challenges: int = 0  # CHALLENGEs sent to new addresses
    rebinds: int = 0  # addresses moved after a CHALLENGE was answered
    unreachable: int = 0  # addresses given up after an ICMP error
    dropped_malformed: int = 0
    dropped_unknown_member: int = 0
    dropped_unknown_addr: int = 0
    dropped_auth: int = 0
    dropped_replay: int = 0
    dropped_muted: int = 0
    dropped_challenge: int = 0  # an answer to no outstanding challenge
    dropped_custom: int = 0  # custom data too large or too frequent (RELAY_MIN_INTERVAL_S)


@dataclass(frozen=True, slots=True)
class MemberActivity:
    """A member's media state for speaking detection (times are the ``now`` values passed in)."""

    tinyid: int
    room_id: str
    addr: Addr | None
    muted: bool
    level: int
    last_voice: float | None
    last_packet: float | None


@dataclass(frozen=True, slots=True)
class UplinkQuality:
    """One member's uplink over a report window: authenticated packets that arrived, and how many it
    sent (the advance of its packet index, which every packet type consumes, so gaps are losses)."""

    tinyid: int
    received: int
    expected: int

    @property
    def loss(self) -> float:
        """Fraction lost, 0-1 (late packets counted in a later window can only lower it, never below 0)."""
        return max(0.0, 1.0 - self.received / self.expected) if self.expected > 0 else 0.0


class _Member:
    __slots__ = (
        "addr",
        "challenges",
        "crypto",
        "last_custom",
        "last_packet",
        "last_voice",
        "level",
        "link_tap",
        "listeners",
        "lost",
        "muted",
        "received",
        "report_top",
        "room",
        "session",
        "tap",
        "tinyid",
        "wire_tinyid",
    )

    def __init__(self, tinyid: int, session: int, room: _Room, crypto: MediaCrypto) -> None:
        self.tinyid = tinyid
        self.session = session
        self.wire_tinyid = tinyid.to_bytes(4)  # the header id field on the way down
        self.room = room
        self.crypto = crypto
        self.listeners: list[_Member] = []  # this speaker's route table: who hears it
        self.addr: Addr | None = None
        self.lost: Addr | None = None  # the address given up after an ICMP error
        self.challenges: dict[Addr, tuple[bytes, float]] = {}  # new address -> (nonce, last sent), LRU first
        self.muted = False
        self.level = 127
        self.last_voice: float | None = None
        self.last_packet: float | None = None
        self.last_custom = float("-inf")  # when its last CUSTOM datagram was forwarded
        self.received = 0  # authenticated packets since the last quality report
        self.report_top = -1  # the packet index window's top at the last quality report
        self.tap: VoiceTap | None = None  # live captions: hears the speaker's Opus payloads (set_voice_tap)
        self.link_tap: LinkTap | None = None  # room sharing into a room another relay serves (set_link_tap)


class _Room:
    __slots__ = ("members", "room_id", "tap")

    def __init__(self, room_id: str, tap: RoomTap | None) -> None:
        self.room_id = room_id
        self.members: list[_Member] = []  # in joining order
        self.tap = tap  # gets each forwarded voice packet of the room (server-side recording)


def _head(first: bytes, data: bytes, member: _Member) -> bytes:
    """The first 14 bytes of a downlink header answering ``data``: our first byte, the uplink's media
    fields, the member's tinyid in place of its session id."""
    return b"".join((first, data[1:8], member.wire_tinyid, data[12:14]))


def _everyone(speaker: int, listener: int) -> bool:
    """The policy of a room that has none: every member hears every other one."""
    return True


def _table(speaker: _Member, hears: RoutePolicy) -> list[_Member]:
    """A speaker's route table from scratch, in joining order."""
    return [m for m in speaker.room.members if m is not speaker and hears(speaker.tinyid, m.tinyid)]


class Relay:
    """Sessions ``{tinyid: member}`` and rooms ``{room_id: members}`` plus the per-datagram hot path."""

    def __init__(self, window: int = 128, random: Callable[[int], bytes] = os.urandom) -> None:
        self._window = window
        self._random = random  # challenge nonces
        self._members: dict[int, _Member] = {}
        self._sessions: dict[int, _Member] = {}  # by session id: the hot path's lookup
        self._rooms: dict[str, _Room] = {}
        self._policies: dict[str, RoutePolicy] = {}  # by room id; outlive the room's members
        self._links: dict[int, int] = {}  # room sharing: tinyid -> the linked member in another room
        self._taps: dict[str, RoomTap] = {}  # by room id, likewise
        self.counters = RelayCounters()

    # -- membership (called by signalling) ---------------------------------------------------

    def add_member(self, room_id: str, tinyid: int, key: bytes) -> int:
        """Open a media session; the key is the one signalling handed to the member on entry.
        Returns the session id; raises SessionIdTaken when another member's key gives the same one."""
        if not 0 <= tinyid <= 0xFFFFFFFF:
            raise ValueError(f"tinyid {tinyid} is not a u32")
        if tinyid in self._members:
            raise ValueError(f"tinyid {tinyid} already has a media session")
        session = session_id(key)
        if session in self._sessions:
            raise SessionIdTaken(f"session id {session:#010x} is taken; draw another key")
        crypto = MediaCrypto.for_server(key, self._window)
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id, self._taps.get(room_id))
        member = _Member(tinyid, session, room, crypto)
        room.members.append(member)
        self._members[tinyid] = member
        self._sessions[session] = member
        self._route(member)
        self._relink_room(room_id)
        return session

    def remove_member(self, tinyid: int) -> bool:
        """Close a session (exit, kick, room switch); False if there was none."""
        member = self._members.pop(tinyid, None)
        if member is None:
            return False
        del self._sessions[member.session]
        room = member.room
        room.members.remove(member)
        for other in room.members:
            if member in other.listeners:
                other.listeners.remove(member)
        if not room.members:
            del self._rooms[room.room_id]
        self.unlink(tinyid)
        self._relink_room(room.room_id)
        return True

    def set_muted(self, tinyid: int, muted: bool) -> None:
        """Server-side mute: the member still hears, but its voice is dropped."""
        self._member(tinyid).muted = muted

    def set_room_tap(self, room_id: str, tap: RoomTap | None) -> None:
        """Hand the room's voice packets to ``tap`` from now on (None: stop); kept while the room is empty."""
        if tap is None:
            self._taps.pop(room_id, None)
        else:
            self._taps[room_id] = tap
        room = self._rooms.get(room_id)
        if room is not None:
            room.tap = tap

    # -- routes (who hears whom) -------------------------------------------------------------

    def set_voice_tap(self, tinyid: int, tap: VoiceTap | None) -> None:
        """Hand every voice payload of ``tinyid`` (and its voice bit) to ``tap`` as it is forwarded, or stop.
        The tap runs on the relay's path: it must only keep the payload for later work."""
        member = self._members.get(tinyid)
        if member is not None:
            member.tap = tap

    def set_link_tap(self, tinyid: int, tap: LinkTap | None) -> None:
        """Room sharing with a member another relay serves: hand ``tinyid``'s voice packets to ``tap``
        (which carries them to that relay's :meth:`inject`), or stop."""
        member = self._members.get(tinyid)
        if member is not None:
            member.link_tap = tap

    def inject(self, tinyid: int, header: bytes, payload: bytes, room_id: str) -> Outgoing:
        """The voice packet of speaker ``tinyid``, linked into ``room_id`` by room sharing but served by
        another relay (which authenticated it): sealed for every member of the room, as a linked
        speaker's voice reaches its partner's room here."""
        room = self._rooms.get(room_id)
        if room is None or len(header) < HEADER_SIZE or header[0] & TYPE_MASK != _DATA:
            return []
        head = b"".join((_DOWNLINK_FIRST[header[0]], header[1:8], tinyid.to_bytes(4), header[12:14]))
        out = [(listener.crypto.seal_raw(head, tinyid, payload), listener.addr)
               for listener in room.members if listener.addr is not None and listener.tinyid != tinyid]
        self.counters.forwarded += len(out)
        return out

    def set_route_policy(self, room_id: str, policy: RoutePolicy | None) -> None:
        """Give a room its hearing rules (None: everyone hears everyone) and rebuild its route tables.
        The policy stays with the room id until replaced, also while the room is empty."""
        if policy is None:
            self._policies.pop(room_id, None)
        else:
            self._policies[room_id] = policy
        room = self._rooms.get(room_id)
        if room is not None:
            for speaker in room.members:
                speaker.listeners = _table(speaker, policy or _everyone) + self._shared(speaker)

    def update_routes(self, tinyid: int) -> None:
        """Rebuild the routes from and to one member, after its answers in the room's policy changed
        (its team, its position, whom it blocks): 2 × (room size − 1) policy calls."""
        self._route(self._member(tinyid))

    def set_routes(self, pairs: Iterable[tuple[int, int, bool]]) -> None:
        """Apply route changes pair by pair, ``(speaker, listener, hears)`` (``RoomRouting.update_pairs``):
        what a move costs when the policy can say exactly which pairs it changed. Unknown tinyids are
        skipped (a member that left meanwhile)."""
        members = self._members
        for speaker_id, listener_id, on in pairs:
            speaker, listener = members.get(speaker_id), members.get(listener_id)
            if speaker is None or listener is None or speaker is listener or speaker.room is not listener.room:
                continue
            routed = listener in speaker.listeners
            if on and not routed:
                speaker.listeners.append(listener)
            elif routed and not on:
                speaker.listeners.remove(listener)

    def listeners(self, tinyid: int) -> list[int]:
        """The tinyids that hear this member now (its route table), bound to an address or not."""
        return [m.tinyid for m in self._member(tinyid).listeners]

    def _route(self, member: _Member) -> None:
        room = member.room
        hears = self._policies.get(room.room_id, _everyone)
        tinyid = member.tinyid
        member.listeners = _table(member, hears) + self._shared(member)
        for other in room.members:
            if other is member:
                continue
            routed = member in other.listeners
            if bool(hears(other.tinyid, tinyid)) != routed:
                (other.listeners.remove if routed else other.listeners.append)(member)

    # -- room sharing (issue 16: GME's cross-room talk) -----------------------------------------

    def link(self, a: int, b: int) -> None:
        """Room sharing: members ``a`` and ``b`` of two rooms are linked, so each one's voice also
        reaches every member of the other's room (hearing rules apply within rooms only). A member
        has one link; a new one replaces it."""
        first, second = self._member(a), self._member(b)
        if first.room is second.room:
            raise ValueError("room sharing links members of two different rooms")
        self.unlink(a)
        self.unlink(b)
        self._links[a], self._links[b] = b, a
        self._route(first)
        self._route(second)

    def unlink(self, tinyid: int) -> int | None:
        """End ``tinyid``'s room sharing; the member it was linked to, if any."""
        other = self._links.pop(tinyid, None)
        if other is None:
            return None
        self._links.pop(other, None)
        for t in (tinyid, other):
            if t in self._members:
                self._route(self._members[t])
        return other

    def linked(self, tinyid: int) -> int | None:
        return self._links.get(tinyid)

    def _shared(self, speaker: _Member) -> list[_Member]:
        """The members of the room ``speaker`` is linked into (none without a link)."""
        other = self._members.get(self._links.get(speaker.tinyid, -1))
        return [] if other is None else list(other.room.members)

    def _relink_room(self, room_id: str) -> None:
        """The room's members changed: the tables of speakers linked into it follow."""
        for tinyid, other in self._links.items():
            partner = self._members.get(other)
            if partner is not None and partner.room.room_id == room_id and tinyid in self._members:
                speaker = self._members[tinyid]
                speaker.listeners = _table(speaker, self._policies.get(speaker.room.room_id, _everyone)) + \
                    self._shared(speaker)

    def member_ids(self) -> list[int]:
        """Every member with a media session (a relay worker reports their activity)."""
        return list(self._members)

    def members(self, room_id: str) -> list[int]:
        room = self._rooms.get(room_id)
        return [m.tinyid for m in room.members] if room else []

    def activity(self, tinyid: int) -> MemberActivity:
        m = self._member(tinyid)
        return MemberActivity(m.tinyid, m.room.room_id, m.addr, m.muted, m.level, m.last_voice, m.last_packet)

    def speakers(self, room_id: str, now: float, hold: float = 0.5) -> list[int]:
        """Members whose voice-activity bit was set within ``hold`` seconds (HAS_AUDIO detection)."""
        room = self._rooms.get(room_id)
        if room is None:
            return []
        return [m.tinyid for m in room.members if m.last_voice is not None and now - m.last_voice <= hold]

    def take_uplink_quality(self) -> list[UplinkQuality]:
        """Per member that sent anything since the previous call: received vs expected packets.
        Starts a new report window (the server calls it every few seconds)."""
        report = []
        for member in self._members.values():
            if member.received:
                top = member.crypto.window.top
                report.append(UplinkQuality(member.tinyid, member.received, top - member.report_top))
                member.received = 0
                member.report_top = top
        return report

    def address_unreachable(self, addr: Addr) -> int:
        """An ICMP error said nothing listens at ``addr``: stop sending there (downlink and challenges)
        until a packet comes from it again. Returns how many members were sending there."""
        marked = 0
        for member in self._members.values():
            member.challenges.pop(addr, None)
            if member.addr == addr:
                member.lost, member.addr = addr, None
                marked += 1
        self.counters.unreachable += marked
        return marked

    def _member(self, tinyid: int) -> _Member:
        member = self._members.get(tinyid)
        if member is None:
            raise KeyError(f"no media session for tinyid {tinyid}")
        return member

    # -- hot path ----------------------------------------------------------------------------

    def handle_datagram(self, data: bytes, addr: Addr, now: float) -> Outgoing:
        """Process one received datagram; returns the datagrams to send. Never raises for bad input."""
        counters = self.counters
        counters.received += 1
        if len(data) < HEADER_SIZE:
            counters.dropped_malformed += 1
            return []
        member = self._sessions.get(int.from_bytes(data[8:12]))
        if member is None:
            counters.dropped_unknown_member += 1
            return []
        crypto = member.crypto
        ptype = data[0] & TYPE_MASK
        new_path = addr != member.addr
        if new_path and member.addr is None and member.lost is None and ptype != _BIND:
            counters.dropped_unknown_addr += 1
            return []
        top_before = crypto.window.top
        try:
            payload = crypto.open_payload(data)
        except MediaPacketError as exc:
            reason = exc.reason
            if reason is DropReason.AUTH:
                counters.dropped_auth += 1
            elif reason is DropReason.REPLAY:
                counters.dropped_replay += 1
            else:
                counters.dropped_malformed += 1
            return []
        member.received += 1
        out: Outgoing = []
        if new_path:
            if crypto.window.top == top_before:
                counters.dropped_unknown_addr += 1  # genuine but late packet from a path left behind
                return []
            if member.addr is None and member.lost in (None, addr):
                member.addr, member.lost = addr, None  # the first BIND, or the address that failed is back
            else:
                out = self._new_path(member, ptype, payload, addr, now, data)
                if ptype != _DATA:
                    return out
        member.last_packet = now
        if ptype == _DATA:
            if member.muted:
                counters.dropped_muted += 1
                return out
            level = data[12]
            member.level = level & 0x7F
            if level & 0x80:
                member.last_voice = now
            if member.tap is not None:
                member.tap(payload, level >= 0x80)
            if member.link_tap is not None:
                member.link_tap(data[:HEADER_SIZE], payload)
            head = b"".join((_DOWNLINK_FIRST[data[0]], data[1:8], member.wire_tinyid, data[12:14]))  # = _head
            tinyid = member.tinyid
            sent = len(out)
            for listener in member.listeners:
                to = listener.addr
                if to is not None:
                    out.append((listener.crypto.seal_raw(head, tinyid, payload), to))
            counters.forwarded += len(out) - sent
            tap = member.room.tap
            if tap is not None:
                tap(tinyid, data[:HEADER_SIZE], payload, now)
            return out
        if ptype == _CUSTOM:
            return self._custom(member, data, payload, now, out)
        if ptype == _KEEPALIVE or (ptype == _BIND and payload == BIND_MAGIC):
            counters.replies += 1
            return [(crypto.seal_raw(_head(_DOWNLINK_FIRST[data[0]], data, member), member.tinyid, payload), addr)]
        if ptype == _CHALLENGE:
            counters.dropped_challenge += 1  # an answer from the current address: it moved already
        else:
            counters.dropped_malformed += 1
        return []

    def _custom(self, member: _Member, data: bytes, payload: bytes, now: float, out: Outgoing) -> Outgoing:
        """Custom data goes where the member's voice goes, within its size and rate limits (a muted
        member's is dropped like its voice); the relay does not read it further."""
        counters = self.counters
        if member.muted:
            counters.dropped_muted += 1
            return out
        if len(payload) > MAX_CUSTOM_DATA + 1 or now - member.last_custom < RELAY_MIN_INTERVAL_S:
            counters.dropped_custom += 1
            return out
        member.last_custom = now
        head = _head(_DOWNLINK_FIRST[data[0]], data, member)
        sent = len(out)
        for listener in member.listeners:
            if listener.addr is not None:
                out.append((listener.crypto.seal_raw(head, member.tinyid, payload), listener.addr))
        counters.forwarded += len(out) - sent
        return out

    def _new_path(self, member: _Member, ptype: int, payload: bytes, addr: Addr, now: float,
                  data: bytes) -> Outgoing:
        """An authentic, fresh packet from an address that is not the member's: the answer to our
        challenge moves the member there, anything else earns that address a challenge."""
        counters, crypto = self.counters, member.crypto
        pending = member.challenges.pop(addr, None)
        if ptype == _CHALLENGE:
            if pending is None or payload != pending[0]:
                if pending is not None:
                    member.challenges[addr] = pending
                counters.dropped_challenge += 1
                return []
            member.challenges.clear()
            counters.rebinds += 1
            member.addr, member.lost = addr, None
            return [(crypto.seal_raw(_head(_DOWNLINK_BIND, data, member), member.tinyid, BIND_MAGIC), addr)]
        if pending is not None and now - pending[1] < CHALLENGE_INTERVAL:
            member.challenges[addr] = pending
            return []
        if len(member.challenges) >= MAX_CHALLENGES:
            del member.challenges[next(iter(member.challenges))]
        nonce = pending[0] if pending is not None else self._random(CHALLENGE_SIZE)
        member.challenges[addr] = (nonce, now)
        counters.challenges += 1
        return [(crypto.seal_raw(_head(_DOWNLINK_CHALLENGE, data, member), member.tinyid, nonce), addr)]
