"""The signalling WebSocket ``/v1/signal`` (docs/protocol.md): a thin asyncio shell over the
sans-I/O protocol module and the room registry.

Every inbound message is handled synchronously between two awaits, so a message's effects on the
registry are atomic. Outbound frames go through a per-connection queue drained by a writer task:
pushes to other members never block the sender, and a ``disconnect`` always reaches the client
before the socket closes (the SDK reconnects only when the socket drops *without* one).

Entry points for the admin API: ``kick``, ``set_muted``, ``dissolve`` (reach them with ``get(server)``).
``Signalling.room_listeners`` are told of every member entering or leaving a room (``RoomEvent``):
the admin API records in/out times there, and the media relay closes sessions there. The relay
(``media``, a ``MediaPlane``) opens a session for each entry, so that the ``entered``/``switched``
reply carries its key, and takes the binary frames of the WebSocket fallback.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from opengme import __version__
from opengme.authbuffer import verify_auth_buffer
from opengme.core.rooms import Member, RoomEvent, RoomRegistry
from opengme.errors import ErrorCode, GmeError, describe
from opengme.events import RoomType
from opengme.ids import open_id_problem
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.store import App

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.signalling")

OUTBOX_LIMIT = 1024  # frames queued for one client before it is dropped as too slow
MEDIA_OUTBOX_LIMIT = 64  # media datagrams queued for one client (~0.3 s of 5 speakers) before the oldest go
CLOSE_TIMEOUT = 1.0  # how long a closing socket waits for the client's close frame
RoomListener = Callable[[RoomEvent], None]
Json = dict[str, Any]
_connection_ids = count(1)

KICKED = "kicked by the server"
TAKEN_OVER = "another client entered with the same openid"
DISSOLVED = "the room was dissolved"


# --- resume tokens (stateless, so they survive a server restart) -------------------------------


def _resume_mac(key: str, app_id: str, open_id: str, room_id: str, expires: int) -> str:
    text = "\n".join(("opengme-resume-v1", app_id, open_id, room_id, str(expires)))
    return hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def make_resume_token(key: str, app_id: str, open_id: str, room_id: str, expires: int) -> str:
    """``EXPIRY.HEXMAC``: HMAC-SHA256 keyed by the app's permission key over (app, openid, room, expiry)."""
    return f"{expires}.{_resume_mac(key, app_id, open_id, room_id, expires)}"


def resume_token_problem(token: str, key: str, app_id: str, open_id: str, room_id: str, now: float) -> str | None:
    """Why ``token`` does not let this openid back into this room, or None when it does."""
    expiry, _, mac = token.partition(".")
    if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12) or not mac:
        return "resume token is malformed"
    if not hmac.compare_digest(mac, _resume_mac(key, app_id, open_id, room_id, int(expiry))):
        return "resume token does not match this app, openid and room (or the key was rotated)"
    if now >= int(expiry):
        return "resume token expired: the reconnect window is over, enter with a new AuthBuffer"
    return None


class MediaPlane(Protocol):
    """What signalling needs from the media relay (``opengme.server.media``); departures reach it
    through ``room_listeners``."""

    def open_session(self, member: Member, muted: bool) -> Json:
        """Start the member's media session with a fresh key; returns the reply's ``media`` section."""
        ...

    def set_muted(self, member: Member, muted: bool) -> None: ...

    def ws_datagram(self, conn: Connection, data: bytes) -> None:
        """A binary frame: one media datagram over the WebSocket fallback."""
        ...

    def forget_connection(self, conn: Connection) -> None: ...


# --- connections ---------------------------------------------------------------------------------


class Connection:
    """One client WebSocket: who it is (after ``hello``), its member (while in a room), its outbox.

    Two outboxes feed one writer task: control frames (JSON text, then maybe a close code), bounded by
    OUTBOX_LIMIT, past which the client is dropped as too slow; and media datagrams (the WebSocket
    fallback), a ring of MEDIA_OUTBOX_LIMIT where a lagging client loses its oldest voice instead.
    Control goes first, so signalling never waits behind audio.
    """

    def __init__(self, ws: web.WebSocketResponse, now: float) -> None:
        self.id = next(_connection_ids)
        self.ws = ws
        self.app_id: str | None = None
        self.open_id: str | None = None
        self.member: Member | None = None
        self.has_entered = False  # binary frames (media) are refused before the first room entry
        self.last_seen = now
        self.closing = False  # no more frames are queued once set
        self._close_queued = False
        self._control: deque[str | int] = deque()
        self._media: deque[bytes] = deque(maxlen=MEDIA_OUTBOX_LIMIT)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write())
        self._closer: asyncio.Future[bool] | None = None

    def send(self, message: Json) -> None:
        if not self.closing:
            self._enqueue(proto.encode(message))

    def send_media(self, datagram: bytes) -> bool:
        """Queue one media datagram as a binary frame without waiting; False when it was not queued
        (closing) or pushed the oldest one out (the client lags): the caller counts the drop."""
        if self.closing:
            return False
        media = self._media
        lagging = len(media) == MEDIA_OUTBOX_LIMIT
        media.append(datagram)
        self._wake.set()
        return not lagging

    def close(self, code: int = WSCloseCode.OK) -> None:
        """Close after the frames already queued have been sent."""
        if not self.closing:
            self._enqueue(code)
            self.closing = self._close_queued = True

    def _enqueue(self, item: str | int) -> None:
        if len(self._control) >= OUTBOX_LIMIT:
            log.warning("client too slow, dropping it", extra=fields(app_id=self.app_id, open_id=self.open_id))
            self.closing = True
            self._writer.cancel()
            self._closer = asyncio.ensure_future(self.ws.close(code=WSCloseCode.POLICY_VIOLATION))
            return
        self._control.append(item)
        self._wake.set()

    async def _write(self) -> None:
        control, media, ws = self._control, self._media, self.ws
        try:
            while True:
                if control:
                    item = control.popleft()
                    if isinstance(item, int):
                        await ws.close(code=item)
                        return
                    await ws.send_str(item)
                elif media:
                    await ws.send_bytes(media.popleft())
                elif self.closing and not self._close_queued:
                    return  # the reader is done and no close is pending: nothing left to deliver
                else:
                    self._wake.clear()
                    await self._wake.wait()
        except (ConnectionError, RuntimeError):
            self.closing = True  # the peer is gone; the reader notices and cleans up

    async def finish(self) -> None:
        """Called once the reader is done. Frames before a queued close (a ``disconnect``, say) still
        go out, within CLOSE_TIMEOUT; otherwise the peer is gone, so the writer is woken to stop."""
        self.closing = True
        if not self._close_queued:
            self._control.clear()
            self._media.clear()
        self._wake.set()
        if not self._writer.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), 2 * CLOSE_TIMEOUT)
        self._writer.cancel()


# --- the signalling part -------------------------------------------------------------------------

SIGNALLING: web.AppKey[Signalling] = web.AppKey("opengme.signalling")


def setup(server: Server) -> None:
    """Attach ``/v1/signal``, the heartbeat reaper and the room gauges."""
    signalling = Signalling(server)
    server.web_app[SIGNALLING] = signalling
    server.web_app.router.add_get(proto.SIGNAL_PATH, signalling.handle)
    server.on_start.append(signalling.start)
    server.on_stop.append(signalling.stop)
    m = server.metrics
    m.gauge("opengme_rooms", "Voice-chat rooms that exist now.", lambda: signalling.registry.room_count)
    m.gauge("opengme_members", "Members in voice-chat rooms now.", lambda: signalling.registry.member_count)
    m.describe("opengme_entries_total", "counter", "Successful room entries (enter and switch).")
    m.describe("opengme_errors_total", "counter", "Error replies and disconnects sent, by GME error code.")
    m.describe("opengme_signal_messages_total", "counter", "Signalling messages received, by type.")


def get(server: Server) -> Signalling:
    return server.web_app[SIGNALLING]


class Signalling:
    """The rooms of a running server and the clients connected to it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.settings
        self.registry = RoomRegistry(self.settings.max_rooms, self.settings.max_members_per_room)
        self.connections: set[Connection] = set()
        self.clients: dict[tuple[str, str], set[Connection]] = defaultdict(set)  # after hello
        self.room_listeners: list[RoomListener] = []
        self.media: MediaPlane | None = None
        self._reaper: asyncio.Task[None] | None = None
        # (app, openid, room) -> when the server removed it (kick, dissolve): older resume tokens
        # must not bring a removed member straight back (in memory: a restart forgets it).
        self._evicted: dict[tuple[str, str, str], float] = {}
        self._handlers: dict[str, Callable[[Connection, Json, float], None]] = {
            "hello": self._hello,
            "enter": self._enter,
            "exit": self._exit,
            "switch": self._switch,
            "change_room_type": self._change_room_type,
            "ping": self._ping,
            "invite": self._invite,
            "invite_reply": self._invite_reply,
        }
        assert set(self._handlers) == proto.REQUEST_TYPES

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        """Cancel the reaper; record everyone's departure; close sockets *without* ``disconnect``
        (1001 going away) so that SDKs reconnect and resume once the server is back."""
        if self._reaper is not None:
            self._reaper.cancel()
        now = time.time()
        for member in self.registry.members():
            self.registry.leave(member, now, voluntary=False)
        for conn in self.connections:
            conn.member = None
            conn.close(WSCloseCode.GOING_AWAY)
        self._flush()
        await asyncio.gather(*(c.finish() for c in list(self.connections)), return_exceptions=True)

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self.settings.heartbeat_interval, self.settings.member_timeout) / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                self.reap(time.monotonic())
            except Exception:  # the reaper must outlive any bug in one pass
                log.exception("heartbeat reaper failed")

    def reap(self, now: float) -> None:
        """Drop members silent for ``member_timeout`` (``disconnect`` 10004), and connections that
        never said hello within ``entry_timeout`` or idle without a room for ``member_timeout``.
        ``now`` is ``time.monotonic()``: a wall-clock step neither drops nor keeps anyone."""
        timeout = self.settings.member_timeout
        for conn in list(self.connections):
            limit = self.settings.entry_timeout if conn.open_id is None else timeout
            if conn.closing or now - conn.last_seen < limit:
                continue
            member = self._current(conn)
            if member is not None:
                self.registry.leave(member, time.time(), voluntary=False)
                self._drop(conn, ErrorCode.AV_ERR_SERVER_TIMEOUT, f"no message for {timeout:g} s (heartbeat lost)")
            else:
                self._drop(conn, ErrorCode.AV_ERR_SERVER_TIMEOUT, f"no message for {limit:g} s")
        self._flush()

    # --- the WebSocket --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        limit = self.settings.max_message_bytes
        # aiohttp itself closes (1009, no error frame) above max_msg_size; between the two limits
        # the protocol's own check answers 10002 first, as docs/protocol.md asks.
        ws = web.WebSocketResponse(max_msg_size=max(2 * limit, limit + 4096), timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        conn = Connection(ws, time.monotonic())
        self.connections.add(conn)
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    self._on_text(conn, frame.data)
                elif frame.type is WSMsgType.BINARY:
                    self._on_binary(conn, frame.data)
                else:
                    break
        finally:
            self._closed(conn)
            await conn.finish()
        return ws

    def _on_text(self, conn: Connection, text: str) -> None:
        if conn.closing:
            return
        conn.last_seen = time.monotonic()  # liveness on the monotonic clock: immune to clock steps
        now = time.time()
        try:
            message = proto.parse_client(text, self.settings.max_message_bytes)
        except proto.ProtocolError as exc:
            self._count_message("invalid")
            self._reply_error(conn, exc.id, exc.code, exc.message)
            if exc.close_code is not None:
                conn.close(exc.close_code)
            return
        kind = message["type"]
        self._count_message(kind)
        try:
            if kind != "hello" and conn.open_id is None:
                raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"send hello before {kind}")
            self._handlers[kind](conn, message, now)
        except GmeError as exc:
            self._reply_error(conn, message["id"], exc.code, exc.detail or describe(exc.code))
        except Exception:
            log.exception("signalling handler failed", extra=fields(type=kind, app_id=conn.app_id))
            self._reply_error(conn, message["id"], ErrorCode.AV_ERR_SERVER_FAILED, "internal server error")
        finally:
            self._flush()

    def _on_binary(self, conn: Connection, data: bytes) -> None:
        """Media datagrams of the WebSocket fallback. Before any room entry a binary frame is a client
        bug (10002); afterwards stray ones (just after an exit, say) are the relay's to drop and count."""
        if conn.closing:
            return
        if self.media is None or not conn.has_entered:
            self._reply_error(conn, None, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                              "binary frames carry media datagrams once in a room; send requests as text frames")
            return
        self.media.ws_datagram(conn, data)

    def _closed(self, conn: Connection) -> None:
        """The socket is gone: the member (if still current) leaves without clearing its mute."""
        self.connections.discard(conn)
        if self.media is not None:
            self.media.forget_connection(conn)
        if conn.app_id is not None and conn.open_id is not None:
            peers = self.clients.get((conn.app_id, conn.open_id))
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self.clients[(conn.app_id, conn.open_id)]
        if conn.member is not None:
            self.registry.leave(conn.member, time.time(), voluntary=False)
            conn.member = None
        conn.closing = True
        self._flush()

    # --- requests -------------------------------------------------------------------------------

    def _hello(self, conn: Connection, msg: Json, now: float) -> None:
        if conn.open_id is not None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION, "hello was already sent on this connection")
        app = self._app(msg["app_id"], msg["open_id"])
        conn.app_id, conn.open_id = app.app_id, msg["open_id"]
        self.clients[(app.app_id, msg["open_id"])].add(conn)
        conn.send(proto.hello_ok(msg["id"], __version__, self.settings.heartbeat_interval, self.settings.member_timeout))

    def _enter(self, conn: Connection, msg: Json, now: float) -> None:
        if self._current(conn) is not None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION, "already in a room on this connection; exit or switch")
        app = self._admit(conn, msg["room_id"], msg["auth_buffer"], msg.get("resume_token"), now)
        app_id, open_id = self._identity(conn)
        entered = self.registry.enter(app_id, msg["room_id"], open_id, RoomType(msg["room_type"]), conn, now)
        if entered.displaced is not None:
            self._drop(entered.displaced.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, TAKEN_OVER)
        conn.member = entered.member
        conn.has_entered = True
        conn.send(self._room_reply(proto.entered, msg["id"], app, entered.member, now))
        self.server.metrics.inc("opengme_entries_total")
        log.info("entered", extra=fields(app_id=app_id, room_id=msg["room_id"], open_id=open_id,
                                         tinyid=entered.member.tinyid, resumed="resume_token" in msg))

    def _exit(self, conn: Connection, msg: Json, now: float) -> None:
        member = self._member(conn)
        self.registry.leave(member, now, voluntary=True)
        conn.member = None
        conn.send(proto.exited(msg["id"]))

    def _switch(self, conn: Connection, msg: Json, now: float) -> None:
        member = self._member(conn)
        try:
            app = self._admit(conn, msg["room_id"], msg["auth_buffer"], None, now)
        except GmeError as exc:
            raise GmeError(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, f"{exc.code.name} ({int(exc.code)}): {exc.detail}") from None
        result = self.registry.switch(member, msg["room_id"], conn, now)
        if result.entered is None:
            conn.member = None
            assert result.error is not None
            raise result.error
        conn.member = result.entered.member
        conn.send(self._room_reply(proto.switched, msg["id"], app, result.entered.member, now))
        self.server.metrics.inc("opengme_entries_total")

    def _change_room_type(self, conn: Connection, msg: Json, now: float) -> None:
        member = self._member(conn)
        room_type = RoomType(msg["room_type"])
        changed = self.registry.change_room_type(member, room_type)
        conn.send(proto.room_type_changed(msg["id"], room_type))
        if changed:
            push = proto.room_type_push(room_type, member.open_id)
            for other in self.registry.room(member.app_id, member.room_id).others(member):
                self._conn(other).send(push)

    def _ping(self, conn: Connection, msg: Json, now: float) -> None:
        conn.send(proto.pong(msg["id"], msg["t"]))

    def _invite(self, conn: Connection, msg: Json, now: float) -> None:
        inviter = self._member(conn)
        invitees = self.clients.get((inviter.app_id, msg["open_id"]), set())
        invitation = self.registry.invite(inviter, msg["open_id"], bool(invitees), now)
        push = proto.invitation(invitation.invite_id, inviter.open_id, inviter.room_id)
        for invitee in invitees:
            invitee.send(push)
        conn.send(proto.invite_sent(msg["id"], invitation.invite_id))

    def _invite_reply(self, conn: Connection, msg: Json, now: float) -> None:
        app_id, open_id = self._identity(conn)
        invitation = self.registry.reply_invitation(app_id, open_id, msg["invite_id"], msg["accept"], now)
        conn.send(proto.invite_reply_ok(msg["id"], invitation.invite_id, invitation.room_id if msg["accept"] else None))
        inviter = self.registry.find(app_id, invitation.from_open_id)
        if inviter is not None and inviter.room_id == invitation.room_id:
            self._conn(inviter).send(proto.invitation_result(invitation.invite_id, open_id, msg["accept"]))

    # --- admin entry points ---------------------------------------------------------------------

    def kick(self, app_id: str, room_id: str, open_id: str, reason: str = KICKED) -> None:
        """Remove a member (``disconnect`` 10003 with ``reason``); 10009 unknown room, 10010 not in it."""
        member = self.registry.member(app_id, room_id, open_id)
        now = time.time()
        self.registry.leave(member, now, voluntary=True)
        self._evict(member, now)
        self._drop(member.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, reason)
        self._flush()
        log.info("kicked", extra=fields(app_id=app_id, room_id=room_id, open_id=open_id))

    def dissolve(self, app_id: str, room_id: str, reason: str = DISSOLVED) -> int:
        """Remove everyone (each gets ``disconnect`` 10003); returns how many were removed."""
        now = time.time()
        removed = self.registry.dissolve(app_id, room_id, now)
        for member in removed:
            self._evict(member, now)
            self._drop(member.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, reason)
        self._flush()
        log.info("dissolved", extra=fields(app_id=app_id, room_id=room_id, removed=len(removed)))
        return len(removed)

    def set_muted(self, app_id: str, room_id: str, open_id: str, muted: bool, reason: str = "") -> None:
        """Server mute (GME ModifyUserMicStatus): the member is told with a ``mute`` push."""
        member = self.registry.set_muted(app_id, room_id, open_id, muted)
        if self.media is not None:
            self.media.set_muted(member, muted)
        text = reason or ("muted by the server" if muted else "unmuted by the server")
        self._conn(member).send(proto.mute(muted, text))

    # --- helpers --------------------------------------------------------------------------------

    def _evict(self, member: Member, now: float) -> None:
        horizon = now - self.settings.reconnect_give_up
        self._evicted = {k: t for k, t in self._evicted.items() if t > horizon}
        self._evicted[(member.app_id, member.open_id, member.room_id)] = now

    def _evicted_after(self, app_id: str, open_id: str, room_id: str, resume_token: str) -> bool:
        """Whether the server removed this member after ``resume_token`` (already verified) was issued."""
        removed_at = self._evicted.get((app_id, open_id, room_id))
        issued_at = int(resume_token.partition(".")[0]) - self.settings.reconnect_give_up
        return removed_at is not None and removed_at >= issued_at

    def _app(self, app_id: str, open_id: str) -> App:
        """The app as the console has it *now*, and the openid checked against its rule (7006)."""
        app = self.server.store.get(app_id)
        if app is None:
            raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, f"unknown AppID {app_id}")
        reason = open_id_problem(open_id, app.string_openid)
        if reason:
            raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, reason)
        return app

    def _admit(self, conn: Connection, room_id: str, auth_text: str, resume_token: str | None, now: float) -> App:
        """Per-entry app checks, in GME's order: 7006 (app, openid, AuthBuffer or resume token),
        7005 arrears, 7012 voice service off."""
        app_id, open_id = self._identity(conn)
        app = self._app(app_id, open_id)
        problem = None
        if resume_token is not None:
            problem = resume_token_problem(resume_token, app.key, app.app_id, open_id, room_id, now)
            if problem is None and self._evicted_after(app.app_id, open_id, room_id, resume_token):
                problem = "the server removed this member from the room after the resume token was issued"
        if resume_token is None or problem is not None:
            buffer = proto.decode_auth_buffer(auth_text)
            if not buffer and problem is not None:
                raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, problem)
            verify_auth_buffer(buffer, app.key, app_id=app.app_id, open_id=open_id, room_id=room_id, now=now)
        if app.arrears:
            raise GmeError(ErrorCode.AV_ERR_CHARGE_OVERDUE, f"app {app.app_id} is in arrears")
        if not app.voice:
            raise GmeError(ErrorCode.AV_ERR_SERVICE_NOT_OPENED, f"voice chat is turned off for app {app.app_id}")
        return app

    def _room_reply(self, build: Callable[..., Json], id: int, app: App, member: Member, now: float) -> Json:
        room = self.registry.room(member.app_id, member.room_id)
        expires = int(now + self.settings.reconnect_give_up)
        muted = room.is_muted(member.open_id)
        return build(
            id,
            room.room_id,
            room.room_type,
            member.tinyid,
            [(m.tinyid, m.open_id) for m in room.others(member)],
            make_resume_token(app.key, app.app_id, member.open_id, room.room_id, expires),
            muted,
            self.media.open_session(member, muted) if self.media is not None else None,
        )

    def _identity(self, conn: Connection) -> tuple[str, str]:
        assert conn.app_id is not None and conn.open_id is not None
        return conn.app_id, conn.open_id

    def _current(self, conn: Connection) -> Member | None:
        """The connection's member, unless it has left, been kicked or been taken over."""
        member = conn.member
        return member if member is not None and self.registry.is_current(member) else None

    def _member(self, conn: Connection) -> Member:
        member = self._current(conn)
        if member is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM, "not in a room")
        return member

    @staticmethod
    def _conn(member: Member) -> Connection:
        assert isinstance(member.conn, Connection)
        return member.conn

    def _drop(self, conn: object, code: ErrorCode, reason: str) -> None:
        """Tell a client it is out (``disconnect``), then close its socket."""
        assert isinstance(conn, Connection)
        conn.member = None
        conn.send(proto.disconnect(code, reason))
        conn.close()
        self.server.metrics.inc("opengme_errors_total", code=int(code))

    def _reply_error(self, conn: Connection, id: int | None, code: ErrorCode, message: str) -> None:
        conn.send(proto.error(id, code, message))
        self.server.metrics.inc("opengme_errors_total", code=int(code))

    def _count_message(self, kind: str) -> None:
        self.server.metrics.inc("opengme_signal_messages_total", type=kind)

    def _flush(self) -> None:
        """Turn the registry's enter/leave events into ``members`` pushes and listener calls."""
        for event in self.registry.take_events():
            push = proto.members_push("enter" if event.kind == "enter" else "exit",
                                      [(event.member.tinyid, event.member.open_id)])
            for other in event.others:
                self._conn(other).send(push)
            for listener in self.room_listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("room listener failed", extra=fields(listener=repr(listener)))
