"""Voice quality end to end: PESQ wideband (ITU-T P.862.2) of what a listener hears against what was
said, through Uplink → Relay → Downlink with the real codec, clean and over a lossy, jittery path.

Figures measured on this machine (bench/bench_client_cpu.py prints them for seeds 1-10):
clean FLUENCY 3.72 (ANS on: it costs clean speech about 0.2), STANDARD 4.33, both at 20 ms of buffer
delay; 10 % loss + 30 ms jitter, seeds 1-3: FLUENCY 3.12 2.86 2.94, STANDARD 3.62 3.72 3.81, at
60 ms of buffer delay (jitter + one frame of FEC headroom).
"""
from __future__ import annotations

import numpy as np
import pytest

from opengme.core.impair import Impairment
from opengme.events import RoomType
from support.audio import speech
from support.sim_room import FRAME_16K, longest_gap_ms, measure

SEEDS = (1, 2, 3)


def impaired(seed: int) -> Impairment:
    return Impairment(loss=0.10, jitter_ms=30.0, seed=seed)


def test_gap_measure_finds_a_silenced_stretch() -> None:
    said = speech(16_000)[: 16_000 * 3]
    cut = said.copy()
    start = np.argmax(np.abs(said)) // FRAME_16K * FRAME_16K
    cut[start:start + 10 * FRAME_16K] = 0
    assert longest_gap_ms(said, said) == 0
    assert longest_gap_ms(said, cut) >= 100


@pytest.mark.slow
@pytest.mark.parametrize("room_type", [RoomType.FLUENCY, RoomType.STANDARD])
def test_clean_path_pesq_and_one_frame_of_delay(room_type: RoomType) -> None:
    heard = measure(room_type)
    assert heard.pesq >= 3.5, heard
    assert heard.gap_ms <= 60, heard
    # One frame (20 ms, this simulation's clock is in phase with the sender's): no FEC headroom on a
    # clean path, no fixed floor; 40 would mean headroom stuck on, 60 the old three-frame floor.
    assert heard.delay_ms <= 30, heard


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("room_type", [RoomType.FLUENCY, RoomType.STANDARD])
def test_lossy_jittery_path_pesq_and_no_long_gap(room_type: RoomType, seed: int) -> None:
    heard = measure(room_type, impaired(seed))
    assert heard.pesq >= 2.8, heard
    assert heard.gap_ms <= 150, heard
    # Jitter (< 30 ms) + one frame of FEC headroom, in 20 ms steps: 60. The fixed floor gave 80.
    assert heard.delay_ms < 70, heard
