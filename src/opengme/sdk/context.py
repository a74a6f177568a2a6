"""``Context``: GME's ``ITMGContext`` in Python spelling, the SDK's one entry point.

Threading follows GME: the thread that calls :meth:`Context.init` owns the context; every call from
another thread answers AV_ERR_NOT_IN_MAIN_THREAD (1007) and changes nothing, and events reach the
delegate only inside :meth:`Context.poll` on that thread. Calls return an ``ErrorCode``: ``AV_OK``
(0) means "accepted", and the outcome of an asynchronous call arrives later as an event with GME's
number and payload keys. Connection and server failures never raise: they become codes and events.

Behind it: :class:`~opengme.sdk.session.Session` (all the rules, pure),
:class:`~opengme.sdk.transport.Transport` (one network thread per context) and
:class:`~opengme.sdk.media.MediaEngine` (one audio thread per context, driven by
:class:`~opengme.sdk.audio_ctrl.AudioCtrl`). ``uninit`` joins both threads.

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
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from opengme import __version__
from opengme.config import DEFAULT_SERVER_URL
from opengme.core.impair import Impairment
from opengme.errors import ErrorCode
from opengme.events import AudioRole, EventType
from opengme.ids import IdError, validate_app_id
from opengme.protocol.signalling import SIGNAL_PATH
from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.media import MediaEngine, MediaTransport, impairment_from_env
from opengme.sdk.room import Room
from opengme.sdk.selfcheck import self_check
from opengme.sdk.session import Event, Session, valid_open_id
from opengme.sdk.transport import Transport

SDK_STAMP = "0.1.0"


Delegate = Callable[[EventType, dict[str, Any]], None]

log = logging.getLogger("opengme.sdk")


def signal_url(server_url: str) -> str:
    """The WebSocket URL for a base URL as ``opengme serve`` prints it (http→ws, https→wss)."""
    parts = urlsplit(server_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server_url must look like http://HOST:PORT, got {server_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(SIGNAL_PATH):
        path += SIGNAL_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class Context:
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
        self.server_url = server_url
        self.url = signal_url(server_url)
        self.entry_timeout = entry_timeout
        self.reconnect_give_up = reconnect_give_up
        self.heartbeat_interval = heartbeat_interval
        self.media_transport = MediaTransport(media_transport)
        self.impairment = impairment
        self._room = Room(self)
        self._audio = AudioCtrl(self, portaudio=portaudio)
        self._engine: MediaEngine | None = None
        self._delegate: Delegate | None = None
        self._lock = threading.Lock()  # init/uninit against each other from different threads
        self._owner: int | None = None
        self._session: Session | None = None
        self._transport: Transport | None = None
        self._paused = False
        self._queue: list[Event] = []  # events for the next poll, in the order they arose

    @classmethod
    def get_instance(cls, server_url: str | None = None) -> Context:
        """GME: ITMGContextGetInstance. Created on first use; a different URL later is a programming error."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(server_url or DEFAULT_SERVER_URL)
            elif server_url is not None and signal_url(server_url) != cls._instance.url:
                raise ValueError(f"the singleton Context already uses {cls._instance.server_url}")
            return cls._instance

    # --- guards ---

    def _refusal(self) -> ErrorCode | None:
        """1101 before init, 1007 on a thread other than init's, None when the call may run."""
        if self._session is None:
            return ErrorCode.AV_ERR_CONTEXT_NOT_EXIST
        if threading.get_ident() != self._owner:
            return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
        return None

    def _readable(self) -> Session | None:
        """The session for a getter, or None when the getter must answer its empty value."""
        return None if self._refusal() else self._session

    def _call(self, action: Callable[[Session, float], ErrorCode]) -> ErrorCode:
        """Run one API call on the session and pass its commands to the network thread."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        assert self._session is not None
        code = action(self._session, self._now())
        self._flush()
        self._sync_audio(self._session, self._now())
        return code

    def _sync_audio(self, session: Session, now: float) -> None:
        """Queue the session's events, bring the audio in line with the room, queue the audio's
        events: one queue in the order things arose, so an EXIT never overtakes a HAS_AUDIO
        gathered inside an earlier call."""
        self._queue += session.take_events()
        self._audio._sync(session, now)
        self._queue += self._audio._take_events()

    @staticmethod
    def _now() -> float:
        return time.monotonic()

    def _flush(self) -> None:
        if self._session is not None and self._transport is not None:
            self._transport.submit(self._session.take_commands())

    # --- lifecycle ---

    def set_delegate(self, delegate: Delegate | None) -> ErrorCode:
        """GME: ITMGContext::SetTMGDelegate. ``delegate(event_type, data)``, called only inside ``poll``."""
        if self._session is not None and threading.get_ident() != self._owner:
            return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
        self._delegate = delegate
        return ErrorCode.AV_OK

    def init(self, app_id: str, open_id: str) -> ErrorCode:
        """GME: ITMGContext::Init. No server round-trip; the calling thread becomes the context's thread."""
        with self._lock:
            if self._session is not None:
                if threading.get_ident() != self._owner:
                    return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
                if (self._session.app_id, self._session.open_id) == (app_id, open_id):
                    return ErrorCode.AV_ERR_HAS_IN_THE_STATE
                return ErrorCode.AV_ERR_CONTEXT_NOT_STOPPED
            try:
                app_id = validate_app_id(app_id)
            except IdError:
                return ErrorCode.AV_ERR_INVALID_ARGUMENT
            if not valid_open_id(open_id):
                return ErrorCode.AV_ERR_INVALID_ARGUMENT
            transport = Transport(self.url, name=f"opengme-sdk-{open_id}")
            engine = MediaEngine(f"opengme-sdk-media-{open_id}", self, transport.send_binary,
                                 mode=self.media_transport, impairment=self.impairment or impairment_from_env())
            transport.on_binary = engine.on_ws_datagram
            transport.start()
            self._transport, self._engine = transport, engine
            self._owner = threading.get_ident()
            self._paused = False
            self._session = Session(
                app_id,
                open_id,
                entry_timeout=self.entry_timeout,
                reconnect_give_up=self.reconnect_give_up,
                heartbeat_interval=self.heartbeat_interval,
            )  # set last: other threads see either no session (1101) or a complete one
        problems = self_check()
        if problems:
            log.warning("SDK installation is partially upgraded: %s", "; ".join(problems))
            return ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE
        return ErrorCode.AV_OK

    def uninit(self) -> ErrorCode:
        """GME: ITMGContext::Uninit. Needed to change openid; leave the room first (1202 otherwise)."""
        with self._lock:
            refusal = self._refusal()
            if refusal is not None:
                return refusal
            assert self._session is not None and self._transport is not None
            if self._session.busy and not self._session.exiting:
                return ErrorCode.AV_ERR_ROOM_NOT_EXITED
            if self._audio.device_test_running:
                return ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED
            self._session = None  # first, so that other threads get 1101 from here on
            self._queue = []
            self._audio._shutdown()
            if self._engine is not None:
                self._engine.close()
            self._transport.stop()
            self._transport = self._owner = self._engine = None
        return ErrorCode.AV_OK

    def poll(self) -> ErrorCode:
        """GME: ITMGContext::Poll. The message pump: call it often (GME's demo: every 1/30 s)."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        assert self._session is not None and self._transport is not None
        session, notices = self._session, self._transport.notices
        while not notices.empty():
            session.handle(notices.get_nowait())
        now = self._now()
        session.tick(now)
        self._flush()
        self._sync_audio(session, now)
        events, self._queue = self._queue, []  # a delegate's own calls queue for the next poll
        for event, data in events:
            self._deliver(event, data)
        return ErrorCode.AV_OK

    def _deliver(self, event: EventType, data: dict[str, Any]) -> None:
        if self._delegate is None:
            return
        try:
            self._delegate(event, data)
        except Exception:  # one faulty handler must not stop the pump (GME's C++ delegate cannot throw)
            log.exception("the delegate raised on %s", event.name)

    def pause(self) -> ErrorCode:
        """GME: ITMGContext::Pause. Closes the audio devices (OS background); the room stays."""
        return self._set_paused(True)

    def resume(self) -> ErrorCode:
        """GME: ITMGContext::Resume."""
        return self._set_paused(False)

    def _set_paused(self, paused: bool) -> ErrorCode:
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        if paused == self._paused:
            return ErrorCode.AV_OK
        self._paused = paused
        return self._audio._set_paused(paused)

    def is_paused(self) -> bool:
        """Whether ``pause`` is in effect (the audio layer reads it)."""
        return self._readable() is not None and self._paused

    @staticmethod
    def get_sdk_version() -> str:
        """GME: ITMGContext::GetSDKVersion."""
        return __version__

    # --- rooms ---

    def enter_room(self, room_id: str, room_type: int, auth_buffer: bytes | str) -> ErrorCode:
        """GME: ITMGContext::EnterRoom. Result in ENTER_ROOM; AuthBuffer v1 bytes or v2 token (str/bytes)."""
        return self._call(lambda s, now: s.enter(room_id, room_type, auth_buffer, now))

    def exit_room(self) -> ErrorCode:
        """GME: ITMGContext::ExitRoom. EXIT_ROOM follows; during an entry the entry ends with 7013 instead."""
        return self._call(lambda s, now: s.exit(now))

    def is_room_entered(self) -> bool:
        """GME: ITMGContext::IsRoomEntered (True while reconnecting, as the room is kept)."""
        session = self._readable()
        return session is not None and session.entered

    def switch_room(self, room_id: str, auth_buffer: bytes | str) -> ErrorCode:
        """GME: ITMGContext::SwitchRoom. Result in SWITCH_ROOM (2001 still in the old room, 2002 out of both)."""
        return self._call(lambda s, now: s.switch(room_id, auth_buffer, now))

    def get_room(self) -> Room:
        """GME: ITMGContext::GetRoom. Always the same object; its calls answer 1201 outside a room."""
        return self._room

    def get_audio_ctrl(self) -> AudioCtrl:
        """GME: ITMGContext::GetAudioCtrl. Always the same object; see :mod:`opengme.sdk.audio_ctrl`."""
        return self._audio

    def set_audio_role(self, role: AudioRole) -> ErrorCode:
        """GME: ITMGContext::SetAudioRole: ANCHOR speaks, AUDIENCE only listens (enable_mic → 1004).

        Before entry or in a room; reset to ANCHOR on exit.
        """
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        if not isinstance(role, int) or isinstance(role, bool) or role not in AudioRole._value2member_map_:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self._audio._set_role(AudioRole(role))
        return ErrorCode.AV_OK

    def get_audio_role(self) -> AudioRole:
        """The role ``set_audio_role`` set (ANCHOR by default and after exit)."""
        return self._audio._role

    # --- invitations (GME's demo module, AV_ERR_INVITET/ACCEPTT/REFUSE_FAILED 1801-1803) ---

    def invite(self, open_id: str) -> ErrorCode:
        """Invite a connected user into this room; the answer arrives as INVITATION ACCEPTED/REFUSED."""
        return self._call(lambda s, now: s.invite(open_id, now))

    def accept_invitation(self, invite_id: str, auth_buffer: bytes | str) -> ErrorCode:
        """Accept and move into the inviter's room with ``auth_buffer`` (SWITCH_ROOM, or ENTER_ROOM outside a room)."""
        return self._call(lambda s, now: s.accept_invitation(invite_id, auth_buffer, now))

    def refuse_invitation(self, invite_id: str) -> ErrorCode:
        """Refuse an invitation received as INVITATION RECEIVED."""
        return self._call(lambda s, now: s.refuse_invitation(invite_id, now))
