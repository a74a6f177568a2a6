"""What a browser loads from ``opengme serve``: the console page, the browser SDK and the demo page.

- ``/console`` — the operators' console (static page; its API is ``opengme.server.console``).
- ``/sdk/opengme.js`` and its worklets — the browser room client (GME H5's shape), plain ES modules.
- ``/sdk/gme-constants.js`` — GME's event numbers, error codes, room types and the media constants,
  generated from the Python registries (``opengme.events``, ``opengme.errors``, ``protocol.media``),
  so the JavaScript never carries its own copy of a number.
- ``/demo`` — a page that joins a room from the browser. It gets its AuthBuffer from
  ``POST /demo/api/authbuffer``, a development signer that answers only for apps whose
  ``dev_signing`` switch is on (off by default; a real game signs on its own backend), in the H5
  sign server's shape ``{"userSig": base64, "errorCode": 0}``.

Every file comes from the package (``opengme/data/web``); nothing is fetched from elsewhere, and the
pages are sent with a Content-Security-Policy that allows this origin only.
"""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from opengme.authbuffer import gen_auth_buffer
from opengme.codec.opus import FRAME_MS, profile_for
from opengme.core.levels import METER_RANGE_DB, SILENCE_DBOV
from opengme.core.ratelimit import BucketTable
from opengme.core.uplink import VOICE_DBOV
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType, RoomType, UserUpdateEvent
from opengme.ids import IdError, room_id_problem, validate_app_id
from opengme.protocol import media
from opengme.protocol.signalling import PROTOCOL_VERSION, SIGNAL_PATH
from opengme.server.console import read_json_body
from opengme.server.console_auth import same_origin

if TYPE_CHECKING:
    from opengme.server.app import Server

ASSETS = "data/web"  # inside the opengme package (package data)
SIGN_RATE = (2.0, 20.0)  # development signatures per second and burst, per client address
SIGN_TTL = 3600
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
         ".svg": "image/svg+xml"}
PAGES = {"/console": "console.html", "/demo": "demo.html"}


def setup(server: Server) -> None:
    web_part = Web(server)
    router = server.web_app.router
    for path, name in PAGES.items():
        router.add_get(path, web_part.page(name))
    router.add_get("/console/static/{name}", web_part.asset)
    router.add_get("/sdk/gme-constants.js", web_part.constants)
    router.add_get("/sdk/{name}", web_part.asset)
    router.add_get("/demo/api/status", web_part.dev_status)
    router.add_post("/demo/api/authbuffer", web_part.dev_sign)


@cache
def _asset(name: str) -> bytes | None:
    """A file of ``opengme/data/web`` (a plain name: no folders, no dots in front)."""
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(tuple(TYPES)):
        return None
    found = resources.files("opengme").joinpath(ASSETS, name)
    return found.read_bytes() if found.is_file() else None


def _send(body: bytes, name: str) -> web.Response:
    kind = TYPES["." + name.rsplit(".", 1)[-1]]
    return web.Response(body=body, content_type=kind, charset="utf-8" if kind.startswith("text") else None,
                        headers=SECURITY_HEADERS)


@cache
def constants_module() -> bytes:
    """``gme-constants.js``: the registries the browser SDK and pages read their numbers from."""
    def frozen(name: str, values: dict[str, int | str]) -> str:
        return f"export const {name} = Object.freeze({json.dumps(values)});\n"

    codes: dict[str, int | str] = {member: int(code) for member, code in ErrorCode.__members__.items()}
    profiles = {int(t): {"sample_rate": profile_for(t).sample_rate, "frame_samples": profile_for(t).frame_samples}
                for t in RoomType}
    mediaspec: dict[str, int | str] = {"VERSION": media.VERSION, "HEADER_SIZE": media.HEADER_SIZE, "TAG_SIZE": media.TAG_SIZE,
                 "MAX_DATAGRAM": media.MAX_DATAGRAM, "DIRECTION_BIT": media.DIRECTION_BIT,
                 "BIND_MAGIC": media.BIND_MAGIC.decode("latin-1"),
                 "SESSION_ID_LABEL": media.SESSION_ID_LABEL.decode("latin-1"),
                 "DATA": int(media.PacketType.DATA), "BIND": int(media.PacketType.BIND),
                 "KEEPALIVE": int(media.PacketType.KEEPALIVE), "CHALLENGE": int(media.PacketType.CHALLENGE),
                 "MARKER": int(media.Flags.MARKER), "FEC": int(media.Flags.FEC), "OPUS": int(media.Codec.OPUS),
                 "FRAME_MS": FRAME_MS, "VOICE_DBOV": VOICE_DBOV, "SILENCE_DBOV": SILENCE_DBOV,
                 "METER_RANGE_DB": METER_RANGE_DB}
    text = ("// Generated by opengme.server.web from the Python registries; do not edit.\n"
            + frozen("EventType", {e.name: int(e) for e in EventType})
            + frozen("UserUpdateEvent", {e.name: int(e) for e in UserUpdateEvent})
            + frozen("RoomType", {e.name: int(e) for e in RoomType})
            + frozen("ErrorCode", dict(codes))
            + f"export const PROFILES = Object.freeze({json.dumps(profiles)});\n"
            + frozen("Media", mediaspec)
            + f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION};\nexport const SIGNAL_PATH = {json.dumps(SIGNAL_PATH)};\n")
    return text.encode()


def _sign_reply(code: ErrorCode, message: str, status: int) -> web.Response:
    return web.json_response({"errorCode": int(code), "message": message}, status=status)


class Web:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._signs = BucketTable(*SIGN_RATE, capacity=4096)

    def page(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body = _asset(name)
            assert body is not None, f"the package lacks {name}"
            return _send(body, name)

        return handler

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = _asset(name)
        if body is None:
            raise web.HTTPNotFound(text=f"no file {name}")
        return _send(body, name)

    async def constants(self, request: web.Request) -> web.Response:
        return _send(constants_module(), "gme-constants.js")

    async def dev_status(self, request: web.Request) -> web.Response:
        """Whether the development signer answers for an app (the demo page says so)."""
        try:
            app = await self.server.run_blocking(self.server.store.get, validate_app_id(request.query.get("app_id", "")))
        except IdError:
            app = None
        return web.json_response({"app_exists": app is not None, "dev_signing": bool(app and app.dev_signing)})

    async def dev_sign(self, request: web.Request) -> web.Response:
        """A development AuthBuffer for the demo page; only for apps with ``dev_signing`` on."""
        now = time.monotonic()
        if not same_origin(request.headers.get("Origin"), request.scheme, request.host,
                           self.server.settings.public_url):
            return _sign_reply(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "the development signer answers its own pages only",
                               403)
        if not self._signs.bucket(request.remote or "", now).take(now):
            return _sign_reply(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "rate limit: too many signatures; "
                               "retry in a second", 429)
        try:
            body = await read_json_body(request)
            app_id = validate_app_id(str(body.get("app_id", "")))
        except (GmeError, IdError) as exc:
            return _sign_reply(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, str(getattr(exc, "detail", exc)), 400)
        room_id, open_id = body.get("room_id", ""), body.get("open_id")
        problem = room_id_problem(room_id) if room_id != "" else None
        if problem is not None or not isinstance(open_id, str) or not open_id:
            return _sign_reply(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, problem or "give open_id", 400)
        app = await self.server.run_blocking(self.server.store.get, app_id)
        if app is None or not app.dev_signing:
            return _sign_reply(ErrorCode.AV_ERR_SERVER_NO_PERMISSION,
                               f"development signing is off for app {app_id}: turn on its dev_signing switch "
                               "(console, or `opengme app set APPID --dev-signing on`) or sign on your backend", 403)
        try:
            buffer = await self.server.run_blocking(gen_auth_buffer, app.app_id, room_id, open_id, app.key,
                                                    ttl=SIGN_TTL)
        except ValueError as exc:
            return _sign_reply(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, str(exc), 400)
        return web.json_response({"userSig": base64.b64encode(buffer).decode("ascii"), "errorCode": 0})
