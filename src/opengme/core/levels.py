"""Audio level meters on GME's scales, the RFC 6464 header level, and the speaking/volume trackers.

Scales (GME documents the ranges, not the formulas; these are the formulas OpenGME uses):

* **RFC 6464 audio level** (packet header): ``-dBov`` in 0..127 from the frame's RMS relative to
  an RMS of 32768, so a full-scale square wave reads 0 and a full-scale sine 3; digital silence is
  127 and values round to the nearest dB (the normalisation WebRTC's ``RmsLevel`` uses).
* **Mic / send level** (``GetMicLevel``, ``GetSendStreamLevel``): 0..100, linear in dB over the
  60 dB a VU meter shows: -60 dBov (and quieter) is 0, 0 dBov is 100. Normal speech at -20..-30
  dBov reads 50..67; background noise below -50 dBov reads under 17.
* **Receive stream level** (``GetRecvStreamLevel``): 0..200 = that 0..100 level scaled by the
  member's playback volume percent (0..200), i.e. GME's "final volume = level x volume %". It needs
  only the header level, so the receiver computes it without decoding.
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

import numpy as np

from opengme.events import UserUpdateEvent

SILENCE_DBOV = 127
METER_RANGE_DB = 60
MAX_LEVEL = 100
MAX_STREAM_LEVEL = 200
MAX_VOLUME = 200
_FULL_SCALE_SQ = 32768.0 * 32768.0
_MIN_MEAN_SQUARE = _FULL_SCALE_SQ * 10.0 ** (-SILENCE_DBOV / 10.0)

Member = TypeVar("Member", bound=Hashable)


def audio_level(frame: np.ndarray) -> int:
    """RFC 6464 level (0 = loudest .. 127 = silence, in -dBov) of an int16 PCM frame."""
    if frame.size == 0:
        return SILENCE_DBOV
    samples = frame.astype(np.float64, copy=False).ravel()
    mean_square = float(np.dot(samples, samples)) / samples.size
    if mean_square <= _MIN_MEAN_SQUARE:
        return SILENCE_DBOV
    return min(SILENCE_DBOV, max(0, int(-10.0 * math.log10(mean_square / _FULL_SCALE_SQ) + 0.5)))


def level_from_audio_level(dbov: int) -> int:
    """Map an RFC 6464 level to GME's 0..100 meter (linear in dB over the top 60 dB)."""
    if not 0 <= dbov <= SILENCE_DBOV:
        raise ValueError(f"audio level {dbov} outside 0..{SILENCE_DBOV}")
    return round(MAX_LEVEL * max(0, METER_RANGE_DB - dbov) / METER_RANGE_DB)


def mic_level(frame: np.ndarray) -> int:
    """``GetMicLevel`` / ``GetSendStreamLevel`` (0..100) of one captured int16 frame."""
    return level_from_audio_level(audio_level(frame))


def check_volume(volume: int) -> int:
    """Validate a GME volume percent (0 mutes, 100 unity, 200 doubles)."""
    if not 0 <= volume <= MAX_VOLUME:
        raise ValueError(f"volume {volume} outside 0..{MAX_VOLUME}")
    return volume


def recv_stream_level(dbov: int, volume: int = 100) -> int:
    """``GetRecvStreamLevel`` (0..200) from a packet's header level and the member's volume %."""
    return min(MAX_STREAM_LEVEL, round(level_from_audio_level(dbov) * check_volume(volume) / 100))


class SpeakingDetector(Generic[Member]):
    """USER_UPDATE HAS_AUDIO / NO_AUDIO per member, emitted only on changes.

    HAS_AUDIO when a packet's header level is at or above the threshold (louder than
    ``threshold_dbov`` -dBov); NO_AUDIO once no such packet has arrived for more than ``timeout_s``
    (GME: "no audio packets for > 2 s"). Quiet packets (comfort noise, a muted mic that still
    sends) do not count as audio, so the indicator follows speech rather than connectivity.
    """

    def __init__(self, threshold_dbov: int = 45, timeout_s: float = 2.0) -> None:
        if not 0 <= threshold_dbov <= SILENCE_DBOV:
            raise ValueError(f"threshold {threshold_dbov} outside 0..{SILENCE_DBOV}")
        self.threshold_dbov = threshold_dbov
        self.timeout_s = timeout_s
        self._last_audio: dict[Member, float] = {}  # members currently speaking -> last loud packet

    def on_packet(self, member: Member, dbov: int, now: float) -> UserUpdateEvent | None:
        """Feed one received packet's header level; HAS_AUDIO if the member just started."""
        if dbov > self.threshold_dbov:
            return None
        started = member not in self._last_audio
        self._last_audio[member] = now
        return UserUpdateEvent.HAS_AUDIO if started else None

    def poll(self, now: float) -> list[Member]:
        """Members that turn NO_AUDIO at ``now`` (call a few times a second)."""
        silent = [m for m, last in self._last_audio.items() if now - last > self.timeout_s]
        for member in silent:
            del self._last_audio[member]
        return silent

    def speaking(self) -> frozenset[Member]:
        return frozenset(self._last_audio)

    def remove(self, member: Member) -> None:
        """Forget a member that left the room (GME sends EXIT, not NO_AUDIO, then)."""
        self._last_audio.pop(member, None)


class VolumeTracker(Generic[Member]):
    """USER_VOLUMES (``TrackingVolume(sec)``): member -> 0..100 level, once per interval.

    Each report carries the loudest level heard from each tracked member during the interval, so a
    short word still shows; members heard before but silent this interval report 0 until removed.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._peak: dict[Member, int] = {}
        self._since: float | None = None

    def on_packet(self, member: Member, dbov: int) -> None:
        level = level_from_audio_level(dbov)
        if level > self._peak.get(member, -1):
            self._peak[member] = level

    def poll(self, now: float) -> dict[Member, int] | None:
        """The openid -> volume map when an interval has passed since the last report, else None."""
        if self._since is None:
            self._since = now
            return None
        if now - self._since < self.interval_s:
            return None
        self._since = now
        report = dict(self._peak)
        self._peak = dict.fromkeys(self._peak, 0)
        return report

    def remove(self, member: Member) -> None:
        """Stop reporting a member that left the room."""
        self._peak.pop(member, None)
