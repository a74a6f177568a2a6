"""3D voice in the SDK's downlink: the media engine's voice stage renders each remote voice binaurally.

``Spatial3D`` belongs to one Context. The owner thread (API calls, ``poll``) changes the scene — the
listener's position, axes, range and team, the others' positions the server pushes, the 3D blacklist
— by replacing one immutable ``Scene``; the media thread's ``stage`` reads whichever scene is current
(one attribute read, no lock). Per frame, each voice with a known position that is neither on the
3D blacklist nor a teammate (unless ``apply_team``) is rendered from its direction relative to the
listener's head with GME's distance attenuation; every other voice is heard plainly, in both ears.
The mixer's N-loudest selection runs after the stage, on the stereo frames. Voices on the local
audio blacklist never reach the stage.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from opengme.codec.opus import FRAME_MS, Frame
from opengme.core.downlink import OUTPUT_RATE
from opengme.core.mixer import fit_channels
from opengme.core.routing import Position
from opengme.core.spatial import Spatializer, distance_gain, listener_direction

Axes = tuple[Position, Position, Position]  # forward, right, up
DEFAULT_AXES: Axes = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


@dataclass(frozen=True)
class Scene:
    """What the renderer needs to place the voices (replaced whole, never changed in place)."""

    position: Position | None = None
    axes: Axes = DEFAULT_AXES
    recv_range: float = 0.0
    team: int = 0
    others: Mapping[int, tuple[int, Position]] = field(default_factory=dict)  # tinyid -> (team, position)
    plain: frozenset[int] = frozenset()  # tinyids on the 3D blacklist
    apply_team: bool = False


class Spatial3D:
    """One Context's 3D voice: the HRTF, the switches and the scene (see the module doc)."""

    def __init__(self) -> None:
        self._spatializer = Spatializer(OUTPUT_RATE, OUTPUT_RATE * FRAME_MS // 1000)
        self.enabled = False
        self.scene = Scene()
        self._render_lock = threading.Lock()  # init (owner thread) against stage (media thread)

    @property
    def ready(self) -> bool:
        return self._spatializer.ready

    def init(self, model_path: str | os.PathLike[str]) -> None:
        """Load the HRTF (``HrtfFileError``, 7002, when it cannot; the previous one stays)."""
        with self._render_lock:
            self._spatializer.init(Path(model_path) if model_path else "")

    def enable(self, enable: bool, apply_team: bool) -> None:
        """``SpatializerNotReady`` (7003) before a successful ``init``."""
        self._spatializer.renderer  # noqa: B018 - raises 7003 when not initialised
        self.enabled = enable
        self.update(apply_team=apply_team)

    def update(self, **changes: object) -> None:
        """Replace the scene with some fields changed (owner thread)."""
        self.scene = replace(self.scene, **changes)  # type: ignore[arg-type]

    def stage(self, frames: dict[int, Frame]) -> dict[int, Frame]:
        """The voice stage: this period's frames by tinyid in, stereo frames out (media thread)."""
        scene = self.scene
        placed: list[int] = []
        directions: list[np.ndarray] = []
        gains: list[float] = []
        out: dict[int, Frame] = {}
        for tinyid, frame in frames.items():
            other = scene.others.get(tinyid)
            spatial = (scene.position is not None and other is not None and tinyid not in scene.plain
                       and (scene.apply_team or scene.team == 0 or other[0] != scene.team))
            if not spatial:
                out[tinyid] = fit_channels(frame, 2)
                continue
            assert other is not None and scene.position is not None
            distance = float(np.linalg.norm(np.subtract(other[1], scene.position)))
            gain = distance_gain(distance, scene.recv_range) if scene.recv_range > 0 else 1.0
            placed.append(tinyid)
            directions.append(listener_direction(other[1], scene.position, *scene.axes))
            gains.append(gain)
        if placed:
            with self._render_lock:
                rendered = self._spatializer.renderer.render_each(
                    placed, np.stack([fit_channels(frames[t], 1) for t in placed]).astype(np.float32),
                    np.stack(directions), np.asarray(gains))
            stereo = np.clip(np.rint(rendered), -32768, 32767).astype(np.int16)
            for index, tinyid in enumerate(placed):
                out[tinyid] = np.ascontiguousarray(stereo[index].T)
        return out
