"""Voice quality end to end: PESQ wideband (ITU-T P.862.2) of what a listener hears against what was
said, through Uplink → Relay → Downlink with the real codec, clean and over a lossy, jittery path.

Figures measured on this machine (seed 1; the bench prints them for both room types):
clean FLUENCY ≈ 3.7 (ANS on: it alters clean speech a little), STANDARD ≈ 4.3;
10 % loss + 30 ms jitter: FLUENCY ≈ 3.2, STANDARD ≈ 3.8.
"""
from __future__ import annotations

import numpy as np
import pytest
from pesq import pesq

from opengme.codec.opus import profile_for
from opengme.core.impair import Impairment
from opengme.events import RoomType
from test_uplink_downlink import OUT_RATE, SimRoom, align, resample, speech

FRAME_16K = 320
GAP_FRAME_DB = 20.0  # an output frame this far below the input's is "not heard"
SPEECH_FLOOR_DB = 35.0  # input frames within this of the loudest frame count as speech


def longest_gap_ms(said: np.ndarray, heard: np.ndarray) -> float:
    """Longest run of speech frames (20 ms) whose aligned output is ``GAP_FRAME_DB`` below the input."""
    n = min(len(said), len(heard)) // FRAME_16K * FRAME_16K
    energy_in = (said[:n].astype(np.float64).reshape(-1, FRAME_16K) ** 2).mean(axis=1) + 1.0
    energy_out = (heard[:n].astype(np.float64).reshape(-1, FRAME_16K) ** 2).mean(axis=1) + 1.0
    db_in, db_out = 10 * np.log10(energy_in), 10 * np.log10(energy_out)
    gap = (db_in > db_in.max() - SPEECH_FLOOR_DB) & (db_out < db_in - GAP_FRAME_DB)
    longest = run = 0
    for frame_is_gap in gap:
        run = run + 1 if frame_is_gap else 0
        longest = max(longest, run)
    return longest * 20.0


def measure(room_type: RoomType, impairment: Impairment | None = None) -> tuple[float, float]:
    """(PESQ-WB, longest gap in ms) of the whole speech clip sent by member 1 and heard by member 2."""
    said = speech(16_000)
    room = SimRoom(room_type, (1, 2), impairment=impairment)
    out = room.run({1: speech(profile_for(room_type).sample_rate)}, listener=2)
    heard = resample(out, OUT_RATE, 16_000)
    _, cut = align(heard, said, max_lag=16 * 300)
    return float(pesq(16_000, said, cut, "wb")), longest_gap_ms(said, cut)


def impaired() -> Impairment:
    return Impairment(loss=0.10, jitter_ms=30.0, seed=1)


def test_gap_measure_finds_a_silenced_stretch() -> None:
    said = speech(16_000)[: 16_000 * 3]
    cut = said.copy()
    start = np.argmax(np.abs(said)) // FRAME_16K * FRAME_16K
    cut[start:start + 10 * FRAME_16K] = 0
    assert longest_gap_ms(said, said) == 0
    assert longest_gap_ms(said, cut) >= 100


@pytest.mark.slow
@pytest.mark.parametrize("room_type", [RoomType.FLUENCY, RoomType.STANDARD])
def test_clean_path_pesq(room_type: RoomType) -> None:
    score, gap_ms = measure(room_type)
    assert score >= 3.5, score
    assert gap_ms <= 60


@pytest.mark.slow
@pytest.mark.parametrize("room_type", [RoomType.FLUENCY, RoomType.STANDARD])
def test_lossy_jittery_path_pesq_and_no_long_gap(room_type: RoomType) -> None:
    score, gap_ms = measure(room_type, impaired())
    assert score >= 2.8, score
    assert gap_ms <= 150, gap_ms
