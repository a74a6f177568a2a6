"""Receive-side mixer: the N loudest remote members, per-member and speaker volume, soft limiting.

GME mixes 6 speakers by default and up to 20 (``SetRecvMixStreamCount``). Selection ranks members
by their frame energy *after* their volume (a member turned down to 0 takes no slot), smoothed over
a few frames, and members already mixed get a ``hysteresis_db`` bonus, so two talkers of similar
loudness do not swap places frame by frame. Accumulation is float32; the sum passes through a soft
knee (linear up to ``knee`` of full scale, then a tanh curve that approaches full scale) instead of
wrapping or hard-clipping. Blacklisted members are the caller's business: it just leaves them out.

Frames are mono ``(frame_samples,)`` by default. A stereo mixer (``channels=2``, for voices a
spatializer rendered binaurally) takes ``(frame_samples, 2)`` frames and mono ones alike (a mono
voice is heard in both ears, see :func:`fit_channels`), ranks members by their energy over both
channels and returns a stereo frame; the mono path is unchanged and pays nothing for it.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

import numpy as np

from opengme.core.levels import check_volume

Member = TypeVar("Member", bound=Hashable)

DEFAULT_MIX_STREAMS = 6
MAX_MIX_STREAMS = 20
CHANNELS = (1, 2)
_FULL_SCALE = 32767.0


def fit_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """``frame`` (mono ``(n,)`` or ``(n, c)``) as ``channels`` channels: mono is copied to both
    ears, stereo is averaged down to mono; a frame that already fits is returned as it is."""
    if channels == 1:
        return frame if frame.ndim == 1 else frame.mean(axis=1, dtype=np.float32).round().astype(frame.dtype)
    if frame.ndim == 2 and frame.shape[1] == channels:
        return frame
    mono = frame if frame.ndim == 1 else fit_channels(frame, 1)
    return np.repeat(mono[:, None], channels, axis=1)


class Mixer(Generic[Member]):
    """Mixes one frame period of decoded int16 frames (one per member) into one int16 frame."""

    def __init__(self, max_streams: int = DEFAULT_MIX_STREAMS, frame_samples: int = 960, *,
                 hysteresis_db: float = 3.0, smoothing: float = 0.3, knee: float = 0.8, channels: int = 1) -> None:
        if not 0.0 < smoothing <= 1.0 or not 0.0 < knee < 1.0 or hysteresis_db < 0:
            raise ValueError("need 0 < smoothing <= 1, 0 < knee < 1, hysteresis_db >= 0")
        self.set_max_streams(max_streams)
        self.frame_samples = frame_samples
        self.set_channels(channels)
        self._bonus = 10.0 ** (hysteresis_db / 10.0)  # energy ratio
        self._smoothing = smoothing
        self._knee = knee * _FULL_SCALE
        self._volumes: dict[Member, int] = {}
        self._speaker = 100
        self._energy: dict[Member, float] = {}  # smoothed post-volume energy of present members
        self._mixed: tuple[Member, ...] = ()

    # ------------------------------------------------------------------------------- settings

    @property
    def max_streams(self) -> int:
        return self._max_streams

    def set_max_streams(self, n: int) -> None:
        """``SetRecvMixStreamCount``: how many members are mixed at once (1..20)."""
        if not 1 <= n <= MAX_MIX_STREAMS:
            raise ValueError(f"mix stream count {n} outside 1..{MAX_MIX_STREAMS}")
        self._max_streams = n

    @property
    def channels(self) -> int:
        return 1 if len(self._shape) == 1 else self._shape[1]

    def set_channels(self, channels: int) -> None:
        """1 (mono frames in and out) or 2 (stereo out; mono and stereo frames in)."""
        if channels not in CHANNELS:
            raise ValueError(f"a mix has 1 or 2 channels, not {channels}")
        self._shape: tuple[int, ...] = (self.frame_samples,) if channels == 1 else (self.frame_samples, channels)

    def set_volume(self, member: Member, percent: int) -> None:
        """``SetSpeakerVolumeByOpenID``: this member's playback volume, 0..200 %."""
        self._volumes[member] = check_volume(percent)

    def volume(self, member: Member) -> int:
        return self._volumes.get(member, 100)

    @property
    def speaker_volume(self) -> int:
        return self._speaker

    @speaker_volume.setter
    def speaker_volume(self, percent: int) -> None:
        """``SetSpeakerVolume``: the volume of the whole mix, 0..200 %."""
        self._speaker = check_volume(percent)

    def remove(self, member: Member) -> None:
        """Forget a member that left (its volume setting and selection history)."""
        self._volumes.pop(member, None)
        self._energy.pop(member, None)
        self._mixed = tuple(m for m in self._mixed if m != member)

    @property
    def mixed(self) -> tuple[Member, ...]:
        """Members that contributed to the last :meth:`mix`, loudest first."""
        return self._mixed

    # ----------------------------------------------------------------------------------- mix

    def mix(self, frames: Mapping[Member, np.ndarray]) -> np.ndarray:
        """Mix this period's frames (equal length ``frame_samples``, int16) into one int16 frame.

        The work per sample is numpy; the per-member bookkeeping (at most 20) is plain Python,
        which beats a dozen numpy calls on arrays that small.
        """
        members = list(frames)
        if not members:
            self._energy = {}
            self._mixed = ()
            return np.zeros(self._shape, dtype=np.int16)
        stereo = len(self._shape) == 2
        values = [fit_channels(f, self._shape[1]) for f in frames.values()] if stereo else list(frames.values())
        pcm = np.array(values, dtype=np.float32)  # ValueError on ragged lengths
        if pcm.shape[1:] != self._shape:
            raise ValueError(f"frames of shape {pcm.shape[1:]}, mixer expects {self._shape}")
        if stereo:
            pcm = pcm.reshape(len(members), -1)  # interleaved: energy and weights work on both ears at once
        gains = [self._volumes.get(m, 100) / 100.0 for m in members]
        # Energy after the member's volume; the 1/N of a mean square would not change the ranking.
        energy = np.einsum("ij,ij->i", pcm, pcm).tolist()
        smoothed: dict[Member, float] = {}
        for member, e, g in zip(members, energy, gains, strict=False):
            e *= g * g
            old = self._energy.get(member)
            smoothed[member] = e if old is None else old + self._smoothing * (e - old)
        self._energy = smoothed

        chosen = self._select(members, smoothed)
        self._mixed = tuple(members[i] for i in chosen)
        if not chosen or self._speaker == 0:
            return np.zeros(self._shape, dtype=np.int16)
        speaker = self._speaker / 100.0
        weights = np.array([gains[i] * speaker for i in chosen], dtype=np.float32)
        out = self._limit(weights @ pcm[chosen])
        return out.reshape(self._shape) if stereo else out

    def _select(self, members: list[Member], smoothed: dict[Member, float]) -> list[int]:
        """Indices of the members to mix, loudest (with the incumbents' bonus) first."""
        previous = set(self._mixed)
        score = [smoothed[m] * (self._bonus if m in previous else 1.0) for m in members]
        ranked = sorted((i for i in range(len(members)) if score[i] > 0), key=lambda i: -score[i])
        return ranked[: self._max_streams]  # silent or muted members take no slot

    def _limit(self, out: np.ndarray) -> np.ndarray:
        """Soft knee instead of wraparound: linear below ``knee``, tanh toward full scale above."""
        magnitude = np.abs(out)
        if magnitude.max() > self._knee:
            room = _FULL_SCALE - self._knee
            soft = self._knee + room * np.tanh((magnitude - self._knee) / room)
            out = np.where(magnitude > self._knee, np.copysign(soft, out), out)
        rounded: np.ndarray = np.rint(out)
        return rounded.astype(np.int16)
