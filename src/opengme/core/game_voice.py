"""Game voice on the server: the ``game_state`` and ``audio_route`` requests applied to the hearing rules.

Pure like the signalling core it belongs to: ``GameVoice`` keeps one ``RoomRouting`` per room that
uses game voice (created at the room's first request, with every member of the room registered at
GME's defaults: TeamID 0 at entry, WORLD mode, no range, no position), hands its ``policy`` to the
relay through a ``RouteSink`` and tells the sink whose routes to rebuild after each change. Routing
decisions are cached in ``RoomRouting``; nothing here runs per packet.

Positions for 3D voice go out as ``positions`` pushes: a member's new position to the members that
receive its voice, and a listener whose set of voices changed gets the positions of all of them.
The SDK sends at most ``GAME_STATE_RATE`` updates a second and only on change; the server's request
rate limit bounds the rest.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from opengme.core.relay import RoutePolicy
from opengme.core.rooms import Member, RoomEvent, RoomRegistry
from opengme.core.routing import AudioRoute, HearingState, Pair, Position, RangeMode, RoomRouting
from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType
from opengme.protocol.messages import BY_NAME, Json

RoomKey = tuple[str, str]  # (app_id, room_id)


@runtime_checkable
class RouteSink(Protocol):
    """What game voice needs from the media relay (``server.media.Media`` implements it)."""

    def set_route_policy(self, app_id: str, room_id: str, policy: RoutePolicy | None) -> None: ...

    def update_routes(self, tinyids: Iterable[int]) -> None: ...

    def set_routes(self, pairs: Iterable[Pair]) -> None: ...

    def listeners(self, tinyid: int) -> list[int]: ...


def _build(kind: str, **values: Any) -> Json:
    return BY_NAME[kind].build(values)


def game_state(id: int, *, team: int | None = None, mode: int | None = None, recv_range: float | None = None,
               position: Position | None = None, entry: bool | None = None) -> Json:
    """The ``game_state`` request (SDK side): only the fields that changed."""
    return _build("game_state", id=id, team=team, mode=mode, range=recv_range,
                  position=list(position) if position is not None else None, entry=entry)


def audio_route(id: int, route: AudioRoute) -> Json:
    """The ``audio_route`` request (SDK side)."""
    return _build("audio_route", id=id, send_type=int(route.send_type), send_list=sorted(route.send_list),
                  recv_type=int(route.recv_type), recv_list=sorted(route.recv_list))


def game_state_ok(id: int, team: int) -> Json:
    return _build("game_state_ok", id=id, team=team)


def audio_route_ok(id: int) -> Json:
    return _build("audio_route_ok", id=id)


def positions_push(places: Iterable[tuple[int, int, Position]]) -> Json:
    """The ``positions`` push of (tinyid, team, position) triples."""
    return _build("positions", members=[{"tinyid": t, "team": team, "position": list(p)} for t, team, p in places])


class GameVoice:
    """The game-voice state of every room of a server, as decisions (see the module doc)."""

    def __init__(self, registry: RoomRegistry, send: Callable[[int, Json], None],
                 sink: Callable[[], RouteSink | None]) -> None:
        self._registry = registry
        self._send = send  # (conn, message)
        self._sink = sink  # the relay, once the server has one
        self._rooms: dict[RoomKey, RoomRouting] = {}
        self._members: dict[int, Member] = {}  # tinyid -> member, in a room with game voice
        self._positions: dict[int, Position] = {}  # tinyid -> latest position (routes use the decided one)

    def routing(self, app_id: str, room_id: str) -> RoomRouting | None:
        """The room's hearing states (None: the room never used game voice)."""
        return self._rooms.get((app_id, room_id))

    def describe(self, member: Member) -> Json:
        """The member's game-voice state for the admin API (empty when its room never used game voice):
        team, mode (0 WORLD, 1 TEAM), range and its latest position (null until it sent one)."""
        routing = self._rooms.get((member.app_id, member.room_id))
        state = routing.state(member.tinyid) if routing is not None else None
        if state is None:
            return {}
        position = self._positions.get(member.tinyid)
        return {"team": state.team, "mode": int(state.mode), "range": state.recv_range,
                "position": list(position) if position is not None else None}

    # --- requests ---

    def game_state(self, member: Member, msg: Json) -> None:
        """Apply a ``game_state`` request and reply (before the pushes it causes). 1004 when range voice is asked of a room that is
        not FLUENCY (GME: range voice requires FLUENCY)."""
        room = self._registry.room(member.app_id, member.room_id)
        wants_range = msg.get("team", 0) != 0 or "range" in msg or msg.get("mode", 0) != 0
        if wants_range and room.room_type != RoomType.FLUENCY:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"range and team voice need a FLUENCY room (type {int(RoomType.FLUENCY)}); "
                           f"this room is {room.room_type.name}")
        routing = self._room(member)
        old = routing.state(member.tinyid)
        assert old is not None
        state = replace(
            old,
            team=msg.get("team", old.team),
            mode=RangeMode(msg.get("mode", old.mode)),
            recv_range=float(msg.get("range", old.recv_range)),
            position=tuple(float(v) for v in msg["position"]) if "position" in msg else old.position,  # type: ignore[arg-type]
            entered_with_team=(msg.get("team", 0) != 0) if msg.get("entry") else old.entered_with_team,
        )
        if msg.get("entry"):
            state = replace(state, route=AudioRoute())
        self._send(member.conn, game_state_ok(msg["id"], state.team))
        # A new team also goes out with the position: a listener's 3D treats teammates apart.
        self._apply(member, routing, state, moved=state.position != old.position or state.team != old.team)

    def audio_route(self, member: Member, msg: Json) -> None:
        """Apply an ``audio_route`` request and reply (1004 bad lists, 1001 the same route again)."""
        route = AudioRoute.of(msg["send_type"], msg["send_list"], msg["recv_type"], msg["recv_list"])
        routing = self._room(member)
        old = routing.state(member.tinyid)
        assert old is not None
        if old.route == route:
            raise GmeError(ErrorCode.AV_ERR_REPEATED_OPERATION, "this audio route is already set")
        self._send(member.conn, audio_route_ok(msg["id"]))
        self._apply(member, routing, replace(old, route=route), moved=False)

    # --- membership ---

    def on_events(self, events: Iterable[RoomEvent]) -> None:
        """Members entering a game-voice room get GME's default state; leavers are forgotten."""
        for event in events:
            member, key = event.member, (event.member.app_id, event.member.room_id)
            routing = self._rooms.get(key)
            if routing is None:
                continue
            if event.kind == "enter":
                self._register(routing, member)
                continue
            registered = self._members.get(member.tinyid)
            if registered is None or (registered.app_id, registered.room_id) != key:
                continue
            del self._members[member.tinyid]
            self._positions.pop(member.tinyid, None)
            changed = routing.remove(member.tinyid)
            if not any(self._members.get(t) for t in routing.tinyids()):
                del self._rooms[key]
                self._policy(member, None)
            else:
                self._rebuild(changed)

    # --- helpers ---

    def _room(self, member: Member) -> RoomRouting:
        key = (member.app_id, member.room_id)
        routing = self._rooms.get(key)
        if routing is None:
            routing = self._rooms[key] = RoomRouting()
            for other in self._registry.room(*key).members.values():
                self._register(routing, other)
            self._policy(member, routing.policy)
        return routing

    def _register(self, routing: RoomRouting, member: Member) -> None:
        self._members[member.tinyid] = member
        self._rebuild(routing.update(member.tinyid, HearingState(member.open_id)))

    def _policy(self, member: Member, policy: RoutePolicy | None) -> None:
        sink = self._sink()
        if sink is not None:
            sink.set_route_policy(member.app_id, member.room_id, policy)

    def _rebuild(self, tinyids: set[int]) -> None:
        sink = self._sink()
        if sink is not None and tinyids:
            sink.update_routes(tinyids)

    def _apply(self, member: Member, routing: RoomRouting, state: HearingState, *, moved: bool) -> None:
        """Update the member's state, change the routes pair by pair, push the positions 3D needs: the
        latest one (a move shorter than the routing threshold keeps the routes but moves the voice)."""
        tinyid = member.tinyid
        if state.position is not None:
            self._positions[tinyid] = state.position
        pairs = routing.update_pairs(tinyid, state)
        assert pairs is not None, "members are registered on entry"
        sink = self._sink()
        if sink is None:
            return
        sink.set_routes(pairs)
        reselected = {listener for _, listener, _ in pairs}  # listeners whose voices changed
        if state.position is not None and moved:
            push = positions_push([(tinyid, state.team, state.position)])
            for listener in sink.listeners(tinyid):
                if listener not in reselected:
                    self._push(listener, push)
        for listener in reselected:
            places = self._places(routing, routing.voices(listener))
            if places:
                self._push(listener, positions_push(places))

    def _places(self, routing: RoomRouting, tinyids: Iterable[int]) -> list[tuple[int, int, Position]]:
        places = []
        for t in tinyids:
            state, position = routing.state(t), self._positions.get(t)
            if state is not None and position is not None:
                places.append((t, state.team, position))
        return places

    def _push(self, tinyid: int, message: Json) -> None:
        member = self._members.get(tinyid)
        if member is not None:
            self._send(member.conn, message)
