"""When each speaker's next 20 ms frame is due (pure: time is passed in).

Speakers are spread evenly over the frame period, so ``count`` speakers produce a steady stream of
``count / period`` packets per second rather than one burst per period (real clients are not in
phase). Global packet number ``k`` is speaker ``k % count``'s frame ``k // count``, due at
``start + k * period / count``: the schedule is absolute, so a late tick never drifts it. After a short
stall the frames due are sent at once (as a client's capture queue would burst them); a sender more
than ``backlog`` periods behind skips the older frames and counts them, so an overloaded load tester
says so instead of measuring itself.
"""
from __future__ import annotations

import math


class Pacer:
    def __init__(self, count: int, frames: int, start: float, period: float = 0.02, backlog: int = 5) -> None:
        if count < 0 or frames < 0 or period <= 0 or backlog < 1:
            raise ValueError("count and frames must be ≥ 0, period > 0 and backlog ≥ 1")
        self.count = count
        self.backlog = backlog * count  # packets
        self.start = start
        self.step = period / count if count else period
        self.end = count * frames  # packet numbers 0 .. end-1
        self.next = 0
        self.skipped = 0

    @property
    def done(self) -> bool:
        return self.next >= self.end

    def due(self, now: float) -> range:
        """The packet numbers due at ``now`` (send them in order); advances past them."""
        if self.count == 0:
            return range(0)
        last = min(self.end - 1, math.floor((now - self.start) / self.step))
        first = self.next
        if last - first >= self.backlog:  # too far behind: drop the oldest, as a full capture queue would
            self.skipped += last - first + 1 - self.backlog
            first = last - self.backlog + 1
        self.next = max(self.next, last + 1)
        return range(first, last + 1)

    def wait(self, now: float) -> float:
        """Seconds until the next packet is due (0 when one is due now)."""
        return max(0.0, self.start + self.next * self.step - now)

    def speaker(self, packet: int) -> tuple[int, int]:
        """(speaker index, frame number) of packet number ``packet``."""
        return packet % self.count, packet // self.count
