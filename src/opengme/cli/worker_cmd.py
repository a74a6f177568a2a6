"""``opengme worker``: speech file jobs of a cluster's nodes (recognise a stored voice message, speak a
text) on any machine with CPU to spare (:mod:`opengme.cluster.jobs`).

It reads the settings ``serve`` reads and needs the cluster's: ``redis_url`` (where the jobs come
from), and ``database_url`` + ``storage_url`` (where the voice messages are; without them it must
share a node's data directory). It runs ``stt_workers`` recognition processes, takes at most that
many jobs at once, and stops on SIGINT/SIGTERM after finishing the jobs it runs (a second signal, or
``STOP_GRACE`` s, gives them back to the queue for another worker).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Final

from opengme.cli import SETTING_FLAGS, CliError
from opengme.config import CONFIG_FILE, ENV_PREFIX, LOG_FORMATS, LOG_LEVELS, ConfigError, Settings, resolve_settings
from opengme.logs import fields, setup_logging

if TYPE_CHECKING:
    from collections.abc import Callable

    from opengme.cluster.jobs import Job, JobConsumer, Result
    from opengme.storage import MessageStorage
    from opengme.stt.pool import RecognitionPool

log = logging.getLogger("opengme.worker")

STOP_GRACE: Final = 30.0
"""Seconds a stopping worker gives its running jobs to finish before handing them back."""
_FLAGS: Final = ("redis_url", "database_url", "storage_url", "stt_workers")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "worker", parents=[common], help="run a cluster's speech-to-text jobs (needs redis_url)",
        description="Run speech-to-text file jobs (a stored voice message's text, text-to-speech) for the nodes "
        "of a cluster until SIGINT/SIGTERM. Needs redis_url, and database_url + storage_url (or a node's "
        "data directory) to read the voice messages. Streaming recognition and live captions stay on the nodes.")
    p.add_argument("--redis-url", help="the cluster's Redis (redis://host:port/db?prefix=P)")
    p.add_argument("--database-url", help="the cluster's PostgreSQL (postgresql://user@host/db)")
    p.add_argument("--storage-url", help="the cluster's voice-message bucket (s3://bucket/prefix?endpoint=URL)")
    p.add_argument("--stt-workers", help="recognition processes, and jobs at once (default 2)")
    p.add_argument("--log-level", help=f"one of {', '.join(LOG_LEVELS)} (default info)")
    p.add_argument("--log-format", help=f"{' or '.join(LOG_FORMATS)} (default json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opengme.cluster import ClusterError
    from opengme.datadir import DB_NAME, DataDirError
    from opengme.storage import FOLDER

    overrides = {name: getattr(args, name, None) for name in (*SETTING_FLAGS, *_FLAGS)}
    try:
        settings = resolve_settings(config_file=getattr(args, "config", None), overrides=overrides).settings
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not settings.redis_url:
        raise CliError("no redis_url: a worker takes its jobs from the nodes' Redis; set redis_url in "
                       f"{CONFIG_FILE}, {ENV_PREFIX}REDIS_URL or --redis-url (the nodes' own)")
    rows = settings.database_url or (settings.data_dir / DB_NAME).is_file()
    files = settings.storage_url or (settings.data_dir / FOLDER).is_dir()
    if not (rows and files):
        missing = " and ".join(name for name, found in (("database_url", rows), ("storage_url", files)) if not found)
        raise CliError(f"no {missing}, and no node's voice messages in {settings.data_dir}: a worker reads them "
                       "from the cluster's database_url and storage_url, or from a node's --data-dir on its machine")
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_main(settings))
    except (DataDirError, ClusterError) as exc:
        raise CliError(str(exc)) from None
    sys.stdout.flush()
    return 0


async def _main(settings: Settings) -> None:
    import secrets

    import redis
    import redis.asyncio

    from opengme.cluster import ClusterError
    from opengme.cluster.jobs import JobConsumer
    from opengme.cluster.keys import Keys, split_url
    from opengme.storage import open_storage
    from opengme.stt.pool import RecognitionPool

    url, prefix = split_url(settings.redis_url)
    client: Any = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ClusterError(f"cannot reach Redis at redis_url {url}: {str(exc).rstrip('.')}; start it or fix "
                           "redis_url") from None
    storage = await asyncio.to_thread(open_storage, settings.data_dir, settings.ptt_retention_days,
                                      settings.storage_url, settings.database_url)
    slots = max(1, settings.stt_workers)
    worker = Worker(JobConsumer(client, Keys(prefix), secrets.token_hex(6)), storage,
                    lambda: RecognitionPool(workers=slots, limit=slots), slots)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.signal)
    try:
        await worker.run()
    finally:
        await asyncio.to_thread(worker.pool.close)
        storage.close()
        await client.aclose()


class Worker:
    """The job loop: take as many jobs as there are free recognition processes, run each, answer it."""

    def __init__(self, consumer: JobConsumer, storage: MessageStorage,
                 new_pool: Callable[[], RecognitionPool], slots: int) -> None:
        self.consumer = consumer
        self.storage = storage
        self.new_pool = new_pool
        self.pool: RecognitionPool = new_pool()
        self.slots = slots
        self.running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self.done = 0

    @property
    def worker_id(self) -> str:
        return self.consumer.worker_id

    def signal(self) -> None:
        """The first signal stops taking jobs; the second gives back the running ones at once."""
        if self.stop.is_set():
            self.hurry.set()
            return
        self.stop.set()
        log.info("speech worker stopping", extra=fields(worker_id=self.worker_id, running=len(self.running),
                                                        hint="a second SIGINT/SIGTERM gives the running jobs back"))

    async def run(self) -> None:
        import numpy as np
        import redis

        await self.consumer.join()
        await asyncio.gather(*(self.pool.transcribe(np.zeros(1_600, np.int16)) for _ in range(self.slots)))
        beat = asyncio.create_task(self._beat())
        await self._heartbeat()
        log.info("speech worker ready", extra=fields(worker_id=self.worker_id, slots=self.slots,
                                                     prefix=self.consumer.keys.prefix))
        print(f"OpenGME worker {self.worker_id} ready: {self.slots} recognition processes", flush=True)
        stopping = asyncio.create_task(self.stop.wait())
        try:
            while not self.stop.is_set():
                if len(self.running) >= self.slots:
                    await asyncio.wait([stopping, *(task for _, task in self.running.values())],
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    taken = await self.consumer.take(self.slots - len(self.running), block=1.0)
                except (redis.RedisError, OSError) as exc:
                    log.warning("cannot read speech jobs from Redis", extra=fields(error=str(exc)))
                    await asyncio.wait([stopping], timeout=1.0)
                    continue
                for entry_id, job, claimed in taken:
                    self.running[entry_id] = (job, asyncio.create_task(self._job(entry_id, job, claimed)))
        finally:
            stopping.cancel()
            await self._finish()
            beat.cancel()
            try:
                await self.consumer.leave()
            except (redis.RedisError, OSError) as exc:  # its jobs go to another worker after CLAIM_IDLE
                log.warning("speech worker could not leave the queue", extra=fields(error=str(exc)))
            log.info("speech worker stopped", extra=fields(worker_id=self.worker_id, jobs=self.done))

    async def _finish(self) -> None:
        """Finish the running jobs within ``STOP_GRACE`` (or until a second signal); give back the rest."""
        tasks = [task for _, task in self.running.values()]
        if tasks:
            hurry = asyncio.create_task(self.hurry.wait())
            deadline = time.monotonic() + STOP_GRACE
            while not hurry.done() and any(not t.done() for t in tasks) and time.monotonic() < deadline:
                await asyncio.wait([hurry, *tasks], timeout=deadline - time.monotonic(),
                                   return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
        for job, task in list(self.running.values()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if task.cancelled():  # still pending in the group: leave() gives it back
                log.info("speech job given back", extra=fields(worker_id=self.worker_id, job_id=job.job_id))

    async def _beat(self) -> None:
        import redis

        from opengme.cluster.keys import HEARTBEAT

        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._heartbeat()
            except (redis.RedisError, OSError) as exc:  # a Redis hiccup must not end the worker; the next beat retries
                log.warning("speech worker heartbeat failed", extra=fields(error=str(exc)))

    async def _heartbeat(self) -> None:
        info: dict[str, str | int | float] = {"host": socket.gethostname(), "pid": os.getpid(), "slots": self.slots, "done": self.done}
        await self.consumer.heartbeat(info, list(self.running))

    async def _job(self, entry_id: str, job: Job, claimed: bool) -> None:
        import redis

        try:
            await self._answer(entry_id, job, claimed)
        except (redis.RedisError, OSError) as exc:  # unanswered: another worker takes it after CLAIM_IDLE
            log.warning("speech job not answered: Redis failed", extra=fields(job_id=job.job_id, error=str(exc)))
        finally:
            self.running.pop(entry_id, None)

    async def _answer(self, entry_id: str, job: Job, claimed: bool) -> None:
        if job.deadline <= time.time():
            log.info("speech job expired", extra=fields(job_id=job.job_id, app_id=job.app_id))
            await self.consumer.done(entry_id)
            return
        log.info("speech job started", extra=fields(worker_id=self.worker_id, job_id=job.job_id, kind=job.kind.value,
                                                    app_id=job.app_id, file_id=job.file_id, claimed=claimed))
        started = time.monotonic()
        result = await self._perform(job)
        await self.consumer.answer(entry_id, job, result)
        self.done += 1
        log.info("speech job done", extra=fields(worker_id=self.worker_id, job_id=job.job_id, kind=job.kind.value,
                                                 app_id=job.app_id, file_id=job.file_id, code=result.code,
                                                 seconds=round(time.monotonic() - started, 3)))

    async def _perform(self, job: Job) -> Result:
        """The job's result, or its failure's code; recognition processes that died under it are
        replaced, and the job fails as it would on a node (32785), so that a message that kills the
        recogniser does not go round every worker."""
        from opengme.cluster.jobs import JobKind, Result
        from opengme.errors import GmeError

        pool = self.pool
        try:
            if job.kind is JobKind.TRANSCRIBE:
                data = await asyncio.to_thread(self._read, job)
                return Result(job.job_id, self.worker_id, text=await pool.transcribe_voice(data, job.language))
            return Result(job.job_id, self.worker_id,
                          data=await pool.speak_voice(job.text, job.language, job.speaking_rate))
        except GmeError as exc:
            if isinstance(exc.__cause__, BrokenProcessPool) and self.pool is pool:
                log.error("speech processes died; starting new ones", extra=fields(worker_id=self.worker_id))
                self.pool = self.new_pool()
                await asyncio.to_thread(pool.close)
            return Result(job.job_id, self.worker_id, code=int(exc.code), detail=exc.detail)

    def _read(self, job: Job) -> bytes:
        """The message's bytes from the shared storage; a failure is the storage's code (32769), as on a node."""
        from opengme.errors import GmeError
        from opengme.protocol import stt as sproto
        from opengme.storage import MessageGone

        message = self.storage.get(job.file_id)
        if message is None or message.app_id != job.app_id:
            raise GmeError(sproto.S2T.storage, f"no voice message {job.file_id!r} in the cluster's storage")
        try:
            return self.storage.read(message)
        except (MessageGone, OSError) as exc:
            raise GmeError(sproto.S2T.storage, f"the worker could not read the file: {exc}") from None
