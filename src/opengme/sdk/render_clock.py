"""When the listener's playout renders its next 20 ms frame (issue 11: mouth-to-ear latency).

A fixed render period makes a talkspurt's first packet wait for the listener's next tick: up to a
whole frame (on loopback with two clients ticking in phase, almost always a whole frame). While
nothing is heard, :meth:`RenderClock.align` moves the next render to when the first waiting
talkspurt may start (the jitter buffer's ``start_due``: its packet's fastest-path arrival plus the
target, so the margin for the talkspurt's later packets is kept), if that comes before the next
render or at most half a period after it; the periods run on from there. Frames are moved, never
added, and each move happens in silence. Pure: the caller passes the time in.
"""
from __future__ import annotations

from opengme.devices.base import FramePacer


class RenderClock:
    """The playout's frame periods: a paced schedule that a talkspurt's start may move."""

    def __init__(self, period_s: float, max_burst: int) -> None:
        self.period_s = period_s
        self._pacer = FramePacer(period_s, max_burst)
        self.next: float | None = None
        """When the next render is due (monotonic s); None when stopped."""
        self._last = float("-inf")

    def start(self, now: float) -> None:
        """Render from ``now`` on, one frame per period."""
        self.next = now
        self._last = float("-inf")
        self._pacer.reset(now)

    def stop(self) -> None:
        self.next = None

    def align(self, start: float | None) -> None:
        """``start``: when the first waiting talkspurt may start while nothing is heard (None: no
        such talkspurt, or something is playing). A render at or after ``start`` already had its
        chance to start it (so a start that did not happen cannot spin the clock)."""
        if self.next is None or start is None or start <= self._last or start >= self.next + self.period_s / 2:
            return
        self.next = start
        self._pacer.reset(start)

    def take(self, now: float) -> int:
        """Frames to render at ``now`` (0 before the next render is due), counted as rendered."""
        if self.next is None or now < self.next:
            return 0
        self._last = now
        while self.next <= now:
            self.next += self.period_s
        return self._pacer.due(now)
