"""The operators' web console API (``/console/api/…``): sign-in, apps, live rooms, voice messages,
error lookup and the last hour's charts. The page itself is static (``opengme.server.web``).

Access rules live in ``opengme.server.console_auth``; here every handler is wrapped by ``_guarded``:
Origin check for changes and the WebSocket, then the session cookie, then the CSRF header for
changes. Refusals are JSON ``{"code": <GME code>, "message": …}``: 10003 (HTTP 401/403) for a missing
session, wrong token, CSRF or Origin; 10002 (400) for a malformed body; 10009/10010 from the room
actions. Room actions go through the action layer the signed admin API uses (``opengme.server.actions``),
so in a cluster they reach rooms on any node.

Live rooms: ``/console/api/live`` (WebSocket) pushes a snapshot of every room with its members, who
is speaking (the relay's voice-activity bit of the last 0.5 s, read from packet headers, no decoding)
and each member's level, every ``LIVE_INTERVAL`` seconds; in a cluster also the other nodes' rooms
(with their ``node``, without voice activity). Charts: a sampler records rooms, members
and relayed packets per second every ``HISTORY_INTERVAL`` seconds into a ring of one hour.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from opengme.core.levels import level_from_audio_level
from opengme.core.ratelimit import BucketTable
from opengme.core.rooms import Member
from opengme.errors import ErrorCode, GmeError, all_errors, describe, info, search
from opengme.ids import IdError, validate_app_id
from opengme.logs import fields
from opengme.protocol.signalling import MAX_TEXT_CHARS
from opengme.server import actions, media, ptt, shared_records, signalling, stt
from opengme.server.console_auth import (
    COOKIE,
    CSRF_HEADER,
    OperatorTokens,
    Session,
    Sessions,
    csrf_ok,
    same_origin,
)
from opengme.server.shared_records import merge_rooms
from opengme.store import SWITCHES, AppStoreError
from opengme.stt.base import DEFAULT_LANGUAGE

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.console")

API = "/console/api"
LIVE_INTERVAL = 0.5
MAX_LIVE_SOCKETS = 32  # open live-room WebSockets at once (a few operators, a few tabs each)
MAX_LIVE_ROOMS = 100
"""Rooms a snapshot details (the others are only counted). bench/bench_console.py: 10,000 members in
1,000 rooms cost 46 ms per snapshot in full; with this bound 5 ms (1 % of the loop every 0.5 s)."""
HISTORY_INTERVAL = 10.0
HISTORY_SECONDS = 3600.0
MAX_BODY_BYTES = 4096
LOGIN_RATE = (0.2, 5.0)  # sign-in attempts per second and burst, per client address
USAGE_DAYS = 30
CONSOLE_SWITCHES = ("voice", "ptt", "stt", "arrears", "dev_signing")
CONSOLE: web.AppKey[Console] = web.AppKey("opengme.console")
Handler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Sample:
    at: float
    rooms: int
    members: int
    packets_per_second: float


class History:
    """The last hour of samples (pure: the caller gives the time and the counters)."""

    def __init__(self, seconds: float = HISTORY_SECONDS) -> None:
        self.seconds = seconds
        self._samples: deque[Sample] = deque()
        self._last: tuple[float, int] | None = None  # (time, packets received) of the previous sample

    def peek(self, now: float, rooms: int, members: int, packets: int) -> Sample:
        """The sample these figures make (the packet rate since the last recorded one), not recorded."""
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = max(0, packets - self._last[1]) / (now - self._last[0])
        return Sample(now, rooms, members, round(rate, 1))

    def record(self, now: float, rooms: int, members: int, packets: int) -> Sample:
        sample = self.peek(now, rooms, members, packets)
        self._last = (now, packets)
        self._samples.append(sample)
        while self._samples and self._samples[0].at < now - self.seconds:
            self._samples.popleft()
        return sample

    def samples(self) -> list[Sample]:
        return list(self._samples)


def setup(server: Server) -> None:
    console = Console(server)
    server.web_app[CONSOLE] = console
    router = server.web_app.router
    router.add_get(f"{API}/session", console.guarded(console.session, change=False, signed_in=False))
    router.add_post(f"{API}/login", console.guarded(console.login, change=True, signed_in=False))
    router.add_post(f"{API}/logout", console.guarded(console.logout))
    router.add_get(f"{API}/apps", console.guarded(console.apps, change=False))
    router.add_post(f"{API}/apps", console.guarded(console.create_app))
    router.add_post(f"{API}/apps/switches", console.guarded(console.set_switches))
    router.add_post(f"{API}/apps/rotate", console.guarded(console.rotate_key))
    router.add_get(f"{API}/rooms", console.guarded(console.rooms, change=False))
    router.add_post(f"{API}/kick", console.guarded(console.kick))
    router.add_post(f"{API}/mute", console.guarded(console.mute))
    router.add_post(f"{API}/dissolve", console.guarded(console.dissolve))
    router.add_get(f"{API}/messages", console.guarded(console.messages, change=False))
    router.add_get(f"{API}/messages/audio", console.guarded(console.message_audio, change=False))
    router.add_post(f"{API}/messages/transcript", console.guarded(console.transcript))
    router.add_get(f"{API}/errors", console.guarded(console.errors, change=False))
    router.add_get(f"{API}/history", console.guarded(console.history, change=False))
    router.add_get(f"{API}/live", console.guarded(console.live, change=True))
    server.on_start.append(console.start)
    server.on_stop.append(console.stop)


def get(server: Server) -> Console:
    return server.web_app[CONSOLE]


def _refuse(code: ErrorCode, message: str, status: int) -> web.Response:
    return web.json_response({"code": int(code), "message": message}, status=status)


class Console:
    """The console's state: operator token table, sessions, the chart history and its sampler."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.tokens = OperatorTokens(server.settings.data_dir, server.settings.database_url)
        self.sessions = Sessions()
        self.charts = History()
        self.history_interval = HISTORY_INTERVAL
        self._logins = BucketTable(*LOGIN_RATE, capacity=4096)
        self._sampler: asyncio.Task[None] | None = None
        self._views: set[web.WebSocketResponse] = set()  # open live views
        self._broadcaster: asyncio.Task[None] | None = None
        self.first_token: str | None = None
        """The operator token this start created (the data directory had none), for ``opengme serve`` to print."""

    async def start(self) -> None:
        self.first_token = await self.server.run_blocking(self.tokens.issue_if_none, time.time())
        self._sampler = asyncio.create_task(self._sample_forever())

    async def stop(self) -> None:
        for task in (self._sampler, self._broadcaster):
            if task is not None:
                task.cancel()
        await self.server.run_blocking(self.tokens.close)

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.history_interval)

    def sample(self) -> Sample:
        registry = signalling.get(self.server).registry
        relay = media.get(self.server).relay
        return self.charts.record(time.time(), registry.room_count, registry.member_count, relay.counters.received)

    # --- the guard ------------------------------------------------------------------------------

    def guarded(self, handler: Handler, *, change: bool = True, signed_in: bool = True
                ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Origin (changes and the WebSocket), then session, then CSRF (changes) before ``handler``."""

        async def wrapper(request: web.Request) -> web.StreamResponse:
            if change and not same_origin(request.headers.get("Origin"), request.scheme, request.host,
                                          self.server.settings.public_url):
                return _refuse(ErrorCode.AV_ERR_SERVER_NO_PERMISSION,
                               "the console accepts changes from its own page only (Origin header missing or foreign)",
                               403)
            current = await self.server.run_blocking(self.tokens.current)
            session = self.sessions.find(request.cookies.get(COOKIE), current, time.time())
            if session is None:
                if signed_in:
                    return _refuse(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "sign in to the console first", 401)
                session = Session("", "", "", 0.0)
            elif change and request.method == "POST" and signed_in and not csrf_ok(
                    session, request.headers.get(CSRF_HEADER)):
                return _refuse(ErrorCode.AV_ERR_SERVER_NO_PERMISSION,
                               f"missing or wrong {CSRF_HEADER}: reload the console page", 403)
            try:
                return await handler(request, session)
            except GmeError as exc:
                status = 404 if exc.code in (ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST,
                                             ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST) else 400
                return _refuse(exc.code, exc.detail, status)
            except AppStoreError as exc:
                return _refuse(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, str(exc), 400)

        return wrapper

    # --- sign-in --------------------------------------------------------------------------------

    async def session(self, request: web.Request, session: Session) -> web.Response:
        """Whether this browser is signed in; the CSRF token for its changes when it is."""
        return web.json_response({"code": 0, "signed_in": bool(session.session_id), "csrf": session.csrf or None})

    async def login(self, request: web.Request, session: Session) -> web.Response:
        if not self._logins.bucket(request.remote or "", time.monotonic()).take(time.monotonic()):
            return _refuse(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                           "rate limit: too many sign-in attempts; retry in a minute", 429)
        body = await read_json_body(request)
        token = body.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= 256:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "give the operator token as {\"token\": \"…\"}")
        matched = await self.server.run_blocking(self.tokens.matches, token)
        if matched is None:
            log.warning("console sign-in refused", extra=fields(peer=request.remote))
            return _refuse(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "wrong operator token (`opengme console-token` "
                           "prints a new one)", 401)
        opened = self.sessions.open(matched, time.time())
        reply = web.json_response({"code": 0, "csrf": opened.csrf})
        reply.set_cookie(COOKIE, opened.session_id, httponly=True, samesite="Strict", path="/console",
                         secure=request.secure, max_age=int(self.sessions.lifetime))
        log.info("console sign-in", extra=fields(peer=request.remote))
        return reply

    async def logout(self, request: web.Request, session: Session) -> web.Response:
        self.sessions.close(session.session_id)
        reply = web.json_response({"code": 0})
        reply.del_cookie(COOKIE, path="/console")
        return reply

    # --- apps -----------------------------------------------------------------------------------

    async def apps(self, request: web.Request, session: Session) -> web.Response:
        store = self.server.store
        apps = await self.server.run_blocking(store.list)
        minutes = await actions.get(self.server).inout.minutes(time.time() - USAGE_DAYS * 86400)
        everywhere = await actions.get(self.server).all_live_rooms()  # a cluster: every live node's rooms
        out = []
        for app in apps:
            rooms = [r for r in everywhere if r.app_id == app.app_id]
            usage = {"rooms": len(rooms), "members": sum(len(r.members) for r in rooms),
                     f"voice_minutes_{USAGE_DAYS}d": round(minutes.get(app.app_id, 0.0), 1)}
            out.append({**app.public_dict(), "usage": usage})
        return web.json_response({"code": 0, "apps": out, "switches": list(CONSOLE_SWITCHES)})

    async def create_app(self, request: web.Request, session: Session) -> web.Response:
        name = _text(await read_json_body(request), "name", 128)
        app = await self.server.run_blocking(self.server.store.create, name)
        log.info("console created an app", extra=fields(app_id=app.app_id))
        return web.json_response({"code": 0, "app": app.public_dict(), "key": app.key})

    async def set_switches(self, request: web.Request, session: Session) -> web.Response:
        body = await read_json_body(request)
        app_id = _app_id(body)
        changes = {k: v for k, v in body.items() if k != "app_id"}
        wrong = [k for k, v in changes.items() if k not in CONSOLE_SWITCHES or not isinstance(v, bool)]
        if wrong or not changes:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                           f"give app_id and switches among {', '.join(CONSOLE_SWITCHES)} as true/false")
        assert set(changes) <= set(SWITCHES)
        app = await self.server.run_blocking(lambda: self.server.store.set(app_id, **changes))
        log.info("console changed switches", extra=fields(app_id=app_id, **changes))
        return web.json_response({"code": 0, "app": app.public_dict()})

    async def rotate_key(self, request: web.Request, session: Session) -> web.Response:
        app_id = _app_id(await read_json_body(request))
        app = await self.server.run_blocking(self.server.store.rotate_key, app_id)
        log.info("console rotated a key", extra=fields(app_id=app_id))
        return web.json_response({"code": 0, "app": app.public_dict(), "key": app.key})

    # --- rooms ----------------------------------------------------------------------------------

    def snapshot(self, limit: int = MAX_LIVE_ROOMS) -> dict[str, Any]:
        """The first ``limit`` rooms (by app, then room id) with their members, who speaks and their
        levels, and the totals. Bounded: the live view runs it on the relay's event loop."""
        registry = signalling.get(self.server).registry
        relay = media.get(self.server).relay
        now = time.monotonic()
        grouped: dict[tuple[str, str], list[Member]] = {}
        for m in registry.members():
            grouped.setdefault((m.app_id, m.room_id), []).append(m)
        out = []
        for app_id, room_id in sorted(grouped)[:limit]:
            room = registry.room(app_id, room_id)
            speaking = set(relay.speakers(f"{app_id}\0{room_id}", now))
            members = [{"open_id": m.open_id, "tinyid": m.tinyid, "entered_at": m.entered_at,
                        "speaking": m.tinyid in speaking, "level": _level(relay, m.tinyid, now),
                        "muted": room.is_muted(m.open_id)} for m in grouped[(app_id, room_id)]]
            out.append({"app_id": app_id, "room_id": room_id, "room_type": int(room.room_type), "members": members})
        return {"rooms": out, "rooms_total": len(grouped), "members_total": registry.member_count}

    async def cluster_snapshot(self, limit: int = MAX_LIVE_ROOMS) -> dict[str, Any]:
        """``snapshot`` plus the rooms the cluster's other live nodes serve (without who speaks: their
        relays see that), each with its ``node``; the same as ``snapshot`` on a single node."""
        here = self.snapshot(limit)
        records = shared_records.get(self.server)
        if records is None:
            return here
        try:
            listed = await records.other_rooms()
        except GmeError as exc:  # the live view goes on with this node's rooms while Redis is away
            log.warning("the other nodes' rooms are not shown", extra=fields(error=exc.detail))
            return here
        mine = {(r["app_id"], r["room_id"]) for r in here["rooms"]}
        others = [v for v in merge_rooms(listed) if (v.app_id, v.room_id) not in mine]
        rooms = here["rooms"] + [
            {"app_id": v.app_id, "room_id": v.room_id, "room_type": v.room_type, "node": v.node,
             "members": [{"open_id": m.open_id, "tinyid": m.tinyid, "entered_at": m.entered_at, "speaking": False,
                          "level": 0, "muted": m.muted} for m in v.members]} for v in others]
        rooms.sort(key=lambda r: (r["app_id"], r["room_id"]))
        return {"rooms": rooms[:limit], "rooms_total": here["rooms_total"] + len(others),
                "members_total": here["members_total"] + sum(len(v.members) for v in others)}

    async def rooms(self, request: web.Request, session: Session) -> web.Response:
        return web.json_response({"code": 0, **await self.cluster_snapshot()})

    async def live(self, request: web.Request, session: Session) -> web.StreamResponse:
        if len(self._views) >= MAX_LIVE_SOCKETS:
            return _refuse(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                           f"rate limit: {MAX_LIVE_SOCKETS} live views are open; close one", 429)
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1024)
        await ws.prepare(request)
        self._views.add(ws)
        if self._broadcaster is None or self._broadcaster.done():
            self._broadcaster = asyncio.create_task(self._broadcast())
        try:
            async for frame in ws:  # the page sends nothing; reading notices the close
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
        finally:
            self._views.discard(ws)
        return ws

    async def _broadcast(self) -> None:
        """One snapshot per interval for every open view (its cost does not grow with the views)."""
        while self._views:
            text = json.dumps(await self.cluster_snapshot())
            for ws in list(self._views):
                if not ws.closed:
                    await ws.send_str(text)
            await asyncio.sleep(LIVE_INTERVAL)

    async def kick(self, request: web.Request, session: Session) -> web.Response:
        app_id, room_id, open_id = _member_of(await read_json_body(request))
        [(_, code)] = await actions.get(self.server).kick(app_id, room_id, [open_id], "removed from the room by an operator")
        _check(code, open_id, room_id)
        log.info("console kicked", extra=fields(app_id=app_id, room_id=room_id, open_id=open_id))
        return web.json_response({"code": 0})

    async def mute(self, request: web.Request, session: Session) -> web.Response:
        body = await read_json_body(request)
        app_id, room_id, open_id = _member_of(body)
        muted = body.get("muted")
        if not isinstance(muted, bool):
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "muted must be true or false")
        [(_, code)] = await actions.get(self.server).set_muted(app_id, room_id, [(open_id, muted)], "by an operator")
        _check(code, open_id, room_id)
        return web.json_response({"code": 0})

    async def dissolve(self, request: web.Request, session: Session) -> web.Response:
        body = await read_json_body(request)
        app_id, room_id = _app_id(body), _text(body, "room_id", MAX_TEXT_CHARS)
        removed = await actions.get(self.server).dissolve(app_id, room_id)
        return web.json_response({"code": 0, "removed": removed})

    # --- voice messages, errors, charts -------------------------------------------------------------

    async def messages(self, request: web.Request, session: Session) -> web.Response:
        app_id = _app_id(dict(request.query))
        found = await self.server.run_blocking(ptt.get(self.server).storage.list, app_id)
        return web.json_response({"code": 0, "messages": [m.to_dict() for m in found[-200:]]})

    async def message_audio(self, request: web.Request, session: Session) -> web.StreamResponse:
        storage = ptt.get(self.server).storage
        message = await self.server.run_blocking(storage.get, request.query.get("file_id", ""))
        if message is None:
            return _refuse(ErrorCode.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, "no such voice message", 404)
        data = await self.server.run_blocking(storage.read, message)
        return web.Response(body=data, content_type="audio/ogg")

    async def transcript(self, request: web.Request, session: Session) -> web.Response:
        """The text of a voice message: the one the speech-to-text endpoints store with it, or
        recognised now in their worker pool within the app's limit (the app's ``stt`` switch must be
        on: 7012 otherwise)."""
        body = await read_json_body(request)
        file_id = _text(body, "file_id", 1024)
        language = body.get("language", DEFAULT_LANGUAGE)
        if not isinstance(language, str) or len(language) > 16:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "language must be a tag such as en-US")
        storage = ptt.get(self.server).storage
        message = await self.server.run_blocking(storage.get, file_id)
        if message is None:
            return _refuse(ErrorCode.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, "no such voice message", 404)
        app = await self.server.run_blocking(self.server.store.get, message.app_id)
        if app is None or not app.stt:
            return _refuse(ErrorCode.AV_ERR_SERVICE_NOT_OPENED, "speech-to-text is off for this app (switch stt)", 403)
        speech = stt.get(self.server)
        text, _ = await speech.text_of(message, speech.pool.resolve(language))
        return web.json_response({"code": 0, "file_id": file_id, "language": language, "text": text})

    async def errors(self, request: web.Request, session: Session) -> web.Response:
        query = request.query.get("q", "").strip()[:200]
        if not query:
            entries = all_errors()
        elif query.isdigit():
            try:
                entries = [info(int(query))]
            except ValueError:
                entries = []
        else:
            entries = search(query)
        return web.json_response({"code": 0, "errors": [e.to_dict() for e in entries]})

    async def history(self, request: web.Request, session: Session) -> web.Response:
        """The recorded samples of the last hour, then one of this moment (so the charts end at now)."""
        registry = signalling.get(self.server).registry
        packets = media.get(self.server).relay.counters.received
        now = self.charts.peek(time.time(), registry.room_count, registry.member_count, packets)
        return web.json_response({"code": 0, "interval": self.history_interval,
                                  "samples": [asdict(s) for s in [*self.charts.samples(), now]]})


async def read_json_body(request: web.Request) -> dict[str, Any]:
    """A small JSON object body, or 10002 (never more than MAX_BODY_BYTES + 1 bytes are read)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"body above {MAX_BODY_BYTES} bytes")
    return parse_json_object(await request.content.read(MAX_BODY_BYTES + 1))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object ``raw`` holds (empty = ``{}``); GmeError 10002 for anything else."""
    if len(raw) > MAX_BODY_BYTES:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"body above {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "the body must be a JSON object")
    return body


def _check(code: ErrorCode, open_id: str, room_id: str) -> None:
    """One member's outcome of a room action: 10010 (not in the room) or another failure raised."""
    if code is ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST:
        raise GmeError(code, f"openid {open_id!r} is not in room {room_id!r}")
    if code is not ErrorCode.AV_OK:
        raise GmeError(code, describe(code))


def _level(relay: media.RelayPlane, tinyid: int, now: float) -> int:
    """A member's 0–100 level from its last voice packet's header (0 after 0.5 s without voice)."""
    try:
        activity = relay.activity(tinyid)
    except KeyError:  # no media session (yet)
        return 0
    recent = activity.last_voice is not None and now - activity.last_voice <= 0.5
    return level_from_audio_level(activity.level) if recent else 0


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{name} must be a string of 1-{limit} characters")
    return value


def _app_id(body: dict[str, Any]) -> str:
    try:
        return validate_app_id(str(body.get("app_id", "")))
    except IdError as exc:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, str(exc)) from None


def _member_of(body: dict[str, Any]) -> tuple[str, str, str]:
    return _app_id(body), _text(body, "room_id", MAX_TEXT_CHARS), _text(body, "open_id", MAX_TEXT_CHARS)
