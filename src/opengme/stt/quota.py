"""Concurrency limits per app, as GME documents them per account: 10 file recognitions, 50 streaming
recognitions and 50 live-caption streams at once (settings ``stt_max_file_jobs``, ``stt_max_streams``,
``stt_max_captions``; 0 = no limit). A request beyond its app's limit is refused at once with 32769
(HTTP 429 on the HTTP API), never queued: the app retries when one of its own jobs has finished, and
one busy app cannot fill the workers for every other app.
"""
from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opengme.errors import ErrorCode, GmeError


class Kind(enum.Enum):
    FILE = "speech-to-text (and text-to-speech) requests"
    STREAM = "streaming recognitions"
    CAPTION = "live-caption streams"


class QuotaExceeded(GmeError):
    """The app already runs as many jobs of this kind as its limit admits (32769)."""

    def __init__(self, app_id: str, kind: Kind, limit: int) -> None:
        super().__init__(ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR,
                         f"app {app_id} already runs {limit} {kind.value} at once (its limit); "
                         "try again when one has finished")


class Quota:
    """Jobs running per (app, kind); pure bookkeeping, used from the event loop."""

    def __init__(self, limits: Mapping[Kind, int]) -> None:
        self.limits = dict(limits)
        self.running: Counter[tuple[str, Kind]] = Counter()

    def acquire(self, app_id: str, kind: Kind) -> None:
        """Count one job in, or :class:`QuotaExceeded` (nothing counted)."""
        limit = self.limits.get(kind, 0)
        if limit and self.running[app_id, kind] >= limit:
            raise QuotaExceeded(app_id, kind, limit)
        self.running[app_id, kind] += 1

    def release(self, app_id: str, kind: Kind) -> None:
        self.running[app_id, kind] -= 1
        if self.running[app_id, kind] <= 0:
            del self.running[app_id, kind]

    @contextmanager
    def slot(self, app_id: str, kind: Kind) -> Iterator[None]:
        self.acquire(app_id, kind)
        try:
            yield
        finally:
            self.release(app_id, kind)
