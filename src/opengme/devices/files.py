"""File devices: a mic that plays any audio file and a speaker that records to WAV.

They make the SDK usable headless: bots speak from files, tests listen into files.
"""
from __future__ import annotations

import os
import wave
from collections.abc import Generator, Hashable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from av.container import InputContainer

from opengme.codec.audiofile import decode_pcm, open_audio_file
from opengme.errors import ErrorCode, GmeError

from .base import Frame, MicDevice, SampleFifo, SpeakerDevice, shape_frame


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
        self._chunks = self._passes(open_audio_file(self.path))
        try:
            self._fill()
        except BaseException:
            self._close()
            raise
        if not len(self._fifo):
            self._close()
            raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED, f"{self.path} holds no decodable audio")

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
    """Records what it plays to a WAV file (int16 PCM at the opened rate and channels).

    Audio goes to ``<path>.part`` and is renamed onto ``path`` only by ``close``, so a crash never
    leaves a truncated file under the final name. Two speakers on one path exclude each other.
    """

    def __init__(self, path: str | os.PathLike[str], *, device_id: str | None = None,
                 name: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(device_id or f"file:{self.path}", name or self.path.name)
        self._file: BinaryIO | None = None
        self._wave: wave.Wave_write | None = None

    @property
    def part_path(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    @property
    def lock_key(self) -> Hashable:
        return ("file-speaker", str(self.path.resolve()))

    def _open(self) -> None:
        try:
            self._file = open(self.part_path, "wb")  # noqa: SIM115 - held open until _close
        except OSError as exc:
            raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS,
                           f"cannot write {self.part_path}: {exc.strerror or exc}") from exc
        out = wave.open(self._file, "wb")  # noqa: SIM115 - held open until _close
        out.setnchannels(self.channels)
        out.setsampwidth(2)
        out.setframerate(self.sample_rate)
        self._wave = out

    def _write(self, frame: Frame) -> None:
        assert self._wave is not None
        self._wave.writeframes(frame.astype("<i2", copy=False).tobytes())

    def _close(self) -> None:
        assert self._wave is not None and self._file is not None
        try:
            self._wave.close()  # patches the header's lengths
        finally:
            self._file.close()
            self._wave = self._file = None
        os.replace(self.part_path, self.path)
