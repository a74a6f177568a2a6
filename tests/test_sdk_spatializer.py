"""The SDK's 3D voice stage (opengme.sdk.spatializer.Spatial3D) on frames, without devices: which voices
are placed in 3D, GME's attenuation, stereo out for everything."""
from __future__ import annotations

import math

import numpy as np
import pytest

from opengme.core.spatial import SpatializerNotReady
from opengme.sdk.spatializer import Spatial3D

FRAME = 960  # 20 ms at the SDK's 48 kHz output rate


def noise(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(FRAME) * 3000).astype(np.int16)


def energy_db(frame: np.ndarray, ear: int) -> float:
    return 10 * math.log10(float(np.sum(frame[:, ear].astype(np.float64) ** 2)) + 1e-9)


@pytest.fixture
def spatial() -> Spatial3D:
    s = Spatial3D()
    s.init("")
    s.enable(True, apply_team=False)
    s.update(position=(0.0, 0.0, 0.0), recv_range=100.0, team=1,
             others={2: (2, (0.0, 5.0, 0.0)), 3: (1, (0.0, 5.0, 0.0)), 4: (2, (0.0, 20.0, 0.0)), 5: (2, (0.0, -5.0, 0.0))})
    return s


def render(spatial: Spatial3D, tinyid: int, frames: int = 5) -> np.ndarray:
    """The last of a few frames of a steady noise voice (the filters and tails settle)."""
    out = np.zeros((FRAME, 2), np.int16)
    for i in range(frames):
        out = spatial.stage({tinyid: noise(i)})[tinyid]
    return out


def test_enabling_before_init_is_7003() -> None:
    with pytest.raises(SpatializerNotReady):
        Spatial3D().enable(True, False)


def test_other_teams_are_placed_and_attenuated(spatial: Spatial3D) -> None:
    right = render(spatial, 2)
    assert right.shape == (FRAME, 2) and right.dtype == np.int16
    assert energy_db(right, 1) - energy_db(right, 0) >= 10  # +90° (the listener's right)
    left = render(spatial, 5)
    assert energy_db(left, 0) - energy_db(left, 1) >= 10
    far = render(spatial, 4)  # 20 = twice range/10: GME's gain range/10 ÷ distance = 1/2, about -6 dB
    assert energy_db(far, 1) - energy_db(right, 1) == pytest.approx(-6.0, abs=1.0)


def test_teammates_blacklisted_and_unplaced_voices_are_plain(spatial: Spatial3D) -> None:
    frame = noise(7)
    mate = spatial.stage({3: frame})[3]
    assert np.array_equal(mate[:, 0], frame) and np.array_equal(mate[:, 1], frame)  # teammate: plain
    spatial.update(apply_team=True)
    mate = render(spatial, 3)
    assert energy_db(mate, 1) - energy_db(mate, 0) >= 10  # apply_team: teammates in 3D too
    spatial.update(plain=frozenset({2}))
    listed = spatial.stage({2: frame})[2]
    assert np.array_equal(listed[:, 0], listed[:, 1])  # on the 3D blacklist: heard plainly
    unknown = spatial.stage({9: frame})[9]
    assert np.array_equal(unknown[:, 0], frame)  # no position known: plain
