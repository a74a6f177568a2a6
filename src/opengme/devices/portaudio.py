"""Real sound cards through PortAudio (the optional ``sounddevice`` package).

``sounddevice`` is imported only when a PortAudio device is listed or opened, so the rest of
OpenGME runs where neither it nor libportaudio exists. Streams are callback-driven: the audio
thread moves samples through a small ring buffer, so the SDK's ``read_frame`` / ``write_frame``
never block. Each ring holds at most ``buffer_frames`` frames; beyond that the oldest audio is
dropped, which bounds latency when one side runs faster than the other.
"""
from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Hashable
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from opengme.errors import ErrorCode, GmeError

from .base import AudioDevice, Frame, MicDevice, SampleFifo, SpeakerDevice, shape_frame

MISSING_HINT = ("PortAudio is not available: pip install 'opengme[devices]' and install "
                "libportaudio2 (Debian/Ubuntu: apt-get install libportaudio2)")

# PaErrorCode values that have a closer GME meaning than "device does not exist".
_PA_ERRORS = {
    -9998: ErrorCode.AV_ERR_INVALID_ARGUMENT,  # paInvalidChannelCount
    -9997: ErrorCode.AV_ERR_INVALID_ARGUMENT,  # paInvalidSampleRate
    -9994: ErrorCode.AV_ERR_INVALID_ARGUMENT,  # paSampleFormatNotSupported
    -9985: ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED,  # paDeviceUnavailable (busy elsewhere)
}


def load_sounddevice() -> ModuleType:
    """The ``sounddevice`` module, or GmeError 7014 when it or libportaudio is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise GmeError(ErrorCode.AV_ERR_LOAD_LIB_FAILED, f"{MISSING_HINT} ({exc})") from exc
    module: ModuleType = sounddevice
    return module


class PortAudioDevices(NamedTuple):
    """What PortAudio sees now; the defaults are the system's, None when it has none."""

    mics: list[PortAudioMic]
    speakers: list[PortAudioSpeaker]
    default_mic: PortAudioMic | None
    default_speaker: PortAudioSpeaker | None


def query_devices() -> PortAudioDevices:
    """List the host's capture and playback devices (raises 7014 without PortAudio)."""
    sd = load_sounddevice()
    try:
        infos = list(sd.query_devices())
        hostapis = [api["name"] for api in sd.query_hostapis()]
    except sd.PortAudioError as exc:
        raise GmeError(ErrorCode.AV_ERR_LOAD_LIB_FAILED, f"PortAudio cannot list devices: {exc}") from exc
    mics: list[PortAudioMic] = []
    speakers: list[PortAudioSpeaker] = []
    for info in infos:
        label = f"{info['name']} ({hostapis[info['hostapi']]})"
        if info["max_input_channels"] > 0:
            mics.append(PortAudioMic(info["index"], label))
        if info["max_output_channels"] > 0:
            speakers.append(PortAudioSpeaker(info["index"], label))
    default_in, default_out = (_default_index(sd, kind) for kind in ("input", "output"))
    return PortAudioDevices(
        mics, speakers,
        next((m for m in mics if m.index == default_in), None),
        next((s for s in speakers if s.index == default_out), None),
    )


def _default_index(sd: ModuleType, kind: str) -> int | None:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except (sd.PortAudioError, ValueError, TypeError):
        return None


class PlayoutRing:
    """Samples waiting for the sound card, with a prebuffer that absorbs timer jitter.

    ``render`` always returns exactly the requested count. After start or an underrun it plays
    silence until ``prebuffer`` samples are queued, so one late 20 ms tick costs one gap rather
    than a click on every frame. Pure: the device adds the lock.
    """

    def __init__(self, capacity: int, prebuffer: int) -> None:
        self._fifo = SampleFifo(capacity)
        self.prebuffer = prebuffer
        self._priming = True
        self.underruns = 0

    @property
    def dropped(self) -> int:
        return self._fifo.dropped

    def write(self, samples: npt.ArrayLike) -> None:
        self._fifo.push(samples)

    def render(self, count: int) -> npt.NDArray[np.int16]:
        if self._priming and len(self._fifo) < self.prebuffer:
            return np.zeros(count, dtype=np.int16)
        self._priming = False
        if len(self._fifo) < count:
            self.underruns += 1
            self._priming = True
        out = self._fifo.pop_padded(count)
        return np.zeros(count, dtype=np.int16) if out is None else out


class _PortAudioDevice(AudioDevice):
    """Stream life cycle and error mapping shared by the PortAudio mic and speaker."""

    clocked = True
    acoustic = True
    _stream_class: ClassVar[str]

    def __init__(self, index: int, name: str, buffer_frames: int = 10) -> None:
        super().__init__(f"portaudio:{index}", name)
        self.index = index
        self.buffer_frames = buffer_frames
        self._lock = threading.Lock()
        self._stream: Any = None
        self._reset_ring()

    @property
    def lock_key(self) -> Hashable:
        return ("portaudio", self._stream_class, self.index)

    def _open(self) -> None:
        sd = load_sounddevice()
        self._reset_ring()
        try:
            stream = getattr(sd, self._stream_class)(
                device=self.index, samplerate=self.sample_rate, channels=self.channels,
                dtype="int16", blocksize=self.frame_samples, latency="low",
                callback=self._on_audio)
            stream.start()
        except sd.PortAudioError as exc:
            pa_code = int(exc.args[1]) if len(exc.args) > 1 else 0
            code = _PA_ERRORS.get(pa_code, ErrorCode.AV_ERR_DEVICE_NOT_EXIST)
            raise GmeError(code, f"cannot open {self.name}: {exc}") from exc
        except ValueError as exc:
            raise GmeError(ErrorCode.AV_ERR_DEVICE_NOT_EXIST, f"cannot open {self.name}: {exc}") from exc
        self._stream = stream

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        try:
            stream.stop()
        finally:
            stream.close()

    @abstractmethod
    def _reset_ring(self) -> None:
        """A fresh ring sized for the opened format."""

    @abstractmethod
    def _on_audio(self, data: npt.NDArray[np.int16], frames: int, time: Any, status: Any) -> None:
        """PortAudio's callback, on its audio thread: move one block through the ring."""


class PortAudioMic(_PortAudioDevice, MicDevice):
    """A capture device; ``read_frame`` returns None until the card has delivered a frame."""

    _stream_class = "InputStream"

    def _reset_ring(self) -> None:
        self._ring = SampleFifo(self.buffer_frames * self.frame_samples * self.channels)

    @property
    def overruns(self) -> int:
        """Samples dropped because nobody read them in time."""
        return self._ring.dropped

    def _on_audio(self, indata: npt.NDArray[np.int16], frames: int, time: Any, status: Any) -> None:
        with self._lock:
            self._ring.push(indata)

    def read_frame(self) -> Frame | None:
        if not self.is_open:
            return None
        with self._lock:
            samples = self._ring.pop(self.frame_samples * self.channels)
        return None if samples is None else shape_frame(samples, self.channels)


class PortAudioSpeaker(_PortAudioDevice, SpeakerDevice):
    """A playback device; the card plays silence whenever the SDK has nothing queued."""

    _stream_class = "OutputStream"
    prebuffer_frames = 2

    def _reset_ring(self) -> None:
        per_frame = self.frame_samples * self.channels
        self._ring = PlayoutRing(self.buffer_frames * per_frame, self.prebuffer_frames * per_frame)

    @property
    def underruns(self) -> int:
        return self._ring.underruns

    def _write(self, frame: Frame) -> None:
        with self._lock:
            self._ring.write(frame)

    def _on_audio(self, outdata: npt.NDArray[np.int16], frames: int, time: Any, status: Any) -> None:
        with self._lock:
            samples = self._ring.render(frames * self.channels)
        outdata[:] = samples.reshape(frames, self.channels)
