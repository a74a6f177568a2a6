"""``RoomManager``: GME's ``ITMGRoomManager``, one member operating another member's audio.

``Context.get_room_manager()`` always returns the same object. Every call names the other member by
openid (``receiver_id``), needs a room (1201 outside one, 1004 for a bad argument) and answers
AV_OK once the request is on its way; the outcome arrives on **both sides** as
ROOM_MANAGEMENT_OPERATOR (6000) ``{"SenderID", "ReceiverID", "OperateType", "Result",
"OperateValue"}`` (GME's keys; OperateType 0 capture, 1 play, 2 send, 3 recv, 4 mic, 5 speaker,
6 get mic state, 7 get speaker state, 8 forbid). The receiver's SDK carries the operation out on
itself exactly as its own call would (so an AUDIENCE member's mic answers 1004, a server-muted one
7009) and reports that code as ``Result``; the getters' ``OperateValue`` is the state read.

Who may control whom is the server's rule (``opengme.core.room_manager``): the sender's entry
AuthBuffer must carry privilege bit 0x100, which GME's default privilege map 0xFFFFFFFF does;
otherwise only the sender gets 6000, with ``Result`` 10003. ``forbid_user_operation(True, id)``
turns the receiver's mic and speaker off, and its own enabling calls answer 7009 until it leaves the
room or a manager lifts it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from opengme.core.room_manager import OperateType
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import signalling as proto
from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.core import Facade, SdkCore, guarded
from opengme.sdk.session import Pending, valid_open_id

log = logging.getLogger("opengme.sdk")
KIND = "room_manage"


class RoomManager(Facade):
    """GME: ITMGRoomManager (see the module docstring)."""

    def __init__(self, core: SdkCore, audio: AudioCtrl) -> None:
        super().__init__(core)
        self._audio = audio
        self._todo: list[dict[str, Any]] = []
        core.attach(self)
        core.push_handlers["room_operate"] = self._on_operate
        core.push_handlers["room_operate_result"] = self._on_result
        core.refusal_handlers[KIND] = self._on_refused

    # --- the calls ---

    @guarded(room=True)
    def enable_mic(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableMic(enable, receiverID)."""
        return self._operate(OperateType.MIC, enable, receiver_id)

    @guarded(room=True)
    def enable_audio_send(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableAudioSend."""
        return self._operate(OperateType.SEND, enable, receiver_id)

    @guarded(room=True)
    def enable_audio_capture_device(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableAudioCaptureDevice."""
        return self._operate(OperateType.CAPTURE, enable, receiver_id)

    @guarded(room=True)
    def enable_speaker(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableSpeaker."""
        return self._operate(OperateType.SPEAKER, enable, receiver_id)

    @guarded(room=True)
    def enable_audio_recv(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableAudioRecv."""
        return self._operate(OperateType.RECV, enable, receiver_id)

    @guarded(room=True)
    def enable_audio_play_device(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::EnableAudioPlayDevice."""
        return self._operate(OperateType.PLAY, enable, receiver_id)

    @guarded(room=True)
    def get_mic_state(self, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::GetMicState(receiverID): the state arrives as 6000's OperateValue."""
        return self._operate(OperateType.GET_MIC_STATE, False, receiver_id)

    @guarded(room=True)
    def get_speaker_state(self, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::GetSpeakerState(receiverID)."""
        return self._operate(OperateType.GET_SPEAKER_STATE, False, receiver_id)

    @guarded(room=True)
    def forbid_user_operation(self, enable: bool, receiver_id: str) -> ErrorCode:
        """GME: ITMGRoomManager::ForbidUserOperation: the receiver's devices off, its own enabling
        refused (7009) until it leaves the room; False lifts it."""
        return self._operate(OperateType.FORBID, enable, receiver_id)

    def _operate(self, operate_type: OperateType, value: object, receiver_id: object) -> ErrorCode:
        if not isinstance(value, bool) or not valid_open_id(receiver_id):
            log.info("room manager: enable must be a bool and receiver_id an openid")
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(receiver_id, str)
        pending = Pending(KIND, open_id=receiver_id, context=(operate_type, value))
        return self._core.call(lambda s, now: s.request(pending, proto.room_manage, receiver_id, operate_type, value))

    # --- outcomes ---

    def _event(self, sender: str, receiver: str, operate_type: int, result: int, value: bool) -> None:
        self._core.emit(EventType.ROOM_MANAGEMENT_OPERATOR, {
            "SenderID": sender, "ReceiverID": receiver, "OperateType": int(operate_type), "Result": int(result),
            "OperateValue": bool(value)})

    def _me(self) -> str:
        session = self._core.session
        return session.open_id if session is not None else ""

    def _on_operate(self, message: dict[str, Any]) -> None:
        self._todo.append(message)  # carried out in pump, after the poll's sync

    def _on_result(self, message: dict[str, Any]) -> None:
        self._event(self._me(), message["receiver"], message["operate_type"], message["result"], message["value"])

    def _on_refused(self, pending: Pending, code: int, detail: str) -> None:
        log.info("room manager: the server refused operation on %s (%d): %s", pending.open_id, code, detail)
        operate_type, value = pending.context
        self._event(self._me(), pending.open_id, operate_type, code, value)

    def pump(self) -> None:
        """``poll``'s share: carry out what managers asked of this member, answer them, tell the app."""
        todo, self._todo = self._todo, []
        for message in todo:
            if self._core.room() is None:
                return
            sender, operate_type = message["sender"], OperateType(message["operate_type"])
            result, value = self._apply(operate_type, message["value"])
            self._event(sender, self._me(), operate_type, result, value)
            self._answer(sender, operate_type, value, result)

    def _answer(self, sender: str, operate_type: OperateType, value: bool, result: ErrorCode) -> None:
        pending = Pending("room_manage_result")
        self._core.call(lambda s, now: s.request(pending, proto.room_manage_result, sender, operate_type, value,
                                                 result))

    def _apply(self, operate_type: OperateType, value: bool) -> tuple[ErrorCode, bool]:
        """The operation on this member, as its own calls would do it: (code, the state after)."""
        audio = self._audio
        setters: dict[OperateType, Callable[[bool], ErrorCode]] = {
            OperateType.CAPTURE: audio.enable_audio_capture_device, OperateType.PLAY: audio.enable_audio_play_device,
            OperateType.SEND: audio.enable_audio_send, OperateType.RECV: audio.enable_audio_recv,
            OperateType.MIC: audio.enable_mic, OperateType.SPEAKER: audio.enable_speaker,
        }
        if operate_type in setters:
            return setters[operate_type](value), value
        if operate_type is OperateType.GET_MIC_STATE:
            return ErrorCode.AV_OK, bool(audio.get_mic_state())
        if operate_type is OperateType.GET_SPEAKER_STATE:
            return ErrorCode.AV_OK, bool(audio.get_speaker_state())
        if value:  # FORBID
            audio.enable_mic(False)
            audio.enable_speaker(False)
        self._core.update_audio(replace(self._core.audio, forbidden=value))
        return ErrorCode.AV_OK, value

    def close(self) -> None:
        """``uninit``: what was asked and not yet done is dropped."""
        self._todo = []
