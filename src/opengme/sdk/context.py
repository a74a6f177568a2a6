"""``Context``: GME's ``ITMGContext`` in Python spelling, the SDK's one entry point.

Threading follows GME: the thread that calls :meth:`Context.init` owns the context; every call from
another thread answers AV_ERR_NOT_IN_MAIN_THREAD (1007) and changes nothing, and events reach the
delegate only inside :meth:`Context.poll` on that thread. Calls return an ``ErrorCode``: ``AV_OK``
(0) means "accepted", and the outcome of an asynchronous call arrives later as an event with GME's
number and payload keys. Connection and server failures never raise: they become codes and events.

Behind it and the other facades (``Room``, ``AudioCtrl``, ``Ptt``): one :class:`~opengme.sdk.core.SdkCore`
holding :class:`~opengme.sdk.session.Session` (all the room rules, pure),
:class:`~opengme.sdk.transport.Transport` (one network thread per context) and
:class:`~opengme.sdk.media.MediaEngine` (one audio thread per context around a pure
:class:`~opengme.sdk.media_session.MediaSession`). ``uninit`` joins both threads.

Choices where GME leaves room (documented once, here):

- ``init`` again with the same AppID and openid answers 1003 (AV_ERR_HAS_IN_THE_STATE, "treat as
  success"); with another one, 1102 until ``uninit``. ``init`` returns 7015 when the installation is
  partially upgraded (see :mod:`opengme.sdk.selfcheck`) and is initialised all the same, as GME.
- openids are checked for 1-127 printable characters (1004 otherwise); whether the app accepts
  string openids or only integers > 10000 is the server's to say (7006 on entry).
- Getters that can fail return ``(ErrorCode, value)``; plain getters return their "empty" value
  (0, "", [], False) outside a room or from another thread, as GME's ``GetRoomType`` returns 0.
- ``uninit`` during an entry or in a room answers 1202; during an exit it finishes the exit locally.
- ``get_sdk_version`` is a constant and may be called from any thread, before ``init`` too.
- On your own entry (and switch) USER_UPDATE ENTER names yourself first, then the members already
  there, as GME's FAQ describes; later ENTER/EXIT events name others only.
- ``pause`` closes the audio devices and ``resume`` reopens what the switches say; the room and the
  media session stay. ``uninit`` during a device test answers 1602 (GME: AVContext::StopContext).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from opengme import __version__
from opengme.config import DEFAULT_SERVER_URL
from opengme.core.impair import Impairment
from opengme.errors import ErrorCode
from opengme.events import AudioRole, EventType
from opengme.ids import IdError, validate_app_id
from opengme.sdk import room_sharing
from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.audio_effect import AudioEffectCtrl
from opengme.sdk.core import Facade, SdkCore, guarded, signal_url
from opengme.sdk.device_watch import DeviceWatch
from opengme.sdk.media_session import MediaTransport
from opengme.sdk.ptt import Ptt
from opengme.sdk.room import Room
from opengme.sdk.room_manager import RoomManager
from opengme.sdk.selfcheck import self_check
from opengme.sdk.session import Session, valid_open_id

Delegate = Callable[[EventType, dict[str, Any]], None]

log = logging.getLogger("opengme.sdk")


class Context(Facade):
    """GME: ITMGContext. Several may live in one process (bots, tests); ``get_instance`` is GME's singleton."""

    _instance: ClassVar[Context | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        server_url: str = DEFAULT_SERVER_URL,
        *,
        entry_timeout: float = 30.0,
        reconnect_give_up: float = 3600.0,
        heartbeat_interval: float | None = None,
        media_transport: str = "auto",
        impairment: Impairment | None = None,
        portaudio: bool = True,
    ) -> None:
        """``heartbeat_interval`` None takes the server's; the timeouts default to GME's (30 s, 60 min).

        ``media_transport``: "auto" (UDP, else the WebSocket), "udp" or "ws". ``impairment`` (a test
        hook; else ``OPENGME_TEST_IMPAIR``) drops and delays received datagrams. ``portaudio=False``
        lists only registered (file and memory) devices.
        """
        super().__init__(SdkCore(server_url, media_transport=MediaTransport(media_transport),
                                 impairment=impairment, portaudio=portaudio))
        self.entry_timeout = entry_timeout
        self.reconnect_give_up = reconnect_give_up
        self.heartbeat_interval = heartbeat_interval
        self._room = Room(self._core)
        room_sharing.install(self._core)
        self._audio = AudioCtrl(self._core)
        self._ptt = Ptt(self._core)
        self._effects = AudioEffectCtrl(self._core)
        self._room_manager = RoomManager(self._core, self._audio)
        DeviceWatch(self._core, self._audio)  # hot-plug events (a part of the core)
        self._delegate: Delegate | None = None
        self._lock = threading.Lock()  # init/uninit against each other from different threads

    @property
    def server_url(self) -> str:
        return self._core.server_url

    @property
    def url(self) -> str:
        """The signalling WebSocket's URL."""
        return self._core.url

    @classmethod
    def get_instance(cls, server_url: str | None = None) -> Context:
        """GME: ITMGContextGetInstance. Created on first use; a different URL later is a programming error."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(server_url or DEFAULT_SERVER_URL)
            elif server_url is not None and signal_url(server_url) != cls._instance.url:
                raise ValueError(f"the singleton Context already uses {cls._instance.server_url}")
            return cls._instance

    # --- lifecycle ---

    def set_delegate(self, delegate: Delegate | None) -> ErrorCode:
        """GME: ITMGContext::SetTMGDelegate. ``delegate(event_type, data)``, called only inside ``poll``."""
        if self._core.refusal(local=True) is not None:  # no init needed; after it, its thread only
            return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
        self._delegate = delegate
        return ErrorCode.AV_OK

    def init(self, app_id: str, open_id: str) -> ErrorCode:
        """GME: ITMGContext::Init. No server round-trip; the calling thread becomes the context's thread."""
        core = self._core
        with self._lock:
            if core.session is not None:
                if threading.get_ident() != core.owner:
                    return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
                if (core.session.app_id, core.session.open_id) == (app_id, open_id):
                    return ErrorCode.AV_ERR_HAS_IN_THE_STATE
                return ErrorCode.AV_ERR_CONTEXT_NOT_STOPPED
            try:
                app_id = validate_app_id(app_id)
            except IdError:
                return ErrorCode.AV_ERR_INVALID_ARGUMENT
            if not valid_open_id(open_id):
                return ErrorCode.AV_ERR_INVALID_ARGUMENT
            core.start(Session(app_id, open_id, entry_timeout=self.entry_timeout,
                               reconnect_give_up=self.reconnect_give_up,
                               heartbeat_interval=self.heartbeat_interval))
        problems = self_check()
        if problems:
            log.warning("SDK installation is partially upgraded: %s", "; ".join(problems))
            return ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE
        return ErrorCode.AV_OK

    def uninit(self) -> ErrorCode:
        """GME: ITMGContext::Uninit. Needed to change openid; leave the room first (1202 otherwise)."""
        core = self._core
        with self._lock:
            refusal = core.refusal()
            if refusal is not None:
                return refusal
            assert core.session is not None
            if core.session.busy and not core.session.exiting:
                return ErrorCode.AV_ERR_ROOM_NOT_EXITED
            if core.audio.device_test:
                return ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED
            core.stop()
        return ErrorCode.AV_OK

    @guarded()
    def poll(self) -> ErrorCode:
        """GME: ITMGContext::Poll. The message pump: call it often (GME's demo: every 1/30 s)."""
        for event, data in self._core.pump():
            self._deliver(event, data)
        return ErrorCode.AV_OK

    def _deliver(self, event: EventType, data: dict[str, Any]) -> None:
        if self._delegate is None:
            return
        try:
            self._delegate(event, data)
        except Exception:  # one faulty handler must not stop the pump (GME's C++ delegate cannot throw)
            log.exception("the delegate raised on %s", event.name)

    @guarded()
    def pause(self) -> ErrorCode:
        """GME: ITMGContext::Pause. Closes the audio devices (OS background); the room stays."""
        return self._core.set_paused(True)

    @guarded()
    def resume(self) -> ErrorCode:
        """GME: ITMGContext::Resume."""
        return self._core.set_paused(False)

    @guarded(empty=False)
    def is_paused(self) -> bool:
        """Whether ``pause`` is in effect (the audio layer reads it)."""
        return self._core.paused

    @staticmethod
    def get_sdk_version() -> str:
        """GME: ITMGContext::GetSDKVersion."""
        return __version__

    # --- rooms ---

    @guarded()
    def enter_room(self, room_id: str, room_type: int, auth_buffer: bytes | str) -> ErrorCode:
        """GME: ITMGContext::EnterRoom. Result in ENTER_ROOM; AuthBuffer v1 bytes or v2 token (str/bytes)."""
        return self._core.call(lambda s, now: s.enter(room_id, room_type, auth_buffer, now))

    @guarded()
    def exit_room(self) -> ErrorCode:
        """GME: ITMGContext::ExitRoom. EXIT_ROOM follows; during an entry the entry ends with 7013 instead."""
        return self._core.call(lambda s, now: s.exit(now))

    @guarded(room=True, empty=False)
    def is_room_entered(self) -> bool:
        """GME: ITMGContext::IsRoomEntered (True while reconnecting, as the room is kept)."""
        return True

    @guarded()
    def switch_room(self, room_id: str, auth_buffer: bytes | str) -> ErrorCode:
        """GME: ITMGContext::SwitchRoom. Result in SWITCH_ROOM (2001 still in the old room, 2002 out of both)."""
        return self._core.call(lambda s, now: s.switch(room_id, auth_buffer, now))

    def get_room(self) -> Room:
        """GME: ITMGContext::GetRoom. Always the same object; its calls answer 1201 outside a room."""
        return self._room

    def get_audio_ctrl(self) -> AudioCtrl:
        """GME: ITMGContext::GetAudioCtrl. Always the same object; see :mod:`opengme.sdk.audio_ctrl`."""
        return self._audio

    def get_audio_effect_ctrl(self) -> AudioEffectCtrl:
        """GME: ITMGContext::GetAudioEffectCtrl. Voice changer, accompaniment, sound effects; see
        :mod:`opengme.sdk.audio_effect`."""
        return self._effects

    def get_room_manager(self) -> RoomManager:
        """GME: ITMGContext::GetRoomManager. Operating other members' audio; see
        :mod:`opengme.sdk.room_manager` (who may: :mod:`opengme.core.room_manager`)."""
        return self._room_manager

    def get_ptt(self) -> Ptt:
        """GME: ITMGContext::GetPTT. Voice messages (no room needed); see :mod:`opengme.sdk.ptt`."""
        return self._ptt

    @guarded()
    def set_audio_role(self, role: AudioRole) -> ErrorCode:
        """GME: ITMGContext::SetAudioRole: ANCHOR speaks, AUDIENCE only listens (enable_mic → 1004).

        Before entry or in a room; reset to ANCHOR on exit.
        """
        if not isinstance(role, int) or isinstance(role, bool) or role not in AudioRole._value2member_map_:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self._core.set_role(AudioRole(role))
        return ErrorCode.AV_OK

    def get_audio_role(self) -> AudioRole:
        """The role ``set_audio_role`` set (ANCHOR by default and after exit)."""
        return self._core.audio.role

    # --- live captions (GME: StartRealTimeASR / StopRealTimeASR, event 1093) ---

    @guarded()
    def start_realtime_asr(self, language: str = "") -> ErrorCode:
        """Caption this member's voice-chat mic: every member of the room gets REALTIME_ASR (1093) with
        sub_type 0 START, 1 CONTENT (``open_id``, ``sentence_id``, ``text``, ``final``), 2 END."""
        return self._core.call(lambda s, now: s.realtime_asr(True, language))

    @guarded()
    def stop_realtime_asr(self) -> ErrorCode:
        """Stop captioning this member's mic (END follows)."""
        return self._core.call(lambda s, now: s.realtime_asr(False))

    # --- invitations (GME's demo module, AV_ERR_INVITET/ACCEPTT/REFUSE_FAILED 1801-1803) ---

    @guarded()
    def set_range_audio_team_id(self, team_id: int) -> ErrorCode:
        """GME: ITMGContext::SetRangeAudioTeamID (0 = host/broadcast). Kept after exit; in a room it
        applies at once and CHANGE_TEAM_ID (1095) reports the server's answer."""
        return self._core.game_voice.set_team(team_id)

    @guarded()
    def invite(self, open_id: str) -> ErrorCode:
        """Invite a connected user into this room; the answer arrives as INVITATION ACCEPTED/REFUSED."""
        return self._core.call(lambda s, now: s.invite(open_id, now))

    @guarded()
    def accept_invitation(self, invite_id: str, auth_buffer: bytes | str) -> ErrorCode:
        """Accept and move into the inviter's room with ``auth_buffer`` (SWITCH_ROOM, or ENTER_ROOM outside a room)."""
        return self._core.call(lambda s, now: s.accept_invitation(invite_id, auth_buffer, now))

    @guarded()
    def refuse_invitation(self, invite_id: str) -> ErrorCode:
        """Refuse an invitation received as INVITATION RECEIVED."""
        return self._core.call(lambda s, now: s.refuse_invitation(invite_id, now))
