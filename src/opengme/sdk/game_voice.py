"""Game voice in the SDK: range and team voice, server audio routes, and the 3D scene's inputs.

``GameVoice`` is a part of one Context's core (``SdkCore.game_voice``); the facades' calls
(``Context.set_range_audio_team_id``, ``Room.set_range_audio_mode`` / ``update_audio_recv_range`` /
``update_self_position`` / ``set_server_audio_route`` / ``get_current_*_audio_route``, the
``AudioCtrl`` spatializer calls) validate their arguments and land here.

- The server decides who hears whom (``opengme.core.game_voice``). This part tells it the member's
  team, mode, range and position in ``game_state`` requests: only what changed, at most
  ``GAME_STATE_RATE`` a second (a game calls ``update_self_position`` every frame; ``poll`` sends
  the latest one when its turn comes). Right after every entry (enter, switch, reconnect) it sends
  the whole state with ``entry`` set, so the server knows the team at EnterRoom (GME's TeamID-0
  rule); nothing when everything is at GME's defaults.
- Team and mode survive leaving the room (GME); range, position and the server audio route do not.
- Events: CHANGE_TEAM_ID (1095) when the server applied (or refused) a team change made in a room,
  ``{result, error_info, team_id}``, and when it refused the team a member entered with (1004: a
  non-zero team outside a FLUENCY room); SERVER_AUDIO_ROUTE_EVENT (1091) ``{result, sub_type,
  error_info}`` for each ``set_server_audio_route`` (1001 when the route was already set).
- 3D: the server pushes the positions of the voices this member receives; they feed the
  ``Spatial3D`` scene the downlink's voice stage renders.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any

from opengme.core.game_voice import audio_route, game_state
from opengme.core.routing import AudioRoute, Position, RangeMode
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType, RoomType
from opengme.protocol.messages import GAME_STATE_RATE, MAX_COORDINATE
from opengme.sdk.session import Pending, Phase, RoomState, outcome
from opengme.sdk.spatializer import DEFAULT_AXES, Spatial3D

if TYPE_CHECKING:
    from opengme.sdk.core import SdkCore

log = logging.getLogger("opengme.sdk")
TEAM_CHANGE, ENTRY_TEAM = "change", "entry"  # what a sent game_state asks of the team (None: nothing)

ROUTE_SUB_TYPE = 0
"""``sub_type`` of SERVER_AUDIO_ROUTE_EVENT: GME does not document its values; OpenGME sends 0 ("set")."""


def vector(value: object) -> Position | None:
    """Three finite numbers within the protocol's bounds as a tuple, else None."""
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        return None
    if len(items) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in items):
        return None
    return (float(items[0]), float(items[1]), float(items[2]))


def is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class GameVoice:
    """One Context's game-voice state (see the module doc)."""

    def __init__(self, core: SdkCore) -> None:
        self._core = core
        self.team = 0
        self.mode = RangeMode.WORLD
        self.recv_range: float | None = None
        self.position: Position | None = None
        self.route = AudioRoute()
        self.spatial = Spatial3D()
        self.blacklist: set[str] = set()  # openids heard without 3D
        self._room: RoomState | None = None  # the entry the server has our state for
        self._sent: dict[str, Any] = {}  # what the server was told in this entry
        self._next_send = -math.inf
        self._team_asked = False  # a team change made in the room waits to be sent
        self._entry_team = 0
        self._states: deque[str | None] = deque()  # sent game_states, unanswered: what each asks of the team
        self._routes: deque[AudioRoute] = deque()  # sent, unanswered
        core.push_handlers.update(game_state_ok=lambda m: self._on_state_reply(ErrorCode.AV_OK, "", m["team"]),
                                  audio_route_ok=lambda m: self._on_route_reply(ErrorCode.AV_OK, ""),
                                  positions=self._on_positions)
        core.refusal_handlers.update(game_state=lambda _, code, detail: self._on_state_reply(code, detail, self.team),
                                     audio_route=lambda _, code, detail: self._on_route_reply(code, detail))
        core.attach(self)

    # --- calls (validated by the facades' guards; arguments checked here) ---

    def set_team(self, team: object) -> ErrorCode:
        if not is_int(team, 0, 2**32 - 1):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(team, int)
        self.team = team
        self.spatial.update(team=team)
        if self._room is not None and self._sent.get("team", 0) != team:
            self._team_asked = True
        self._flush()
        return ErrorCode.AV_OK

    def set_mode(self, mode: object) -> ErrorCode:
        if not is_int(mode, 0, 1):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(mode, int)
        self.mode = RangeMode(mode)
        self._flush()
        return ErrorCode.AV_OK

    def set_range(self, recv_range: object) -> ErrorCode:
        """1004 for a bad range and, as GME, outside a FLUENCY room (range voice needs one)."""
        if not (isinstance(recv_range, (int, float)) and not isinstance(recv_range, bool)
                and math.isfinite(recv_range) and 0 <= recv_range <= MAX_COORDINATE):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        room = self._core.room()
        if room is not None and room.room_type != RoomType.FLUENCY:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self.recv_range = float(recv_range)
        self.spatial.update(recv_range=self.recv_range)
        self._flush()
        return ErrorCode.AV_OK

    def set_position(self, position: object, forward: object, right: object, up: object) -> ErrorCode:
        place, f, r, u = vector(position), vector(forward), vector(right), vector(up)
        if place is None or f is None or r is None or u is None:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self.position = place
        self.spatial.update(position=place, axes=(f, r, u) if any(f) and any(r) and any(u) else DEFAULT_AXES)
        self._flush()
        return ErrorCode.AV_OK

    def set_route(self, send_type: object, send_list: object, recv_type: object, recv_list: object) -> ErrorCode:
        """Validated at once (1004, the reason logged; 1201 without an established room); the outcome
        comes as event 1091."""
        if not (isinstance(send_list, (list, tuple)) and isinstance(recv_list, (list, tuple))
                and is_int(send_type, 1, 4) and is_int(recv_type, 1, 4)):
            log.info("set_server_audio_route: types must be 1-4 and the lists lists of openids")
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        try:
            route = AudioRoute.of(send_type, send_list, recv_type, recv_list)  # type: ignore[arg-type]
        except GmeError as exc:
            log.info("set_server_audio_route: %s", exc.detail)
            return ErrorCode(exc.code)
        session = self._core.session
        assert session is not None
        if session.request(Pending("audio_route"), lambda id: audio_route(id, route)) is not ErrorCode.AV_OK:
            return ErrorCode.AV_ERR_ROOM_NOT_EXIST
        self._routes.append(route)
        return ErrorCode.AV_OK

    def set_blacklisted(self, open_id: str, listed: bool | None) -> ErrorCode:
        """The 3D blacklist (heard plainly): add (True), remove (False) or clear (None, any openid)."""
        if listed is None:
            self.blacklist.clear()
        elif listed:
            self.blacklist.add(open_id)
        else:
            self.blacklist.discard(open_id)
        self._sync_plain()
        return ErrorCode.AV_OK

    def _sync_plain(self) -> None:
        """The 3D blacklist by tinyid, and the positions of members still in the room only."""
        room = self._core.room()
        tinyids = room.tinyids if room is not None else {}
        plain = frozenset(tinyids[o] for o in self.blacklist if o in tinyids)
        if plain != self.spatial.scene.plain:
            self.spatial.update(plain=plain)
        others = self.spatial.scene.others
        if room is not None and not room.open_ids.keys() >= others.keys():
            self.spatial.update(others={t: v for t, v in others.items() if t in room.open_ids})

    # --- Part: poll and uninit ---

    def pump(self) -> None:
        """Follow the room (a new entry sends the whole state), send what waits for its turn."""
        session = self._core.session
        assert session is not None
        room = self._core.room()
        if room is not self._room and (room is None or session.phase is Phase.IN_ROOM):
            same_room = room is not None and self._room is not None and room.room_id == self._room.room_id
            self._room, self._sent, self._next_send = room, {}, -math.inf
            self._entry_team = self.team  # the team at EnterRoom (GME's TeamID-0 rule)
            self._team_asked = False
            self._states.clear()
            self.spatial.update(others={})
            if room is None:  # left: GME keeps team and mode only
                self.recv_range = self.position = None
                self.route = AudioRoute()
            elif not same_room:
                self.route = AudioRoute()
            elif self.route != AudioRoute():  # reconnected: the server's copy of the route is new
                self._routes.clear()
                self.set_route(int(self.route.send_type), list(self.route.send_list),
                               int(self.route.recv_type), list(self.route.recv_list))
        self._sync_plain()
        self._flush()

    def close(self) -> None:
        self._room, self._sent = None, {}
        self._routes.clear()
        self._states.clear()

    # --- state to the server ---

    def _wanted(self) -> dict[str, Any]:
        wanted: dict[str, Any] = {"team": self.team, "mode": int(self.mode)}
        if self.recv_range is not None:
            wanted["range"] = self.recv_range
        if self.position is not None:
            wanted["position"] = self.position
        return wanted

    def _flush(self) -> None:
        """Send the changed fields if it is time (at most GAME_STATE_RATE requests a second)."""
        session, room = self._core.session, self._room
        if session is None or room is None or room is not self._core.room():
            return
        wanted = self._wanted()
        entry = not self._sent
        if entry and wanted == {"team": 0, "mode": 0} and self._entry_team == 0:
            return  # GME's defaults: the server assumes them
        changed = {k: v for k, v in wanted.items() if self._sent.get(k) != v}
        now = self._core.now()
        if not changed or now < self._next_send:
            return
        # The first state of an entry carries the team the member entered with; a change made since
        # then follows in the next one.
        fields = {**wanted, "team": self._entry_team} if entry else changed
        if session.request(Pending("game_state"), lambda id: game_state(
                id, team=fields.get("team"), mode=fields.get("mode"), recv_range=fields.get("range"),
                position=fields.get("position"), entry=True if entry else None)) is ErrorCode.AV_OK:
            self._sent.update(fields)
            self._next_send = now + 1 / GAME_STATE_RATE
            # An entry's first state carries the entry team (only a refusal of it is reported: a
            # non-zero team outside a FLUENCY room); the change made since then follows.
            if entry:
                self._states.append(ENTRY_TEAM if fields["team"] else None)
            else:
                self._states.append(TEAM_CHANGE if self._team_asked and "team" in fields else None)
                self._team_asked = False

    # --- replies and pushes (inside poll) ---

    def _on_state_reply(self, code: int, detail: str, team: int) -> None:
        """A sent game_state answered (``game_state_ok`` with the team now in force, or refused)."""
        asked = self._states.popleft() if self._states else None
        if asked is None or (asked == ENTRY_TEAM and code == ErrorCode.AV_OK):
            return  # not about a team change, or an entry team the server took
        self._core.emit(EventType.CHANGE_TEAM_ID, {**outcome(code, detail), "team_id": team})

    def _on_route_reply(self, code: int, detail: str) -> None:
        """A sent route answered: in force on success; event 1091 either way."""
        route = self._routes.popleft() if self._routes else None
        if code == ErrorCode.AV_OK and route is not None:
            self.route = route
        self._core.emit(EventType.SERVER_AUDIO_ROUTE_EVENT, {**outcome(code, detail), "sub_type": ROUTE_SUB_TYPE})

    def _on_positions(self, message: dict[str, Any]) -> None:
        others = dict(self.spatial.scene.others)
        for member in message["members"]:
            others[member["tinyid"]] = (member["team"], tuple(member["position"]))
        self.spatial.update(others=others)

    # --- 3D ---

    def enable_3d(self, enable: bool, apply_team: bool) -> None:
        """``SpatializerNotReady`` (7003) before init; the voice stage goes on (stereo) or off."""
        self.spatial.enable(enable, apply_team)
        self._core.engine.set_voice_stage(self.spatial.stage if enable else None, 2 if enable else 1)
