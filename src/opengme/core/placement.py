"""Room placement: which *target* serves a room — a relay worker of this machine or a node of the
cluster. One idea at two scales (issue 18): the same rule chooses, the same table shape remembers.

- A room stays where it was placed while its target lives (members of one room must share a relay).
- A new room, or one whose target died, goes to the live target with the least load; ties go to
  the target named first in sorted order, so that every caller given the same view chooses alike.
- A target that dies gives its rooms back (``lose``): the caller re-places them and tells their
  members to reconnect.

:class:`PlacementTable` is the in-memory table (``opengme serve --workers N``); the cluster keeps
the same mapping in Redis (``opengme.cluster``) and uses :func:`choose` for the same decision.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class NoTarget(LookupError):
    """No live target to place a room on."""


def choose(loads: Mapping[str, float], capacity: Mapping[str, float] | None = None) -> str:
    """The live target with the least load (relative to its capacity when given); ties by name."""
    if not loads:
        raise NoTarget("no live worker or node to place the room on")

    def weight(target: str) -> tuple[float, str]:
        cap = (capacity or {}).get(target, 1.0) or 1.0
        return loads[target] / cap, target

    return min(loads, key=weight)


@dataclass
class PlacementTable:
    """Room → target for targets this process watches itself (relay workers); a target's load is
    the number of rooms placed on it."""

    loads: dict[str, float] = field(default_factory=dict)
    rooms: dict[str, str] = field(default_factory=dict)

    def add_target(self, target: str) -> None:
        self.loads.setdefault(target, 0.0)

    def place(self, room: str) -> str:
        """The target serving ``room``, placing it on the least-loaded live target if needed."""
        owner = self.rooms.get(room)
        if owner is not None and owner in self.loads:
            return owner
        owner = choose(self.loads)
        self.rooms[room] = owner
        self.loads[owner] += 1.0
        return owner

    def owner(self, room: str) -> str | None:
        owner = self.rooms.get(room)
        return owner if owner in self.loads else None

    def release(self, room: str) -> None:
        """``room`` is empty: forget where it was (its next member places it again)."""
        owner = self.rooms.pop(room, None)
        if owner in self.loads:
            self.loads[owner] = max(0.0, self.loads[owner] - 1.0)

    def lose(self, target: str) -> list[str]:
        """``target`` died: drop it and return the rooms it served (now unplaced)."""
        self.loads.pop(target, None)
        lost = [room for room, owner in self.rooms.items() if owner == target]
        for room in lost:
            del self.rooms[room]
        return lost
