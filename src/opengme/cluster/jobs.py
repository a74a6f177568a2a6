"""Speech file jobs across a cluster (issue 18): a node that has a live ``opengme worker`` puts a job in a
Redis stream instead of running it in its own recognition processes, and waits for the result.

- The envelope (:class:`Job`) says what to do — recognise the stored message ``file_id`` in ``language``,
  or speak ``text`` — for which app, until when (``deadline``, the node's clock), and where to answer
  (``reply``, a list the node BLPOPs). It is checked when read: unknown fields are ignored, and an entry
  that is not a job is acknowledged, dropped and logged, never retried.
- Workers read the stream in one consumer group, so each job runs once. A worker refreshes the idle
  time of the jobs it runs every second; a job idle for ``CLAIM_IDLE`` s belongs to a worker that died,
  and the next worker to look takes it over (XAUTOCLAIM). A worker that stops gives its unfinished
  jobs back (``GIVEN_BACK``, taken at once). A job past its deadline is dropped: its node has
  answered with a timeout already. When no worker lives any more, the node takes its job off the
  stream and runs it itself.
- The app's file jobs in flight are counted across nodes (:meth:`JobQueue.admit`), so
  ``stt_max_file_jobs`` and its 32769 hold for the cluster. Deadlines are the nodes' clocks and
  workers compare them with theirs: keep the machines' clocks in sync (NTP).
- The result (:class:`Result`) is pushed to the reply list, which expires: a node that gave up leaves
  nothing behind.

The node keeps what it does today around the job: the app's authorisation, the stored text (a repeat
answers at once), storing a synthesised message, the usage counters. Streaming recognition and live
captions stay on the node that carries their audio.
"""
from __future__ import annotations

import base64
import enum
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from opengme.cluster import keys as k
from opengme.cluster.keys import Keys
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.protocol import stt as sproto
from opengme.storage import FILE_ID

log = logging.getLogger("opengme.jobs")

GROUP: Final = "stt"
GIVEN_BACK: Final = "given-back"
"""The consumer that holds the jobs a stopping worker gave back, until another worker takes them."""
JOB_TIMEOUT: Final = 60.0
"""Seconds a node waits for a worker's result (queueing included): the longest message (58 s) takes
about 12 s to recognise on one core."""
CLAIM_IDLE: Final = 5.0
"""Seconds without a refresh after which a job's worker counts as dead and another takes the job."""
REPLY_TTL: Final = 60
"""Seconds a result waits in its reply list for the node."""
MAX_JOBS: Final = 10_000
"""The stream's approximate length cap (jobs are deleted once answered; this bounds a backlog)."""
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobKind(enum.Enum):
    TRANSCRIBE = "transcribe"
    SPEAK = "speak"


class BadJob(ValueError):
    """A stream entry or a result that is not what it must be; the message says which field."""


def new_job_id() -> str:
    return secrets.token_urlsafe(12)


def _text(entry: Mapping[Any, Any], name: str, default: str | None = None) -> str:
    value = entry.get(name, entry.get(name.encode(), default))
    if value is None:
        raise BadJob(f"no {name}")
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise BadJob(f"{name} is not UTF-8") from None
    if not isinstance(value, str):
        raise BadJob(f"{name} is not text")
    return value


def _number(entry: Mapping[Any, Any], name: str, default: str | None = None) -> float:
    try:
        value = float(_text(entry, name, default))
    except ValueError:
        raise BadJob(f"{name} is not a number") from None
    if not math.isfinite(value):
        raise BadJob(f"{name} is not a finite number")
    return value


def _matching(value: str, pattern: re.Pattern[str], name: str) -> str:
    if not pattern.fullmatch(value):
        raise BadJob(f"{name} is malformed")
    return value


@dataclass(frozen=True)
class Job:
    """One file job, as a stream entry's fields (all text)."""

    job_id: str
    kind: JobKind
    app_id: str
    deadline: float
    reply: str
    file_id: str = ""
    language: str = "en-US"
    text: str = ""
    speaking_rate: float = 1.0

    def encode(self) -> dict[str, str]:
        return {"job_id": self.job_id, "kind": self.kind.value, "app_id": self.app_id, "deadline": repr(self.deadline),
                "reply": self.reply, "file_id": self.file_id, "language": self.language, "text": self.text,
                "speaking_rate": repr(self.speaking_rate)}

    @classmethod
    def decode(cls, entry: Mapping[Any, Any]) -> Job:
        """The job in a stream entry's fields (bytes or text), or :class:`BadJob`; unknown fields are ignored."""
        kind_name = _text(entry, "kind")
        try:
            kind = JobKind(kind_name)
        except ValueError:
            raise BadJob("kind is unknown") from None
        language = _text(entry, "language", "en-US")
        if not 0 < len(language) <= sproto.MAX_LANGUAGE:
            raise BadJob("language is malformed")
        reply = _text(entry, "reply")
        if not 0 < len(reply) <= 300:
            raise BadJob("reply is malformed")
        job = cls(job_id=_matching(_text(entry, "job_id"), _ID, "job_id"), kind=kind,
                  app_id=_matching(_text(entry, "app_id"), _ID, "app_id"), deadline=_number(entry, "deadline"),
                  reply=reply, language=language)
        if kind is JobKind.TRANSCRIBE:
            return replace(job, file_id=_matching(_text(entry, "file_id"), FILE_ID, "file_id"))
        text = _text(entry, "text")
        rate = _number(entry, "speaking_rate", "1.0")
        if not 0 < len(text) <= sproto.MAX_TEXT or not sproto.RATES[0] <= rate <= sproto.RATES[1]:
            raise BadJob("text or speaking_rate is out of range")
        return replace(job, text=text, speaking_rate=rate)


@dataclass(frozen=True)
class Result:
    """What a worker answers: the text or the voice message's bytes, or a GME code and why."""

    job_id: str
    worker: str
    code: int = 0
    detail: str = ""
    text: str = ""
    data: bytes = b""

    def encode(self) -> bytes:
        return json.dumps({"job_id": self.job_id, "worker": self.worker, "code": self.code, "detail": self.detail,
                           "text": self.text, "data": base64.b64encode(self.data).decode()}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Result:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
            found = cls(job_id=str(body["job_id"]), worker=str(body.get("worker", "")),
                        code=int(body.get("code", 0)), detail=str(body.get("detail", "")),
                        text=str(body.get("text", "")), data=base64.b64decode(str(body.get("data", "")), validate=True))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise BadJob("the result is malformed") from None
        return found

    def check(self) -> None:
        """Raise the GME error the worker reported (an unknown code is the recogniser's failure)."""
        if self.code:
            try:
                code = ErrorCode(self.code)
            except ValueError:
                code = sproto.FAILED
            raise GmeError(code, self.detail or "the speech worker failed")


_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1, 'GT')
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1, 'NX')
return 1
"""
"""Count a job in for its app unless the app already runs ``limit`` (jobs past their deadline do not count)."""


class JobQueue:
    """The node's side: the app's slots across the cluster, the live workers, sending a job and awaiting its result."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._admit = redis.register_script(_ADMIT)

    async def admit(self, app_id: str, job_id: str, limit: int, deadline: float) -> bool:
        return bool(await self._admit(keys=[k.stt_running(self.keys, app_id)],
                                      args=[repr(time.time()), limit, repr(deadline), job_id]))

    async def release(self, app_id: str, job_id: str) -> None:
        await self.redis.zrem(k.stt_running(self.keys, app_id), job_id)

    async def live_workers(self) -> int:
        """How many workers sent a heartbeat within ``STT_WORKER_TTL``; forgets the dead ones' ids."""
        ids = sorted(i.decode() for i in await self.redis.smembers(k.stt_workers(self.keys)))
        if not ids:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.exists(k.stt_worker(self.keys, worker_id))
            alive = await pipe.execute()
        dead = [worker_id for worker_id, live in zip(ids, alive, strict=True) if not live]
        if dead:
            await self.redis.srem(k.stt_workers(self.keys), *dead)
        return len(ids) - len(dead)

    async def run(self, job: Job) -> Result | None:
        """Send ``job`` and wait for its result until its deadline. None when no worker answered: the
        deadline passed, or every worker went away before taking or finishing it (the job is then
        taken off the stream, so that the node can run it itself)."""
        stream = k.stt_jobs(self.keys)
        entry_id = await self.redis.xadd(stream, job.encode(), maxlen=MAX_JOBS, approximate=True)
        while (left := job.deadline - time.time()) > 0:
            # short waits: the shared client's socket timeout is 5 s, and a cancelled request stops waiting
            popped = await self.redis.blpop([job.reply], timeout=min(2.0, max(0.01, left)))
            if popped is not None:
                try:
                    return Result.decode(popped[1])
                except BadJob:
                    log.warning("malformed speech result dropped", extra=fields(job_id=job.job_id))
            elif not await self.live_workers() and await self.redis.xdel(stream, entry_id):
                log.warning("speech workers gone; the node runs the job", extra=fields(job_id=job.job_id))
                return None
        return None


class JobConsumer:
    """A worker's side: joining the group, heartbeats, taking jobs (new or abandoned), answering, releasing."""

    def __init__(self, redis: Any, keys: Keys, worker_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.worker_id = worker_id
        self.stream = k.stt_jobs(keys)

    async def join(self) -> None:
        import redis

        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def heartbeat(self, info: Mapping[str, str | int | float], running: list[str]) -> None:
        """Say this worker lives, and keep the jobs it runs from being taken over."""
        key = k.stt_worker(self.keys, self.worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=dict(info))
            pipe.pexpire(key, int(k.STT_WORKER_TTL * 1000))
            pipe.sadd(k.stt_workers(self.keys), self.worker_id)
            if running:
                pipe.xclaim(self.stream, GROUP, self.worker_id, 0, running, justid=True)
            await pipe.execute()

    async def leave(self) -> None:
        """Gone from the live workers, and from the group; jobs it still holds are given back first."""
        await self.redis.delete(k.stt_worker(self.keys, self.worker_id))
        await self.redis.srem(k.stt_workers(self.keys), self.worker_id)
        held = await self.redis.xpending_range(self.stream, GROUP, "-", "+", MAX_JOBS, consumername=self.worker_id)
        await self.release([entry["message_id"] for entry in held])
        await self.redis.xgroup_delconsumer(self.stream, GROUP, self.worker_id)

    async def take(self, count: int, block: float) -> list[tuple[str, Job, bool]]:
        """Up to ``count`` jobs: first ones abandoned by a dead worker, else new ones (waiting up to
        ``block`` s). Each is ``(entry id, job, claimed from another worker)``; entries that are not
        jobs are dropped here."""
        _, claimed, _ = await self.redis.xautoclaim(self.stream, GROUP, self.worker_id, int(CLAIM_IDLE * 1000),
                                                    count=count)
        entries, was_claimed = claimed, True
        if not entries:
            was_claimed = False
            read = await self.redis.xreadgroup(GROUP, self.worker_id, {self.stream: ">"}, count=count,
                                               block=int(block * 1000))
            entries = [entry for _, stream_entries in read for entry in stream_entries]
        jobs: list[tuple[str, Job, bool]] = []
        for raw_id, entry in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                jobs.append((entry_id, Job.decode(entry or {}), was_claimed))
            except BadJob as exc:
                log.warning("malformed speech job dropped", extra=fields(entry=entry_id, reason=str(exc)))
                await self.done(entry_id)
        return jobs

    async def answer(self, entry_id: str, job: Job, result: Result) -> None:
        """The result to the waiting node, then the job off the stream."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(job.reply, result.encode())
            pipe.expire(job.reply, REPLY_TTL)
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def done(self, entry_id: str) -> None:
        """The entry off the stream without an answer (malformed, or past its deadline)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def release(self, entry_ids: list[Any]) -> None:
        """Give jobs back (this worker stops before finishing them): handed to ``GIVEN_BACK`` as if idle
        for ages, so the next worker's XAUTOCLAIM takes them at once; the entries keep their ids."""
        if entry_ids:
            await self.redis.xclaim(self.stream, GROUP, GIVEN_BACK, 0, entry_ids, idle=10**9, justid=True)
