"""``AudioCtrl``: GME's ``ITMGAudioCtrl``, the switches, volumes, meters and devices of real-time voice.

``Context.get_audio_ctrl()`` always returns the same object, as GME does. The rules, once:

- Like every SDK call: 1101 before ``init``, 1007 from a thread other than ``init``'s, 1004 (with
  the reason logged) for an argument of the wrong type or range.
- Calls about the call in progress need a room: 1201 outside one (while reconnecting the room is
  kept, so they work). Mic and speaker are OFF after entry; leaving closes the devices and clears the
  room-scoped state: the four switches, loopback, the blacklist, per-member volumes, volume tracking
  and the audio role. Mic/speaker volumes and the mix stream count are the user's and persist until
  ``uninit``. Switching rooms keeps everything (GME: "device state is kept").
- ``enable_mic(True)``/``enable_audio_send(True)`` answer 1004 for an AUDIENCE member and 7009 while
  the server has muted this member.
- Getters that can fail (a member's level or volume) return ``(ErrorCode, value)`` like
  ``Room.get_tiny_id``; plain getters return 0/False outside a room or from another thread. Volumes
  read 101 until set (GME).
- Device listing, selection and registration work from Context creation on (no room needed);
  ``select_mic``/``select_speaker`` answer 1301 for an unknown id and move an open device over.
  A device another Context holds answers 1008 when this one tries to open it.
- ``start_device_test`` loops the mic into the speaker outside a room (1002 in one; 1602 when running,
  1601 to stop one that is not; entering a room ends it).

Events (queued by the Context in the order they arise among the room's): USER_UPDATE HAS_AUDIO /
NO_AUDIO with openids, USER_VOLUMES ``{openid: 0–100}`` while tracking, CHANGE_ROOM_QUALITY every 2 s
with the server's view of the uplink loss and the RTT the media engine measures; at once, and with
loss 1.0, when the media path goes silent (no echo for 3 s), and again when it answers. After a
reconnect, members that were speaking get NO_AUDIO (the new media session never heard them; those
still talking get HAS_AUDIO again); after a switch the old room's members get EXIT only.

OpenGME additions: ``register_mic``/``register_speaker`` add file and memory devices (see
:mod:`opengme.devices`), ``use_mic_file``/``use_speaker_file`` register and select a file in one call.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from opengme.core.levels import MAX_VOLUME
from opengme.core.mixer import DEFAULT_MIX_STREAMS, MAX_MIX_STREAMS
from opengme.devices import DeviceInfo, DeviceList, DeviceRegistry, FileMic, FileSpeaker, MicDevice, SpeakerDevice
from opengme.errors import ErrorCode, GmeError
from opengme.events import AudioRole, EventType, RoomType, UserUpdateEvent
from opengme.protocol.signalling import media_key
from opengme.sdk.media import EngineEvent, MediaEngine, Speaking, Volumes, room_quality
from opengme.sdk.session import Event, Session, valid_open_id

if TYPE_CHECKING:
    from opengme.sdk.context import Context
    from opengme.sdk.session import RoomState

SDK_STAMP = "0.1.0"

UNSET_VOLUME = 101
"""What GetMicVolume / GetSpeakerVolume read before any Set (GME)."""
QUALITY_INTERVAL_S = 2.0
MAX_TRACK_S = 60.0

log = logging.getLogger("opengme.sdk")


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(why: str) -> ErrorCode:
    log.info("invalid argument: %s", why)
    return ErrorCode.AV_ERR_INVALID_ARGUMENT


D = TypeVar("D", MicDevice, SpeakerDevice)


@dataclass(frozen=True)
class _Kind(Generic[D]):
    """What differs between the mic and the speaker in device handling (the rest is shared)."""

    type: type[Any]  # MicDevice or SpeakerDevice (abstract: mypy refuses them as a type[D])
    devices: Callable[[DeviceRegistry], DeviceList[D]]
    use: Callable[[MediaEngine, D | None], ErrorCode]
    held: Callable[[MediaEngine], D | None]


_MIC = _Kind(MicDevice, attrgetter("mics"), MediaEngine.use_mic, attrgetter("mic"))
_SPEAKER = _Kind(SpeakerDevice, attrgetter("speakers"), MediaEngine.use_speaker, attrgetter("speaker"))


class AudioCtrl:
    """GME: ITMGAudioCtrl (see the module docstring for the rules)."""

    def __init__(self, context: Context, *, portaudio: bool = True) -> None:
        self._context = context
        self.devices = DeviceRegistry(portaudio=portaudio)
        self._mic_volume: int | None = None
        self._speaker_volume: int | None = None
        self._mix_count = DEFAULT_MIX_STREAMS
        self._device_test = False
        self._in_room = False
        self._events: list[Event] = []
        self._reset_room_state()

    def _reset_room_state(self) -> None:
        self._capture = self._send = self._play = self._recv = False
        self._loopback = False
        self._blacklist: set[str] = set()
        self._member_volumes: dict[str, int] = {}
        self._track_s: float | None = None
        self._role = AudioRole.ANCHOR
        self._applied: tuple[object, ...] | None = None
        self._quality_seen: object = None
        self._next_quality: float | None = None
        self._silent_reported = False
        self._media_room: RoomState | None = None  # the room the engine's media session belongs to

    # --- guards ---

    @property
    def _engine(self) -> MediaEngine:
        engine = self._context._engine
        assert engine is not None, "guarded: exists from init to uninit"
        return engine

    def _room_refusal(self) -> ErrorCode | None:
        """1101/1007 from the context, 1201 outside a room, None when the call may run."""
        refusal = self._context._refusal()
        if refusal is not None:
            return refusal
        return None if self._in_room else ErrorCode.AV_ERR_ROOM_NOT_EXIST

    def _room(self) -> RoomState | None:
        session = self._context._readable()
        return session.room if session is not None and session.entered else None

    def _local_refusal(self) -> ErrorCode | None:
        """Device calls need no init, but after it only its thread may make them."""
        return self._context._refusal() if self._context._session is not None else None

    # --- capture (GME §4.1) ---

    def enable_mic(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableMic = EnableAudioCaptureDevice + EnableAudioSend."""
        refusal = self._room_refusal() or self._send_refusal(enable)
        if refusal is not None:
            return refusal
        if not enable:
            self._set_send(False)
            return self._set_capture(False)
        # Send first, so the mic's first frame is not gated away by a tick between the two steps.
        was_sending = self._send
        self._set_send(True)
        code = self._set_capture(True)
        if code != ErrorCode.AV_OK:
            self._set_send(was_sending)
        return code

    def enable_audio_capture_device(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioCaptureDevice: opens or closes the selected mic."""
        refusal = self._room_refusal() or (None if _is_bool(enable) else _invalid("enable must be a bool"))
        return refusal if refusal is not None else self._set_capture(enable)

    def enable_audio_send(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioSend: the upstream only (push-to-talk toggles this)."""
        refusal = self._room_refusal() or self._send_refusal(enable)
        if refusal is not None:
            return refusal
        self._set_send(enable)
        return ErrorCode.AV_OK

    def _send_refusal(self, enable: object) -> ErrorCode | None:
        if not _is_bool(enable):
            return _invalid("enable must be a bool")
        if enable and self._role is AudioRole.AUDIENCE:
            return _invalid("an AUDIENCE member cannot send audio (set_audio_role(AudioRole.ANCHOR) first)")
        room = self._room()
        if enable and room is not None and room.muted:
            return ErrorCode.AV_ERR_NO_PERMISSION
        return None

    def _set_capture(self, enable: bool) -> ErrorCode:
        if enable and not self._capture and not self._context._paused:
            code = self._open(_MIC)
            if code != ErrorCode.AV_OK:
                return code
        elif not enable:
            self._engine.use_mic(None)
        self._capture = enable
        return ErrorCode.AV_OK

    def _set_send(self, enable: bool) -> None:
        self._send = enable
        self._engine.set_send(enable)

    def is_audio_capture_device_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioCaptureDeviceEnabled."""
        return self._readable_flag(self._capture)

    def is_audio_send_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioSendEnabled."""
        return self._readable_flag(self._send)

    def get_mic_state(self) -> int:
        """GME: ITMGAudioCtrl::GetMicState: 1 when capturing and sending, else 0."""
        return int(self._readable_flag(self._capture and self._send))

    def get_mic_level(self) -> int:
        """GME: ITMGAudioCtrl::GetMicLevel (0–100), before send gating; poll every ~20 ms."""
        return self._engine.mic_level() if self._readable_room() else 0

    def get_send_stream_level(self) -> int:
        """GME: ITMGAudioCtrl::GetSendStreamLevel (0–100): 0 while send is off."""
        return self._engine.send_level() if self._readable_room() else 0

    def set_mic_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetMicVolume (0–200 %, 0 mutes)."""
        refusal = self._room_refusal() or self._volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._mic_volume = volume
        self._engine.set_mic_volume(volume)
        return ErrorCode.AV_OK

    def get_mic_volume(self) -> int:
        """GME: ITMGAudioCtrl::GetMicVolume: 101 until set."""
        return UNSET_VOLUME if self._mic_volume is None else self._mic_volume

    @staticmethod
    def _volume_refusal(volume: object) -> ErrorCode | None:
        if not _is_int(volume) or not 0 <= volume <= MAX_VOLUME:  # type: ignore[operator]
            return _invalid(f"volume must be an int in 0..{MAX_VOLUME}, got {volume!r}")
        return None

    # --- playback (GME §4.2) ---

    def enable_speaker(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableSpeaker = EnableAudioPlayDevice + EnableAudioRecv."""
        code = self.enable_audio_play_device(enable)
        return self.enable_audio_recv(enable) if code == ErrorCode.AV_OK else code

    def enable_audio_play_device(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioPlayDevice: opens or closes the selected speaker."""
        refusal = self._room_refusal() or (None if _is_bool(enable) else _invalid("enable must be a bool"))
        if refusal is not None:
            return refusal
        if enable and not self._play and not self._context._paused:
            code = self._open(_SPEAKER)
            if code != ErrorCode.AV_OK:
                return code
        elif not enable:
            self._engine.use_speaker(None)
        self._play = enable
        return ErrorCode.AV_OK

    def enable_audio_recv(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioRecv: the downstream only."""
        refusal = self._room_refusal() or (None if _is_bool(enable) else _invalid("enable must be a bool"))
        if refusal is not None:
            return refusal
        self._recv = enable
        self._engine.set_recv(enable)
        return ErrorCode.AV_OK

    def is_audio_play_device_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioPlayDeviceEnabled."""
        return self._readable_flag(self._play)

    def is_audio_recv_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioRecvEnabled."""
        return self._readable_flag(self._recv)

    def get_speaker_state(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerState: 1 when playing and receiving, else 0."""
        return int(self._readable_flag(self._play and self._recv))

    def get_speaker_level(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerLevel (0–100) of what was last played."""
        return self._engine.speaker_level() if self._readable_room() else 0

    def get_recv_stream_level(self, open_id: str) -> tuple[ErrorCode, int]:
        """GME: ITMGAudioCtrl::GetRecvStreamLevel (0–200 = level × that member's volume %).

        Returns ``(ErrorCode, level)``: 1401 (AV_ERR_ENDPOINT_NOT_EXIST) for an openid that is not
        another member of the room, 1004 for one that is not an openid at all.
        """
        code, tinyid = self._member(open_id)
        return (code, self._engine.recv_stream_level(tinyid)) if code == ErrorCode.AV_OK else (code, 0)

    def set_speaker_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetSpeakerVolume (0–200 %)."""
        refusal = self._room_refusal() or self._volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._speaker_volume = volume
        self._engine.set_speaker_volume(volume)
        return ErrorCode.AV_OK

    def get_speaker_volume(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerVolume: 101 until set."""
        return UNSET_VOLUME if self._speaker_volume is None else self._speaker_volume

    def set_speaker_volume_by_openid(self, open_id: str, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetSpeakerVolumeByOpenID: one member's playback volume, locally (0–200 %).

        Any valid openid is accepted (the member may enter later); it is forgotten on exit.
        """
        refusal = self._room_refusal() or self._openid_refusal(open_id) or self._volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._member_volumes[open_id] = volume
        return self._resync()

    def get_speaker_volume_by_openid(self, open_id: str) -> tuple[ErrorCode, int]:
        """GME: ITMGAudioCtrl::GetSpeakerVolumeByOpenID: ``(ErrorCode, volume)``, 100 until set."""
        refusal = self._room_refusal() or self._openid_refusal(open_id)
        if refusal is not None:
            return refusal, 0
        return ErrorCode.AV_OK, self._member_volumes.get(open_id, 100)

    def enable_loopback(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableLoopBack: hear yourself (needs the speaker on to be heard)."""
        refusal = self._room_refusal() or (None if _is_bool(enable) else _invalid("enable must be a bool"))
        if refusal is not None:
            return refusal
        self._loopback = enable
        self._engine.set_loopback(enable)
        return ErrorCode.AV_OK

    def set_recv_mix_stream_count(self, count: int) -> ErrorCode:
        """GME: SetRecvMixStreamCount: how many speakers are mixed at once (1–20, default 6)."""
        refusal = self._context._refusal()
        if refusal is not None:
            return refusal
        if not _is_int(count) or not 1 <= count <= MAX_MIX_STREAMS:
            return _invalid(f"mix stream count must be an int in 1..{MAX_MIX_STREAMS}, got {count!r}")
        self._mix_count = count
        self._engine.set_max_streams(count)
        return ErrorCode.AV_OK

    def get_recv_mix_stream_count(self) -> int:
        return self._mix_count

    # --- local mute (GME §4.3) ---

    def add_audio_black_list(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::AddAudioBlackList: stop hearing a member on this device (1003 if listed)."""
        refusal = self._room_refusal() or self._openid_refusal(open_id)
        if refusal is not None:
            return refusal
        if open_id in self._blacklist:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._blacklist.add(open_id)
        return self._resync()

    def remove_audio_black_list(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::RemoveAudioBlackList (1003 when the openid is not listed)."""
        refusal = self._room_refusal() or self._openid_refusal(open_id)
        if refusal is not None:
            return refusal
        if open_id not in self._blacklist:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._blacklist.discard(open_id)
        return self._resync()

    def get_audio_black_list(self) -> list[str]:
        """The openids blacklisted in this room (OpenGME addition)."""
        return sorted(self._blacklist) if self._readable_room() else []

    # --- volume tracking (USER_VOLUMES 1020) ---

    def track_volume(self, seconds: float) -> ErrorCode:
        """GME: ITMGAudioCtrl::TrackingVolume: USER_VOLUMES every ``seconds`` (GME suggests 0.5)."""
        refusal = self._room_refusal()
        if refusal is not None:
            return refusal
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= MAX_TRACK_S:
            return _invalid(f"tracking interval must be in (0, {MAX_TRACK_S:g}] seconds, got {seconds!r}")
        self._track_s = float(seconds)
        self._engine.track_volume(self._track_s, self._context._now())
        return ErrorCode.AV_OK

    def stop_track_volume(self) -> ErrorCode:
        """GME: ITMGAudioCtrl::StopTrackingVolume."""
        refusal = self._room_refusal()
        if refusal is not None:
            return refusal
        self._track_s = None
        self._engine.track_volume(None, self._context._now())
        return ErrorCode.AV_OK

    # --- devices (GME §4.1/§4.2, desktop) ---

    def get_mic_list_count(self) -> int:
        """GME: ITMGAudioCtrl::GetMicListCount."""
        return len(self._list(_MIC))

    def get_mic_list(self) -> list[DeviceInfo]:
        """GME: ITMGAudioCtrl::GetMicList: "0" (the default) first, then every device."""
        return self._list(_MIC)

    def select_mic(self, device_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::SelectMic ("0" = the default); an open mic moves to the new device."""
        code, lost = self._select(_MIC, device_id)
        self._capture = self._capture and not lost
        return code

    def get_speaker_list_count(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerListCount."""
        return len(self._list(_SPEAKER))

    def get_speaker_list(self) -> list[DeviceInfo]:
        """GME: ITMGAudioCtrl::GetSpeakerList."""
        return self._list(_SPEAKER)

    def select_speaker(self, device_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::SelectSpeaker; an open speaker moves to the new device."""
        code, lost = self._select(_SPEAKER, device_id)
        self._play = self._play and not lost
        return code

    def register_mic(self, device: MicDevice) -> ErrorCode:
        """Add a file or memory mic to the list (OpenGME); select it with ``select_mic(device.id)``."""
        return self._register(_MIC, device)

    def register_speaker(self, device: SpeakerDevice) -> ErrorCode:
        """Add a file or memory speaker to the list (OpenGME)."""
        return self._register(_SPEAKER, device)

    def use_mic_file(self, path: str | os.PathLike[str], *, loop: bool = False) -> ErrorCode:
        """Speak from an audio file: register a ``FileMic`` for ``path`` (once) and select it."""
        refusal = self._local_refusal()
        return refusal if refusal is not None else self.select_mic(self._listed(_MIC, FileMic(path, loop=loop)))

    def use_speaker_file(self, path: str | os.PathLike[str]) -> ErrorCode:
        """Record what is heard to a WAV file (written on close): register a ``FileSpeaker`` and select it."""
        refusal = self._local_refusal()
        return refusal if refusal is not None else self.select_speaker(self._listed(_SPEAKER, FileSpeaker(path)))

    def _list(self, kind: _Kind[D]) -> list[DeviceInfo]:
        return [] if self._local_refusal() else kind.devices(self.devices).infos()

    def _select(self, kind: _Kind[D], device_id: object) -> tuple[ErrorCode, bool]:
        """Select ``device_id``; an open device moves over. Also says whether the open one was lost
        (the new device would not open), which turns its switch off."""
        refusal = self._local_refusal() or (None if isinstance(device_id, str) else _invalid("device id must be a str"))
        if refusal is not None:
            return refusal, False
        assert isinstance(device_id, str)
        code = kind.devices(self.devices).select(device_id)
        if code != ErrorCode.AV_OK or self._held(kind) is None:
            return code, False
        code = self._open(kind)
        if code != ErrorCode.AV_OK:
            kind.use(self._engine, None)
        return code, code != ErrorCode.AV_OK

    def _register(self, kind: _Kind[D], device: object) -> ErrorCode:
        refusal = self._local_refusal()
        if refusal is not None:
            return refusal
        if not isinstance(device, kind.type):
            return _invalid(f"not a {kind.type.__name__}")
        return kind.devices(self.devices).register(device)

    def _listed(self, kind: _Kind[D], device: D) -> str:
        """``device``'s id, registered unless one with that id (the same file) already is."""
        devices = kind.devices(self.devices)
        if devices.find(device.id) is None:
            devices.register(device)
        return device.id

    def _open(self, kind: _Kind[D]) -> ErrorCode:
        try:
            device = kind.devices(self.devices).current()
        except GmeError as exc:
            return ErrorCode(exc.code)
        return kind.use(self._engine, device)

    def _held(self, kind: _Kind[D]) -> D | None:
        engine = self._context._engine
        return kind.held(engine) if engine is not None else None

    # --- device test (1601/1602) ---

    def start_device_test(self) -> ErrorCode:
        """Loop the selected mic into the selected speaker, outside a room (1002 in one, 1602 if running)."""
        refusal = self._context._refusal()
        if refusal is not None:
            return refusal
        if self._in_room:
            return ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
        if self._device_test:
            return ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED
        self._device_test = self._engine.device_test = True
        code = self._open(_SPEAKER)  # first: the mic's first frame must have somewhere to go
        if code == ErrorCode.AV_OK:
            code = self._open(_MIC)
        if code != ErrorCode.AV_OK:
            self._end_device_test()
        return code

    def stop_device_test(self) -> ErrorCode:
        """End the device test (1601 when none is running)."""
        refusal = self._context._refusal()
        if refusal is not None:
            return refusal
        if not self._device_test:
            return ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST
        self._end_device_test()
        return ErrorCode.AV_OK

    @property
    def device_test_running(self) -> bool:
        return self._device_test

    def _end_device_test(self) -> None:
        self._device_test = self._engine.device_test = False
        self._engine.use_mic(None)
        self._engine.use_speaker(None)

    # --- hooks for Context ---

    def _set_role(self, role: AudioRole) -> None:
        """Context.set_audio_role: an AUDIENCE member stops sending at once."""
        self._role = AudioRole(role)
        if self._role is AudioRole.AUDIENCE and self._send:
            self._set_send(False)

    def _set_paused(self, paused: bool) -> ErrorCode:
        """Pause closes the devices; resume reopens what the switches say (first failure returned)."""
        engine = self._engine
        if paused:
            engine.use_mic(None)
            engine.use_speaker(None)
            return ErrorCode.AV_OK
        code = ErrorCode.AV_OK
        if self._capture or self._device_test:
            code = self._open(_MIC)
        if self._play or self._device_test:
            code = self._open(_SPEAKER) if code == ErrorCode.AV_OK else code
        return code

    def _readable_flag(self, flag: bool) -> bool:
        return flag and self._readable_room()

    def _readable_room(self) -> bool:
        return self._in_room and self._context._readable() is not None

    def _openid_refusal(self, open_id: object) -> ErrorCode | None:
        return None if valid_open_id(open_id) else _invalid(f"not an openid: {open_id!r}")

    def _member(self, open_id: object) -> tuple[ErrorCode, int]:
        """Another member's tinyid for a per-member getter: 1201/1004/1401 as the rules say."""
        refusal = self._room_refusal() or self._openid_refusal(open_id)
        if refusal is not None:
            return refusal, 0
        session, room = self._context._session, self._room()
        assert isinstance(open_id, str) and session is not None and room is not None
        tinyid = room.tinyids.get(open_id)
        if tinyid is None or open_id == session.open_id:
            return ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST, 0
        return ErrorCode.AV_OK, tinyid

    def _resync(self) -> ErrorCode:
        session = self._context._session
        if session is not None:
            self._context._sync_audio(session, self._context._now())
        return ErrorCode.AV_OK

    def _sync(self, session: Session, now: float) -> None:
        """Bring the media engine in line with the room (called by Context after every call and poll)."""
        engine = self._engine
        room = session.room if session.entered else None
        if room is None:
            if self._in_room:
                self._leave()
            return
        if not self._in_room:
            self._enter()
        key = media_key(room.media) if room.media is not None else None  # validated on arrival
        if key is not None and key != engine.key:
            assert room.media is not None
            host = urlsplit(self._context.server_url).hostname or "127.0.0.1"
            ended = engine.start_room(key, room.tinyid, RoomType(room.room_type), host, room.media["udp_port"], now)
            before, self._media_room = self._media_room, room
            if before is not None:  # the old session's last events, named as it knew them, for members
                # still here: those gone (all of them after a switch) get the session's EXIT instead
                self._publish(ended, {t: o for t, o in before.open_ids.items() if o in room.tinyids})
            self._applied = None
            self._next_quality = now + QUALITY_INTERVAL_S
        if engine.key is None:
            return
        engine.set_room_type(RoomType(room.room_type))
        others = {t for o, t in room.tinyids.items() if o != session.open_id}
        blacklist = {room.tinyids[o] for o in self._blacklist if o in room.tinyids}
        volumes = {room.tinyids[o]: v for o, v in self._member_volumes.items() if o in room.tinyids}
        applied = (frozenset(others), frozenset(blacklist), tuple(sorted(volumes.items())))
        if applied != self._applied:
            engine.set_members(others)
            engine.set_blacklist(blacklist)
            engine.set_member_volumes(volumes)
            self._applied = applied
        if room.quality is not None and room.quality is not self._quality_seen:
            self._quality_seen = room.quality
            engine.set_uplink_loss(float(room.quality["uplink_loss"]))
        self._collect(engine, room, now)

    def _collect(self, engine: MediaEngine, room: RoomState, now: float) -> None:
        """Turn the engine's events into GME events with openids, and add the quality report: every
        2 s, and at once when the path goes silent or answers again (the server's last ``quality``
        push is stale then: it reports only members it hears)."""
        self._publish(engine.take_events(), room.open_ids)
        silent = engine.silent
        if self._next_quality is not None and (now >= self._next_quality or silent != self._silent_reported):
            self._next_quality = now + QUALITY_INTERVAL_S
            self._silent_reported = silent
            loss = 1.0 if silent else float(room.quality["uplink_loss"]) if room.quality is not None else None
            self._events.append((EventType.CHANGE_ROOM_QUALITY, room_quality(loss, engine.rtt)))

    def _publish(self, events: Iterable[EngineEvent], open_ids: Mapping[int, str]) -> None:
        """Engine events as GME events, naming members through ``open_ids`` (unknown tinyids are dropped)."""
        for event in events:
            if isinstance(event, Speaking):
                open_id = open_ids.get(event.tinyid)
                if open_id is not None:
                    self._user_update(event.event, open_id)
            elif isinstance(event, Volumes):
                levels = {open_ids[t]: v for t, v in event.levels.items() if t in open_ids}
                self._events.append((EventType.USER_VOLUMES, levels))

    def _user_update(self, event_id: UserUpdateEvent, open_id: str) -> None:
        """Consecutive changes of one kind share one USER_UPDATE, as GME's user_list does."""
        if self._events:
            kind, data = self._events[-1]
            if kind is EventType.USER_UPDATE and data["event_id"] == event_id:
                data["user_list"].append(open_id)
                return
        self._events.append((EventType.USER_UPDATE, {"event_id": event_id, "user_list": [open_id]}))

    def _enter(self) -> None:
        """Mic and speaker are off after entry (GME); a device test ends."""
        if self._device_test:
            self._end_device_test()
        self._in_room = True

    def _leave(self) -> None:
        """Devices close on exit; the room-scoped state goes (the role included, GME)."""
        engine = self._engine
        engine.stop_room()
        engine.use_mic(None)
        engine.use_speaker(None)
        engine.set_send(False)
        engine.set_recv(False)
        engine.set_loopback(False)
        engine.set_blacklist(())
        engine.set_member_volumes({})
        engine.track_volume(None, self._context._now())
        self._in_room = False
        self._reset_room_state()

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _shutdown(self) -> None:
        """uninit: forget the room and the device test (the engine is closed by the context)."""
        self._in_room = self._device_test = False
        self._events = []
        self._reset_room_state()
