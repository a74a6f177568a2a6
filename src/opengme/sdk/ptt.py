"""``Ptt``: GME's ``ITMGPTT`` (voice messages) in Python spelling: record, upload, download, play.

Voice messages need ``init`` but no room. Recording reads the mic chosen with the audio-control
device API (a file or memory mic works headless) through the media engine's mic tap, and playback
mixes into the selected speaker through its local-player seam, inside a room or not; a device the
call opened closes again when no room switch or device test needs it. Files are Ogg/Opus, mono
16 kHz, VBR ~20 kbps (:mod:`opengme.codec.voicefile`), written atomically.

Outcomes arrive in ``poll`` like every other event: PTT_RECORD_COMPLETE (5001 {result, file_path}),
PTT_UPLOAD_COMPLETE (5002 {result, file_path, file_id}), PTT_DOWNLOAD_COMPLETE (5003 {result,
file_path, file_id}) and PTT_PLAY_COMPLETE (5004 {result, file_path}). Uploads and downloads run in
worker threads (:mod:`opengme.sdk.ptt_transfer`), never on the caller's.

Choices where GME leaves room (documented once, here):

- Recording: a call's own mistakes answer at once (4097 empty path, 4099 already recording, 4101
  folder missing or unwritable, 4098 the mic would not open, 4102 the system refused it (the device
  answered 7010), 4104 stop/pause/resume without a recording); what the recording turned out to be
  arrives in 5001: 0, 4100 (nothing captured), 4103 (shorter than 1000 ms; no file then either),
  4101 (the file could not be finished). The maximum length stops a recording by itself (5001
  with 0). Pausing a paused or resuming a running recording is a no-op (AV_OK).
- Upload and download answer AV_OK (1004 for a wrong type) and report everything else in their
  event, 8200/12297 (no ``apply_ptt_auth_buffer``) included, so an app has one place to look.
  A file id carrying a link signature (the ``download_url`` of docs/protocol.md) downloads without
  the AuthBuffer; a bad or expired link gives 12293.
- Playback: 20483 empty path, 20484 a file that cannot be opened or decoded, 20481 the speaker
  would not open, 20482 another message is still playing (``stop_play_file`` first: a playback is
  never cut off implicitly), 20485 ``stop_play_file`` with nothing playing. ``stop_play_file``
  still gives 5004 with 0. ``voice_type`` (GME 2.x's 0–12) is applied as the message plays; the file is left as it is.
- Levels (0-100) are those of the last frame recorded / played; volumes are 0-200 (100 = as
  captured / as recorded), 1004 outside.
- ``get_file_size`` and ``get_voice_file_duration`` return ``(ErrorCode, value)``: 7010 when the
  file cannot be read, 7011 when it is not a sound Ogg/Opus file (duration only).

Speech-to-text (``speech_to_text``, ``text_to_speech``, ``translate_text``) and streaming recognition
(``start_recording_with_streaming_recognition``) live in :mod:`opengme.sdk.stt` and
:mod:`opengme.sdk.stt_stream`, whose docstrings list their codes and choices.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt

from opengme.codec.voicefile import FRAME_SAMPLES, SAMPLE_RATE, VoiceFileWriter, voice_file_duration_ms
from opengme.core.downlink import OUTPUT_RATE
from opengme.core.effects import VoiceEffects, VoiceType
from opengme.core.levels import MAX_VOLUME, mic_level
from opengme.devices import FileMic
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType
from opengme.protocol import ptt as proto
from opengme.protocol.signalling import encode_auth_buffer
from opengme.sdk.core import MIC, SPEAKER, DeviceKind, Facade, SdkCore, guarded
from opengme.sdk.media_session import OUTPUT_SAMPLES
from opengme.sdk.ptt_transfer import DOWNLOAD, Outcome, Transfers, file_id_problem, is_signed_link
from opengme.sdk.stt import SpeechReport, SpeechRequests, language_refusal
from opengme.sdk.stt_stream import COMPLETE as STREAM_COMPLETE
from opengme.sdk.stt_stream import RUNNING as STREAM_RUNNING
from opengme.sdk.stt_stream import StreamClient, finish_streaming, stream_url
from opengme.stt.base import DEFAULT_LANGUAGE

MIN_MESSAGE_MS: Final = 1000
MAX_MESSAGE_MS: Final = 58_000
UNITY: Final = 100
_PENDING_MAX: Final = MAX_MESSAGE_MS // 20 + 50  # captured frames waiting for poll: a whole message

Pcm = npt.NDArray[np.int16]
log = logging.getLogger("opengme.sdk.ptt")


def _invalid(why: str) -> ErrorCode:
    log.info("invalid argument: %s", why)
    return ErrorCode.AV_ERR_INVALID_ARGUMENT


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _volume_refusal(volume: object) -> ErrorCode | None:
    if isinstance(volume, bool) or not isinstance(volume, int) or not 0 <= volume <= MAX_VOLUME:
        return _invalid(f"volume must be an int in 0..{MAX_VOLUME}")
    return None


def _scaled(pcm: Pcm, volume: int) -> Pcm:
    """``pcm`` at ``volume`` percent (saturating)."""
    if volume == UNITY:
        return pcm
    return np.clip(pcm.astype(np.int32) * volume // UNITY, -32768, 32767).astype(np.int16)


class Recording:
    """One recording: captured frames (any rate) → 16 kHz mono 20 ms frames → the voice file.

    The mic tap (audio thread) only appends to ``pending``; ``drain`` (the owner's thread, in
    ``poll``) resamples, applies the volume and encodes, and stops at ``max_samples``.
    """

    def __init__(self, path: str, max_ms: int) -> None:
        self.path = path
        self.writer = VoiceFileWriter(path)  # OSError: the folder is missing or unwritable (4101)
        self.max_samples = max_ms * SAMPLE_RATE // 1000 // FRAME_SAMPLES * FRAME_SAMPLES
        self.pending: deque[tuple[Pcm, int]] = deque()
        self.paused = False
        self.level = 0
        self._resamplers: dict[int, av.AudioResampler] = {}
        self._carry = np.zeros(0, np.int16)
        self._written = 0
        self.on_frame: Callable[[Pcm], None] | None = None  # streaming recognition hears each written frame

    def tap(self, frame: Pcm, rate: int) -> None:
        """The mic tap (audio thread): keep the frame for ``drain``."""
        if not self.paused and len(self.pending) < _PENDING_MAX:
            self.pending.append((frame.reshape(-1).copy(), rate))

    @property
    def full(self) -> bool:
        return self._written >= self.max_samples

    @property
    def duration_ms(self) -> int:
        return self._written * 1000 // SAMPLE_RATE

    def drain(self, volume: int) -> None:
        """Encode what was captured since the last drain (up to the maximum length)."""
        while self.pending and not self.full:
            frame, rate = self.pending.popleft()
            self._write(self._resample(frame, rate), volume)

    def _resample(self, pcm: Pcm, rate: int) -> Pcm:
        if rate == SAMPLE_RATE:
            return pcm
        resampler = self._resamplers.get(rate)
        if resampler is None:
            resampler = self._resamplers[rate] = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        parts = [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        return np.concatenate(parts).astype(np.int16, copy=False) if parts else np.zeros(0, np.int16)

    def _write(self, pcm: Pcm, volume: int) -> None:
        samples = np.concatenate([self._carry, _scaled(pcm, volume)])
        usable = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, usable, FRAME_SAMPLES):
            if self.full:
                break
            frame = samples[start:start + FRAME_SAMPLES]
            self.writer.write(frame)
            if self.on_frame is not None:
                self.on_frame(frame)
            self.level = mic_level(frame)
            self._written += FRAME_SAMPLES
        self._carry = samples[usable:]

    def finish(self) -> ErrorCode:
        """Commit the file (0), or drop it: 4100 nothing captured, 4103 too short, 4101 unwritable."""
        if self._written == 0:
            self.writer.abort()
            return ErrorCode.QAVPTTERROR_RECORDER_NODATA_ERR
        if self.duration_ms < MIN_MESSAGE_MS:
            self.writer.abort()
            return ErrorCode.QAVPTTERROR_RECORDER_AUDIO_TOO_SHORT
        try:
            self.writer.commit()
        except OSError as exc:
            log.warning("cannot finish the recording %s: %s", self.path, exc)
            return ErrorCode.QAVPTTERROR_RECORDER_OPENFILE_ERR
        return ErrorCode.AV_OK


class Playback:
    """One message playing: the local-player source the audio thread pulls 48 kHz frames from.

    The file is decoded as it plays (a file mic at the output rate does exactly that), so a long
    message costs neither memory nor a pause on the caller's thread.
    """

    def __init__(self, path: str, volume: list[int], voice_type: VoiceType = VoiceType.ORIGINAL_SOUND) -> None:
        self.path = path
        self._decoder = FileMic(path)
        self._effects = VoiceEffects()  # GME applies the voice type at playback; the file stays as it is
        self._effects.set_voice_type(voice_type)
        self._volume = volume  # the facade's [volume]: a change applies from the next frame
        self.level = 0
        self.finished = threading.Event()

    def open(self) -> None:
        """Decode the first frame: GmeError 7010/7011 when the file cannot be played."""
        self._decoder.open(OUTPUT_RATE, OUTPUT_SAMPLES, owner=self)

    def close(self) -> None:
        self._decoder.close()

    def __call__(self, frame_samples: int) -> Pcm | None:
        try:
            frame = self._decoder.read_frame()
        except GmeError as exc:  # damage found half way: the playback ends there
            log.warning("playback of %s stopped: %s", self.path, exc.detail)
            frame = None
        if frame is None:
            self.finished.set()
            self.level = 0
            return None
        frame = _scaled(self._effects.process(frame.reshape(-1)[:frame_samples], OUTPUT_RATE), self._volume[0])
        self.level = mic_level(frame)
        return frame


class Ptt(Facade):
    """GME: ITMGPTT (see the module docstring for the rules)."""

    def __init__(self, core: SdkCore) -> None:
        super().__init__(core)
        core.attach(self)
        self._transfers = Transfers("opengme-sdk-ptt")
        self._speech = SpeechRequests(self._transfers)
        self.reset()

    def reset(self) -> None:
        """The state after ``init``: no AuthBuffer, 58 s, volumes 100, nothing recording or playing."""
        self._auth_buffer: bytes | str | None = None
        self._max_ms = MAX_MESSAGE_MS
        self._mic_volume = UNITY
        self._speaker_volume = [UNITY]
        self._recording: Recording | None = None
        self._playback: Playback | None = None
        self._stream: StreamClient | None = None  # the streaming recognition of the recording
        self._streaming = False  # from its start until its 5006 is reported

    # --- the core's hooks (owner thread) ---

    def pump(self) -> None:
        """``poll``'s share: encode what was captured, notice a finished playback, report transfers."""
        recording = self._recording
        if recording is not None:
            self._keep_open(MIC)
            recording.drain(self._mic_volume)
            if self._stream is not None:
                self._report_partials(self._stream, recording.path)
            if recording.full:
                self._end_recording()
        playback = self._playback
        if playback is not None:
            self._keep_open(SPEAKER)
            if playback.finished.is_set():
                self._end_playback()
        done = self._transfers.done
        while not done.empty():
            finished = done.get_nowait()
            if isinstance(finished, SpeechReport):
                self._speak(finished)
            else:
                self._report(finished)

    def close(self) -> None:
        """``uninit``: drop a recording (no file), stop a playback, wait for transfers; no events."""
        if self._recording is not None:
            self._core.engine.remove_mic_tap(self._recording.tap)
            self._recording.writer.abort()
        if self._stream is not None:
            self._stream.close()
        if self._playback is not None:
            self._core.engine.remove_player(self._playback)
            self._playback.close()
        self._transfers.close()
        self.reset()

    def _keep_open(self, kind: DeviceKind[Any]) -> None:
        """A room exit closes the devices: a recording or playback that goes on reopens its device."""
        core = self._core
        if core.held(kind) is None and not core.paused:
            core.open_device(kind)

    def _report(self, outcome: Outcome) -> None:
        if outcome.code != ErrorCode.AV_OK:
            log.info("voice message %s failed (%d): %s", "download" if outcome.download else "upload",
                     outcome.code, outcome.message)
        event = EventType.PTT_DOWNLOAD_COMPLETE if outcome.download else EventType.PTT_UPLOAD_COMPLETE
        self._core.emit(event, {"result": outcome.code, "file_path": outcome.file_path, "file_id": outcome.file_id})

    # --- auth and limits ---

    @guarded()
    def apply_ptt_auth_buffer(self, auth_buffer: bytes | str) -> ErrorCode:
        """GME: ApplyPTTAuthbuffer. A room-less AuthBuffer (empty room id) for this openid: v1 bytes or v2 token."""
        if not isinstance(auth_buffer, (bytes, str)) or not auth_buffer:
            return _invalid("the PTT AuthBuffer must be non-empty bytes (v1) or a str token (v2)")
        try:
            encode_auth_buffer(auth_buffer)
        except (TypeError, ValueError) as exc:
            return _invalid(f"the PTT AuthBuffer cannot be sent: {exc}")
        self._auth_buffer = auth_buffer
        return ErrorCode.AV_OK

    @guarded()
    def set_max_message_length(self, ms: int) -> ErrorCode:
        """GME: SetMaxMessageLength: 1000 < ms <= 58000 (default 58000); a recording stops there."""
        if not _is_int(ms) or not MIN_MESSAGE_MS < ms <= MAX_MESSAGE_MS:
            return _invalid(f"the maximum message length is in ms, {MIN_MESSAGE_MS} < ms <= {MAX_MESSAGE_MS}")
        self._max_ms = ms
        return ErrorCode.AV_OK

    # --- recording ---

    @guarded()
    def start_recording(self, file_path: str) -> ErrorCode:
        """GME: StartRecording. Records the selected mic into ``file_path`` (Ogg/Opus) until stopped."""
        if not isinstance(file_path, (str, os.PathLike)):
            return _invalid("file_path must be a str")
        path = os.fspath(file_path)
        if not path:
            return ErrorCode.QAVPTTERROR_RECORDER_PARAM_NULL
        if self._recording is not None:
            return ErrorCode.QAVPTTERROR_RECORDER_RECORDING_ERR
        if Path(path).is_dir():
            log.info("cannot record into %s: it is a folder", path)
            return ErrorCode.QAVPTTERROR_RECORDER_OPENFILE_ERR
        try:
            recording = Recording(path, self._max_ms)
        except OSError as exc:
            log.info("cannot record into %s: %s", path, exc.strerror or exc)
            return ErrorCode.QAVPTTERROR_RECORDER_OPENFILE_ERR
        core = self._core
        code = ErrorCode.AV_OK if core.held(MIC) is not None else core.open_device(MIC)
        if code != ErrorCode.AV_OK:
            recording.writer.abort()
            log.info("the mic for recording would not open (%d)", code)
            return (ErrorCode.QAVPTTERROR_RECORDER_PERMISSION_MIC_ERR if code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS
                    else ErrorCode.QAVPTTERROR_RECORDER_INIT_ERROR)
        self._recording = recording
        core.engine.add_mic_tap(recording.tap)
        return ErrorCode.AV_OK

    @guarded()
    def stop_recording(self) -> ErrorCode:
        """GME: StopRecording. PTT_RECORD_COMPLETE follows with the result."""
        if self._recording is None:
            return ErrorCode.QAVPTTERROR_RECORDER_RECORD_NOT_START
        self._recording.drain(self._mic_volume)
        self._end_recording()
        return ErrorCode.AV_OK

    @guarded()
    def cancel_recording(self) -> ErrorCode:
        """GME: CancelRecording. No event and no file (a streaming recognition of it ends too, silently)."""
        recording = self._recording
        if recording is None:
            return ErrorCode.QAVPTTERROR_RECORDER_RECORD_NOT_START
        self._release_mic(recording)
        recording.writer.abort()
        if self._stream is not None:
            self._stream.close()
            self._stream, self._streaming = None, False
        return ErrorCode.AV_OK

    @guarded()
    def pause_recording(self) -> ErrorCode:
        """GME: PauseRecording. What the mic captures until ``resume_recording`` is left out."""
        return self._set_paused(True)

    @guarded()
    def resume_recording(self) -> ErrorCode:
        """GME: ResumeRecording."""
        return self._set_paused(False)

    def _set_paused(self, paused: bool) -> ErrorCode:
        if self._recording is None:
            return ErrorCode.QAVPTTERROR_RECORDER_RECORD_NOT_START
        self._recording.paused = paused
        return ErrorCode.AV_OK

    def _end_recording(self) -> None:
        recording = self._recording
        assert recording is not None
        self._release_mic(recording)
        result = recording.finish()
        stream, self._stream = self._stream, None
        if stream is None:
            self._core.emit(EventType.PTT_RECORD_COMPLETE, {"result": result, "file_path": recording.path})
            return
        self._report_partials(stream, recording.path)
        headers = self._headers()
        if result != ErrorCode.AV_OK or headers is None:
            stream.close()
            self._speak(SpeechReport(STREAM_COMPLETE, {"result": result if result != ErrorCode.AV_OK else
                                                       ErrorCode.QAVPTTERROR_S2T_APPINFO_UNSET,
                                                       "file_path": recording.path, "text": "", "file_id": ""}))
            return
        url = self._core.server_url.rstrip("/") + proto.FILES_PATH
        upload = functools.partial(self._transfers.upload_now, url, headers, recording.path)
        self._transfers.submit(finish_streaming, stream, upload, recording.path)

    def _release_mic(self, recording: Recording) -> None:
        core = self._core
        core.engine.remove_mic_tap(recording.tap)
        self._recording = None
        if not (core.audio.capture or core.audio.device_test):
            core.close_device(MIC)

    # --- levels and volumes (GME §6.2, PTT-scoped) ---

    @guarded(empty=0)
    def get_mic_level(self) -> int:
        """GME: ITMGPTT::GetMicLevel: 0-100, the last frame recorded (0 when not recording)."""
        return self._recording.level if self._recording is not None else 0

    @guarded()
    def set_mic_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGPTT::SetMicVolume: 0-200 percent applied to what is recorded."""
        refusal = _volume_refusal(volume)
        if refusal is None:
            self._mic_volume = volume
        return refusal or ErrorCode.AV_OK

    @guarded(empty=0)
    def get_mic_volume(self) -> int:
        return self._mic_volume

    @guarded(empty=0)
    def get_speaker_level(self) -> int:
        """GME: ITMGPTT::GetSpeakerLevel: 0-100, the last frame played (0 when not playing)."""
        return self._playback.level if self._playback is not None else 0

    @guarded()
    def set_speaker_volume(self, volume: int) -> ErrorCode:
        """GME: ITMGPTT::SetSpeakerVolume: 0-200 percent applied to what is played (at once)."""
        refusal = _volume_refusal(volume)
        if refusal is None:
            self._speaker_volume[0] = volume
        return refusal or ErrorCode.AV_OK

    @guarded(empty=0)
    def get_speaker_volume(self) -> int:
        return self._speaker_volume[0]

    # --- files ---

    @guarded(paired=0)
    def get_file_size(self, file_path: str) -> tuple[ErrorCode, int]:
        """GME: GetFileSize, in bytes: 7010 when the file cannot be read."""
        if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
            return _invalid("file_path must be a non-empty str"), 0
        path = Path(file_path)
        try:
            with open(path, "rb"):
                return ErrorCode.AV_OK, path.stat().st_size
        except OSError as exc:
            log.info("cannot read %s: %s", path, exc.strerror or exc)
            return ErrorCode.AV_ERR_FILE_CANNOT_ACCESS, 0

    @guarded(paired=0)
    def get_voice_file_duration(self, file_path: str) -> tuple[ErrorCode, int]:
        """GME: GetVoiceFileDuration, in ms: 7010 unreadable, 7011 not a sound Ogg/Opus file."""
        if not isinstance(file_path, (str, os.PathLike)) or not os.fspath(file_path):
            return _invalid("file_path must be a non-empty str"), 0
        try:
            return ErrorCode.AV_OK, voice_file_duration_ms(file_path)
        except GmeError as exc:
            log.info("%s", exc.detail)
            return ErrorCode(exc.code), 0

    # --- upload and download ---

    def _headers(self) -> dict[str, str] | None:
        session = self._core.session
        assert session is not None
        if self._auth_buffer is None:
            return None
        return proto.auth_headers(session.app_id, session.open_id, self._auth_buffer)

    @guarded()
    def upload_recorded_file(self, file_path: str) -> ErrorCode:
        """GME: UploadRecordedFile. PTT_UPLOAD_COMPLETE follows with the file id to share."""
        if not isinstance(file_path, (str, os.PathLike)):
            return _invalid("file_path must be a str")
        path = os.fspath(file_path)
        headers = self._headers()
        if headers is None:
            self._report(Outcome(False, ErrorCode.QAVPTTERROR_UPLOAD_APPINFO_UNSET, path, "",
                                 "call apply_ptt_auth_buffer first"))
        elif not path:
            self._report(Outcome(False, ErrorCode.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, path, "", "empty file_path"))
        else:
            self._transfers.upload(self._core.server_url.rstrip("/") + proto.FILES_PATH, headers, path)
        return ErrorCode.AV_OK

    @guarded()
    def download_recorded_file(self, file_id: str, file_path: str) -> ErrorCode:
        """GME: DownloadRecordedFile. PTT_DOWNLOAD_COMPLETE follows once the file is written whole."""
        if not isinstance(file_id, str) or not isinstance(file_path, (str, os.PathLike)):
            return _invalid("file_id must be a str and file_path a str")
        path = os.fspath(file_path)
        signed = is_signed_link(file_id)
        headers = {} if signed else self._headers()
        problem = file_id_problem(file_id)
        if headers is None:
            outcome = Outcome(True, DOWNLOAD.protocol.unset, path, file_id, "call apply_ptt_auth_buffer first")
        elif problem is not None:
            outcome = Outcome(True, ErrorCode.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, path, file_id, problem)
        elif not path or Path(path).is_dir():
            outcome = Outcome(True, DOWNLOAD.local_file, path, file_id, "file_path must name a file")
        else:
            self._transfers.download(file_id, headers, path)
            return ErrorCode.AV_OK
        self._report(outcome)
        return ErrorCode.AV_OK

    # --- speech-to-text and text-to-speech (opengme.sdk.stt) ---

    def _speak(self, report: SpeechReport | None) -> None:
        if report is None:
            return
        if report.event == STREAM_COMPLETE:
            self._streaming = False
        if report.code != ErrorCode.AV_OK:
            log.info("speech request failed (%d): %s", report.code, report.message)
        self._core.emit(report.event, report.payload)

    @guarded()
    def speech_to_text(self, file_id: str, language: str = DEFAULT_LANGUAGE, translate_language: str = "") -> ErrorCode:
        """GME: SpeechToText. The uploaded message ``file_id`` as text: PTT_SPEECH2TEXT_COMPLETE (5005)."""
        code, report = self._speech.speech_to_text(self._headers(), file_id, language, translate_language)
        self._speak(report)
        return code

    @guarded()
    def text_to_speech(self, text: str, voice_name: str = "", language: str = DEFAULT_LANGUAGE,
                       speaking_rate: float = 1.0) -> ErrorCode:
        """GME: TextToSpeech. The server speaks ``text`` into a stored voice message:
        PTT_TEXT2SPEECH_COMPLETE (5008) with its file id."""
        code, report = self._speech.text_to_speech(self._headers(), self._core.server_url, text, voice_name,
                                                   language, speaking_rate)
        self._speak(report)
        return code

    @guarded()
    def start_recording_with_streaming_recognition(self, file_path: str, language: str = DEFAULT_LANGUAGE,
                                                   translate_language: str = "") -> ErrorCode:
        """GME: StartRecordingWithStreamingRecognition. Records like ``start_recording`` while the
        server recognises: 5007 partial texts, then after ``stop_recording`` 5006 with the text and
        the uploaded file's id (no 5001). 32786 while one is still running, 32774 without an AuthBuffer."""
        refusal = language_refusal(language, translate_language)
        if refusal is not None:
            return refusal
        if self._streaming:
            log.info("a streaming recognition is still running: wait for its 5006")
            return ErrorCode.QAVPTTERROR_ERR_VOICE_STREAMIN_RUNING_ERROR
        headers = self._headers()
        if headers is None:
            log.info("call apply_ptt_auth_buffer before a streaming recognition")
            return ErrorCode.QAVPTTERROR_S2T_APPINFO_UNSET
        code = self.start_recording(file_path)
        if code != ErrorCode.AV_OK:
            return code
        assert self._recording is not None
        self._stream = StreamClient(stream_url(self._core.server_url, language), headers)
        self._recording.on_frame = self._stream.push
        self._streaming = True
        return ErrorCode.AV_OK

    def _report_partials(self, stream: StreamClient, path: str) -> None:
        """5007 for each new partial text, and once with 50012 when the stream failed."""
        while not stream.partials.empty():
            text = stream.partials.get_nowait()
            self._core.emit(STREAM_RUNNING, {"result": ErrorCode.AV_OK, "file_path": path, "text": text, "file_id": ""})
        if stream.failure and not stream.failure_told:
            stream.failure_told = True
            log.info("streaming recognition failed while recording: %s", stream.failure)
            self._core.emit(STREAM_RUNNING, {"result": ErrorCode.QAVPTTERROR_ERR_VOICE_STREAMING_ASR_ERROR,
                                             "file_path": path, "text": "", "file_id": ""})

    @guarded()
    def translate_text(self, text: str, source_language: str = "", target_languages: str = "") -> ErrorCode:
        """GME: TranslateText (5009). 1006: no translation engine is configured."""
        return self._speech.translate_text(text, source_language, target_languages)

    # --- playback ---

    @guarded()
    def play_recorded_file(self, file_path: str, voice_type: int = 0) -> ErrorCode:
        """GME: PlayRecordedFile. Plays into the selected speaker; PTT_PLAY_COMPLETE when done or stopped."""
        if not isinstance(file_path, (str, os.PathLike)):
            return _invalid("file_path must be a str")
        if not _is_int(voice_type):
            return _invalid("voice_type must be an int")
        if voice_type not in set(VoiceType):
            return _invalid(f"voice_type must be one of GME's voice types 0..12, got {voice_type}")
        path = os.fspath(file_path)
        if not path:
            return ErrorCode.QAVPTTERROR_PLAYER_PARAM_NULL
        if self._playback is not None:
            log.info("a voice message is still playing: stop_play_file first")
            return ErrorCode.QAVPTTERROR_PLAYER_PLAYING_ERR
        playback = Playback(path, self._speaker_volume, VoiceType(voice_type))
        try:
            voice_file_duration_ms(path)  # a voice message: Ogg/Opus, whole (a few ms, no decoding)
            playback.open()
        except GmeError as exc:
            log.info("cannot play %s: %s", path, exc.detail)
            return ErrorCode.QAVPTTERROR_PLAYER_OPENFILE_ERR
        core = self._core
        code = ErrorCode.AV_OK if core.held(SPEAKER) is not None else core.open_device(SPEAKER)
        if code != ErrorCode.AV_OK:
            playback.close()
            log.info("the speaker for playback would not open (%d)", code)
            return ErrorCode.QAVPTTERROR_PLAYER_INIT_ERR
        self._playback = playback
        core.engine.add_player(playback)
        return ErrorCode.AV_OK

    @guarded()
    def stop_play_file(self) -> ErrorCode:
        """GME: StopPlayFile. PTT_PLAY_COMPLETE still follows (with 0); 20485 when nothing plays."""
        if self._playback is None:
            return ErrorCode.QAVPTTERROR_PLAYER_PLAYER_NOT_START_ERR
        self._end_playback()
        return ErrorCode.AV_OK

    def _end_playback(self) -> None:
        playback = self._playback
        assert playback is not None
        core = self._core
        core.engine.remove_player(playback)
        playback.close()
        self._playback = None
        if not (core.audio.play or core.audio.device_test):
            core.close_device(SPEAKER)
        core.emit(EventType.PTT_PLAY_COMPLETE, {"result": ErrorCode.AV_OK, "file_path": playback.path})

