"""What a load test measured: percentiles, bounded latency samples, the per-interval timeline and the
printed report (pure: values and times are passed in)."""
from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50.0, 95.0, 99.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0–100) of sorted ``values``, interpolated linearly between ranks
    (numpy's default); NaN for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    if not values:
        return math.nan
    rank = (len(values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


class Sampler:
    """At most ``cap`` values kept, evenly spread over everything added: when full, every other one
    is dropped and from then on only one in twice as many is kept. Bounded memory for any run length."""

    __slots__ = ("cap", "count", "stride", "values")

    def __init__(self, cap: int = 65536) -> None:
        if cap < 2:
            raise ValueError("cap must be at least 2")
        self.cap = cap
        self.count = 0
        self.stride = 1
        self.values = array("d")

    def add(self, value: float) -> None:
        self.count += 1
        if self.count % self.stride:
            return
        self.values.append(value)
        if len(self.values) >= self.cap:
            self.values = self.values[1::2]
            self.stride *= 2

    def percentiles(self, ps: Sequence[float] = PERCENTILES) -> list[float]:
        ordered = sorted(self.values)
        return [percentile(ordered, p) for p in ps]


@dataclass(slots=True)
class Interval:
    """One interval of the run: packets received and their latencies."""

    received: int = 0
    latency: Sampler = field(default_factory=lambda: Sampler(2048))


class Timeline:
    """Received packets and latency samples by interval since ``start`` (for the plot and the live line)."""

    def __init__(self, start: float, interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.start = start
        self.interval = interval
        self.intervals: list[Interval] = []
        self._current = Interval()
        self._from = self._until = start  # the span of ``_current``: empty until the first ``at``

    def at(self, now: float) -> Interval:
        """The interval ``now`` falls in (the receive path's per-packet call: the current one is cached)."""
        if self._from <= now < self._until:
            return self._current
        index = max(0, int((now - self.start) / self.interval))
        while len(self.intervals) <= index:
            self.intervals.append(Interval())
        self._current = self.intervals[index]
        self._from = self.start + index * self.interval
        self._until = self._from + self.interval
        return self._current

    def received(self, now: float, count: int = 1) -> None:
        self.at(now).received += count

    def latency(self, now: float, seconds: float) -> None:
        self.at(now).latency.add(seconds)

    def series(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """(interval end times s, packets/s, p50 ms, p99 ms) for every interval (NaN without samples)."""
        times, rates, p50, p99 = [], [], [], []
        for i, found in enumerate(self.intervals):
            times.append((i + 1) * self.interval)
            rates.append(found.received / self.interval)
            mid, high = found.latency.percentiles((50.0, 99.0))
            p50.append(mid * 1000)
            p99.append(high * 1000)
        return times, rates, p50, p99


def ms(values: Sequence[float]) -> str:
    """"p50 1.2 / p95 3.4 / p99 5.6 ms" from seconds (as PERCENTILES), "n/a" when there were none."""
    if not values or any(math.isnan(v) for v in values):
        return "n/a"
    return " / ".join(f"p{p:g} {v * 1000:.2f}" for p, v in zip(PERCENTILES, values, strict=True)) + " ms"


@dataclass(slots=True)
class Traffic:
    """The media phase as one side of the comparison saw it (the relay, or the bare forwarder)."""

    seconds: float = 0.0
    sent: int = 0
    expected: int = 0  # deliveries due: every packet sent × the other members of its room
    received: int = 0
    skipped: int = 0  # frames the load tester could not send on time (it was overloaded)
    latency: Sampler = field(default_factory=Sampler)
    cpu_s: float | None = None  # the forwarding process's CPU time over the phase, when known
    tester_cpu_s: float = 0.0  # the load tester's own CPU time over the phase
    server_forwarded: int | None = None  # what the server counted as forwarded over the phase, when known

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        return max(0.0, 1.0 - self.received / self.expected) if self.expected else 0.0

    @property
    def cpu_us_per_packet(self) -> float | None:
        if self.cpu_s is None or not self.received:
            return None
        return self.cpu_s * 1e6 / self.received

    def lines(self, name: str) -> list[str]:
        out = [
            f"{name}: forwarded {self.rate:,.0f} packets/s ({self.received:,} of {self.expected:,} due, "
            f"{self.sent:,} sent in {self.seconds:.1f} s); loss {self.loss:.2%}",
            f"{name}: end-to-end latency {ms(self.latency.percentiles())}",
        ]
        if self.server_forwarded is not None:
            out.append(f"{name}: the server counted {self.server_forwarded:,} forwarded "
                       f"({self.server_forwarded - self.received:,} of them not received)")
        if (cpu := self.cpu_us_per_packet) is not None:
            out.append(f"{name}: {cpu:.1f} µs of CPU per forwarded packet")
        if self.seconds > 0:
            out.append(f"{name}: the load tester used {self.tester_cpu_s / self.seconds:.0%} of a core")
        if self.skipped:
            out.append(f"{name}: the load tester fell behind and skipped {self.skipped:,} frames "
                       "(it is the bottleneck: fewer members, or several load testers)")
        return out


@dataclass(slots=True)
class Entries:
    """The join phase: how many entered, how fast, and how long each entry took."""

    wanted: int
    entered: int = 0
    seconds: float = 0.0
    latency: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)  # first words of the reason → count
    redirected: int = 0  # entries a cluster node sent on to the node serving the room

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def lines(self) -> list[str]:
        rate = self.entered / self.seconds if self.seconds > 0 else 0.0
        out = [f"entries: {self.entered} of {self.wanted} in {self.seconds:.2f} s ({rate:,.1f}/s); "
               f"entry latency {ms([percentile(sorted(self.latency), p) for p in PERCENTILES])}"
               + (f"; {self.redirected} redirected" if self.redirected else "")]
        out += [f"entries: {count} failed: {reason}" for reason, count in sorted(self.failures.items())]
        return out


def ratio_text(ratio: float) -> str:
    """A ratio as people read it: 1.4×, 0.98×, 160×."""
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.2g}×" if ratio < 1 else f"{ratio:.1f}×"


def comparison(relay: Traffic, bare: Traffic) -> list[str]:
    """The relay against the bare forwarder with the same traffic, as ratios (the first one is the
    figure: CPU per forwarded packet when both are known, else delivered rate)."""
    out = []
    if relay.skipped or bare.skipped:
        out.append("relay / baseline: the load tester fell behind in a run, so these ratios measure it too")
    relay_cpu, bare_cpu = relay.cpu_us_per_packet, bare.cpu_us_per_packet
    if relay_cpu is not None and bare_cpu:
        out.append(f"relay / baseline: {ratio_text(relay_cpu / bare_cpu)} the CPU per forwarded packet")
    if bare.rate:
        out.append(f"relay / baseline: {relay.rate / bare.rate:.3f}× the forwarded rate")
    r50, b50 = relay.latency.percentiles((50.0,))[0], bare.latency.percentiles((50.0,))[0]
    if b50 > 0 and not math.isnan(r50):
        out.append(f"relay / baseline: {ratio_text(r50 / b50)} the median latency")
    return out
