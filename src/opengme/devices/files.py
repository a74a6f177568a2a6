"""File devices: a mic that plays any audio file and a speaker that records to the format its name says.

They make the SDK usable headless: bots speak from files, tests listen into files. Their errors name
the path, the operating system's reason and, for a file that is not audio, what was expected.
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Generator, Hashable, Mapping
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer

from opengme.codec.audiofile import decode_pcm, open_audio_file
from opengme.errors import ErrorCode, GmeError

from .base import Frame, MicDevice, SampleFifo, SpeakerDevice, shape_frame

MIC_FORMATS = "an audio file FFmpeg can decode (wav, mp3, ogg/opus, flac, m4a …)"
SPEAKER_FORMATS: Mapping[str, tuple[str, str]] = {
    ".wav": ("wav", "pcm_s16le"),
    ".flac": ("flac", "flac"),
    ".mp3": ("mp3", "libmp3lame"),
    ".ogg": ("ogg", "libopus"),
    ".opus": ("opus", "libopus"),
}
"""What a FileSpeaker writes, by the suffix of its path (any case): PyAV container and encoder."""
_LAYOUTS = {1: "mono", 2: "stereo"}
_FALLBACK_RATE = 48000  # for an encoder that cannot take the opened rate (Opus: 8/12/16/24/48 kHz)


class FileMic(MicDevice):
    """Plays an audio file (wav, mp3, ogg/opus, flac …) as exact frames at the opened format.

    The file is decoded lazily with PyAV, so long files cost no memory up front. The last frame is
    zero-padded; with ``loop`` playback wraps seamlessly (no padding between passes). ``open`` decodes
    the first frame, so a missing file raises 7010 and a damaged one 7011 right there; damage found
    later surfaces as 7011 from ``read_frame``.
    """

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = False,
                 device_id: str | None = None, name: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(device_id or f"file:{self.path}", name or self.path.name)
        self.loop = loop
        self._fifo = SampleFifo()
        self._chunks: Generator[npt.NDArray[np.int16], None, None] | None = None
        self._decoded_all = False
        self._exhausted = False

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def _open(self) -> None:
        self._fifo.clear()
        self._decoded_all = self._exhausted = False
        try:
            self._chunks = self._passes(open_audio_file(self.path))
            self._fill()
            if not len(self._fifo):
                raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED, f"{self.path} holds no decodable audio")
        except GmeError as exc:
            self._close()
            if exc.code != ErrorCode.AV_ERR_FILE_DAMAGED:
                raise
            raise GmeError(exc.code, f"{exc.detail}; expected {MIC_FORMATS}") from exc
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()  # runs the generator's finally: closes the container
            self._chunks = None
        self._fifo.clear()

    def read_frame(self) -> Frame | None:
        if not self.is_open or self._exhausted:
            return None
        self._fill()
        samples = self._fifo.pop_padded(self.frame_samples * self.channels)
        self._fill()  # look ahead so `exhausted` turns True together with the last frame
        if self._decoded_all and not len(self._fifo):
            self._exhausted = True
        return None if samples is None else shape_frame(samples, self.channels)

    def _fill(self) -> None:
        """Decode until one whole frame is buffered or the source has ended."""
        assert self._chunks is not None
        need = self.frame_samples * self.channels
        while len(self._fifo) < need and not self._decoded_all:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._decoded_all = True
            else:
                self._fifo.push(chunk)

    def _passes(self, container: InputContainer) -> Generator[npt.NDArray[np.int16], None, None]:
        """One pass over the file, or endless passes when looping (stops on an empty pass)."""
        while True:
            produced = 0
            try:
                for chunk in decode_pcm(container, self.sample_rate, self.channels, self.path):
                    produced += chunk.size
                    yield chunk
            finally:
                container.close()
            if not self.loop or produced == 0:
                return
            container = open_audio_file(self.path)


class FileSpeaker(SpeakerDevice):
    """Records what it plays to an audio file in the format its suffix names (``SPEAKER_FORMATS``:
    .wav is int16 PCM, .flac lossless, .mp3, .ogg/.opus Opus), at the opened rate and channels.

    Audio goes to ``<path>.part`` and is renamed onto ``path`` only by ``close``, so a crash never
    leaves a truncated file under the final name, and a failure never leaves the ``.part`` behind.
    ``check`` tells up front whether ``open`` can write the path. Two speakers on one path exclude
    each other.
    """

    def __init__(self, path: str | os.PathLike[str], *, device_id: str | None = None,
                 name: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(device_id or f"file:{self.path}", name or self.path.name)
        self._container: OutputContainer | None = None
        self._stream: AudioStream | None = None

    @property
    def part_path(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    @property
    def lock_key(self) -> Hashable:
        return ("file-speaker", str(self.path.resolve()))

    def check(self) -> None:
        """Raise the GmeError ``open`` would raise for this path, without writing anything:
        1004 for a suffix that names no format it writes, 7010 with the OS reason for a path it cannot write."""
        if self.path.is_dir():
            raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS, f"cannot write {self.path}: {os.strerror(errno.EISDIR)}")
        if self.path.suffix.lower() not in SPEAKER_FORMATS:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"cannot write {self.path}: its suffix picks the format, one of "
                           f"{', '.join(SPEAKER_FORMATS)}")
        parent = self.path.parent
        if not parent.exists():
            reason = f"{os.strerror(errno.ENOENT)} (no directory {parent})"
        elif not parent.is_dir():
            reason = f"{os.strerror(errno.ENOTDIR)} ({parent} is a file)"
        elif not os.access(parent, os.W_OK):
            reason = f"{os.strerror(errno.EACCES)} (directory {parent})"
        else:
            return
        raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS, f"cannot write {self.path}: {reason}")

    def _open(self) -> None:
        self.check()
        container_format, encoder = SPEAKER_FORMATS[self.path.suffix.lower()]
        try:
            self._container = av.open(str(self.part_path), "w", format=container_format)
        except OSError as exc:
            raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS,
                           f"cannot write {self.part_path}: {exc.strerror or exc}") from exc
        rates = av.codec.Codec(encoder, "w").audio_rates
        rate = self.sample_rate if not rates or self.sample_rate in rates else _FALLBACK_RATE
        try:
            stream = self._container.add_stream(encoder, rate=rate, layout=_LAYOUTS[self.channels])
            assert isinstance(stream, AudioStream)
            self._stream = stream
            self._container.start_encoding()  # the header now: an empty recording is still a valid file
        except (av.FFmpegError, ValueError) as exc:
            self._discard()
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"cannot write {self.path} as {container_format} at {self.sample_rate} Hz: {exc}") from exc

    def _write(self, frame: Frame) -> None:
        assert self._container is not None and self._stream is not None
        samples = np.ascontiguousarray(frame, dtype=np.int16).reshape(1, -1)
        out = av.AudioFrame.from_ndarray(samples, format="s16", layout=_LAYOUTS[self.channels])
        out.sample_rate = self.sample_rate
        self._container.mux(self._stream.encode(out))

    def _close(self) -> None:
        assert self._container is not None and self._stream is not None
        try:
            self._container.mux(self._stream.encode(None))  # the encoder's delayed tail
            self._container.close()  # writes the trailer (a WAV's lengths, an MP3's …)
            os.replace(self.part_path, self.path)
        except (OSError, av.FFmpegError) as exc:
            self._discard()
            raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS,
                           f"cannot write {self.path}: {getattr(exc, 'strerror', None) or exc}") from exc
        finally:
            self._container = self._stream = None

    def _discard(self) -> None:
        """Close what is open and remove the ``.part``: a failed recording leaves nothing behind."""
        if self._container is not None:
            with contextlib.suppress(OSError, av.FFmpegError):  # the file goes next: its trailer does not matter
                self._container.close()
        self.part_path.unlink(missing_ok=True)
