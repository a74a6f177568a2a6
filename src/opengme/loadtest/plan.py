"""The shape of a load test run, its limits, and the traffic it should produce (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from typing import Final

MAX_MEMBERS: Final = 2000
"""rooms × members per run: one Python process drives them (and one server allows 4096 connections)."""
MAX_DURATION_S: Final = 600.0
MAX_ROOM_MEMBERS: Final = 100
FRAMES_PER_SECOND: Final = 50  # 20 ms frames, as the SDK sends
DRAIN_S: Final = 0.5
"""After the last frame, how long receivers keep counting (later packets count as lost)."""


class PlanError(ValueError):
    """A run that cannot or must not be done; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Plan:
    """``rooms`` rooms of ``members`` members, ``speakers`` of whom talk in each, for ``duration`` s."""

    rooms: int
    members: int
    speakers: int
    duration: float
    room_type: int = 1

    def __post_init__(self) -> None:
        if self.rooms < 1:
            raise PlanError("--rooms must be at least 1")
        if not 1 <= self.members <= MAX_ROOM_MEMBERS:
            raise PlanError(f"--members must be 1..{MAX_ROOM_MEMBERS} (members per room)")
        if not 0 <= self.speakers <= self.members:
            raise PlanError(f"--speakers must be 0..--members ({self.members}): speakers are members who talk")
        if self.total > MAX_MEMBERS:
            raise PlanError(f"--rooms × --members = {self.total} is above the cap of {MAX_MEMBERS} simulated "
                            "members per run; run several load testers for more")
        if not 0 < self.duration <= MAX_DURATION_S:
            raise PlanError(f"--duration must be above 0 and at most {MAX_DURATION_S:g} s")

    @property
    def total(self) -> int:
        return self.rooms * self.members

    @property
    def frames(self) -> int:
        """Frames each speaker sends."""
        return round(self.duration * FRAMES_PER_SECOND)

    @property
    def speakers_total(self) -> int:
        return self.rooms * self.speakers

    @property
    def expected_rate(self) -> float:
        """Packets per second the relay should forward: every speaker to every other member of its room."""
        return float(self.speakers_total * (self.members - 1) * FRAMES_PER_SECOND)

    def room_of(self, member: int) -> int:
        return member // self.members

    def speaks(self, member: int) -> bool:
        return member % self.members < self.speakers


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
