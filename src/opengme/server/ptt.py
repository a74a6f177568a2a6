"""Voice messages over HTTP (docs/protocol.md, "Voice messages"): upload, download, signed links,
and the periodic retention pass. The rules live in ``opengme.protocol.ptt``, the files in
``opengme.storage``, the format check in ``opengme.codec.voicefile``.

Every check that costs CPU or touches SQLite or the disk (AuthBuffer decoding, the app lookup,
parsing the upload, the storage) runs in a worker thread, never on the event loop. An upload is
authorised before its body is read, the body is read with a cap (at most the limit + 1 byte), and
it is parsed as Ogg/Opus before anything is stored.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from opengme.authbuffer import AuthClaims, verify_auth_buffer
from opengme.codec.voicefile import Refusal, VoiceFileError, VoiceFileInfo, inspect_voice_file
from opengme.errors import ErrorCode, GmeError
from opengme.ids import open_id_problem
from opengme.logs import fields
from opengme.protocol import ptt as proto
from opengme.protocol.signalling import decode_auth_buffer
from opengme.server.usage import Usage, count_usage
from opengme.storage import Message, MessageGone, MessageStorage, open_storage
from opengme.store import App

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.ptt")

READ_CHUNK = 64 * 1024
UPLOADS = "opengme_ptt_uploads_total"
DOWNLOADS = "opengme_ptt_downloads_total"
UPLOAD_BYTES = "opengme_ptt_upload_bytes_total"
DOWNLOAD_BYTES = "opengme_ptt_download_bytes_total"
REFUSALS = "opengme_ptt_refusals_total"
EXPIRED = "opengme_ptt_expired_total"
FILES_REMOVED = "opengme_ptt_files_removed_total"


class Refused(Exception):
    """A request answered with a GME code, an HTTP status and a message saying what to fix."""

    def __init__(self, code: ErrorCode, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who an authorised request comes from."""

    app: App
    open_id: str
    claims_expire: int  # the AuthBuffer's (or link's) expiry, which bounds the links made for it


PTT: web.AppKey[Ptt] = web.AppKey("opengme.ptt")


def setup(server: Server) -> None:
    """Attach the voice-message routes, the retention task and the metrics."""
    ptt = Ptt(server)
    server.web_app[PTT] = ptt
    router = server.web_app.router
    router.add_post(proto.FILES_PATH, ptt.upload)
    router.add_get(proto.FILES_PATH + "/{file_id}", ptt.download)
    router.add_post(proto.FILES_PATH + "/{file_id}" + proto.LINK_SUFFIX, ptt.link)
    server.on_start.append(ptt.start)
    server.on_stop.append(ptt.stop)
    m = server.metrics
    m.describe(UPLOADS, "counter", "Voice messages stored.")
    m.describe(DOWNLOADS, "counter", "Voice messages downloaded.")
    m.describe(UPLOAD_BYTES, "counter", "Bytes of voice messages stored.")
    m.describe(DOWNLOAD_BYTES, "counter", "Bytes of voice messages downloaded.")
    m.describe(REFUSALS, "counter", "Voice-message requests refused, by GME error code.")
    m.describe(EXPIRED, "counter", "Voice messages deleted by retention.")
    m.describe(FILES_REMOVED, "counter", "Voice-message files removed by retention (expired or orphaned).")


def get(server: Server) -> Ptt:
    return server.web_app[PTT]


class Ptt:
    """The voice-message endpoints of a running server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.settings
        self.storage: MessageStorage = open_storage(self.settings.data_dir, self.settings.ptt_retention_days,
                                                    self.settings.storage_url, self.settings.database_url)
        self._retention: asyncio.Task[None] | None = None
        self.after_retention: list[Callable[[], int]] = []  # what else goes with expired messages (their texts)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._retention = asyncio.create_task(self._retain_forever())

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
        self.storage.close()

    async def _retain_forever(self) -> None:
        """A pass at start (orphans of a crash go at once), then every ``ptt_cleanup_interval``."""
        while True:
            try:
                await self.retain()
            except Exception:  # the task must outlive any failure of one pass
                log.exception("voice-message retention failed")
            await asyncio.sleep(max(1.0, self.settings.ptt_cleanup_interval))

    async def retain(self, now: float | None = None) -> None:
        """One retention pass: expired messages, then files no message refers to."""
        report = await asyncio.to_thread(self.storage.clean_up, now)
        for hook in self.after_retention:
            await asyncio.to_thread(hook)
        self.server.metrics.inc(EXPIRED, report.expired)
        self.server.metrics.inc(FILES_REMOVED, report.files)
        if report.expired or report.files or report.temporary:
            log.info("voice-message retention", extra=fields(expired=report.expired, files=report.files,
                                                             temporary=report.temporary))

    # --- handlers -------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        try:
            caller = await asyncio.to_thread(self.authorise, request, proto.UPLOAD, time.time())
            body = await self._read_capped(request)
            reply = await self.store(request, caller, body)
        except Refused as exc:
            return self._refuse(request, exc)
        return web.json_response(reply, status=201)

    async def store(self, request: web.Request, caller: Caller, body: bytes) -> dict[str, object]:
        """Check ``body`` as a voice message, store it as ``caller``'s and describe it as an upload's
        reply does (:class:`Refused` when it is not a voice message or the storage fails)."""
        info = await asyncio.to_thread(self._inspect, body)
        message = await asyncio.to_thread(self._put, caller, body, info)
        m = self.server.metrics
        m.inc(UPLOADS)
        m.inc(UPLOAD_BYTES, message.size)
        count_usage(self.server, message.app_id, Usage.PTT_UPLOADS)  # DescribeAppStatistics
        log.info("voice message stored", extra=fields(app_id=message.app_id, open_id=message.open_id,
                                                      file_id=message.file_id, size=message.size,
                                                      duration_ms=message.duration_ms))
        url = self._url(request, message.file_id)
        return {"code": 0, **self._describe(message), "file_id": url,
                "download_url": self._link(url, caller, message.file_id)}

    async def download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        try:
            message, data = await asyncio.to_thread(self._fetch, request, file_id, time.time())
        except Refused as exc:
            return self._refuse(request, exc)
        m = self.server.metrics
        m.inc(DOWNLOADS)
        m.inc(DOWNLOAD_BYTES, len(data))
        return web.Response(body=data, content_type=proto.CONTENT_TYPE, headers={
            proto.HEADER_SHA256: message.sha256,
            proto.HEADER_DURATION: str(message.duration_ms),
            "ETag": f'"{message.sha256}"',
            "Cache-Control": "private, max-age=3600",
        })

    async def link(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        try:
            caller = await asyncio.to_thread(self.authorise, request, proto.DOWNLOAD, time.time())
            message = await asyncio.to_thread(self.message, caller.app, file_id)
        except Refused as exc:
            return self._refuse(request, exc)
        url = self._url(request, message.file_id)
        return web.json_response({"code": 0, **self._describe(message), "file_id": url,
                                  "download_url": self._link(url, caller, message.file_id)})

    # --- steps (the blocking ones run in worker threads) ----------------------------------------

    def authorise(self, request: web.Request, direction: proto.Direction, now: float) -> Caller:
        """The AuthBuffer headers, checked in GME's order: present, authentic for this app and
        openid with an empty room id, then arrears (7005), then the ``ptt`` switch (7012)."""
        headers = request.headers
        text = headers.get(proto.HEADER_AUTH_BUFFER, "")
        app_id, open_id = headers.get(proto.HEADER_APP_ID, ""), headers.get(proto.HEADER_OPEN_ID, "")
        if not text:
            raise Refused(direction.unset, 401, f"no PTT AuthBuffer: send it (base64) in {proto.HEADER_AUTH_BUFFER}"
                                                " after apply_ptt_auth_buffer")
        if not app_id or not open_id:
            raise Refused(direction.unset, 401, f"{proto.HEADER_APP_ID} and {proto.HEADER_OPEN_ID} are required"
                                                " with the AuthBuffer")
        app = self.server.store.get(app_id)
        if app is None:
            raise Refused(direction.signature, 403, f"unknown AppID {app_id!r}")
        try:
            open_id = unquote(open_id, errors="strict")
        except UnicodeDecodeError:
            raise Refused(direction.signature, 403, f"{proto.HEADER_OPEN_ID} must be percent-encoded UTF-8") from None
        problem = open_id_problem(open_id, app.string_openid)
        if problem is not None:
            raise Refused(direction.signature, 403, problem)
        try:
            claims: AuthClaims = verify_auth_buffer(decode_auth_buffer(text), app.key, app_id=app.app_id,
                                                    open_id=open_id, room_id="", now=now, allow_v1=app.v1_auth)
        except (GmeError, ValueError) as exc:
            reason = exc.detail if isinstance(exc, GmeError) else str(exc)
            raise Refused(direction.signature, 403, f"AuthBuffer refused: {reason}") from None
        _check_switches(app)
        return Caller(app, open_id, claims.expire)

    async def _read_capped(self, request: web.Request) -> bytes:
        """The body, refused (8193) as soon as it exceeds ``ptt_max_bytes``: never more is read
        than the limit + 1 byte, and a declared Content-Length above the limit reads nothing; one
        that has not arrived within ``ptt_upload_timeout`` is refused with 8195 (HTTP 408)."""
        limit = self.settings.ptt_max_bytes
        too_big = Refused(proto.FILE_REFUSED, 413, f"the file is larger than the limit of {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        deadline = self.settings.ptt_upload_timeout
        try:
            async with asyncio.timeout(deadline):  # a stalled upload must not hold a connection for long
                while chunk := await request.content.read(min(READ_CHUNK, limit + 1 - size)):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise too_big
        except TimeoutError:
            raise Refused(proto.UPLOAD.storage, 408,
                          f"the file did not arrive within {deadline:g} s (ptt_upload_timeout); send it again") from None
        return b"".join(chunks)

    def _inspect(self, body: bytes) -> VoiceFileInfo:
        try:
            return inspect_voice_file(body, self.settings.ptt_max_bytes, self.settings.ptt_max_duration_ms)
        except VoiceFileError as exc:
            status = 413 if exc.reason in (Refusal.TOO_BIG, Refusal.TOO_LONG) else 422
            raise Refused(proto.FILE_REFUSED, status, f"not a voice message the server accepts: {exc}") from None

    def _put(self, caller: Caller, body: bytes, info: VoiceFileInfo) -> Message:
        try:
            return self.storage.put(caller.app.app_id, caller.open_id, body, info.duration_ms)
        except OSError as exc:
            log.error("voice-message storage failed", extra=fields(error=str(exc)))
            raise Refused(proto.UPLOAD.storage, 503, "the server could not store the file; try again later") from None

    def _fetch(self, request: web.Request, file_id: str, now: float) -> tuple[Message, bytes]:
        """Authorise a download (AuthBuffer headers, else a signed link) and read the file."""
        if proto.HEADER_AUTH_BUFFER in request.headers or not request.query:
            message = self.message(self.authorise(request, proto.DOWNLOAD, now).app, file_id)
        else:
            message = self.message(None, file_id)
            app = self.server.store.get(message.app_id)
            problem = ("the file's app no longer exists" if app is None else
                       proto.link_problem(dict(request.query), app.key, app.app_id, file_id, now))
            if problem is not None:
                raise Refused(proto.LINK_REFUSED, 403, problem)
            assert app is not None
            _check_switches(app)
        try:
            return message, self.storage.read(message)
        except MessageGone as exc:
            raise Refused(proto.NOT_FOUND, 404, str(exc)) from None
        except OSError as exc:
            log.error("voice-message read failed", extra=fields(file_id=file_id, error=str(exc)))
            raise Refused(proto.DOWNLOAD.storage, 503, "the server could not read the file; try again later") from None

    def message(self, app: App | None, file_id: str) -> Message:
        """The live message ``file_id`` (of ``app`` when given: another app's file is "not found")."""
        message = self.storage.get(file_id)
        if message is None or (app is not None and message.app_id != app.app_id):
            raise Refused(proto.NOT_FOUND, 404, f"no voice message {file_id!r} on this server "
                                                "(unknown, deleted or past retention)")
        return message

    # --- replies --------------------------------------------------------------------------------

    def _url(self, request: web.Request, file_id: str) -> str:
        return proto.file_url(self.settings.public_url or str(request.url.origin()), file_id)

    def _link(self, url: str, caller: Caller, file_id: str) -> str:
        expires = int(min(time.time() + self.settings.ptt_link_ttl, caller.claims_expire))
        return proto.signed_link(url, caller.app.key, caller.app.app_id, caller.open_id, file_id, expires)

    @staticmethod
    def _describe(message: Message) -> dict[str, object]:
        return {"size": message.size, "duration_ms": message.duration_ms, "sha256": message.sha256,
                "created_at": message.created_at}

    def _refuse(self, request: web.Request, exc: Refused) -> web.Response:
        self.server.metrics.inc(REFUSALS, code=int(exc.code))
        log.info("voice-message request refused", extra=fields(method=request.method, path=request.path,
                                                               code=int(exc.code), reason=str(exc)))
        response = web.json_response(proto.error_body(exc.code, str(exc)), status=exc.status)
        if exc.status == 413:
            response.force_close()  # the rest of an oversized body is not worth a kept-alive connection
        return response


def _check_switches(app: App) -> None:
    """GME's console switches, after authentication: arrears (7005), then voice messages off (7012)."""
    if app.arrears:
        raise Refused(ErrorCode.AV_ERR_CHARGE_OVERDUE, 403, f"app {app.app_id} is in arrears")
    if not app.ptt:
        raise Refused(ErrorCode.AV_ERR_SERVICE_NOT_OPENED, 403, f"voice messages are turned off for app {app.app_id}")
