"""Level meters, the RFC 6464 header level, and the speaking / volume trackers."""
from __future__ import annotations

import numpy as np
import pytest

from opengme.core.levels import (
    SpeakingDetector,
    VolumeTracker,
    audio_level,
    level_from_audio_level,
    mic_level,
    recv_stream_level,
)
from opengme.events import UserUpdateEvent

N = 960


def sine(amplitude: float, freq: float = 440.0, rate: int = 48000) -> np.ndarray:
    t = np.arange(N) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def square(amplitude: int) -> np.ndarray:
    return np.where(np.arange(N) % 2 == 0, amplitude, -amplitude).astype(np.int16)


@pytest.mark.parametrize(("frame", "dbov"), [
    (np.zeros(N, np.int16), 127),  # digital silence
    (square(32767), 0),  # RFC 6464: a full-scale square wave is 0 dBov
    (sine(32767), 3),  # a full-scale sine is 3 dB below it
    (sine(3277), 23),  # -20 dB from full-scale sine
    (np.ones(N, np.int16), 90),  # 1 LSB DC: 20*log10(1/32768)
    (np.array([], np.int16), 127),
])
def test_audio_level_is_rfc6464_minus_dbov(frame: np.ndarray, dbov: int) -> None:
    assert audio_level(frame) == dbov


def test_audio_level_is_capped_at_127_for_near_silence() -> None:
    # Quieter than -127 dBov (one LSB in a million-sample frame) still reads 127, never more.
    frame = np.zeros(1_000_000, np.int16)
    frame[0] = 1
    assert audio_level(frame) == 127


@pytest.mark.parametrize(("dbov", "level"),
                         [(0, 100), (3, 95), (20, 67), (30, 50), (60, 0), (90, 0), (127, 0)])
def test_meter_is_linear_in_db_over_the_top_60_db(dbov: int, level: int) -> None:
    assert level_from_audio_level(dbov) == level


def test_mic_level_of_speech_like_and_silent_frames() -> None:
    assert mic_level(sine(3277)) == 62  # -23 dBov
    assert mic_level(square(32767)) == 100
    assert mic_level(np.zeros(N, np.int16)) == 0


def test_recv_stream_level_scales_the_meter_by_member_volume_up_to_200() -> None:
    assert recv_stream_level(30) == 50
    assert recv_stream_level(30, volume=200) == 100
    assert recv_stream_level(0, volume=200) == 200
    assert recv_stream_level(0, volume=0) == 0
    with pytest.raises(ValueError):
        recv_stream_level(30, volume=201)
    with pytest.raises(ValueError):
        level_from_audio_level(128)


def test_speaking_detector_fires_only_on_changes() -> None:
    det: SpeakingDetector[str] = SpeakingDetector(threshold_dbov=45, timeout_s=2.0)
    assert det.on_packet("alice", 60, 0.0) is None  # below threshold: not speaking
    assert det.on_packet("alice", 30, 0.1) is UserUpdateEvent.HAS_AUDIO
    assert det.on_packet("alice", 20, 0.12) is None  # already speaking: no repeat
    assert det.on_packet("bob", 45, 0.5) is UserUpdateEvent.HAS_AUDIO  # exactly at threshold
    assert det.speaking() == {"alice", "bob"}
    # Quiet packets (comfort noise) do not keep the indicator alive.
    assert det.on_packet("alice", 90, 1.5) is None
    assert det.poll(2.12) == []  # exactly 2 s since alice's last loud packet: not yet (> 2 s)
    assert det.poll(2.13) == ["alice"]
    assert det.poll(2.2) == []  # NO_AUDIO is reported once
    assert det.poll(2.6) == ["bob"]
    assert det.on_packet("alice", 10, 3.0) is UserUpdateEvent.HAS_AUDIO  # speaks again


def test_speaking_detector_forgets_members_that_left() -> None:
    det: SpeakingDetector[int] = SpeakingDetector()
    det.on_packet(7, 10, 0.0)
    det.remove(7)
    assert det.poll(10.0) == []  # no NO_AUDIO for someone who left (EXIT covers it)
    assert det.on_packet(7, 10, 11.0) is UserUpdateEvent.HAS_AUDIO


def test_volume_tracker_reports_peak_per_interval_then_zero() -> None:
    tracker: VolumeTracker[str] = VolumeTracker(interval_s=0.5)
    assert tracker.poll(0.0) is None  # starts the first interval
    tracker.on_packet("alice", 30)
    tracker.on_packet("alice", 6)  # the loudest packet of the interval wins
    tracker.on_packet("alice", 40)
    tracker.on_packet("bob", 127)
    assert tracker.poll(0.3) is None
    assert tracker.poll(0.5) == {"alice": 90, "bob": 0}
    tracker.on_packet("bob", 0)
    assert tracker.poll(1.0) == {"alice": 0, "bob": 100}  # alice was silent: 0, not her old value
    tracker.remove("alice")
    assert tracker.poll(1.5) == {"bob": 0}
