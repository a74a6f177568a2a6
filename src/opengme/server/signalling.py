"""The signalling WebSocket ``/v1/signal`` (docs/protocol.md): a thin asyncio shell over the sans-I/O
protocol module and the signalling core (``opengme.core.signalling``, where every decision is made).

The shell reads frames, takes the time, runs the core's slow identity checks (``prove``: the app
registry's SQLite and the AuthBuffer's TEA) on the server's worker threads so that the event loop,
which also carries the media relay, never waits for them, and carries out what the core returns:
messages and closes through ``connections`` (the ``Delivery``), room events to ``room_listeners``.
One connection's frames are handled one after the other, in order; while one waits for its proof,
the other connections go on.

Entry points for the admin API: ``kick``, ``set_muted``, ``dissolve`` (reach them with ``get(server)``).
``Signalling.room_listeners`` are told of every member entering or leaving a room (``RoomEvent``):
the admin API records in/out times there, and the media relay closes sessions there. The relay
(``media``, a ``MediaPlane``) opens a session for each entry, so that the ``entered``/``switched``
reply carries its key, and takes the binary frames of the WebSocket fallback.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from opengme.core.rooms import RoomEvent, RoomRegistry
from opengme.core.signalling import (
    DISSOLVED,
    KICKED,
    Delivery,
    Instant,
    MediaSessions,
    Output,
    Proof,
    Send,
    SignallingCore,
    prove,
)
from opengme.errors import ErrorCode
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.server.connection import CLOSE_TIMEOUT, Connection, Connections

if TYPE_CHECKING:
    from opengme.core.signalling import Credentials
    from opengme.server.app import Server

log = logging.getLogger("opengme.signalling")

RoomListener = Callable[[RoomEvent], None]
Json = dict[str, Any]


class Redirect(Protocol):
    """Where a cluster sends an entry (``opengme.server.nodes.Redirect``)."""

    @property
    def node(self) -> str: ...

    @property
    def url(self) -> str: ...


Router = Callable[[str, str], Awaitable[Redirect | None]]
"""A cluster's room placement: (app_id, room_id) → None to admit here, else the node to send the client to."""
InvitationHandler = Callable[[int, Json, Instant], Awaitable[Output]]
"""A cluster's ``invite``/``invite_reply`` (opengme.server.invitations): (connection, request, now) → output."""
INVITATION_REQUESTS = frozenset({"invite", "invite_reply"})


class MediaPlane(MediaSessions, Protocol):
    """What signalling needs from the media relay (``opengme.server.media``): the core's sessions,
    and the binary frames of the WebSocket fallback."""

    def ws_datagram(self, conn: Connection, data: bytes) -> None:
        """A binary frame: one media datagram over the WebSocket fallback."""
        ...


REQUEST_SECONDS = "opengme_signal_request_seconds"
ENTRY_SECONDS = "opengme_entry_seconds"
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
    m.describe("opengme_redirects_total", "counter", "Entries sent on to the cluster node serving the room.")
    m.describe(REQUEST_SECONDS, "histogram", "Signalling requests: frame read to reply queued (the server's "
               "share of the round trip, identity proof included), by type.", labels=("type",))
    m.describe(ENTRY_SECONDS, "histogram", "Successful entries (enter, switch): request read to entered/switched queued.")


def get(server: Server) -> Signalling:
    return server.web_app[SIGNALLING]


def _now() -> Instant:
    return Instant(time.time(), time.monotonic())


class Signalling:
    """The rooms of a running server and the clients connected to it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.settings
        self.core = SignallingCore(self.settings)
        self.connections = Connections()
        self.delivery: Delivery = self.connections  # where the core's messages go (several nodes: elsewhere too)
        self.room_listeners: list[RoomListener] = []
        self.router: Router | None = None  # several nodes: which one serves a room (opengme.server.nodes)
        self.invitations: InvitationHandler | None = None  # several nodes: invitations kept in Redis
        # Run on the loop after ``prove``, before the core decides: a cluster adds what other nodes know.
        self.proof_checks: list[Callable[[Credentials, Proof], Awaitable[Proof]]] = []
        self._media: MediaPlane | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def registry(self) -> RoomRegistry:
        return self.core.registry

    @property
    def media(self) -> MediaPlane | None:
        return self._media

    @media.setter
    def media(self, media: MediaPlane | None) -> None:
        self._media = self.core.media = media

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        """Cancel the reaper; record everyone's departure; close sockets *without* ``disconnect``
        (1001 going away) so that SDKs reconnect and resume once the server is back."""
        self._stopping = True
        if self._reaper is not None:
            self._reaper.cancel()
        self._apply(self.core.shutdown(_now()))
        await asyncio.gather(*(c.finish() for c in self.connections), return_exceptions=True)

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self.settings.heartbeat_interval, self.settings.member_timeout) / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                self.reap(time.monotonic())
            except Exception:  # the reaper must outlive any bug in one pass
                log.exception("heartbeat reaper failed")

    def reap(self, mono: float) -> None:
        """One pass of the core's ``tick`` at ``mono`` (``time.monotonic()``)."""
        self._apply(self.core.tick(Instant(time.time(), mono)))

    # --- the WebSocket --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        limit = self.settings.max_message_bytes
        # aiohttp itself closes (1009, no error frame) above max_msg_size; between the two limits
        # the protocol's own check answers 10002 first, as docs/protocol.md asks.
        ws = web.WebSocketResponse(max_msg_size=max(2 * limit, limit + 4096), timeout=CLOSE_TIMEOUT)
        await ws.prepare(request)
        if self._stopping:
            await ws.close(code=WSCloseCode.GOING_AWAY)
            return ws
        conn = Connection(ws)
        self.connections.add(conn)
        self.core.connected(conn.id, _now(), request.remote or "")
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._on_text(conn, frame.data)
                elif frame.type is WSMsgType.BINARY:
                    self._on_binary(conn, frame.data)
                else:
                    break
        finally:
            self.connections.discard(conn)
            self._apply(self.core.disconnected(conn.id, _now()))
            await conn.finish()
        return ws

    async def _on_text(self, conn: Connection, text: str) -> None:
        """One request, start to finish; nothing it raises may end the connection unanswered."""
        if conn.closing:
            return
        try:
            await self._request(conn, text)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("signalling request failed", extra=fields(conn=conn.id))
            self._apply(self.core.refuse(conn.id, proto.ProtocolError(ErrorCode.AV_ERR_SERVER_FAILED,
                                                                      "internal server error"), _now()))

    async def _request(self, conn: Connection, text: str) -> None:
        now = _now()
        received = now.mono
        try:
            message = proto.parse_client(text, self.settings.max_message_bytes)
        except proto.ProtocolError as exc:
            self._count_message("invalid")
            self._apply(self.core.refuse(conn.id, exc, now))
            return
        self._count_message(message["type"])
        proof = None
        credentials = self.core.begin(conn.id, message, now)
        if credentials is not None:
            proof = await self._prove(credentials)
            if proof is None:
                return  # the server is stopping
            if self.router is not None and self.core.admissible(conn.id, message, proof):
                target = await self.router(credentials.app_id, message["room_id"])
                if target is not None:
                    self.server.metrics.inc("opengme_redirects_total")
                    self._apply(Output([Send(conn.id, proto.redirect(message["id"], target.url, target.node))]))
                    self._observe(message["type"], time.monotonic() - received, Output())  # no entry here
                    return
            now = _now()
        if self.invitations is not None and message["type"] in INVITATION_REQUESTS:
            output = await self.invitations(conn.id, message, now)
        else:
            output = self.core.receive(conn.id, message, now, proof)
        self._apply(output)
        self._observe(message["type"], time.monotonic() - received, output)

    def _observe(self, kind: str, seconds: float, output: Output) -> None:
        """The request's time from its frame read to its reply queued (the server's share of the round
        trip, proof included; not the network's); for a successful entry also as the entry time."""
        metrics = self.server.metrics
        metrics.observe(REQUEST_SECONDS, seconds, type=kind)
        if kind in ("enter", "switch") and any(
                isinstance(a, Send) and a.message["type"] in ("entered", "switched") for a in output.actions):
            metrics.observe(ENTRY_SECONDS, seconds)

    async def _prove(self, credentials: Credentials) -> Proof | None:
        """``prove`` on a worker thread; None when the server dropped the job because it is stopping."""
        try:
            proof = await self.server.run_blocking(prove, credentials, self.server.store.get)
            for check in self.proof_checks:
                proof = await check(credentials, proof)
            return proof
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None

    def _on_binary(self, conn: Connection, data: bytes) -> None:
        """Media datagrams of the WebSocket fallback. Before any room entry a binary frame is a client
        bug (10002); afterwards stray ones (just after an exit, say) are the relay's to drop and count."""
        if conn.closing:
            return
        if self.media is not None and self.core.carries_media(conn.id):
            self.media.ws_datagram(conn, data)
            return
        refused = proto.ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                                      "binary frames carry media datagrams once in a room; send requests as text frames")
        self._apply(self.core.refuse(conn.id, refused, _now()))

    # --- admin entry points ---------------------------------------------------------------------

    def kick(self, app_id: str, room_id: str, open_id: str, reason: str = KICKED) -> None:
        """Remove a member (``disconnect`` 10003 with ``reason``); 10009 unknown room, 10010 not in it."""
        self._apply(self.core.kick(app_id, room_id, open_id, reason, _now()))

    def dissolve(self, app_id: str, room_id: str, reason: str = DISSOLVED) -> int:
        """Remove everyone (each gets ``disconnect`` 10003); returns how many were removed."""
        output = self.core.dissolve(app_id, room_id, reason, _now())
        self._apply(output)
        return sum(1 for event in output.events if event.kind == "leave")

    def set_muted(self, app_id: str, room_id: str, open_id: str, muted: bool, reason: str = "") -> None:
        """Server mute (GME ModifyUserMicStatus): the member is told with a ``mute`` push."""
        self._apply(self.core.set_muted(app_id, room_id, open_id, muted, reason))

    # --- carrying out the core's output ---------------------------------------------------------

    def _apply(self, output: Output) -> None:
        """Deliver the actions in order (counting what the metrics count), then tell the room listeners."""
        metrics = self.server.metrics
        for action in output.actions:
            if isinstance(action, Send):
                kind = action.message["type"]
                if kind in ("error", "disconnect"):
                    metrics.inc("opengme_errors_total", code=action.message["code"])
                elif kind in ("entered", "switched"):
                    metrics.inc("opengme_entries_total")
                self.delivery.send(action.conn, action.message)
            else:
                self.delivery.close(action.conn, action.code)
        for event in output.events:
            for listener in self.room_listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("room listener failed", extra=fields(listener=repr(listener)))

    def _count_message(self, kind: str) -> None:
        self.server.metrics.inc("opengme_signal_messages_total", type=kind)
