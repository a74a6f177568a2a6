"""``SdkCore``: the one internal object a Context's facades share.

``Context``, ``Room`` and ``AudioCtrl`` (and the coming ``Ptt``, ``AudioEffectCtrl`` and
``RoomManager``) are thin facades over one core each: they validate arguments and apply GME's rules,
and reach everything else through the core's public methods, never through each other's privates.
The core holds:

- the refusal rules (:meth:`SdkCore.refusal`, applied by the :func:`guarded` decorator): 1101 before
  ``init``, 1007 from a thread other than ``init``'s, 1201 outside a room for calls that need one;
- the clock, the room session (pure, :class:`~opengme.sdk.session.Session`), the network thread
  (:class:`~opengme.sdk.transport.Transport`) and the audio thread
  (:class:`~opengme.sdk.media.MediaEngine`), from ``start`` (init) to ``stop`` (uninit);
- one event queue in the order things arose, which ``poll`` delivers;
- the audio settings snapshot (:class:`~opengme.sdk.audio_settings.AudioSettings`), the device
  registry and the opening of the selected devices, pause included;
- :class:`~opengme.sdk.room_audio.RoomAudio`, which keeps the media engine in line with the room.
"""
from __future__ import annotations

import copy
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

from opengme.core.impair import Impairment
from opengme.devices import DeviceList, DeviceRegistry, MicDevice, SpeakerDevice
from opengme.errors import ErrorCode, GmeError
from opengme.events import AudioRole, EventType
from opengme.sdk.audio_settings import AudioSettings
from opengme.sdk.game_voice import GameVoice
from opengme.sdk.media import MediaEngine, impairment_from_env
from opengme.sdk.media_session import MediaTransport
from opengme.sdk.room_audio import RoomAudio
from opengme.sdk.session import Event, Pending, RoomState, Session
from opengme.sdk.transport import Transport
from opengme.sdk.transport import signal_url as signal_url

D = TypeVar("D", MicDevice, SpeakerDevice)
P = ParamSpec("P")
R = TypeVar("R")
_CODE: Any = object()  # guarded's default: a refusal answers the code itself

log = logging.getLogger("opengme.sdk")


@dataclass(frozen=True)
class DeviceKind(Generic[D]):
    """What differs between the mic and the speaker in device handling (the rest is shared)."""

    type: type[Any]  # MicDevice or SpeakerDevice (abstract: mypy refuses them as a type[D])
    devices: Callable[[DeviceRegistry], DeviceList[D]]
    use: Callable[[MediaEngine, D | None], ErrorCode]
    held: Callable[[MediaEngine], D | None]


MIC = DeviceKind(MicDevice, attrgetter("mics"), MediaEngine.use_mic, attrgetter("mic"))
SPEAKER = DeviceKind(SpeakerDevice, attrgetter("speakers"), MediaEngine.use_speaker, attrgetter("speaker"))


def device_failure(error: GmeError) -> ErrorCode:
    """A device call's refusal as its code; the detail (which device, the library's error text for
    7014) goes to the log, since a GME call answers a code only."""
    log.warning("%s", error)
    return ErrorCode(error.code)


class Part(Protocol):
    """A facade with work of its own in ``poll`` and ``uninit`` (``Ptt``): attached to the core."""

    def pump(self) -> None:
        """``poll``'s share, on the owner's thread (events go through :meth:`SdkCore.emit`)."""

    def close(self) -> None:
        """``uninit``: stop and forget everything, emit nothing."""


class SdkCore:
    """One Context's shared state and plumbing (see the module docstring)."""

    def __init__(self, server_url: str, *, media_transport: MediaTransport = MediaTransport.AUTO,
                 impairment: Impairment | None = None, portaudio: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server_url = server_url
        self.url = signal_url(server_url)
        self.media_transport = MediaTransport(media_transport)
        self.impairment = impairment
        self.devices = DeviceRegistry(portaudio=portaudio)
        self.clock = clock
        self.session: Session | None = None
        self.transport: Transport | None = None
        self.owner: int | None = None
        self.paused = False
        self.audio = AudioSettings()
        self.room_audio = RoomAudio(self)
        self._engine: MediaEngine | None = None
        self._queue: list[Event] = []  # events for the next poll, in the order they arose
        self._parts: list[Part] = []
        # a part's own signalling: pushes by type, refusals by request kind (each Session gets them)
        self.push_handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.refusal_handlers: dict[str, Callable[[Pending, int, str], None]] = {}
        self.game_voice = GameVoice(self)  # range/team voice, audio routes, 3D (opengme.sdk.game_voice)

    # --- guards ---

    def refusal(self, *, room: bool = False, local: bool = False) -> ErrorCode | None:
        """Why a call may not run now, or None: 1101 before init (unless ``local``: device calls
        need no init), 1007 on a thread other than init's, 1201 outside a room when ``room``."""
        session = self.session
        if session is None:
            return None if local else ErrorCode.AV_ERR_CONTEXT_NOT_EXIST
        if threading.get_ident() != self.owner:
            return ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
        if room and not session.entered:
            return ErrorCode.AV_ERR_ROOM_NOT_EXIST
        return None

    def room(self) -> RoomState | None:
        """The room for a guarded call (None outside one)."""
        session = self.session
        return session.room if session is not None and session.entered else None

    @property
    def engine(self) -> MediaEngine:
        """The media engine of a guarded call (it exists from init to uninit)."""
        assert self._engine is not None, "guarded: exists from init to uninit"
        return self._engine

    def now(self) -> float:
        return self.clock()

    # --- life cycle ---

    def start(self, session: Session) -> None:
        """``init``: the threads start and the calling thread becomes the context's."""
        transport = Transport(self.url, name=f"opengme-sdk-{session.open_id}")
        engine = MediaEngine(f"opengme-sdk-media-{session.open_id}", self, transport.send_binary,
                             mode=self.media_transport, impairment=self.impairment or impairment_from_env())
        transport.on_binary = engine.on_ws_datagram
        transport.start()
        self.transport, self._engine = transport, engine
        self.owner = threading.get_ident()
        self.paused = False
        session.push_handlers, session.refusal_handlers = self.push_handlers, self.refusal_handlers
        if not session.entry_url:  # entries start at the context's server (a cluster may redirect them)
            session.entry_url = session.url = self.server_url
        self.session = session  # set last: other threads see either no session (1101) or a complete one

    def attach(self, part: Part) -> None:
        self._parts.append(part)

    def stop(self) -> None:
        """``uninit``: forget the room, the device test and pending events; join both threads."""
        assert self.transport is not None
        for part in self._parts:
            part.close()
        self.session = None  # first, so that other threads get 1101 from here on
        self._queue = []
        self.room_audio.reset()
        self.audio = self.audio.after_exit()
        if self._engine is not None:
            self._engine.close()
        self.transport.stop()
        self.transport = self.owner = self._engine = None

    # --- calls and events ---

    def call(self, action: Callable[[Session, float], ErrorCode]) -> ErrorCode:
        """Run one guarded API call on the session, pass its commands to the network thread and
        bring the audio in line."""
        assert self.session is not None
        code = action(self.session, self.now())
        self._flush()
        self.sync()
        return code

    def pump(self) -> list[Event]:
        """``poll``'s work: what the network thread saw, the session's timers; the events to deliver."""
        session, transport = self.session, self.transport
        assert session is not None and transport is not None
        notices = transport.notices
        while not notices.empty():
            session.handle(notices.get_nowait())
        now = self.now()
        session.tick(now)
        self._flush()
        self.sync(now)
        for part in self._parts:
            part.pump()
        events, self._queue = self._queue, []  # a delegate's own calls queue for the next poll
        return events

    def sync(self, now: float | None = None) -> None:
        """Queue the session's events, bring the audio in line with the room, queue the audio's
        events: one queue in the order things arose, so an EXIT never overtakes a HAS_AUDIO
        gathered inside an earlier call."""
        session = self.session
        if session is None:
            return
        self._queue += session.take_events()
        self._queue += self.room_audio.sync(session, self.now() if now is None else now)

    def emit(self, event: EventType, data: dict[str, Any]) -> None:
        """Queue an event for the next ``poll``, after those that arose before it."""
        self._queue.append((event, data))

    def _flush(self) -> None:
        if self.session is not None and self.transport is not None:
            self.transport.submit(self.session.take_commands())

    # --- audio ---

    def update_audio(self, settings: AudioSettings) -> None:
        """The new audio settings, applied to the media at once."""
        self.audio = settings
        if self._engine is not None:
            self._engine.apply(settings, self.room_audio.members)

    def set_role(self, role: AudioRole) -> None:
        self.update_audio(self.audio.with_role(role))

    def open_device(self, kind: DeviceKind[D]) -> ErrorCode:
        """Open the selected device of ``kind`` in the engine (the open one moves over)."""
        try:
            device = kind.devices(self.devices).current()
        except GmeError as exc:
            return device_failure(exc)
        return kind.use(self.engine, device)

    def close_device(self, kind: DeviceKind[D]) -> None:
        kind.use(self.engine, None)

    def close_devices(self) -> None:
        self.close_device(MIC)
        self.close_device(SPEAKER)

    def held(self, kind: DeviceKind[D]) -> D | None:
        """The open device of ``kind`` (None before init, too)."""
        return kind.held(self._engine) if self._engine is not None else None

    def end_device_test(self) -> None:
        self.update_audio(replace(self.audio, device_test=False))
        self.close_devices()

    def set_paused(self, paused: bool) -> ErrorCode:
        """Pause closes the devices; resume reopens what the switches say (first failure returned)."""
        if paused == self.paused:
            return ErrorCode.AV_OK
        self.paused = paused
        if paused:
            self.close_devices()
            return ErrorCode.AV_OK
        audio, code = self.audio, ErrorCode.AV_OK
        if audio.capture or audio.device_test:
            code = self.open_device(MIC)
        if audio.play or audio.device_test:
            code = self.open_device(SPEAKER) if code == ErrorCode.AV_OK else code
        return code


class Facade:
    """A GME interface object over a Context's core (``Context``, ``Room``, ``AudioCtrl`` …)."""

    def __init__(self, core: SdkCore) -> None:
        self._core = core


F = TypeVar("F", bound=Facade)


def guarded(*, room: bool = False, local: bool = False, empty: Any = _CODE,
            paired: Any = _CODE) -> Callable[[Callable[Concatenate[F, P], R]], Callable[Concatenate[F, P], R]]:
    """Refuse a facade call the way GME does (see :meth:`SdkCore.refusal` for ``room``/``local``).

    A refused call answers the code; a plain getter answers ``empty`` (its "nothing" value: 0, "",
    [], False) instead; a getter that returns ``(ErrorCode, value)`` answers ``(code, paired)``.
    """
    def decorate(method: Callable[Concatenate[F, P], R]) -> Callable[Concatenate[F, P], R]:
        @functools.wraps(method)
        def run(self: F, /, *args: P.args, **kwargs: P.kwargs) -> R:
            refusal = self._core.refusal(room=room, local=local)
            if refusal is None:
                return method(self, *args, **kwargs)
            if empty is not _CODE:
                return cast(R, copy.copy(empty))  # a fresh [] each time: the caller may keep it
            return cast(R, refusal if paired is _CODE else (refusal, paired))
        return run
    return decorate
