"""Speech-to-text and text-to-speech over HTTP (docs/protocol.md, "Speech-to-text"), beside the
voice-message endpoints whose authorisation, storage and replies they share (``opengme.server.ptt``).

Recognition and synthesis run in the worker processes of :class:`~opengme.stt.pool.RecognitionPool`
(decoding the message included), never on the event loop that carries signalling and the relay;
AuthBuffer checks and SQLite run in threads. Each app has its own concurrency limits
(:mod:`opengme.stt.quota`); a request beyond one is refused at once with 32769 (HTTP 429).
A recognised text is stored with its message (:mod:`opengme.stt.transcripts`), so a repeat
answers from there.

In a cluster (``redis_url``) the file-job limit is counted in Redis, so it holds across nodes, and while
an ``opengme worker`` lives the file jobs run there (:mod:`opengme.cluster.jobs`): this node sends the
job and waits for its result, then stores and answers as before. With no live worker they run here.
Streaming recognition and live captions always run here, beside the audio they follow.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from opengme.cluster import keys as cluster_keys
from opengme.cluster.jobs import JOB_TIMEOUT, Job, JobKind, JobQueue, Result, new_job_id
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.protocol import ptt as proto
from opengme.protocol import stt as sproto
from opengme.server import cluster as cluster_part
from opengme.server import ptt as ptt_part
from opengme.server.ptt import Caller, Refused
from opengme.server.stt_stream import StreamSession
from opengme.server.usage import Usage, count_usage
from opengme.storage import Message, MessageGone
from opengme.store import App
from opengme.stt.pool import RecognitionPool
from opengme.stt.quota import Kind, Quota, QuotaExceeded
from opengme.stt.streaming import MAX_PACKET, StreamWorkers
from opengme.stt.transcripts import Transcripts

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.stt")

RECOGNITIONS = "opengme_stt_recognitions_total"
SYNTHESES = "opengme_stt_syntheses_total"
CACHED = "opengme_stt_cached_total"
REFUSALS = "opengme_stt_refusals_total"
QUEUED = "opengme_stt_worker_jobs_total"
_STATUS = {ErrorCode.AV_ERR_INVALID_ARGUMENT: 400, sproto.BUSY: 429, sproto.FAILED: 422}

STT: web.AppKey[Speech] = web.AppKey("opengme.stt")


def setup(server: Server) -> None:
    """Attach the routes (after ``ptt``, whose storage they use), the worker pool and the metrics."""
    speech = Speech(server)
    server.web_app[STT] = speech
    router = server.web_app.router
    router.add_post(proto.FILES_PATH + "/{file_id}" + sproto.TEXT_SUFFIX, speech.text)
    router.add_post(sproto.SPEECH_PATH, speech.speech)
    router.add_get(sproto.STREAM_PATH, speech.stream)
    server.on_stop.append(speech.stop)
    m = server.metrics
    m.describe(RECOGNITIONS, "counter", "Voice messages recognised.")
    m.describe(SYNTHESES, "counter", "Voice messages synthesised from text.")
    m.describe(CACHED, "counter", "Speech-to-text requests answered from the stored text.")
    m.describe(REFUSALS, "counter", "Speech requests refused, by GME error code.")
    m.describe(QUEUED, "counter", "Speech file jobs sent to `opengme worker` processes, by kind.")


def get(server: Server) -> Speech:
    return server.web_app[STT]


class Speech:
    """The speech endpoints of a running server and what they share: pool, limits, stored texts."""

    def __init__(self, server: Server) -> None:
        s = server.settings
        self.server = server
        self.ptt = ptt_part.get(server)
        self.quota = Quota({Kind.FILE: s.stt_max_file_jobs, Kind.STREAM: s.stt_max_streams,
                            Kind.CAPTION: s.stt_max_captions})
        self.transcripts = Transcripts(s.data_dir, s.database_url)
        self.ptt.after_retention.append(self.transcripts.forget_orphans)
        self._pool: RecognitionPool | None = None
        self._streams: StreamWorkers | None = None
        link = cluster_part.get(server)
        self.jobs = JobQueue(link.redis, link.keys) if link is not None else None

    @property
    def pool(self) -> RecognitionPool:
        """Started on first use: a server nobody asks for speech costs no worker process."""
        if self._pool is None:
            s = self.server.settings
            jobs = s.stt_max_file_jobs + s.stt_max_streams + s.stt_max_captions
            self._pool = RecognitionPool(workers=max(1, s.stt_workers), limit=jobs or 1_000_000)
        return self._pool

    @property
    def streams(self) -> StreamWorkers:
        """Started on first use, like :attr:`pool`."""
        if self._streams is None:
            self._streams = StreamWorkers(workers=max(1, self.server.settings.stt_workers))
        return self._streams

    async def stop(self) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        if self._streams is not None:
            await asyncio.to_thread(self._streams.close)
        self.transcripts.close()

    # --- handlers -------------------------------------------------------------------------------

    async def text(self, request: web.Request) -> web.Response:
        """``POST <file_id>/text``: the message's text (stored, or recognised now and stored)."""
        file_id = request.match_info["file_id"]
        try:
            caller = await self.authorise(request)
            ask = sproto.TextRequest.parse(await self._read_body(request))
            language = self.pool.resolve(ask.language)
            message = await asyncio.to_thread(self._message, caller.app, file_id)
            text, cached = await self.text_of(message, language)
        except (Refused, GmeError, OSError) as exc:
            return self._refuse(request, exc)
        log.info("voice message recognised", extra=fields(app_id=caller.app.app_id, file_id=file_id,
                                                          language=language, cached=cached, chars=len(text)))
        url = proto.file_url(self.server.settings.public_url or str(request.url.origin()), file_id)
        return web.json_response({"code": 0, "file_id": url, "text": text, "language": language, "cached": cached})

    async def text_of(self, message: Message, language: str) -> tuple[str, bool]:
        """The stored text of a message in ``language`` (a resolved tag), else recognised now within
        the app's file-job limit and stored; and whether it was stored already. The SDK's
        ``speech_to_text`` and the web console both come here."""
        text = await asyncio.to_thread(self.transcripts.get, message.file_id, language)
        if text is not None:
            self.server.metrics.inc(CACHED)
            return text, True
        async with self.file_slot(message.app_id) as slot:
            done = await self.on_worker(slot, JobKind.TRANSCRIBE, language, file_id=message.file_id)
            if done is not None:
                text = done.text
            else:
                data = await asyncio.to_thread(self._read_message, message)
                text = await self.pool.transcribe_voice(data, language)
        await asyncio.to_thread(self.transcripts.put, message.file_id, language, text, time.time())
        self.server.metrics.inc(RECOGNITIONS)
        count_usage(self.server, message.app_id, Usage.STT_SECONDS, message.duration_ms / 1000)
        return text, False

    async def speech(self, request: web.Request) -> web.Response:
        """``POST /v1/ptt/speech``: text-to-speech, stored as a voice message of the caller."""
        try:
            caller = await self.authorise(request)
            ask = sproto.SpeechRequest.parse(await self._read_body(request))
            async with self.file_slot(caller.app.app_id) as slot:
                done = await self.on_worker(slot, JobKind.SPEAK, ask.language, text=ask.text,
                                            speaking_rate=float(ask.speaking_rate))
                data = done.data if done is not None else await self.pool.speak_voice(
                    ask.text, ask.language, float(ask.speaking_rate))
            reply = await self.ptt.store(request, caller, data)
        except (Refused, GmeError, OSError) as exc:
            return self._refuse(request, exc)
        self.server.metrics.inc(SYNTHESES)
        return web.json_response({**reply, "text": ask.text}, status=201)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/ptt/stream``: recognition while recording (:mod:`opengme.server.stt_stream`)."""
        try:
            caller = await self.authorise(request)
            language = request.query.get("language", "") or "en-US"
            if len(language) > sproto.MAX_LANGUAGE:
                raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, "language must be a BCP-47 code such as en-US")
            live = self.streams.open(language)
            self.quota.acquire(caller.app.app_id, Kind.STREAM)
        except (Refused, GmeError) as exc:
            return self._refuse(request, exc)
        opening = asyncio.create_task(live.prepare())  # the model loads while the first audio comes
        try:
            ws = web.WebSocketResponse(max_msg_size=MAX_PACKET + sproto.MAX_BODY)
            await ws.prepare(request)
            await StreamSession(self, caller, live, ws).run()
            return ws
        finally:
            self.quota.release(caller.app.app_id, Kind.STREAM)  # at once: the worker's cleanup may take a while
            with contextlib.suppress(GmeError):
                await opening
            await live.close()

    # --- file jobs: here, or on an `opengme worker` ------------------------------------------------

    @contextlib.asynccontextmanager
    async def file_slot(self, app_id: str) -> AsyncIterator[Slot]:
        """The app's file-job slot (32769 beyond ``stt_max_file_jobs``): counted in this process on a
        single node, in Redis in a cluster; there the job goes to a worker when one lives."""
        if self.jobs is None:
            with self.quota.slot(app_id, Kind.FILE):
                yield Slot(app_id, "", 0.0, remote=False)
            return
        limit = self.server.settings.stt_max_file_jobs
        slot = Slot(app_id, new_job_id(), time.time() + JOB_TIMEOUT, remote=False)
        with _redis_errors():
            if not await self.jobs.admit(app_id, slot.job_id, limit, slot.deadline):
                raise QuotaExceeded(app_id, Kind.FILE, limit)
        try:
            with _redis_errors():
                slot.remote = await self.jobs.live_workers() > 0
            yield slot
        finally:
            with contextlib.suppress(GmeError), _redis_errors():  # else the entry leaves at its deadline
                await self.jobs.release(app_id, slot.job_id)

    async def on_worker(self, slot: Slot, kind: JobKind, language: str, *, file_id: str = "", text: str = "",
                        speaking_rate: float = 1.0) -> Result | None:
        """The file job's result from a worker, its failure raised as the same failure is here (the
        storage's as OSError; 32769 when no worker answered in time); None when it must run here:
        no worker lives, or the workers went away before it ran."""
        if self.jobs is None or not slot.remote:
            return None
        reply = cluster_keys.stt_reply(self.jobs.keys, slot.job_id)
        job = Job(slot.job_id, kind, slot.app_id, slot.deadline, reply, file_id, language, text, speaking_rate)
        self.server.metrics.inc(QUEUED, kind=kind.value)
        with _redis_errors():
            result = await self.jobs.run(job)
        if result is None:
            if time.time() < slot.deadline:
                return None
            raise GmeError(sproto.BUSY, f"no speech worker answered within {JOB_TIMEOUT:.0f} s; try again later")
        log.info("speech job done by a worker", extra=fields(worker_id=result.worker, job_id=job.job_id,
                                                             kind=kind.value, app_id=job.app_id, code=result.code))
        if result.code == sproto.S2T.storage:
            raise OSError(result.detail)
        result.check()
        return result

    # --- steps ----------------------------------------------------------------------------------

    async def authorise(self, request: web.Request) -> Caller:
        """The voice-message AuthBuffer check with speech-to-text's codes, then the app's ``stt`` switch."""
        caller = await asyncio.to_thread(self.ptt.authorise, request, sproto.S2T, time.time())
        check_stt(caller.app)
        return caller

    def _read_message(self, message: Message) -> bytes:
        """The message's bytes; missing or damaged ones are the storage's failure (OSError), as on a worker."""
        try:
            return self.ptt.storage.read(message)
        except MessageGone as exc:
            raise OSError(str(exc)) from None

    def _message(self, app: App, file_id: str) -> Message:
        try:
            return self.ptt.message(app, file_id)
        except Refused as exc:
            raise Refused(ErrorCode.QAVPTTERROR_S2T_PARAM_NULL, exc.status, str(exc)) from None

    async def _read_body(self, request: web.Request) -> bytes:
        """The JSON body, at most ``MAX_BODY`` bytes, within ``http_body_timeout``."""
        limit = sproto.MAX_BODY
        if request.content_length is not None and request.content_length > limit:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"the body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.server.settings.http_body_timeout):
                while chunk := await request.content.read(limit + 1 - size):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"the body is larger than {limit} bytes")
        except TimeoutError:
            raise Refused(sproto.S2T.storage, 408, "the request body did not arrive in time") from None
        return b"".join(chunks)

    def _refuse(self, request: web.Request, exc: Refused | GmeError | OSError) -> web.Response:
        if isinstance(exc, Refused):
            code, status, message = exc.code, exc.status, str(exc)
        elif isinstance(exc, GmeError):
            code, status, message = exc.code, _STATUS.get(exc.code, 500), exc.detail
        else:
            log.error("speech request failed on the storage", extra=fields(error=str(exc)))
            code, status, message = sproto.S2T.storage, 503, "the server could not read the file; try again later"
        self.server.metrics.inc(REFUSALS, code=int(code))
        log.info("speech request refused", extra=fields(path=request.path, code=int(code), reason=message))
        return web.json_response(proto.error_body(code, message), status=status)


@dataclass
class Slot:
    """A file job admitted for an app: its id and deadline in the cluster, and whether a worker runs it."""

    app_id: str
    job_id: str
    deadline: float
    remote: bool


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """A Redis failure is the service's "try again later" (32769, as when busy), one line in the log."""
    import redis

    try:
        yield
    except redis.RedisError as exc:
        log.error("speech job failed on Redis", extra=fields(error=str(exc)))
        raise GmeError(sproto.BUSY, "the cluster's Redis did not answer; try again later") from None


def check_stt(app: App) -> None:
    """The app's speech-to-text switch (7012) after the voice-message switches (arrears 7005, ptt 7012)."""
    if not app.stt:
        raise Refused(ErrorCode.AV_ERR_SERVICE_NOT_OPENED, 403, f"speech-to-text is turned off for app {app.app_id}")


def check_switches(app: App) -> None:
    """Live captions: arrears (7005), then the ``stt`` switch (7012); they need no voice messages."""
    if app.arrears:
        raise Refused(ErrorCode.AV_ERR_CHARGE_OVERDUE, 403, f"app {app.app_id} is in arrears")
    check_stt(app)
