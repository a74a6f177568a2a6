"""``Room``: GME's ``ITMGRoom``, the view of the room a Context is in.

``Context.get_room()`` always returns the same object, in a room or not, as GME does; what needs a
room answers AV_ERR_ROOM_NOT_EXIST (1201) outside one. Getters that can fail return
``(ErrorCode, value)`` with an empty value on failure; plain getters return 0 / "" / [] / False.
The member list includes yourself, so your own tinyid maps like anyone else's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from opengme.errors import ErrorCode

if TYPE_CHECKING:
    from opengme.sdk.context import Context
    from opengme.sdk.session import RoomState

SDK_STAMP = "0.1.0"


class Room:
    """GME: ITMGRoom."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def _state(self) -> RoomState | None:
        session = self._context._readable()
        return session.room if session is not None and session.entered else None

    def _lookup(self) -> tuple[ErrorCode, RoomState | None]:
        """The room for a call that can fail: 1101/1007 from the context, 1201 outside a room."""
        refusal = self._context._refusal()
        if refusal is not None:
            return refusal, None
        state = self._state()
        return (ErrorCode.AV_OK, state) if state is not None else (ErrorCode.AV_ERR_ROOM_NOT_EXIST, None)

    def get_room_id(self) -> str:
        """GME: ITMGRoom::GetRoomID ("" outside a room)."""
        state = self._state()
        return state.room_id if state else ""

    def get_room_type(self) -> int:
        """GME: ITMGRoom::GetRoomType (0 outside a room, as GME)."""
        state = self._state()
        return state.room_type if state else 0

    def change_room_type(self, room_type: int) -> ErrorCode:
        """GME: ITMGRoom::ChangeRoomType, for everyone: CHANGE_ROOM_TYPE START to you, COMPLETE to all."""
        return self._context._call(lambda s, now: s.change_room_type(room_type, now))

    def is_server_muted(self) -> bool:
        """Whether the server muted you (admin API); the audio layer refuses enable_mic with 7009 then."""
        state = self._state()
        return state.muted if state else False

    def get_members(self) -> list[str]:
        """The openids in the room, yourself first ([] outside a room)."""
        state = self._state()
        return list(state.tinyids) if state else []

    def get_open_id(self, tinyid: int) -> tuple[ErrorCode, str]:
        """The openid behind a tinyid; 1501 AV_ERR_TINYID_TO_OPENID_FAILED when no member has it."""
        code, state = self._lookup()
        if state is None:
            return code, ""
        open_id = state.open_ids.get(tinyid) if isinstance(tinyid, int) else None
        return (ErrorCode.AV_OK, open_id) if open_id else (ErrorCode.AV_ERR_TINYID_TO_OPENID_FAILED, "")

    def get_tiny_id(self, open_id: str) -> tuple[ErrorCode, int]:
        """A member's tinyid; 1502 AV_ERR_OPENID_TO_TINYID_FAILED when the openid is not in the room."""
        code, state = self._lookup()
        if state is None:
            return code, 0
        tinyid = state.tinyids.get(open_id) if isinstance(open_id, str) else None
        return (ErrorCode.AV_OK, tinyid) if tinyid else (ErrorCode.AV_ERR_OPENID_TO_TINYID_FAILED, 0)

    def request_view(self, open_id: str) -> ErrorCode:
        """GME: ITMGRoom::RequestView (video). 1401 for a non-member, else 1402: OpenGME is audio-only."""
        code, state = self._lookup()
        if state is None:
            return code
        if not isinstance(open_id, str) or open_id not in state.tinyids:
            return ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST
        return ErrorCode.AV_ERR_ENDPOINT_HAS_NOT_VIDEO

    def get_quality_tips(self) -> str:
        """GME: ITMGRoom::GetQualityTips. Free-form diagnostics, one ``key: value`` per line."""
        session = self._context._readable()
        if session is None:
            return ""
        state = session.room if session.entered else None
        rtt = session.stats.rtt
        engine = self._context._engine
        route = engine.route if engine is not None else None
        media_rtt = engine.rtt if engine is not None else None
        lines = {
            "server": self._context.url,
            "server_version": session.stats.server_version or "-",
            "state": session.phase.value,
            "room": state.room_id if state else "-",
            "room_type": str(state.room_type if state else 0),
            "members": str(len(state.tinyids) if state else 0),
            "rtt_ms": f"{rtt * 1000:.1f}" if rtt is not None else "-",
            "reconnects": str(session.stats.reconnects),
            "server_muted": "yes" if state and state.muted else "no",
            "media_route": route.value if route is not None else "-",
            "media_rtt_ms": f"{media_rtt * 1000:.1f}" if media_rtt is not None else "-",
            "media_silent": "yes" if engine is not None and engine.silent else "no",
        }
        return "\n".join(f"{key}: {value}" for key, value in lines.items())
