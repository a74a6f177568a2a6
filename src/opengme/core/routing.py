"""GME's hearing rules for range voice, team voice and server audio routes (pure: no sockets, no clock).

``hears(speaker, listener)`` is the truth table of the reference (§5.2) plus the server audio routes
(§4.6), pair by pair. ``RoomRouting`` holds the members' states of one room, adds the per-listener cap
(at most ``MAX_VOICES`` voices, nearest first) and serves as the relay's per-room ``RoutePolicy``:
``update`` answers whose routes must be rebuilt (``Relay.update_routes``) after a member's state
changed, ``update_pairs`` the route changes themselves (``Relay.set_routes``: what the server uses for
every change after a member's first), and both answer nothing when a member only moved less than
``move_threshold`` since its routes were last decided, so a game calling ``UpdateSelfPosition`` every
frame does not re-decide routes every frame. One member's change is decided against the whole room
on NumPy arrays (``_Table``, the same rules as ``hears``; a test checks them against each other).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum

import numpy as np

from opengme.errors import ErrorCode, GmeError

MAX_VOICES = 20
"""A range-voice listener receives at most this many voices, the nearest first (reference §9)."""
MAX_ROUTE_IDS = 10
"""Server audio route lists hold at most this many openids (reference §4.6)."""

Position = tuple[float, float, float]
Pair = tuple[int, int, bool]
"""A route change: (speaker tinyid, listener tinyid, whether the listener now receives the speaker)."""


class RangeMode(IntEnum):
    """``SetRangeAudioMode``: WORLD hears everyone in range, TEAM only teammates."""

    WORLD = 0
    TEAM = 1


class SendType(IntEnum):
    """Who may hear this member (``SetServerAudioRoute`` send types)."""

    NOT_SEND_TO_ANYONE = 1
    SEND_TO_ALL = 2
    SEND_BLACK_LIST = 3
    SEND_WHITE_LIST = 4


class RecvType(IntEnum):
    """Whom this member may hear (``SetServerAudioRoute`` receive types)."""

    NOT_RECV_FROM_ANYONE = 1
    RECV_FROM_ALL = 2
    RECV_BLACK_LIST = 3
    RECV_WHITE_LIST = 4


def _openids(ids: Iterable[str], what: str) -> frozenset[str]:
    ids = list(ids)
    if len(ids) > MAX_ROUTE_IDS:
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"{what} has {len(ids)} openids; at most {MAX_ROUTE_IDS}")
    if not all(isinstance(i, str) and i for i in ids):
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"{what} must hold non-empty openid strings")
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class AudioRoute:
    """A member's server audio route; the default lets everything through."""

    send_type: SendType = SendType.SEND_TO_ALL
    send_list: frozenset[str] = frozenset()
    recv_type: RecvType = RecvType.RECV_FROM_ALL
    recv_list: frozenset[str] = frozenset()

    @classmethod
    def of(cls, send_type: int, send_list: Iterable[str], recv_type: int, recv_list: Iterable[str]) -> AudioRoute:
        """Validate ``SetServerAudioRoute``'s arguments (1004 with what to fix when wrong)."""
        try:
            send, recv = SendType(send_type), RecvType(recv_type)
        except ValueError:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"send type {send_type!r} and receive type {recv_type!r} must each be 1-4") from None
        return cls(send, _openids(send_list, "the send list"), recv, _openids(recv_list, "the receive list"))

    def sends_to(self, openid: str) -> bool:
        kind = self.send_type
        if kind is SendType.SEND_TO_ALL or kind is SendType.NOT_SEND_TO_ANYONE:
            return kind is SendType.SEND_TO_ALL
        return (openid in self.send_list) == (kind is SendType.SEND_WHITE_LIST)

    def receives_from(self, openid: str) -> bool:
        kind = self.recv_type
        if kind is RecvType.RECV_FROM_ALL or kind is RecvType.NOT_RECV_FROM_ANYONE:
            return kind is RecvType.RECV_FROM_ALL
        return (openid in self.recv_list) == (kind is RecvType.RECV_WHITE_LIST)


@dataclass(frozen=True, slots=True)
class HearingState:
    """What the hearing rules need to know about one member.

    ``entered_with_team`` records whether the member's TeamID was non-zero at EnterRoom: a member who
    entered with TeamID 0 hears only TeamID-0 members, one who switched to 0 later also hears
    WORLD-mode players within its range. ``position`` is None until the first ``UpdateSelfPosition``;
    a member without a position is out of everyone's range.
    """

    openid: str
    team: int = 0
    mode: RangeMode = RangeMode.WORLD
    recv_range: float = 0.0
    position: Position | None = None
    entered_with_team: bool = False
    route: AudioRoute = field(default_factory=AudioRoute)


def distance(a: Position | None, b: Position | None) -> float:
    """Euclidean distance; infinite when either position is unknown."""
    if a is None or b is None:
        return math.inf
    return math.dist(a, b)


def in_range(speaker: HearingState, listener: HearingState) -> bool:
    """Range is judged per listener, with the listener's range (reference §5.2)."""
    return distance(speaker.position, listener.position) <= listener.recv_range


def _rules(speaker: HearingState, listener: HearingState, apart: float) -> bool:
    """The truth table of reference §5.2, without the server audio routes; ``apart`` is their distance."""
    if speaker.team == 0:
        return True  # TeamID 0 is host/broadcast: everyone hears it, whatever their mode
    if listener.team == 0:
        # Entered with 0: hears TeamID-0 members only; switched to 0 later: also WORLD players in range,
        # while in WORLD mode itself (TEAM mode hears teammates only, and its teammates are TeamID 0).
        return (listener.entered_with_team and speaker.mode is RangeMode.WORLD and listener.mode is RangeMode.WORLD
                and apart <= listener.recv_range)
    if speaker.team == listener.team:
        return True  # teammates always hear each other, whatever the distance or mode
    return speaker.mode is RangeMode.WORLD and listener.mode is RangeMode.WORLD and apart <= listener.recv_range


def _hears_at(speaker: HearingState, listener: HearingState, apart: float) -> bool:
    """``hears`` with the distance already known (the incremental updates compute it once per pair)."""
    return (_rules(speaker, listener, apart) and speaker.route.sends_to(listener.openid)
            and listener.route.receives_from(speaker.openid))


def hears(speaker: HearingState, listener: HearingState) -> bool:
    """GME's truth table (reference §5.2) combined with both members' server audio routes (§4.6):
    a route can only take a voice away."""
    return _hears_at(speaker, listener, distance(speaker.position, listener.position))


class _Table:
    """The hearing states of a room as NumPy arrays (one row per member), so that one member's change
    is decided against every other member in a few vector operations; ``hears`` stays the reference
    (the arrays implement the same rules, and the routes, rare, are checked pair by pair)."""

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}  # tinyid -> row
        self._free: list[int] = []
        self._ids = np.zeros(0, np.int64)
        self._pos = np.zeros((0, 3))  # NaN: no position
        self._team = np.zeros(0, np.int64)
        self._world = np.zeros(0, bool)
        self._range = np.zeros(0)
        self._entered = np.zeros(0, bool)
        self._routed = np.zeros(0, bool)  # a server audio route other than the default
        self._alive = np.zeros(0, bool)

    def remove(self, tinyid: int) -> None:
        row = self._rows.pop(tinyid)
        self._alive[row] = False
        self._free.append(row)

    def _row(self, tinyid: int) -> int:
        row = self._rows.get(tinyid)
        if row is None:
            if not self._free:
                size = len(self._ids)
                grow = max(8, size)
                self._free.extend(range(size + grow - 1, size - 1, -1))
                self._ids = np.concatenate([self._ids, np.zeros(grow, np.int64)])
                self._pos = np.concatenate([self._pos, np.full((grow, 3), np.nan)])
                self._team = np.concatenate([self._team, np.zeros(grow, np.int64)])
                self._world = np.concatenate([self._world, np.zeros(grow, bool)])
                self._range = np.concatenate([self._range, np.zeros(grow)])
                self._entered = np.concatenate([self._entered, np.zeros(grow, bool)])
                self._routed = np.concatenate([self._routed, np.zeros(grow, bool)])
                self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
            row = self._rows[tinyid] = self._free.pop()
        return row

    def decide(self, tinyid: int, state: HearingState,
               states: dict[int, HearingState]) -> tuple[dict[int, float], dict[int, float]]:
        """Store ``state``; answer whom it hears and who hears it, each ``{tinyid: distance}``."""
        row = self._row(tinyid)
        self._ids[row] = tinyid
        self._pos[row] = state.position if state.position is not None else np.nan
        self._team[row] = state.team
        self._world[row] = state.mode is RangeMode.WORLD
        self._range[row] = state.recv_range
        self._entered[row] = state.entered_with_team
        self._routed[row] = state.route != _DEFAULT_ROUTE
        self._alive[row] = True
        others = self._alive.copy()
        others[row] = False
        if state.position is None:
            apart = np.full(len(others), np.inf)
        else:
            apart = np.sqrt(np.square(self._pos - self._pos[row]).sum(axis=1))
            apart[np.isnan(apart)] = np.inf
        team, world, in_reach = self._team, self._world, apart <= self._range
        me_world = world[row]
        # Speakers -> this listener (reference §5.2, as _rules with the listener fixed).
        if state.team == 0:
            hears_them = (team == 0) | (self._entered[row] & me_world & world & (apart <= state.recv_range))
        else:
            hears_them = (team == 0) | (team == state.team) | (world & me_world & (apart <= state.recv_range))
        # This speaker -> listeners.
        if state.team == 0:
            heard = np.ones(len(others), bool)
        else:
            heard = np.where(team == 0, self._entered & me_world & world & in_reach,
                             (team == state.team) | (me_world & world & in_reach))
        hears_them &= others
        heard &= others
        found, heard_by = {}, {}
        check_all = bool(self._routed[row])
        for index in np.flatnonzero(hears_them):
            sid = int(self._ids[index])
            if (not check_all and not self._routed[index]) or _routes_allow(states[sid], state):
                found[sid] = float(apart[index])
        for index in np.flatnonzero(heard):
            lid = int(self._ids[index])
            if (not check_all and not self._routed[index]) or _routes_allow(state, states[lid]):
                heard_by[lid] = float(apart[index])
        return found, heard_by


def _routes_allow(speaker: HearingState, listener: HearingState) -> bool:
    return speaker.route.sends_to(listener.openid) and listener.route.receives_from(speaker.openid)


_DEFAULT_ROUTE = AudioRoute()


class RoomRouting:
    """The hearing states of one room's members by tinyid, and the relay's ``RoutePolicy`` for it.

    ``policy(speaker, listener)`` answers from a per-listener cache of the voices it receives (the
    nearest ``max_voices`` of those the rules let through); ``update``/``remove`` invalidate it and say
    which tinyids the relay must call ``update_routes`` for.
    """

    def __init__(self, move_threshold: float = 1.0, max_voices: int = MAX_VOICES) -> None:
        if not move_threshold >= 0:
            raise ValueError(f"move_threshold {move_threshold!r} must be >= 0")
        if max_voices < 1:
            raise ValueError(f"max_voices {max_voices!r} must be >= 1")
        self.move_threshold = move_threshold
        self.max_voices = max_voices
        self._states: dict[int, HearingState] = {}
        self._audible: dict[int, list[tuple[float, int]]] = {}  # listener -> (distance, speaker), sorted
        self._distances: dict[int, dict[int, float]] = {}  # listener -> {audible speaker: its entry's distance}
        self._heard: dict[int, frozenset[int]] = {}  # listener -> the speakers it receives (cache)
        self._hearers: dict[int, set[int]] = {}  # speaker -> the listeners whose audible list holds it
        self._table = _Table()  # the states as arrays: one member's change is decided for all pairs at once

    def state(self, tinyid: int) -> HearingState | None:
        return self._states.get(tinyid)

    def tinyids(self) -> list[int]:
        """The members with a state."""
        return list(self._states)

    def voices(self, listener: int) -> frozenset[int]:
        """The speakers a registered listener receives (at most ``max_voices``, nearest first)."""
        return self._voices(listener) if listener in self._states else frozenset()

    def policy(self, speaker: int, listener: int) -> bool:
        """The relay's ``RoutePolicy``; members without a state (not yet registered) hear everyone."""
        voices = self._heard.get(listener)
        if voices is None:
            if listener not in self._states:
                return True
            voices = self._voices(listener)
        return speaker in voices or speaker not in self._states

    def update(self, tinyid: int, state: HearingState) -> set[int]:
        """Set a member's state; returns the tinyids whose routes must be rebuilt (empty when nothing
        that matters changed, such as a move shorter than ``move_threshold``)."""
        decided = self._decided(tinyid, state)
        return set() if decided is None else self._change(tinyid, decided)[0]

    def update_pairs(self, tinyid: int, state: HearingState) -> list[Pair] | None:
        """As ``update``, but answers the route changes themselves, ``(speaker, listener, hears)``, for
        ``Relay.set_routes``: a move costs the pairs that changed, not a rebuild. None when the member
        had no state yet (it heard and was heard by everyone): rebuild what ``update`` names then."""
        if tinyid not in self._states:
            return None
        decided = self._decided(tinyid, state)
        return [] if decided is None else self._change(tinyid, decided)[1]

    def remove(self, tinyid: int) -> set[int]:
        """Forget a member (after it left); returns the remaining tinyids whose routes must be rebuilt."""
        if tinyid not in self._states:
            return set()
        return self._change(tinyid, None)[0] - {tinyid}

    def _decided(self, tinyid: int, state: HearingState) -> HearingState | None:
        """The state to decide on (a move shorter than the threshold keeps the decided position), or
        None when that is the state already decided."""
        old = self._states.get(tinyid)
        if old is None:
            return state
        if (old.position is not None and state.position is not None
                and math.dist(old.position, state.position) < self.move_threshold):
            state = replace(state, position=old.position)  # too small a move: keep the decided one
        return None if state == old else state

    def _change(self, tinyid: int, state: HearingState | None) -> tuple[set[int], list[Pair]]:
        """Apply one member's change incrementally: its own audible list from scratch, its entry in the
        lists of the listeners that heard it or hear it now (the rules decided for all pairs at once on
        ``_Table``'s arrays). Another listener's capped selection changes other than by this member
        only when this member crossed the cap (entered or left its nearest ``max_voices``) while enough
        others were audible. Returns the tinyids whose routes changed (this member's always) and the
        pairs that changed."""
        changed = {tinyid}
        cap = self.max_voices
        before = self._voices(tinyid) if tinyid in self._audible else frozenset()
        self._heard.pop(tinyid, None)
        heard_by: dict[int, float] = {}  # listener -> distance, for the listeners that hear it now
        for speaker in self._distances.get(tinyid, {}):  # it no longer listens as it did
            self._hearers[speaker].discard(tinyid)
        if state is None:
            del self._states[tinyid], self._audible[tinyid], self._distances[tinyid]
            self._table.remove(tinyid)
            pairs: list[Pair] = []
        else:
            self._states[tinyid] = state
            found, heard_by = self._table.decide(tinyid, state, self._states)
            for speaker in found:
                self._hearers.setdefault(speaker, set()).add(tinyid)
            self._distances[tinyid] = found
            self._audible[tinyid] = sorted((d, sid) for sid, d in found.items())
            after = self._voices(tinyid)
            pairs = [(sid, tinyid, sid in after) for sid in before ^ after]
        hearers = self._hearers.pop(tinyid, set())
        if state is not None:
            self._hearers[tinyid] = set(heard_by)
        for lid in hearers | heard_by.keys():
            if lid == tinyid:
                continue
            audible, found = self._audible[lid], self._distances[lid]
            was_in = now_in = False
            old = found.pop(tinyid, None)
            if old is not None:
                at = bisect.bisect_left(audible, (old, tinyid))
                was_in = at < cap
                del audible[at]
            apart = heard_by.get(lid)
            if apart is not None:
                entry = (apart, tinyid)
                at = bisect.bisect_left(audible, entry)
                now_in = at < cap
                audible.insert(at, entry)
                found[tinyid] = apart
            if was_in != now_in:
                self._heard.pop(lid, None)
                pairs.append((tinyid, lid, now_in))
                if len(audible) - (tinyid in found) >= cap:
                    changed.add(lid)  # the cap-th nearest other speaker was pushed out or pulled in
                    pairs.append((audible[cap][1], lid, False) if now_in else (audible[cap - 1][1], lid, True))
        return changed, pairs

    def _voices(self, listener: int) -> frozenset[int]:
        voices = self._heard.get(listener)
        if voices is None:
            voices = self._heard[listener] = frozenset(sid for _, sid in self._audible[listener][:self.max_voices])
        return voices
