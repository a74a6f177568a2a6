"""Counters and gauges rendered in the Prometheus text format, with no client library."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, object]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """A tiny registry: counters are incremented, gauges are read from callables at scrape time."""

    def __init__(self) -> None:
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, Callable[[], float]] = {}
        self._collectors: list[Callable[[], None]] = []

    def describe(self, name: str, kind: str, help_text: str) -> None:
        self._help[name] = (kind, help_text)

    def inc(self, name: str, amount: float = 1.0, **labels: object) -> None:
        self._counters[name][_labels(labels)] += amount

    def value(self, name: str, **labels: object) -> float:
        return self._counters.get(name, {}).get(_labels(labels), 0.0)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._help[name] = ("gauge", help_text)
        self._gauges[name] = read

    def on_collect(self, collect: Callable[[], None]) -> None:
        """Run ``collect`` before every scrape, so counters copied from a hot path are exact."""
        self._collectors.append(collect)

    def render(self) -> str:
        for collect in self._collectors:
            collect()
        lines: list[str] = []
        names = sorted(set(self._counters) | set(self._gauges) | set(self._help))
        for name in names:
            kind, help_text = self._help.get(name, ("counter", name))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self._gauges:
                lines.append(f"{name} {_number(self._gauges[name]())}")
                continue
            series = self._counters.get(name) or {(): 0.0}
            for labels, value in sorted(series.items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
