"""Usage per app per day (GME's DescribeAppStatistics): voice-chat seconds, voice-message uploads and
speech-to-text seconds, in the ``usage`` table of the durable tables (:mod:`opengme.db`).

Days are GME's: calendar days in UTC+8 (China Standard Time), as its statistics API counts them.
Any part of the server counts with :func:`count_usage` (it never blocks: the write is queued to this
log's one worker thread). Voice-chat time is counted here from the rooms' leave events.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from opengme.core.rooms import RoomEvent
from opengme.db import open_database
from opengme.logs import fields

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.usage")

DAY_OFFSET = 8 * 3600  # GME's statistics days are China Standard Time days (UTC+8)


class Usage(StrEnum):
    """What is counted, and in which unit."""

    VOICE_SECONDS = "voice_seconds"  # time members spent in voice-chat rooms
    PTT_UPLOADS = "ptt_uploads"  # voice messages uploaded
    STT_SECONDS = "stt_seconds"  # audio seconds turned into text


def day_of(at: float) -> str:
    """The GME statistics day (YYYY-MM-DD, UTC+8) of a unix time."""
    return time.strftime("%Y-%m-%d", time.gmtime(at + DAY_OFFSET))


class UsageLog:
    """Counters in the durable tables (:mod:`opengme.db`), written and read on one worker thread in submission order."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opengme-usage")
        self._db = self._worker.submit(open_database, Path(data_dir), database_url).result()

    def _add(self, app_id: str, day: str, metric: Usage, amount: float) -> None:
        try:
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (app_id, day, metric) "
                "DO UPDATE SET amount = usage.amount + excluded.amount",
                (app_id, day, metric.value, amount),
            )
        except self._db.errors:
            log.exception("could not count usage", extra=fields(app_id=app_id, metric=metric.value))

    def count(self, app_id: str, metric: Usage, amount: float = 1.0, at: float | None = None) -> None:
        """Add ``amount`` to today's (or ``at``'s day's) counter; returns at once."""
        self._worker.submit(self._add, app_id, day_of(time.time() if at is None else at), metric, amount)

    def _days(self, app_id: str, first: str, last: str) -> dict[str, dict[Usage, float]]:
        rows = self._db.execute(
            "SELECT day, metric, amount FROM usage WHERE app_id = ? AND day BETWEEN ? AND ? ORDER BY day",
            (app_id, first, last),
        ).fetchall()
        days: dict[str, dict[Usage, float]] = {}
        for row in rows:
            if row["metric"] in Usage.__members__.values():
                days.setdefault(row["day"], {})[Usage(row["metric"])] = row["amount"]
        return days

    async def days(self, app_id: str, first: str, last: str) -> dict[str, dict[Usage, float]]:
        """Counters of the days ``first``..``last`` (inclusive) that have any, by day."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._days, app_id, first, last)

    def on_room_event(self, event: RoomEvent) -> None:
        """Room listener: a finished stay counts as voice-chat time on the day it ends."""
        if event.kind == "leave":
            m = event.member
            self.count(m.app_id, Usage.VOICE_SECONDS, max(0.0, event.at - m.entered_at), at=event.at)

    def close(self) -> None:
        self._worker.submit(self._db.close)
        self._worker.shutdown(wait=True)


USAGE: web.AppKey[UsageLog] = web.AppKey("opengme.usage")


def count_usage(server: Server, app_id: str, metric: Usage, amount: float = 1.0) -> None:
    """Count usage from any part of a running server (a no-op on a server built without the log)."""
    usage = server.web_app.get(USAGE)
    if usage is not None:
        usage.count(app_id, metric, amount)


def get(server: Server) -> UsageLog:
    return server.web_app[USAGE]
