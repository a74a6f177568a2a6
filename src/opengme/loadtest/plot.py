"""``--plot out.png``: forwarded rate and end-to-end latency over the traffic phase (matplotlib, the
``loadtest`` extra; imported only when a plot is asked for)."""
from __future__ import annotations

from pathlib import Path

from opengme.loadtest.stats import Timeline


class PlotError(Exception):
    """The plot cannot be drawn (matplotlib missing, or the file cannot be written)."""


def check_available() -> None:
    """Fail before the run, not after it, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install 'opengme[loadtest]'") from None


def draw(path: Path, timelines: dict[str, Timeline], title: str) -> None:
    """Two panels sharing the time axis: packets/s forwarded, and latency p50/p99 (ms), per timeline."""
    check_available()
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, (rate_ax, latency_ax) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for n, (name, timeline) in enumerate(timelines.items()):
        times, rates, p50, p99 = timeline.series()
        color = f"C{n}"  # one colour per run: solid p50, dashed p99
        rate_ax.plot(times, rates, color=color, label=name)
        latency_ax.plot(times, p50, color=color, label=f"{name} p50")
        latency_ax.plot(times, p99, color=color, linestyle="--", label=f"{name} p99")
    rate_ax.set_ylim(bottom=0)
    latency_ax.set_ylim(bottom=0)
    rate_ax.set_ylabel("forwarded packets/s")
    rate_ax.set_title(title)
    rate_ax.legend(loc="lower right")
    latency_ax.set_ylabel("end-to-end latency (ms)")
    latency_ax.set_xlabel("seconds into the traffic phase")
    latency_ax.legend(loc="upper right")
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise PlotError(f"cannot write --plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
