"""``AudioEffectCtrl``: GME's ``ITMGAudioEffectCtrl``: voice changer, karaoke, equalizer,
accompaniment and sound effects.

``Context.get_audio_effect_ctrl()`` always returns the same object. Rules:

- Like every SDK call: 1101 before ``init``, 1007 from another thread, 1201 outside a room (GME:
  "call after entering a room"). Voice changer, karaoke and equalizer calls answer 1004 for a bad
  argument; accompaniment calls answer GME's accompaniment codes (4001 cannot open, 4002 not audio,
  4003 cannot decode or longer than 10 min, 4004 bad argument, 4007 wrong state: nothing to pause,
  resume or stop) and sound-effect calls the effect codes 4051–4057 likewise (effects ≤ 30 s).
- Everything here is mixed into the voice that is sent, so it needs the mic captured (``enable_mic``
  or ``enable_audio_capture_device``): the accompaniment's clock is the capture's, and it waits while
  no mic is captured. ``enable_audio_send(False)`` stops sending without stopping the clock.
- What you hear yourself: ``enable_loop_back(True)`` (GME's EnableLoopBack; needs the speaker on)
  plays everything that is sent, voice changer included; an accompaniment started with
  ``loop_back=True`` and every sound effect are also heard locally while monitoring is off.
- ACCOMPANY_FINISH (1090) ``{"result": 0, "file_path": …, "is_finished": bool}`` when an
  accompaniment ends: ``is_finished`` True when it played to the end, False when stopped or replaced.
- Leaving the room stops the accompaniment and the effects (no event) and resets the voice type,
  karaoke and equalizer, like the other room-scoped audio state.

``set_equalizer`` is OpenGME's name for the 10-band equalizer (GME's signature is not in the
reference): ten gains in dB (±12) for 32, 64, 125, 250, 500 Hz, 1, 2, 4, 8 and 16 kHz.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from opengme.codec.opus import Frame
from opengme.core.effects import MAX_SEMITONES, Float, KaraokeType, VoiceEffects, VoiceType, to_float, to_pcm
from opengme.core.levels import MAX_VOLUME
from opengme.core.soundtrack import (
    LOCAL_RATE,
    MAX_ACCOMPANY_S,
    MAX_EFFECT_S,
    MAX_KEY,
    DecodeFailure,
    Soundtrack,
    Track,
    decode_file,
)
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.sdk.core import Facade, SdkCore, guarded

log = logging.getLogger("opengme.sdk")

FRAME_SAMPLES_48K = LOCAL_RATE // 50
MAX_EFFECTS = 32
"""Sound effects playing at once; more answer 4054."""
PITCH_RANGE = (0.5, 2.0)
GAIN_RANGE = (0.0, 5.0)

_ACC = {"open": ErrorCode.QAV_ERR_ACC_OPENFILE_FAILED, "format": ErrorCode.QAV_ERR_ACC_FILE_FORAMT_NOTSUPPORT,
        "decode": ErrorCode.QAV_ERR_ACC_DECODER_FAILED}
_EFFECT = {"open": ErrorCode.QAV_ERR_EFFECT_OPENFILE_FAILED,
           "format": ErrorCode.QAV_ERR_EFFECT_FILE_FORAMT_NOTSUPPORT,
           "decode": ErrorCode.QAV_ERR_EFFECT_DECODER_FAILED}


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(code: ErrorCode, why: str) -> ErrorCode:
    log.info("%s: %s", code.name, why)
    return code


class EffectStage:
    """The send stage and the local player of one Context: voice effects, then the soundtrack.

    Called on the audio thread (``__call__`` per captured frame, ``play`` per output period); the
    facade changes it on the owner's thread, under ``lock``."""

    def __init__(self, monitoring: Callable[[], bool]) -> None:
        self.lock = threading.Lock()
        self.voice = VoiceEffects()
        self.soundtrack = Soundtrack()
        self._monitoring = monitoring

    def __call__(self, frame: Frame, rate: int) -> Frame:
        with self.lock:
            if not self.voice.active and not self.soundtrack.active:
                return frame
            x: Float = self.voice.process_float(to_float(frame), rate) if self.voice.active else to_float(frame)
            if self.soundtrack.active:
                x = self.soundtrack.mix(x, rate, heard_in_monitor=self._monitoring())
            return to_pcm(x)

    def play(self, frame_samples: int) -> Frame:
        """The local speaker's share (48 kHz stereo): tracks heard locally, silence when none."""
        with self.lock:
            local = self.soundtrack.play_local()
        if local is None or len(local) != frame_samples:
            return np.zeros((frame_samples, 2), dtype=np.int16)
        return to_pcm(local)


class AudioEffectCtrl(Facade):
    """GME: ITMGAudioEffectCtrl (see the module docstring)."""

    def __init__(self, core: SdkCore) -> None:
        super().__init__(core)
        core.attach(self)
        self._stage = EffectStage(lambda: core.audio.loopback)
        self._installed = False
        self._in_room = False

    # --- the core's hooks (owner thread) ---

    def pump(self) -> None:
        """``poll``'s share: ACCOMPANY_FINISH for an accompaniment that ended; a room exit resets."""
        in_room = self._core.room() is not None
        if self._in_room and not in_room:
            self._reset()
        self._in_room = in_room
        with self._stage.lock:
            ended, self._stage.soundtrack.finished = self._stage.soundtrack.finished, []
        for track in ended:
            self._finished(track, True)

    def close(self) -> None:
        """``uninit``: stop everything, emit nothing."""
        self._reset()
        self._installed = False

    def _reset(self) -> None:
        with self._stage.lock:
            self._stage.voice = VoiceEffects()
            self._stage.soundtrack = Soundtrack()

    def _install(self) -> None:
        """Put the stage on the send path and the player on the speaker, once per init."""
        if not self._installed:
            engine = self._core.engine
            engine.set_send_stage(self._stage)
            engine.add_player(self._stage.play)
            self._installed = True

    def _finished(self, track: Track, played_out: bool) -> None:
        self._core.emit(EventType.ACCOMPANY_FINISH,
                        {"result": int(ErrorCode.AV_OK), "file_path": track.path, "is_finished": played_out})

    # --- voice changer, karaoke, equalizer ---

    @guarded(room=True)
    def set_voice_type(self, voice_type: int) -> ErrorCode:
        """GME: SetVoiceType (2.x numbering, 0 ORIGINAL_SOUND … 12 HUANG): others hear the effect."""
        if not _is_int(voice_type) or voice_type not in set(VoiceType):
            return _refuse(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"voice_type must be an int in 0..12, got {voice_type!r}")
        self._install()
        with self._stage.lock:
            self._stage.voice.set_voice_type(voice_type)
        return ErrorCode.AV_OK

    @guarded(room=True, empty=0)
    def get_voice_type(self) -> int:
        """The voice type in use (OpenGME; 0 outside a room)."""
        return int(self._stage.voice.voice_type)

    @guarded(room=True)
    def set_karaoke_type(self, karaoke_type: int) -> ErrorCode:
        """GME: SetKaraokeType (0 ORIGINAL … 8 LIMPID)."""
        if not _is_int(karaoke_type) or karaoke_type not in set(KaraokeType):
            return _refuse(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"karaoke_type must be an int in 0..8, got {karaoke_type!r}")
        self._install()
        with self._stage.lock:
            self._stage.voice.set_karaoke_type(karaoke_type)
        return ErrorCode.AV_OK

    @guarded(room=True)
    def set_equalizer(self, gains_db: Sequence[float]) -> ErrorCode:
        """The 10-band equalizer: gains in dB (±12) for 32 Hz … 16 kHz; all 0 turns it off."""
        if isinstance(gains_db, (str, bytes)) or not isinstance(gains_db, Sequence):
            return _refuse(ErrorCode.AV_ERR_INVALID_ARGUMENT, "gains_db must be a list of 10 numbers")
        self._install()
        with self._stage.lock:
            try:
                self._stage.voice.set_equalizer(gains_db)
            except ValueError as exc:
                return _refuse(ErrorCode.AV_ERR_INVALID_ARGUMENT, str(exc))
        return ErrorCode.AV_OK

    @guarded(room=True)
    def enable_loop_back(self, enable: bool) -> ErrorCode:
        """GME: EnableLoopBack: hear what you send (effects included); needs the speaker on."""
        if not _is_bool(enable):
            return _refuse(ErrorCode.AV_ERR_INVALID_ARGUMENT, "enable must be a bool")
        self._core.update_audio(replace(self._core.audio, loopback=enable))
        return ErrorCode.AV_OK

    # --- accompaniment ---

    @guarded(room=True)
    def start_accompany(self, file_path: str, loop_back: bool = True, loop_count: int = 1,
                        ms_time: int = 0) -> ErrorCode:
        """GME: StartAccompany. ``loop_back`` also plays it on the local speaker; ``loop_count`` is how
        many times it plays (-1 forever; 0 counts as 1); ``ms_time`` where it starts. The file is
        decoded here (a 3-minute mp3 takes a few hundred ms). Replaces a playing accompaniment."""
        bad = ErrorCode.QAV_ERR_ACC_BAD_PARAM
        if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
            return _refuse(bad, "file_path must be a non-empty str")
        if not _is_bool(loop_back):
            return _refuse(bad, "loop_back must be a bool")
        if not _is_int(loop_count) or loop_count < -1:
            return _refuse(bad, f"loop_count must be an int ≥ -1 (-1 forever), got {loop_count!r}")
        if not _is_int(ms_time) or ms_time < 0:
            return _refuse(bad, f"ms_time must be an int ≥ 0, got {ms_time!r}")
        path = os.fspath(file_path)
        try:
            pcm = decode_file(path, MAX_ACCOMPANY_S)
        except DecodeFailure as exc:
            return _refuse(_ACC[exc.kind], str(exc))
        track = Track(path, pcm, plays=-1 if loop_count == -1 else max(1, loop_count), loop_back=loop_back)
        track.seek(ms_time)
        self._install()
        with self._stage.lock:
            old, self._stage.soundtrack.accompany = self._stage.soundtrack.accompany, track
        if old is not None:
            self._finished(old, False)
        return ErrorCode.AV_OK

    def _accompany(self) -> Track | None:
        return self._stage.soundtrack.accompany

    @guarded(room=True)
    def stop_accompany(self, ducker_time: int = 0) -> ErrorCode:
        """GME: StopAccompany (``ducker_time`` is accepted; the stop is at the next frame). 4007 when
        nothing plays; ACCOMPANY_FINISH with is_finished False follows."""
        if not _is_int(ducker_time) or ducker_time < 0:
            return _refuse(ErrorCode.QAV_ERR_ACC_BAD_PARAM, "ducker_time must be an int ≥ 0")
        with self._stage.lock:
            track, self._stage.soundtrack.accompany = self._stage.soundtrack.accompany, None
        if track is None:
            return _refuse(ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL, "no accompaniment is playing")
        self._finished(track, False)
        return ErrorCode.AV_OK

    def _set_paused(self, paused: bool) -> ErrorCode:
        with self._stage.lock:
            track = self._accompany()
            if track is None or track.paused == paused:
                state = "nothing plays" if track is None else ("already paused" if paused else "not paused")
                return _refuse(ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL, f"accompaniment: {state}")
            track.paused = paused
        return ErrorCode.AV_OK

    @guarded(room=True)
    def pause_accompany(self) -> ErrorCode:
        """GME: PauseAccompany (4007 when nothing plays or it is paused)."""
        return self._set_paused(True)

    @guarded(room=True)
    def resume_accompany(self) -> ErrorCode:
        """GME: ResumeAccompany (4007 when nothing is paused)."""
        return self._set_paused(False)

    @guarded(room=True, empty=True)
    def is_accompany_play_end(self) -> bool:
        """GME: IsAccompanyPlayEnd: True when no accompaniment is playing (or paused)."""
        return self._accompany() is None

    def _set_flag(self, name: str, enable: object) -> ErrorCode:
        if not _is_bool(enable):
            return _refuse(ErrorCode.QAV_ERR_ACC_BAD_PARAM, "enable must be a bool")
        with self._stage.lock:
            track = self._accompany()
            if track is None:
                return _refuse(ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL, "no accompaniment is playing")
            setattr(track, name, enable)
        return ErrorCode.AV_OK

    @guarded(room=True)
    def enable_accompany_play(self, enable: bool) -> ErrorCode:
        """GME: EnableAccompanyPlay: whether others hear the accompaniment."""
        return self._set_flag("send", enable)

    @guarded(room=True)
    def enable_accompany_loop_back(self, enable: bool) -> ErrorCode:
        """GME: EnableAccompanyLoopBack: whether you hear it on your speaker."""
        return self._set_flag("loop_back", enable)

    @guarded(room=True)
    def set_accompany_volume(self, volume: int) -> ErrorCode:
        """GME: SetAccompanyVolume (0–200, default 100)."""
        if not _is_int(volume) or not 0 <= volume <= MAX_VOLUME:
            return _refuse(ErrorCode.QAV_ERR_ACC_BAD_PARAM, f"volume must be an int in 0..{MAX_VOLUME}")
        with self._stage.lock:
            self._stage.soundtrack.accompany_volume = volume
        return ErrorCode.AV_OK

    @guarded(room=True, empty=0)
    def get_accompany_volume(self) -> int:
        """GME: GetAccompanyVolume."""
        return self._stage.soundtrack.accompany_volume

    @guarded(room=True, empty=0)
    def get_accompany_file_total_time_by_ms(self) -> int:
        """GME: GetAccompanyFileTotalTimeByMs (0 when nothing plays)."""
        track = self._accompany()
        return track.duration_ms if track is not None else 0

    @guarded(room=True, empty=0)
    def get_accompany_file_current_played_time_by_ms(self) -> int:
        """GME: GetAccompanyFileCurrentPlayedTimeByMs (0 when nothing plays)."""
        track = self._accompany()
        return track.position_ms if track is not None else 0

    @guarded(room=True)
    def set_accompany_file_current_played_time_by_ms(self, ms: int) -> ErrorCode:
        """GME: SetAccompanyFileCurrentPlayedTimeByMs (past the end: the end)."""
        if not _is_int(ms) or ms < 0:
            return _refuse(ErrorCode.QAV_ERR_ACC_BAD_PARAM, "ms must be an int ≥ 0")
        with self._stage.lock:
            track = self._accompany()
            if track is None:
                return _refuse(ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL, "no accompaniment is playing")
            track.seek(ms)
        return ErrorCode.AV_OK

    @guarded(room=True)
    def set_accompany_key(self, key: int) -> ErrorCode:
        """GME: SetAccompanyKey: semitones, -12..12 (GME recommends -4..4); 0 is the original key."""
        if not _is_int(key) or not -MAX_KEY <= key <= MAX_KEY:
            return _refuse(ErrorCode.QAV_ERR_ACC_BAD_PARAM, f"key must be an int in -{MAX_KEY}..{MAX_KEY}")
        with self._stage.lock:
            track = self._accompany()
            if track is None:
                return _refuse(ErrorCode.QAV_ERR_ACC_STATE_ILLIGAL, "no accompaniment is playing")
            track.set_key(float(key))
        return ErrorCode.AV_OK

    # --- sound effects ---

    @guarded(room=True)
    def play_effect(self, sound_id: int, file_path: str, loop: bool = False, pitch: float = 1.0,
                    pan: float = 0.0, gain: float = 1.0) -> ErrorCode:
        """GME: PlayEffect. ``pitch`` 0.5–2.0 (frequency factor), ``pan`` -1 left … 1 right (your
        speaker, when it is stereo), ``gain`` 0–5. The same id replaces what it played."""
        bad = ErrorCode.QAV_ERR_EFFECT_BAD_PARAM
        if not _is_int(sound_id) or sound_id < 0:
            return _refuse(bad, f"sound_id must be an int ≥ 0, got {sound_id!r}")
        if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
            return _refuse(bad, "file_path must be a non-empty str")
        if not _is_bool(loop):
            return _refuse(bad, "loop must be a bool")
        checks: tuple[tuple[str, Any, tuple[float, float]], ...] = (
            ("pitch", pitch, PITCH_RANGE), ("pan", pan, (-1.0, 1.0)), ("gain", gain, GAIN_RANGE))
        for name, value, (low, high) in checks:
            if not _is_number(value) or not low <= value <= high:
                return _refuse(bad, f"{name} must be a number in {low:g}..{high:g}, got {value!r}")
        effects = self._stage.soundtrack.effects
        if sound_id not in effects and len(effects) >= MAX_EFFECTS:
            return _refuse(bad, f"at most {MAX_EFFECTS} sound effects play at once")
        path = os.fspath(file_path)
        try:
            pcm = decode_file(path, MAX_EFFECT_S)
        except DecodeFailure as exc:
            return _refuse(_EFFECT[exc.kind], str(exc))
        track = Track(path, pcm, plays=-1 if loop else 1, gain=float(gain), pan=float(pan))
        track.set_key(max(-MAX_SEMITONES, min(MAX_SEMITONES, 12 * math.log2(pitch))))
        self._install()
        with self._stage.lock:
            self._stage.soundtrack.effects[sound_id] = track
        return ErrorCode.AV_OK

    def _each_effect(self, sound_id: int | None, action: Callable[[int, Track], None]) -> ErrorCode:
        """Apply ``action`` to one effect (4057 when it is not playing) or to all (None)."""
        if sound_id is not None and not _is_int(sound_id):
            return _refuse(ErrorCode.QAV_ERR_EFFECT_BAD_PARAM, "sound_id must be an int")
        with self._stage.lock:
            effects = self._stage.soundtrack.effects
            if sound_id is not None and sound_id not in effects:
                return _refuse(ErrorCode.QAV_ERR_EFFECT_STATE_ILLIGAL, f"sound effect {sound_id} is not playing")
            for key in [sound_id] if sound_id is not None else list(effects):
                action(key, effects[key])
        return ErrorCode.AV_OK

    def _stop(self, key: int, track: Track) -> None:
        del self._stage.soundtrack.effects[key]

    @guarded(room=True)
    def pause_effect(self, sound_id: int) -> ErrorCode:
        """GME: PauseEffect (4057 for an id that is not playing)."""
        return self._each_effect(sound_id, lambda _, t: setattr(t, "paused", True))

    @guarded(room=True)
    def resume_effect(self, sound_id: int) -> ErrorCode:
        """GME: ResumeEffect."""
        return self._each_effect(sound_id, lambda _, t: setattr(t, "paused", False))

    @guarded(room=True)
    def stop_effect(self, sound_id: int) -> ErrorCode:
        """GME: StopEffect."""
        return self._each_effect(sound_id, self._stop)

    @guarded(room=True)
    def pause_all_effects(self) -> ErrorCode:
        """GME: PauseAllEffects."""
        return self._each_effect(None, lambda _, t: setattr(t, "paused", True))

    @guarded(room=True)
    def resume_all_effects(self) -> ErrorCode:
        """GME: ResumeAllEffects."""
        return self._each_effect(None, lambda _, t: setattr(t, "paused", False))

    @guarded(room=True)
    def stop_all_effects(self) -> ErrorCode:
        """GME: StopAllEffects."""
        return self._each_effect(None, self._stop)

    @guarded(room=True)
    def set_effects_volume(self, volume: int) -> ErrorCode:
        """GME: SetEffectsVolume (0–200, default 100), for every effect."""
        if not _is_int(volume) or not 0 <= volume <= MAX_VOLUME:
            return _refuse(ErrorCode.QAV_ERR_EFFECT_BAD_PARAM, f"volume must be an int in 0..{MAX_VOLUME}")
        with self._stage.lock:
            self._stage.soundtrack.effects_volume = volume
        return ErrorCode.AV_OK

    @guarded(room=True, empty=0)
    def get_effects_volume(self) -> int:
        """GME: GetEffectsVolume."""
        return self._stage.soundtrack.effects_volume
