"""The server's metrics, exposed at ``/metrics`` through ``prometheus_client`` (the standard library).

Each ``Server`` has its own ``CollectorRegistry`` (tests run several servers in one process), with
the process collector (``process_start_time_seconds``, CPU, memory, file descriptors), the Python
platform collector, ``opengme_build_info`` and the parts' own metrics. Parts use a small facade:

- ``describe(name, kind, help, labels=(), buckets=None)`` declares a counter or histogram (one
  declared without labels, or never declared, is created on first use with the labels of that use);
- ``inc(name, amount=1, **labels)`` and ``observe(name, seconds, **labels)`` record;
- ``gauge(name, help, read)`` reads a callable at scrape time;
- ``on_collect(fn)`` runs ``fn`` before every scrape, so counters copied from a hot path are exact;
- ``value(name, **labels)`` reads a counter back (tests, diagnostics).

Counter names keep Prometheus' ``_total`` convention: ``inc("opengme_entries_total")`` is the
``opengme_entries_total`` series.
"""
from __future__ import annotations

import platform
from collections.abc import Callable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from opengme import __version__

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""``text/plain; version=0.0.4; charset=utf-8``: the text format every Prometheus reads."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, from half a millisecond (a relay pass) to ten seconds (a slow entry)."""

Metric = Counter | Gauge | Histogram


def _base(name: str) -> str:
    """prometheus_client adds ``_total`` to counters itself."""
    return name.removesuffix("_total")


class Metrics:
    """One server's registry behind the small facade the parts use (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("opengme_build", "The running OpenGME release.", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()})
        self._help: dict[str, tuple[str, str, tuple[str, ...], Sequence[float] | None]] = {}
        self._metrics: dict[str, Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def describe(self, name: str, kind: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] | None = None) -> None:
        """Declare a metric. With ``labels`` (or as a histogram) it exists from the first scrape on;
        otherwise it is created on first use, with the label names of that use."""
        self._help[name] = (kind, help_text, tuple(labels), buckets)
        if labels or kind == "histogram":
            self._metric(name, tuple(labels))

    def inc(self, name: str, amount: float = 1.0, **labels: object) -> None:
        if amount:
            self._child(name, labels).inc(amount)  # type: ignore[union-attr]

    def observe(self, name: str, value: float, **labels: object) -> None:
        self._child(name, labels).observe(value)  # type: ignore[union-attr]

    def value(self, name: str, **labels: object) -> float:
        metric = self._metrics.get(name)
        if metric is None:
            return 0.0
        sample = name if isinstance(metric, Counter) else _base(name)
        found = self.registry.get_sample_value(sample, {k: str(v) for k, v in labels.items()})
        return found or 0.0

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        metric = Gauge(name, help_text, registry=self.registry)
        metric.set_function(read)
        self._metrics[name] = metric

    def on_collect(self, collect: Callable[[], None]) -> None:
        """Run ``collect`` before every scrape, so counters copied from a hot path are exact."""
        self._collectors.append(collect)

    def render(self) -> bytes:
        for collect in self._collectors:
            collect()
        return generate_latest(self.registry)

    def _child(self, name: str, labels: dict[str, object]) -> Metric:
        metric = self._metrics.get(name) or self._metric(name, tuple(sorted(labels)))
        return metric.labels(**{k: str(v) for k, v in labels.items()}) if labels else metric

    def _metric(self, name: str, labels: tuple[str, ...]) -> Metric:
        kind, help_text, _, buckets = self._help.get(name, ("counter", name, labels, None))
        metric: Metric
        if kind == "histogram":
            metric = Histogram(name, help_text, labels, registry=self.registry,
                               buckets=tuple(buckets or LATENCY_BUCKETS))
        else:
            metric = Counter(_base(name), help_text, labels, registry=self.registry)
        self._metrics[name] = metric
        return metric
