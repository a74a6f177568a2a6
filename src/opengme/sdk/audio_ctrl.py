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
  the server has muted this member; every enabling call answers 7009 while a room manager forbids
  this member's devices (``ForbidUserOperation``, until it leaves the room).
- Getters that can fail (a member's level or volume) return ``(ErrorCode, value)`` like
  ``Room.get_tiny_id``; plain getters return 0/False outside a room or from another thread. Volumes
  read 101 until set (GME).
- Device listing, selection and registration work from Context creation on (no room needed);
  ``select_mic``/``select_speaker`` answer 1301 for an unknown id and move an open device over.
  A device another Context holds answers 1008 when this one tries to open it. With no device at all
  because PortAudio failed to load (headless machines), ``enable_mic``/``enable_speaker``/
  ``select_mic("0")``/``start_device_test`` answer 7014 (AV_ERR_LOAD_LIB_FAILED), and the
  library's error text goes to the ``opengme.sdk`` log, as every device refusal's detail does.
- ``start_device_test`` loops the mic into the speaker outside a room (1202 in one, GME's "room not
  exited"; 1602 when running, 1601 to stop one that is not; entering a room ends it).

Events (queued by the Context in the order they arise among the room's, see
:mod:`opengme.sdk.room_audio`): USER_UPDATE HAS_AUDIO / NO_AUDIO with openids, USER_VOLUMES
``{openid: 0–100}`` while tracking, CHANGE_ROOM_QUALITY every 2 s with the server's view of the uplink
loss and the RTT the media engine measures; at once, and with loss 1.0, when the media path goes
silent (no echo for 3 s), and again when it answers.

The settings live in the core's one :class:`~opengme.sdk.audio_settings.AudioSettings` snapshot; this
facade checks the rules and replaces it (``SdkCore.update_audio``), and the media session applies it.

OpenGME additions: ``register_mic``/``register_speaker`` add file and memory devices (see
:mod:`opengme.devices`), ``use_mic_file``/``use_speaker_file`` register and select a file in one call.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from opengme.core.levels import MAX_VOLUME
from opengme.core.mixer import MAX_MIX_STREAMS
from opengme.devices import DeviceInfo, DeviceRegistry, FileMic, FileSpeaker, MicDevice, SpeakerDevice
from opengme.errors import ErrorCode, GmeError
from opengme.events import AudioRole
from opengme.sdk.core import MIC, SPEAKER, D, DeviceKind, Facade, device_failure, guarded
from opengme.sdk.session import valid_open_id

UNSET_VOLUME = 101
"""What GetMicVolume / GetSpeakerVolume read before any Set (GME)."""
MAX_TRACK_S = 60.0

log = logging.getLogger("opengme.sdk")


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid(why: str) -> ErrorCode:
    log.info("invalid argument: %s", why)
    return ErrorCode.AV_ERR_INVALID_ARGUMENT


def _forbidden() -> ErrorCode:
    log.info("a room manager forbade this member's devices until it leaves the room (ForbidUserOperation)")
    return ErrorCode.AV_ERR_NO_PERMISSION


def _bool_refusal(enable: object) -> ErrorCode | None:
    return None if _is_bool(enable) else _invalid("enable must be a bool")


def _volume_refusal(volume: object) -> ErrorCode | None:
    if not _is_int(volume) or not 0 <= volume <= MAX_VOLUME:  # type: ignore[operator]
        return _invalid(f"volume must be an int in 0..{MAX_VOLUME}, got {volume!r}")
    return None


def _openid_refusal(open_id: object) -> ErrorCode | None:
    return None if valid_open_id(open_id) else _invalid(f"not an openid: {open_id!r}")


class AudioCtrl(Facade):
    """GME: ITMGAudioCtrl (see the module docstring for the rules)."""

    @property
    def devices(self) -> DeviceRegistry:
        """The mic and speaker lists (shared with the other facades: one selection per Context)."""
        return self._core.devices

    def _update(self, **changes: Any) -> None:
        self._core.update_audio(replace(self._core.audio, **changes))

    # --- capture (GME §4.1) ---

    @guarded(room=True)
    def enable_mic(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableMic = EnableAudioCaptureDevice + EnableAudioSend."""
        refusal = self._send_refusal(enable)
        if refusal is not None:
            return refusal
        if not enable:
            self._update(send=False)
            return self._set_capture(False)
        # Send first, so the mic's first frame is not gated away by a tick between the two steps.
        was_sending = self._core.audio.send
        self._update(send=True)
        code = self._set_capture(True)
        if code != ErrorCode.AV_OK:
            self._update(send=was_sending)
        return code

    @guarded(room=True)
    def enable_audio_capture_device(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioCaptureDevice: opens or closes the selected mic."""
        return _bool_refusal(enable) or self._set_capture(enable)

    @guarded(room=True)
    def enable_audio_send(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioSend: the upstream only (push-to-talk toggles this)."""
        refusal = self._send_refusal(enable)
        if refusal is not None:
            return refusal
        self._update(send=enable)
        return ErrorCode.AV_OK

    def _send_refusal(self, enable: object) -> ErrorCode | None:
        if not _is_bool(enable):
            return _invalid("enable must be a bool")
        if enable and self._core.audio.role is AudioRole.AUDIENCE:
            return _invalid("an AUDIENCE member cannot send audio (set_audio_role(AudioRole.ANCHOR) first)")
        room = self._core.room()
        if enable and room is not None and room.muted:
            return ErrorCode.AV_ERR_NO_PERMISSION
        if enable and self._core.audio.forbidden:
            return _forbidden()
        return None

    def _set_capture(self, enable: bool) -> ErrorCode:
        core = self._core
        if enable and core.audio.forbidden:
            return _forbidden()
        if enable and not core.audio.capture and not core.paused:
            code = core.open_device(MIC)
            if code != ErrorCode.AV_OK:
                return code
        elif not enable:
            core.close_device(MIC)
        self._update(capture=enable)
        return ErrorCode.AV_OK

    @guarded(room=True, empty=False)
    def is_audio_capture_device_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioCaptureDeviceEnabled."""
        return self._core.audio.capture

    @guarded(room=True, empty=False)
    def is_audio_send_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioSendEnabled."""
        return self._core.audio.send

    @guarded(room=True, empty=0)
    def get_mic_state(self) -> int:
        """GME: ITMGAudioCtrl::GetMicState: 1 when capturing and sending, else 0."""
        return int(self._core.audio.capture and self._core.audio.send)

    @guarded(room=True, empty=0)
    def get_mic_level(self) -> int:
        """GME: ITMGAudioCtrl::GetMicLevel (0–100), before send gating; poll every ~20 ms."""
        return self._core.engine.mic_level()

    @guarded(room=True, empty=0)
    def get_send_stream_level(self) -> int:
        """GME: ITMGAudioCtrl::GetSendStreamLevel (0–100): 0 while send is off."""
        return self._core.engine.send_level()

    @guarded(room=True)
    def set_mic_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetMicVolume (0–200 %, 0 mutes)."""
        refusal = _volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._update(mic_volume=volume)
        return ErrorCode.AV_OK

    def get_mic_volume(self) -> int:
        """GME: ITMGAudioCtrl::GetMicVolume: 101 until set."""
        volume = self._core.audio.mic_volume
        return UNSET_VOLUME if volume is None else volume

    # --- playback (GME §4.2) ---

    def enable_speaker(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableSpeaker = EnableAudioPlayDevice + EnableAudioRecv."""
        code = self.enable_audio_play_device(enable)
        return self.enable_audio_recv(enable) if code == ErrorCode.AV_OK else code

    @guarded(room=True)
    def enable_audio_play_device(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioPlayDevice: opens or closes the selected speaker."""
        refusal = _bool_refusal(enable)
        if refusal is not None:
            return refusal
        core = self._core
        if enable and core.audio.forbidden:
            return _forbidden()
        if enable and not core.audio.play and not core.paused:
            code = core.open_device(SPEAKER)
            if code != ErrorCode.AV_OK:
                return code
        elif not enable:
            core.close_device(SPEAKER)
        self._update(play=enable)
        return ErrorCode.AV_OK

    @guarded(room=True)
    def enable_audio_recv(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableAudioRecv: the downstream only."""
        refusal = _bool_refusal(enable)
        if refusal is not None:
            return refusal
        self._update(recv=enable)
        return ErrorCode.AV_OK

    @guarded(room=True, empty=False)
    def is_audio_play_device_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioPlayDeviceEnabled."""
        return self._core.audio.play

    @guarded(room=True, empty=False)
    def is_audio_recv_enabled(self) -> bool:
        """GME: ITMGAudioCtrl::IsAudioRecvEnabled."""
        return self._core.audio.recv

    @guarded(room=True, empty=0)
    def get_speaker_state(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerState: 1 when playing and receiving, else 0."""
        return int(self._core.audio.play and self._core.audio.recv)

    @guarded(room=True, empty=0)
    def get_speaker_level(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerLevel (0–100) of what was last played."""
        return self._core.engine.speaker_level()

    @guarded(room=True, paired=0)
    def get_recv_stream_level(self, open_id: str) -> tuple[ErrorCode, int]:
        """GME: ITMGAudioCtrl::GetRecvStreamLevel (0–200 = level × that member's volume %).

        Returns ``(ErrorCode, level)``: 1401 (AV_ERR_ENDPOINT_NOT_EXIST) for an openid that is not
        another member of the room, 1004 for one that is not an openid at all.
        """
        refusal = _openid_refusal(open_id)
        if refusal is not None:
            return refusal, 0
        session, room = self._core.session, self._core.room()
        assert session is not None and room is not None
        tinyid = room.tinyids.get(open_id)
        if tinyid is None or open_id == session.open_id:
            return ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST, 0
        return ErrorCode.AV_OK, self._core.engine.recv_stream_level(tinyid)

    @guarded(room=True)
    def set_speaker_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetSpeakerVolume (0–200 %)."""
        refusal = _volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._update(speaker_volume=volume)
        return ErrorCode.AV_OK

    def get_speaker_volume(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerVolume: 101 until set."""
        volume = self._core.audio.speaker_volume
        return UNSET_VOLUME if volume is None else volume

    @guarded(room=True)
    def set_speaker_volume_by_openid(self, open_id: str, volume: int) -> ErrorCode:
        """GME: ITMGAudioCtrl::SetSpeakerVolumeByOpenID: one member's playback volume, locally (0–200 %).

        Any valid openid is accepted (the member may enter later); it is forgotten on exit.
        """
        refusal = _openid_refusal(open_id) or _volume_refusal(volume)
        if refusal is not None:
            return refusal
        self._core.update_audio(self._core.audio.with_member_volume(open_id, volume))
        self._core.sync()
        return ErrorCode.AV_OK

    @guarded(room=True, paired=0)
    def get_speaker_volume_by_openid(self, open_id: str) -> tuple[ErrorCode, int]:
        """GME: ITMGAudioCtrl::GetSpeakerVolumeByOpenID: ``(ErrorCode, volume)``, 100 until set."""
        refusal = _openid_refusal(open_id)
        if refusal is not None:
            return refusal, 0
        return ErrorCode.AV_OK, self._core.audio.member_volumes.get(open_id, 100)

    @guarded(room=True)
    def enable_loopback(self, enable: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableLoopBack: hear yourself (needs the speaker on to be heard)."""
        refusal = _bool_refusal(enable)
        if refusal is not None:
            return refusal
        self._update(loopback=enable)
        return ErrorCode.AV_OK

    # --- 3A: echo cancellation, gain control, noise suppression (OpenGME: core.apm) ---

    @guarded()
    def enable_aec(self, enable: bool) -> ErrorCode:
        """Acoustic echo cancellation of what the speaker plays (default on in every room type)."""
        return self._switch(aec=enable)

    @guarded()
    def enable_agc(self, enable: bool) -> ErrorCode:
        """Automatic gain control of the mic (default off: for quiet or distant mics)."""
        return self._switch(agc=enable)

    @guarded()
    def enable_ns(self, enable: bool) -> ErrorCode:
        """Noise suppression, GME's ANS (default on in FLUENCY rooms only, as in GME)."""
        return self._switch(ns=enable)

    def _switch(self, **change: bool) -> ErrorCode:
        refusal = _bool_refusal(next(iter(change.values())))
        if refusal is not None:
            return refusal
        self._update(processing=replace(self._core.audio.processing, **change))
        return ErrorCode.AV_OK

    @guarded()
    def set_recv_mix_stream_count(self, count: int) -> ErrorCode:
        """GME: SetRecvMixStreamCount: how many speakers are mixed at once (1–20, default 6)."""
        if not _is_int(count) or not 1 <= count <= MAX_MIX_STREAMS:
            return _invalid(f"mix stream count must be an int in 1..{MAX_MIX_STREAMS}, got {count!r}")
        self._update(mix_streams=count)
        return ErrorCode.AV_OK

    def get_recv_mix_stream_count(self) -> int:
        return self._core.audio.mix_streams

    # --- local mute (GME §4.3) ---

    @guarded(room=True)
    def add_audio_black_list(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::AddAudioBlackList: stop hearing a member on this device (1003 if listed)."""
        refusal = _openid_refusal(open_id)
        if refusal is not None:
            return refusal
        blacklist = self._core.audio.blacklist
        if open_id in blacklist:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._update(blacklist=blacklist | {open_id})
        self._core.sync()
        return ErrorCode.AV_OK

    @guarded(room=True)
    def remove_audio_black_list(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::RemoveAudioBlackList (1003 when the openid is not listed)."""
        refusal = _openid_refusal(open_id)
        if refusal is not None:
            return refusal
        blacklist = self._core.audio.blacklist
        if open_id not in blacklist:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._update(blacklist=blacklist - {open_id})
        self._core.sync()
        return ErrorCode.AV_OK

    @guarded(room=True, empty=[])
    def get_audio_black_list(self) -> list[str]:
        """The openids blacklisted in this room (OpenGME addition)."""
        return sorted(self._core.audio.blacklist)

    # --- 3D voice (issue 14; opengme.sdk.game_voice, opengme.sdk.spatializer) ---

    @guarded()
    def init_spatializer(self, model_path: str | os.PathLike[str] = "") -> ErrorCode:
        """GME: ITMGAudioCtrl::InitSpatializer: a SOFA HRTF file, "" for the built-in one (7002 when
        it cannot be loaded, the reason logged)."""
        if not isinstance(model_path, (str, os.PathLike)):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        try:
            self._core.game_voice.spatial.init(model_path)
        except GmeError as exc:
            return device_failure(exc)
        return ErrorCode.AV_OK

    @guarded()
    def enable_spatializer(self, enable: bool, apply_team: bool) -> ErrorCode:
        """GME: ITMGAudioCtrl::EnableSpatializer (7003 before init_spatializer); stereo output while on."""
        if not (_is_bool(enable) and _is_bool(apply_team)):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        try:
            self._core.game_voice.enable_3d(enable, apply_team)
        except GmeError as exc:
            return device_failure(exc)
        return ErrorCode.AV_OK

    @guarded(empty=False)
    def is_enable_spatializer(self) -> bool:
        """GME: ITMGAudioCtrl::IsEnableSpatializer."""
        return self._core.game_voice.spatial.enabled

    @guarded()
    def add_spatializer_blacklist(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::AddSpatializerBlacklist: hear this member plainly (no 3D, no attenuation)."""
        return _openid_refusal(open_id) or self._core.game_voice.set_blacklisted(open_id, True)

    @guarded()
    def remove_spatializer_blacklist(self, open_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::RemoveSpatializerBlacklist."""
        return _openid_refusal(open_id) or self._core.game_voice.set_blacklisted(open_id, False)

    @guarded()
    def clear_spatializer_blacklist(self) -> ErrorCode:
        """GME: ITMGAudioCtrl::ClearSpatializerBlacklist."""
        return self._core.game_voice.set_blacklisted("", None)

    # --- volume tracking (USER_VOLUMES 1020) ---

    @guarded(room=True)
    def track_volume(self, seconds: float) -> ErrorCode:
        """GME: ITMGAudioCtrl::TrackingVolume: USER_VOLUMES every ``seconds`` (GME suggests 0.5)."""
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= MAX_TRACK_S:
            return _invalid(f"tracking interval must be in (0, {MAX_TRACK_S:g}] seconds, got {seconds!r}")
        self._update(track_volume_s=float(seconds))
        return ErrorCode.AV_OK

    @guarded(room=True)
    def stop_track_volume(self) -> ErrorCode:
        """GME: ITMGAudioCtrl::StopTrackingVolume."""
        self._update(track_volume_s=None)
        return ErrorCode.AV_OK

    # --- devices (GME §4.1/§4.2, desktop) ---

    @guarded(local=True, empty=0)
    def get_mic_list_count(self) -> int:
        """GME: ITMGAudioCtrl::GetMicListCount."""
        return len(self.devices.mics.infos())

    @guarded(local=True, empty=[])
    def get_mic_list(self) -> list[DeviceInfo]:
        """GME: ITMGAudioCtrl::GetMicList: "0" (the default) first, then every device."""
        return self.devices.mics.infos()

    @guarded(local=True)
    def select_mic(self, device_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::SelectMic ("0" = the default); an open mic moves to the new device."""
        code, lost = self._select(MIC, device_id)
        if lost:
            self._update(capture=False)
        return code

    @guarded(local=True, empty=0)
    def get_speaker_list_count(self) -> int:
        """GME: ITMGAudioCtrl::GetSpeakerListCount."""
        return len(self.devices.speakers.infos())

    @guarded(local=True, empty=[])
    def get_speaker_list(self) -> list[DeviceInfo]:
        """GME: ITMGAudioCtrl::GetSpeakerList."""
        return self.devices.speakers.infos()

    @guarded(local=True)
    def select_speaker(self, device_id: str) -> ErrorCode:
        """GME: ITMGAudioCtrl::SelectSpeaker; an open speaker moves to the new device."""
        code, lost = self._select(SPEAKER, device_id)
        if lost:
            self._update(play=False)
        return code

    @guarded(local=True)
    def register_mic(self, device: MicDevice) -> ErrorCode:
        """Add a file or memory mic to the list (OpenGME); select it with ``select_mic(device.id)``."""
        return self._register(MIC, device)

    @guarded(local=True)
    def register_speaker(self, device: SpeakerDevice) -> ErrorCode:
        """Add a file or memory speaker to the list (OpenGME)."""
        return self._register(SPEAKER, device)

    @guarded(local=True)
    def use_mic_file(self, path: str | os.PathLike[str], *, loop: bool = False) -> ErrorCode:
        """Speak from an audio file: register a ``FileMic`` for ``path`` (once) and select it."""
        return self.select_mic(self._listed(MIC, FileMic(path, loop=loop)))

    @guarded(local=True)
    def use_speaker_file(self, path: str | os.PathLike[str]) -> ErrorCode:
        """Record what is heard to a WAV file (written on close): register a ``FileSpeaker`` and select it."""
        return self.select_speaker(self._listed(SPEAKER, FileSpeaker(path)))

    def _select(self, kind: DeviceKind[D], device_id: object) -> tuple[ErrorCode, bool]:
        """Select ``device_id``; an open device moves over. Also says whether the open one was lost
        (the new device would not open), which turns its switch off."""
        if not isinstance(device_id, str):
            return _invalid("device id must be a str"), False
        core, devices = self._core, kind.devices(self._core.devices)
        if devices.select(device_id) != ErrorCode.AV_OK:
            return device_failure(devices.missing(device_id)), False  # 1301, or 7014 without PortAudio
        if core.held(kind) is None:
            return ErrorCode.AV_OK, False
        code = core.open_device(kind)
        if code != ErrorCode.AV_OK:
            core.close_device(kind)
        return code, code != ErrorCode.AV_OK

    def _register(self, kind: DeviceKind[D], device: object) -> ErrorCode:
        if not isinstance(device, kind.type):
            return _invalid(f"not a {kind.type.__name__}")
        return kind.devices(self.devices).register(device)

    def _listed(self, kind: DeviceKind[D], device: D) -> str:
        """``device``'s id, registered unless one with that id (the same file) already is."""
        devices = kind.devices(self.devices)
        if devices.find(device.id) is None:
            devices.register(device)
        return device.id

    # --- device test (1601/1602) ---

    @guarded()
    def start_device_test(self) -> ErrorCode:
        """Loop the selected mic into the selected speaker, outside a room (1202 in one, 1602 if running)."""
        core = self._core
        if core.room() is not None:
            return ErrorCode.AV_ERR_ROOM_NOT_EXITED
        if core.audio.device_test:
            return ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED
        self._update(device_test=True)
        code = core.open_device(SPEAKER)  # first: the mic's first frame must have somewhere to go
        if code == ErrorCode.AV_OK:
            code = core.open_device(MIC)
        if code != ErrorCode.AV_OK:
            core.end_device_test()
        return code

    @guarded()
    def stop_device_test(self) -> ErrorCode:
        """End the device test (1601 when none is running)."""
        if not self._core.audio.device_test:
            return ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST
        self._core.end_device_test()
        return ErrorCode.AV_OK
