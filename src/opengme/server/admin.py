"""The signed admin HTTP API (docs/protocol.md): room listing and info, kick, dissolve, server mute
and in/out times — GME's DescribeRoomInfo, DeleteRoomMember, ModifyUserMicStatus and
DescribeUserInAndOutTime, scoped to the app whose key signed the request.

This module authenticates and translates; the actions themselves are ``opengme.server.actions``,
shared with the Tencent Cloud API 3.0 endpoint.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.core.signalling import DISSOLVED, KICKED
from opengme.errors import ErrorCode, GmeError
from opengme.ids import MAX_ID_CHARS
from opengme.logs import fields
from opengme.protocol import admin as signing
from opengme.protocol.signalling import MAX_TEXT_CHARS
from opengme.server import actions, recording, shared_records

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.admin")

PREFIX = "/v1/admin"
MAX_OPEN_IDS = 100  # per kick/mute request, like GME's batch APIs
MAX_BODY_BYTES = 65536  # an admin body is a list of at most 100 openids and a reason: a few KB
_SIGNATURE_HEADERS = (signing.HEADER_APP_ID, signing.HEADER_TIMESTAMP, signing.HEADER_NONCE, signing.HEADER_SIGNATURE)
_BODY: web.RequestKey[bytes] = web.RequestKey("opengme.admin.body", bytes)
Handler = Callable[[web.Request, str], Awaitable[web.Response]]


ADMIN: web.AppKey[Admin] = web.AppKey("opengme.admin")


def setup(server: Server) -> None:
    admin = Admin(server)
    server.web_app[ADMIN] = admin
    router = server.web_app.router
    router.add_get(f"{PREFIX}/rooms", admin.signed(admin.rooms))
    router.add_get(f"{PREFIX}/rooms/{{room_id}}", admin.signed(admin.room_info))
    router.add_post(f"{PREFIX}/rooms/{{room_id}}/kick", admin.signed(admin.kick))
    router.add_post(f"{PREFIX}/rooms/{{room_id}}/dissolve", admin.signed(admin.dissolve))
    router.add_post(f"{PREFIX}/rooms/{{room_id}}/mute", admin.signed(admin.mute))
    router.add_get(f"{PREFIX}/inout", admin.signed(admin.inout))
    router.add_get(f"{PREFIX}/recordings", admin.signed(admin.recorded_file))
    server.metrics.describe("opengme_admin_requests_total", "counter", "Admin API requests, by outcome code.")


class Admin:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.actions = actions.get(server)
        self.nonces = signing.NonceCache()

    def _key_of(self, app_id: str) -> str | None:
        app = self.server.store.get(app_id)
        return app.key if app is not None else None

    def signed(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Authenticate (401 + 7006 otherwise), then run ``handler`` for the signing app; a GmeError
        becomes its JSON reply. The signing app's key is read on a worker thread (SQLite); the check
        itself, and the nonce cache it updates, stay on the loop."""

        async def wrapper(request: web.Request) -> web.Response:
            claimed = request.headers.get(signing.HEADER_APP_ID)
            key = await self.server.run_blocking(self._key_of, claimed) if claimed else None
            if key is None or not all(request.headers.get(h) for h in _SIGNATURE_HEADERS):
                body = b""  # unsigned or unknown app: refused below without reading the body
            else:
                try:
                    body = await read_body(request, self.server.settings.http_body_timeout)
                except GmeError as exc:
                    return self._reply(exc.code, exc.detail,
                                       status=408 if exc.code is ErrorCode.AV_ERR_SERVER_TIMEOUT else 413)
            request[_BODY] = body
            try:
                app_id = signing.verify_request(
                    request.headers, request.method, request.raw_path, body, lambda _: key, self.nonces,
                    time.time(), self.server.settings.admin_max_skew,
                )
            except signing.AdminAuthError as exc:
                log.info("admin request refused", extra=fields(path=request.path, reason=str(exc)))
                return self._reply(ErrorCode.AV_ERR_AUTH_FIALD, str(exc), status=401)
            refused = await self._claim_nonce(app_id, request.headers[signing.HEADER_NONCE])
            if refused is not None:
                return refused
            try:
                return await handler(request, app_id)
            except GmeError as exc:
                status = 404 if exc.code is ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST else 400
                return self._reply(exc.code, exc.detail, status=status)

        return wrapper

    async def _claim_nonce(self, app_id: str, nonce: str) -> web.Response | None:
        """A cluster: the nonce must be new to every node, not only to this one (which checked it
        already); the refusal, else None. Kept twice the allowed skew, as a timestamp either side is."""
        records = shared_records.get(self.server)
        if records is None:
            return None
        try:
            if await records.claim_nonce(app_id, nonce, 2 * self.server.settings.admin_max_skew):
                return None
        except Exception as exc:
            log.warning("admin request refused: the cluster's Redis did not answer", extra=fields(error=str(exc)))
            return self._reply(ErrorCode.AV_ERR_SERVER_FAILED,
                               "the cluster's Redis did not answer; cannot check the nonce", status=503)
        reason = f"{signing.HEADER_NONCE} was already used (replayed request)"
        log.info("admin request refused", extra=fields(app_id=app_id, reason=reason))
        return self._reply(ErrorCode.AV_ERR_AUTH_FIALD, reason, status=401)

    def _reply(self, code: ErrorCode, message: str, status: int) -> web.Response:
        self.server.metrics.inc("opengme_admin_requests_total", code=int(code))
        return web.json_response({"code": int(code), "message": message}, status=status)

    def _ok(self, **data: Any) -> web.Response:
        self.server.metrics.inc("opengme_admin_requests_total", code=0)
        return web.json_response({"code": 0, **data})

    # --- handlers -------------------------------------------------------------------------------

    async def rooms(self, request: web.Request, app_id: str) -> web.Response:
        rooms = await self.actions.live_rooms(app_id)
        return self._ok(rooms=[{"room_id": r.room_id, "room_type": r.room_type, "members": len(r.members)} for r in rooms])

    async def room_info(self, request: web.Request, app_id: str) -> web.Response:
        room = await self.actions.live_room(app_id, request.match_info["room_id"])
        members = [
            {"open_id": m.open_id, "tinyid": m.tinyid, "entered_at": m.entered_at, "muted": m.muted,
             **m.game}  # team, mode, range, position (game voice)
            for m in room.members
        ]
        return self._ok(room_id=room.room_id, room_type=room.room_type, members=members)

    async def kick(self, request: web.Request, app_id: str) -> web.Response:
        body = await _body(request, required={"open_ids"}, optional={"reason"})
        outcomes = await self.actions.kick(app_id, request.match_info["room_id"], _open_ids(body), _reason(body, KICKED))
        return self._ok(results=[{"open_id": o, "code": int(code)} for o, code in outcomes])

    async def dissolve(self, request: web.Request, app_id: str) -> web.Response:
        body = await _body(request, required=set(), optional={"reason"})
        removed = await self.actions.dissolve(app_id, request.match_info["room_id"], _reason(body, DISSOLVED))
        return self._ok(removed=removed)

    async def mute(self, request: web.Request, app_id: str) -> web.Response:
        body = await _body(request, required={"open_ids", "muted"}, optional={"reason"})
        if not isinstance(body["muted"], bool):
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "muted must be true or false")
        changes = [(o, body["muted"]) for o in _open_ids(body)]
        outcomes = await self.actions.set_muted(app_id, request.match_info["room_id"], changes, _reason(body, ""))
        return self._ok(results=[{"open_id": o, "code": int(code)} for o, code in outcomes])

    async def inout(self, request: web.Request, app_id: str) -> web.Response:
        room_id, open_id = request.query.get("room_id"), request.query.get("open_id")
        if room_id is None or open_id is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "give both room_id and open_id query parameters")
        stays, duration = await self.actions.in_out(app_id, room_id, open_id)
        return self._ok(in_out=[{"start": s, "end": e} for s, e in stays], duration=round(duration, 3))

    async def recorded_file(self, request: web.Request, app_id: str) -> web.Response:
        """A recorded file (GME's FileName from the callbacks or DescribeRecordInfo) for the app's backend."""
        name = request.query.get("file")
        if not name:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "give the recording's FileName as ?file=")
        data = await recording.get(self.server).download(app_id, name)
        self.server.metrics.inc("opengme_admin_requests_total", code=0)
        return web.Response(body=data, content_type="audio/mpeg")


async def read_body(request: web.Request, timeout: float, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read as it streams in: at most ``limit`` bytes (10002, HTTP 413, as soon as it is
    clear there is more) within ``timeout`` seconds (10004, HTTP 408), so a big or slow body costs
    neither memory nor a connection for long."""
    if request.content_length is not None and request.content_length > limit:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"the body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise GmeError(ErrorCode.AV_ERR_SERVER_TIMEOUT, f"the body did not arrive within {timeout:g} s") from None
    return b"".join(chunks)


async def _body(request: web.Request, required: set[str], optional: set[str]) -> dict[str, Any]:
    """A JSON object body with exactly the allowed fields (an empty body counts as ``{}``)."""
    raw = request[_BODY]
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "the body must be JSON") from None
    except RecursionError:  # signed, but nested thousands deep
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "the body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "the body must be a JSON object")
    unknown, missing = set(body) - required - optional, required - set(body)
    if unknown or missing:
        problems = [f"unknown field(s) {', '.join(sorted(unknown))}"] if unknown else []
        problems += [f"missing field(s) {', '.join(sorted(missing))}"] if missing else []
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "; ".join(problems))
    return body


def _open_ids(body: dict[str, Any]) -> list[str]:
    open_ids = body["open_ids"]
    if (
        not isinstance(open_ids, list)
        or not 1 <= len(open_ids) <= MAX_OPEN_IDS
        or not all(isinstance(o, str) and 0 < len(o) <= MAX_ID_CHARS for o in open_ids)
    ):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"open_ids must be a list of 1-{MAX_OPEN_IDS} openids")
    return open_ids


def _reason(body: dict[str, Any], default: str) -> str:
    reason = body.get("reason", default)
    if not isinstance(reason, str) or len(reason) > MAX_TEXT_CHARS:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"reason must be a string of at most {MAX_TEXT_CHARS} characters")
    if not _is_unicode(reason):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                       "reason must be Unicode text: it has a lone surrogate (an unpaired \\uD800-\\uDFFF escape)")
    return reason or default


def _is_unicode(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8 (JSON's ``\\ud800`` escapes can smuggle in a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
