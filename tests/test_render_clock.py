"""The SDK's playout schedule (issue 11): 20 ms periods that a waiting talkspurt's start may move."""
from __future__ import annotations

import pytest

from opengme.sdk.render_clock import RenderClock

PERIOD = 0.02
STEP = 0.0005  # the simulated clock's resolution
TOL = 1.01 * STEP  # a render lands on the first step at or after its time


def renders(clock: RenderClock, until: float, starts: dict[float, float] | None = None,
            step: float = STEP) -> list[tuple[float, int]]:
    """Drive ``clock`` on a fine simulated clock; ``starts`` maps the time a talkspurt's packet
    lands to its start time (offered to ``align`` from then on until a render reaches it)."""
    out: list[tuple[float, int]] = []
    pending: float | None = None
    t = 0.0
    while t < until:
        for landed, start in (starts or {}).items():
            if landed <= t < landed + step:
                pending = start
        if pending is not None and out and out[-1][0] >= pending:
            pending = None  # it started at that render
        clock.align(pending)
        frames = clock.take(t)
        if frames:
            out.append((t, frames))
        t = round(t + step, 6)
    return out


def test_without_talkspurts_it_renders_one_frame_every_period() -> None:
    clock = RenderClock(PERIOD, 5)
    clock.start(0.0)
    times = [t for t, n in renders(clock, 0.1) if n == 1]
    assert times == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08], abs=TOL)


def test_a_talkspurt_due_between_renders_is_rendered_then_and_the_periods_run_on_from_there() -> None:
    clock = RenderClock(PERIOD, 5)
    clock.start(0.0)
    # A packet lands at 45 ms, may start at 47 ms: rendered at 47 ms, not at the 60 ms period.
    got = renders(clock, 0.13, {0.045: 0.047})
    assert [t for t, _ in got] == pytest.approx([0.0, 0.02, 0.04, 0.047, 0.067, 0.087, 0.107, 0.127], abs=TOL)
    assert all(n == 1 for _, n in got)  # moved, never doubled


def test_a_start_at_most_half_a_period_after_a_render_postpones_it() -> None:
    clock = RenderClock(PERIOD, 5)
    clock.start(0.0)
    # Landed at 38 ms but due at 46 ms: the 40 ms render waits for it (6 ms) instead of 20 ms.
    got = renders(clock, 0.1, {0.038: 0.046})
    assert [t for t, _ in got] == pytest.approx([0.0, 0.02, 0.046, 0.066, 0.086], abs=TOL)


def test_a_start_past_half_a_period_after_the_next_render_waits_for_a_later_one() -> None:
    clock = RenderClock(PERIOD, 5)
    clock.start(0.0)
    clock.take(0.0)
    clock.align(0.0301)  # more than half a period after the 20 ms render: not that one's
    assert clock.next == pytest.approx(0.02)


def test_a_start_a_render_has_passed_cannot_spin_the_clock() -> None:
    clock = RenderClock(PERIOD, 5)
    clock.start(0.0)
    assert clock.take(0.01) == 1
    clock.align(0.005)  # had its chance at the 10 ms render (it did not start: e.g. it was dropped)
    assert clock.next == pytest.approx(0.02)
    assert clock.take(0.011) == 0


def test_a_stall_is_caught_up_in_bounded_bursts_and_a_stopped_clock_renders_nothing() -> None:
    clock = RenderClock(PERIOD, 3)
    clock.start(0.0)
    assert clock.take(0.0) == 1
    assert clock.take(0.2) == 3  # ten periods late: at most max_burst at once
    assert clock.next is not None and clock.next > 0.2
    clock.stop()
    clock.align(0.25)
    assert clock.next is None and clock.take(1.0) == 0
