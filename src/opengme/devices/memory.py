"""In-memory devices: for bots and engines that produce or consume audio themselves.

Both are thread-safe: another thread (a game's audio engine, a TTS worker) pushes or collects
samples while the SDK's thread reads or writes frames.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque

import numpy as np
import numpy.typing as npt

from opengme.errors import ErrorCode, GmeError

from .base import Frame, MicDevice, SampleFifo, SpeakerDevice, shape_frame

_serial = itertools.count(1)


def _default_id(kind: str, device_id: str | None) -> str:
    return device_id or f"memory:{kind}:{next(_serial)}"


class MemoryMic(MicDevice):
    """A mic fed by ``push``: samples of any length in, exact frames out.

    ``push`` takes int16 samples: a 1-D interleaved array, or ``(n, channels)``. Samples pushed
    before ``open`` are kept. ``read_frame`` returns None until a whole frame is buffered; after
    ``end()`` the remainder comes out as one zero-padded frame and the mic is ``exhausted``.
    """

    def __init__(self, device_id: str | None = None, name: str = "Memory mic") -> None:
        super().__init__(_default_id("mic", device_id), name)
        self._fifo = SampleFifo()
        self._lock = threading.Lock()
        self._ended = False
        self._exhausted = False

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    @property
    def buffered_samples(self) -> int:
        """Samples per channel waiting to be read."""
        with self._lock:
            return len(self._fifo) // max(self.channels, 1)

    def push(self, samples: npt.ArrayLike) -> None:
        """Queue samples from any thread; pushing after ``end()`` is an error."""
        data = np.asarray(samples)
        if data.dtype != np.int16:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"{self.id}: samples must be int16, got {data.dtype}")
        if data.ndim == 2 and self.is_open and data.shape[1] != self.channels:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"{self.id}: {data.shape[1]} channels pushed into a "
                           f"{self.channels}-channel mic")
        with self._lock:
            if self._ended:
                raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"{self.id}: push after end()")
            self._fifo.push(data)

    def end(self) -> None:
        """No more samples will come: the remainder is flushed as a final padded frame."""
        with self._lock:
            self._ended = True

    def _open(self) -> None:
        self._exhausted = False

    def _close(self) -> None:
        """Buffered samples survive a close/open cycle, like audio queued for a muted mic."""

    def read_frame(self) -> Frame | None:
        if not self.is_open or self._exhausted:
            return None
        count = self.frame_samples * self.channels
        with self._lock:
            samples = self._fifo.pop(count)
            if samples is None and self._ended:
                samples = self._fifo.pop_padded(count)
            if self._ended and not len(self._fifo):
                self._exhausted = True
        return None if samples is None else shape_frame(samples, self.channels)


class MemorySpeaker(SpeakerDevice):
    """Collects every frame played, for another thread to ``pull`` one by one or ``take_all``."""

    def __init__(self, device_id: str | None = None, name: str = "Memory speaker") -> None:
        super().__init__(_default_id("speaker", device_id), name)
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self.frames_written = 0

    def _open(self) -> None:
        """Nothing to set up: frames land in memory."""

    def _close(self) -> None:
        """Collected frames stay available after close."""

    def _write(self, frame: Frame) -> None:
        copy = frame.copy()
        with self._lock:
            self._frames.append(copy)
            self.frames_written += 1

    def pull(self) -> Frame | None:
        """The oldest frame not yet taken, or None."""
        with self._lock:
            return self._frames.popleft() if self._frames else None

    def take_all(self) -> npt.NDArray[np.int16]:
        """Every collected frame joined in order (mono: 1-D; otherwise ``(n, channels)``)."""
        with self._lock:
            frames, self._frames = list(self._frames), deque()
        return self._joined(frames)

    def peek(self, count: int) -> npt.NDArray[np.int16]:
        """The last ``count`` frames collected and not taken yet, joined; they stay collected."""
        with self._lock:
            frames = list(self._frames)[-count:] if count > 0 else []
        return self._joined(frames)

    def _joined(self, frames: list[Frame]) -> npt.NDArray[np.int16]:
        if not frames:
            shape = (0,) if self.channels == 1 else (0, self.channels)
            return np.zeros(shape, dtype=np.int16)
        return np.concatenate(frames)
