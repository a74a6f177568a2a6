"""GME's hearing rules for range voice, team voice and server audio routes (pure: no sockets, no clock).

``hears(speaker, listener)`` is the truth table of the reference (§5.2) plus the server audio routes
(§4.6), pair by pair. ``RoomRouting`` holds the members' states of one room, adds the per-listener cap
(at most ``MAX_VOICES`` voices, nearest first) and serves as the relay's per-room ``RoutePolicy``:
``update`` answers whose routes must be rebuilt (``Relay.update_routes``) after a member's state
changed, and nothing when a member only moved less than ``move_threshold`` since its routes were last
decided, so a game calling ``UpdateSelfPosition`` every frame does not rebuild routes every frame.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum

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
        """Apply one member's change incrementally: its own audible list from scratch, its entry in
        every other listener's list. Another listener's capped selection changes other than by this
        member only when this member crossed the cap (entered or left its nearest ``max_voices``) while
        enough others were audible. Returns the tinyids whose routes changed (this member's always)
        and the pairs that changed."""
        changed = {tinyid}
        cap = self.max_voices
        before = self._voices(tinyid) if tinyid in self._audible else frozenset()
        self._heard.pop(tinyid, None)
        if state is None:
            del self._states[tinyid], self._audible[tinyid], self._distances[tinyid]
            pairs: list[Pair] = []
        else:
            self._states[tinyid] = state
            here, found = state.position, {}
            for sid, other in self._states.items():
                apart = distance(other.position, here)
                if sid != tinyid and _hears_at(other, state, apart):
                    found[sid] = apart
            self._distances[tinyid] = found
            self._audible[tinyid] = sorted((d, sid) for sid, d in found.items())
            after = self._voices(tinyid)
            pairs = [(sid, tinyid, sid in after) for sid in before ^ after]
        for lid, audible in self._audible.items():
            if lid == tinyid:
                continue
            found = self._distances[lid]
            was_in = now_in = False
            old = found.pop(tinyid, None)
            if old is not None:
                at = bisect.bisect_left(audible, (old, tinyid))
                was_in = at < cap
                del audible[at]
            listener = self._states[lid]
            apart = distance(state.position, listener.position) if state is not None else math.inf
            if state is not None and _hears_at(state, listener, apart):
                entry = (apart, tinyid)
                at = bisect.bisect_left(audible, entry)
                now_in = at < cap
                audible.insert(at, entry)
                found[tinyid] = entry[0]
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
