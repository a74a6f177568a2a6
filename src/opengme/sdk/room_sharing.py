"""Room sharing on the SDK side (GME's cross-room talk: ``StartRoomSharing``/``StopRoomSharing``).

``Room.start_room_sharing(target_room, target_openid, auth_buffer)`` links you with a member of
another room: while linked, your voice reaches every member of that room and its voice every member
of yours (the server's rules: ``opengme.core.room_sharing``). ``auth_buffer`` is an AuthBuffer for
the *other* room, signed for your openid. Outcomes, as GME reports them: ROOM_SHARING_START (23) and
ROOM_SHARING_STOP (24) ``{"result", "error_info"}``; the linked member gets the same events with
``open_id`` and ``room_id`` naming you. A link ends when either member stops it or leaves its room.
"""
from __future__ import annotations

from typing import Any

from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import signalling as proto
from opengme.sdk.core import SdkCore
from opengme.sdk.session import Pending, auth_bytes, outcome, valid_open_id, valid_room_id

EVENTS = {"start": EventType.ROOM_SHARING_START, "stop": EventType.ROOM_SHARING_STOP}


def install(core: SdkCore) -> None:
    """Register the replies, pushes and refusals of room sharing with the Context's core."""
    core.push_handlers["room_share_ok"] = lambda m: core.emit(EVENTS[m["event"]], outcome(0))
    core.push_handlers["room_sharing"] = lambda m: core.emit(
        EVENTS[m["event"]], {**outcome(0), "open_id": m["open_id"], "room_id": m["room_id"]})

    def refused(kind: str) -> Any:
        event = EventType.ROOM_SHARING_START if kind == "room_share" else EventType.ROOM_SHARING_STOP
        return lambda pending, code, detail: core.emit(event, outcome(code, detail))

    for kind in ("room_share", "room_share_stop"):
        core.refusal_handlers[kind] = refused(kind)


def start(core: SdkCore, target_room: object, target_openid: object, auth_buffer: object) -> ErrorCode:
    auth = auth_bytes(auth_buffer)
    if not valid_room_id(target_room) or not valid_open_id(target_openid) or auth is None:
        return ErrorCode.AV_ERR_INVALID_ARGUMENT
    return core.call(lambda s, now: s.request(Pending("room_share"), proto.room_share, target_room, target_openid,
                                              auth))


def stop(core: SdkCore) -> ErrorCode:
    return core.call(lambda s, now: s.request(Pending("room_share_stop"), proto.room_share_stop))
