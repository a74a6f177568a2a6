"""The device contract the SDK talks to, the process-wide occupancy table, and pacing.

Pacing design: devices never block and never read a clock. ``MicDevice.read_frame()`` returns the
next frame if one is ready and ``None`` otherwise.

* *Clocked* devices (``clocked = True``, i.e. PortAudio) produce frames at the sound card's pace:
  the caller drains whatever is ready on each tick.
* *Virtual* devices (file, memory) have every frame ready at once. "As fast as possible" (tests,
  bots) is simply ``for frame in mic.frames()``. Real time is the caller's clock: its 20 ms timer
  asks a ``FramePacer`` how many frames are due at ``now`` and pulls that many, which keeps the
  average rate exact even when timer ticks arrive late.

Occupancy: one physical resource may be open by one owner (an SDK context) at a time. ``open`` takes
the lock through ``acquire`` and ``close`` gives it back; a second owner gets
``AV_ERR_RESOURCE_IS_OCCUPIED`` (1008), the same owner opening twice ``AV_ERR_HAS_IN_THE_STATE`` (1003,
as GME's AVSDK answers for a device the context already holds).
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Hashable, Iterator
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt

from opengme.errors import ErrorCode, GmeError

Frame = npt.NDArray[np.int16]
"""One frame: shape ``(frame_samples,)`` when mono, ``(frame_samples, channels)`` otherwise."""

_ANONYMOUS = object()
_locks: dict[Hashable, object] = {}
_locks_guard = threading.Lock()


def acquire(device: AudioDevice, owner: object) -> ErrorCode:
    """Claim ``device``'s resource for ``owner``: AV_OK, 1008 if another owner has it, 1003 if this one does."""
    with _locks_guard:
        holder = _locks.get(device.lock_key)
        if holder is None:
            _locks[device.lock_key] = owner
            return ErrorCode.AV_OK
    if holder is owner:
        return ErrorCode.AV_ERR_HAS_IN_THE_STATE
    return ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED


def release(device: AudioDevice, owner: object) -> ErrorCode:
    """Give the resource back: AV_OK if released or not held, 1008 if another owner holds it."""
    with _locks_guard:
        holder = _locks.get(device.lock_key)
        if holder is not None and holder is not owner:
            return ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
        _locks.pop(device.lock_key, None)
        return ErrorCode.AV_OK


def owner_of(device: AudioDevice) -> object | None:
    """Who holds ``device``'s resource now (None if free)."""
    with _locks_guard:
        return _locks.get(device.lock_key)


class AudioDevice(ABC):
    """Common life cycle: ``open`` validates the format, takes the lock, then opens the backend."""

    clocked: ClassVar[bool] = False
    """True when frames arrive at a hardware clock's pace rather than all at once."""
    acoustic: ClassVar[bool] = False
    """True for a sound card: a speaker the room hears, a mic that hears the room (echo path)."""

    def __init__(self, device_id: str, name: str) -> None:
        self._id = device_id
        self._name = name
        self._owner: object | None = None
        self.sample_rate = 0
        self.frame_samples = 0
        self.channels = 1

    @property
    def id(self) -> str:
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def lock_key(self) -> Hashable:
        """What occupancy is keyed on: the object itself unless a subclass shares a real resource."""
        return self

    @property
    def is_open(self) -> bool:
        return self._owner is not None

    def open(self, sample_rate: int, frame_samples: int, channels: int = 1, *,
             owner: object | None = None) -> None:
        """Open for ``frame_samples``-sample frames at ``sample_rate``; raises GmeError on failure."""
        if sample_rate <= 0 or frame_samples <= 0 or channels not in (1, 2):
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"{self.id}: bad format rate={sample_rate} frame={frame_samples} "
                           f"channels={channels}")
        who = _ANONYMOUS if owner is None else owner
        code = acquire(self, who)
        if code != ErrorCode.AV_OK:
            by = "this owner" if code == ErrorCode.AV_ERR_HAS_IN_THE_STATE else "another owner"
            raise GmeError(code, f"device {self.id!r} ({self.name}) is already open by {by}")
        self.sample_rate, self.frame_samples, self.channels = sample_rate, frame_samples, channels
        try:
            self._open()
        except BaseException:
            release(self, who)
            raise
        self._owner = who

    def close(self) -> None:
        """Close and free the resource; closing a closed device does nothing."""
        if self._owner is None:
            return
        try:
            self._close()
        finally:
            release(self, self._owner)
            self._owner = None

    @abstractmethod
    def _open(self) -> None:
        """Open the backend with ``self.sample_rate/frame_samples/channels`` already set."""

    @abstractmethod
    def _close(self) -> None:
        """Close the backend."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<{type(self).__name__} {self.id!r} {self.name!r} {state}>"


class MicDevice(AudioDevice):
    """A capture device the SDK pulls 20 ms frames from."""

    @abstractmethod
    def read_frame(self) -> Frame | None:
        """The next frame, or None when none is ready yet, the source is exhausted or the mic is closed."""

    @property
    def exhausted(self) -> bool:
        """True once a finite source has delivered its last frame; live devices never are."""
        return False

    def frames(self) -> Iterator[Frame]:
        """Every frame ready now, as fast as possible (bots, tests, offline rendering)."""
        while (frame := self.read_frame()) is not None:
            yield frame


class SpeakerDevice(AudioDevice):
    """A playback device the SDK pushes 20 ms frames to."""

    def write_frame(self, frame: Frame) -> None:
        """Play one frame (int16, exactly one frame of the opened format).

        A closed speaker plays nothing, as GME's disabled play device does; a frame of the wrong
        type or shape raises AV_ERR_INVALID_ARGUMENT.
        """
        if self.is_open:
            self._write(self._check_frame(frame))

    @abstractmethod
    def _write(self, frame: Frame) -> None:
        """Play a frame already checked against the opened format."""

    def _check_frame(self, frame: Frame) -> Frame:
        """Reject frames of the wrong type or shape: a silent mismatch would garble audio."""
        expected = (self.frame_samples,) if self.channels == 1 else (self.frame_samples, self.channels)
        shape = np.shape(frame)
        if self.channels == 1 and shape == (self.frame_samples, 1):
            frame = np.reshape(frame, expected)
        elif shape != expected:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"{self.id}: frame shape {shape}, expected {expected}")
        if getattr(frame, "dtype", None) != np.int16:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"{self.id}: frame dtype {getattr(frame, 'dtype', type(frame))}, "
                           "expected int16")
        return frame


def shape_frame(samples: npt.NDArray[np.int16], channels: int) -> Frame:
    """Interleaved samples → the frame shape the contract promises for ``channels``."""
    return samples if channels == 1 else samples.reshape(-1, channels)


class SampleFifo:
    """A FIFO of int16 samples fed in chunks of any length and drained in exact counts.

    Not thread-safe by itself (callers that share one across threads hold a lock). With a
    ``capacity`` the oldest samples are dropped on overflow, which bounds a live device's latency.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self._chunks: deque[npt.NDArray[np.int16]] = deque()
        self._head = 0  # samples of _chunks[0] already consumed
        self._size = 0
        self.capacity = capacity
        self.dropped = 0

    def __len__(self) -> int:
        return self._size

    def push(self, samples: npt.ArrayLike) -> None:
        """Append samples (copied, flattened to int16)."""
        chunk = np.array(samples, dtype=np.int16, copy=True).reshape(-1)
        if chunk.size == 0:
            return
        self._chunks.append(chunk)
        self._size += chunk.size
        if self.capacity is not None and self._size > self.capacity:
            excess = self._size - self.capacity
            self._discard(excess)
            self.dropped += excess

    def pop(self, count: int) -> npt.NDArray[np.int16] | None:
        """Exactly ``count`` samples, or None (nothing consumed) when fewer are buffered."""
        return self._take(count) if count <= self._size else None

    def pop_padded(self, count: int) -> npt.NDArray[np.int16] | None:
        """Up to ``count`` samples zero-padded to ``count``; None when empty."""
        if self._size == 0:
            return None
        out = np.zeros(count, dtype=np.int16)
        have = min(count, self._size)
        out[:have] = self._take(have)
        return out

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._size = 0

    def _take(self, count: int) -> npt.NDArray[np.int16]:
        out = np.empty(count, dtype=np.int16)
        filled = 0
        while filled < count:
            chunk = self._chunks[0]
            take = min(count - filled, chunk.size - self._head)
            out[filled:filled + take] = chunk[self._head:self._head + take]
            filled += take
            self._advance(take)
        return out

    def _discard(self, count: int) -> None:
        while count > 0:
            take = min(count, self._chunks[0].size - self._head)
            self._advance(take)
            count -= take

    def _advance(self, count: int) -> None:
        self._head += count
        self._size -= count
        if self._head == self._chunks[0].size:
            self._chunks.popleft()
            self._head = 0


class FramePacer:
    """How many frames a virtual device owes at wall-clock pace; time is passed in (seconds).

    ``due(now)`` returns the frames to pull now and counts them as pulled. After a stall longer
    than ``max_burst`` frames the schedule skips ahead instead of bursting, as a real sound card's
    overrun would.
    """

    def __init__(self, frame_seconds: float = 0.02, max_burst: int = 5) -> None:
        if frame_seconds <= 0 or max_burst < 1:
            raise ValueError("frame_seconds must be > 0 and max_burst >= 1")
        self.frame_seconds = frame_seconds
        self.max_burst = max_burst
        self._start: float | None = None
        self._issued = 0

    def reset(self, now: float) -> None:
        """Start the schedule at ``now``: the first frame is due immediately."""
        self._start = now
        self._issued = 0

    def due(self, now: float) -> int:
        """Frames to pull at ``now`` (0 before the next one is due)."""
        if self._start is None:
            self.reset(now)
        assert self._start is not None
        owed = int((now - self._start) / self.frame_seconds + 1e-9) + 1 - self._issued
        if owed > self.max_burst:
            self._issued += owed - self.max_burst
            owed = self.max_burst
        owed = max(owed, 0)
        self._issued += owed
        return owed
