"""``Room``: GME's ``ITMGRoom``, the view of the room a Context is in.

``Context.get_room()`` always returns the same object, in a room or not, as GME does; what needs a
room answers AV_ERR_ROOM_NOT_EXIST (1201) outside one. Getters that can fail return
``(ErrorCode, value)`` with an empty value on failure; plain getters return 0 / "" / [] / False.
The member list includes yourself, so your own tinyid maps like anyone else's.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from opengme.core.custom_data import MAX_CUSTOM_DATA
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.sdk import room_sharing
from opengme.sdk.core import Facade, guarded
from opengme.sdk.session import RoomState

log = logging.getLogger("opengme.sdk")


class Room(Facade):
    """GME: ITMGRoom."""

    @guarded(room=True, empty="")
    def get_room_id(self) -> str:
        """GME: ITMGRoom::GetRoomID ("" outside a room)."""
        return self._state().room_id

    @guarded(room=True, empty=0)
    def get_room_type(self) -> int:
        """GME: ITMGRoom::GetRoomType (0 outside a room, as GME)."""
        return self._state().room_type

    @guarded()
    def change_room_type(self, room_type: int) -> ErrorCode:
        """GME: ITMGRoom::ChangeRoomType, for everyone: CHANGE_ROOM_TYPE START to you, COMPLETE to all."""
        return self._core.call(lambda s, now: s.change_room_type(room_type, now))

    @guarded(room=True, empty=False)
    def is_server_muted(self) -> bool:
        """Whether the server muted you (admin API); the audio layer refuses enable_mic with 7009 then."""
        return self._state().muted

    @guarded(room=True, empty=[])
    def get_members(self) -> list[str]:
        """The openids in the room, yourself first ([] outside a room)."""
        return list(self._state().tinyids)

    @guarded(room=True, paired="")
    def get_open_id(self, tinyid: int) -> tuple[ErrorCode, str]:
        """The openid behind a tinyid; 1501 AV_ERR_TINYID_TO_OPENID_FAILED when no member has it."""
        open_id = self._state().open_ids.get(tinyid) if isinstance(tinyid, int) else None
        return (ErrorCode.AV_OK, open_id) if open_id else (ErrorCode.AV_ERR_TINYID_TO_OPENID_FAILED, "")

    @guarded(room=True, paired=0)
    def get_tiny_id(self, open_id: str) -> tuple[ErrorCode, int]:
        """A member's tinyid; 1502 AV_ERR_OPENID_TO_TINYID_FAILED when the openid is not in the room."""
        tinyid = self._state().tinyids.get(open_id) if isinstance(open_id, str) else None
        return (ErrorCode.AV_OK, tinyid) if tinyid else (ErrorCode.AV_ERR_OPENID_TO_TINYID_FAILED, 0)

    @guarded(room=True)
    def request_view(self, open_id: str) -> ErrorCode:
        """GME: ITMGRoom::RequestView (video). 1401 for a non-member, else 1402: OpenGME is audio-only."""
        if not isinstance(open_id, str) or open_id not in self._state().tinyids:
            return ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST
        return ErrorCode.AV_ERR_ENDPOINT_HAS_NOT_VIDEO

    @guarded(room=True)
    def send_custom_data(self, data: bytes | str, repeat_count: int) -> ErrorCode:
        """GME: ITMGRoom::SendCustomData. ``data`` (1..1000 bytes; a str is sent as UTF-8) rides your
        voice packets ``repeat_count`` times (-1 until stopped), one copy every 100 ms; members whose
        speaker is on get CUSTOMDATA_UPDATE (1092) per copy. 1004 outside STANDARD/HIGHQUALITY rooms
        or without an open mic (capture and send on), as GME requires."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        why = None
        if not isinstance(raw, (bytes, bytearray)) or not 1 <= len(raw) <= MAX_CUSTOM_DATA:
            why = f"data must be 1..{MAX_CUSTOM_DATA} bytes (or a str of that size in UTF-8)"
        elif not isinstance(repeat_count, int) or isinstance(repeat_count, bool) or not (
                repeat_count == -1 or repeat_count >= 1):
            why = f"repeat_count must be -1 (until stopped) or at least 1, got {repeat_count!r}"
        elif self._state().room_type == RoomType.FLUENCY:
            why = "custom data needs a STANDARD or HIGHQUALITY room (GME)"
        elif not (self._core.audio.capture and self._core.audio.send):
            why = "custom data rides your voice: open the mic first (enable_mic)"
        if why is not None:
            log.info("send_custom_data: %s", why)
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self._core.engine.set_custom_data(bytes(raw), repeat_count)
        return ErrorCode.AV_OK

    @guarded(room=True)
    def start_room_sharing(self, target_room: str, target_openid: str, auth_buffer: bytes | str) -> ErrorCode:
        """GME: StartRoomSharing (multi-room build): link with ``target_openid`` of ``target_room``;
        ``auth_buffer`` is for that room. ROOM_SHARING_START (23) follows; see :mod:`opengme.sdk.room_sharing`."""
        return room_sharing.start(self._core, target_room, target_openid, auth_buffer)

    @guarded(room=True)
    def stop_room_sharing(self) -> ErrorCode:
        """GME: StopRoomSharing. ROOM_SHARING_STOP (24) follows (10008 in it when not sharing)."""
        return room_sharing.stop(self._core)

    @guarded(room=True)
    def stop_send_custom_data(self) -> ErrorCode:
        """GME: ITMGRoom::StopSendCustomData (nothing being sent is fine too)."""
        self._core.engine.set_custom_data(None)
        return ErrorCode.AV_OK

    @guarded(empty="")
    def get_quality_tips(self) -> str:
        """GME: ITMGRoom::GetQualityTips. Free-form diagnostics, one ``key: value`` per line."""
        core = self._core
        session, state, engine = core.session, core.room(), core.engine
        assert session is not None
        rtt, route, media_rtt = session.stats.rtt, engine.route, engine.rtt
        lines = {
            "server": core.url,
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
            "media_silent": "yes" if engine.silent else "no",
        }
        return "\n".join(f"{key}: {value}" for key, value in lines.items())

    # --- game voice (issue 14; opengme.sdk.game_voice) ---

    @guarded()
    def set_range_audio_mode(self, mode: int) -> ErrorCode:
        """GME: ITMGRoom::SetRangeAudioMode (0 WORLD, 1 TEAM); before entry it applies to the next one."""
        return self._core.game_voice.set_mode(mode)

    @guarded(room=True)
    def update_audio_recv_range(self, recv_range: float) -> ErrorCode:
        """GME: ITMGRoom::UpdateAudioRecvRange, in world units (1004 outside a FLUENCY room)."""
        return self._core.game_voice.set_range(recv_range)

    @guarded(room=True)
    def update_self_position(self, position: Sequence[float], axis_forward: Sequence[float],
                             axis_right: Sequence[float], axis_up: Sequence[float]) -> ErrorCode:
        """GME: ITMGRoom::UpdateSelfPosition; call it every frame (the SDK sends at most 10 a second)."""
        return self._core.game_voice.set_position(position, axis_forward, axis_right, axis_up)

    @guarded(room=True)
    def set_server_audio_route(self, send_type: int, send_list: Sequence[str], recv_type: int,
                               recv_list: Sequence[str]) -> ErrorCode:
        """GME: ITMGRoom::SetServerAudioRoute; the outcome arrives as SERVER_AUDIO_ROUTE_EVENT (1091)."""
        return self._core.game_voice.set_route(send_type, send_list, recv_type, recv_list)

    @guarded(room=True, empty=(0, []))
    def get_current_send_audio_route(self) -> tuple[int, list[str]]:
        """GME: ITMGRoom::GetCurrentSendAudioRoute: (send type, openids); (0, []) outside a room."""
        route = self._core.game_voice.route
        return int(route.send_type), sorted(route.send_list)

    @guarded(room=True, empty=(0, []))
    def get_current_recv_audio_route(self) -> tuple[int, list[str]]:
        """GME: ITMGRoom::GetCurrentRecvAudioRoute: (receive type, openids); (0, []) outside a room."""
        route = self._core.game_voice.route
        return int(route.recv_type), sorted(route.recv_list)

    def _state(self) -> RoomState:
        """The room of a call guarded with ``room=True``."""
        state = self._core.room()
        assert state is not None, "guarded: in a room"
        return state
