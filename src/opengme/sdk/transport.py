"""The SDK's network thread: one asyncio loop with an aiohttp WebSocket client per Context.

It is a dumb pipe for :class:`opengme.sdk.session.Session`: it carries out ``Connect``/``Send``/
``Heartbeat``/``Close`` commands and reports ``Opened``/``Failed``/``Received``/``Closed`` (stamped
with ``time.monotonic()``) into a thread-safe queue that ``Context.poll`` drains on the caller's
thread. Every decision (timeouts, backoff, what a reply means) stays in the session, so nothing here
needs a lock beyond the two queues, and a failure never raises into the caller: it is reported.

Binary frames are the media fallback (docs/protocol.md "Media"): ``send_binary`` queues one datagram
on the newest connection from any thread, and each received binary frame goes straight to
``on_binary`` on the network thread (the media engine), never through the session.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from opengme.protocol import signalling
from opengme.sdk.session import (
    Close,
    Closed,
    Command,
    Connect,
    Failed,
    Heartbeat,
    Notice,
    Opened,
    Received,
    Send,
)

PING_ID_BASE = 2**30  # heartbeat ids live above the session's request ids (unique per connection)
STOP_TIMEOUT = 5.0
MAX_QUEUED_BINARY = 64
"""Media frames waiting on a connection beyond this are dropped: late voice is worse than lost voice."""

Outgoing = dict[str, Any] | bytes
BinarySink = Callable[[bytes, float], None]

log = logging.getLogger("opengme.sdk")


def signal_url(server_url: str) -> str:
    """The WebSocket URL for a base URL as ``opengme serve`` prints it (http→ws, https→wss)."""
    parts = urlsplit(server_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"server_url must look like http://HOST:PORT, got {server_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(signalling.SIGNAL_PATH):
        path += signalling.SIGNAL_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


@dataclass
class _Connection:
    task: asyncio.Task[None]
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    heartbeat: asyncio.Task[None] | None = None


class Transport:
    """Owns the network thread; ``submit`` and ``stop`` are the only calls from other threads."""

    def __init__(self, url: str, name: str = "opengme-sdk") -> None:
        self.url = url
        self.notices: queue.SimpleQueue[Notice] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._connections: dict[int, _Connection] = {}
        self.ignored = signalling.Ignored()
        """What this context's reader skipped of a newer server's messages (unknown fields and types)."""
        self.on_binary: BinarySink | None = None
        """Called on the network thread with each received binary frame and its arrival time."""

    # --- caller side ---

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def submit(self, commands: list[Command]) -> None:
        """Hand commands to the network thread (thread-safe, never blocks)."""
        if commands and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: the commands no longer matter
                self._loop.call_soon_threadsafe(self._apply, commands)

    def send_binary(self, datagram: bytes) -> None:
        """Queue one media datagram as a binary frame (any thread, never blocks; dropped when lagging)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._queue_binary, datagram)

    def stop(self) -> None:
        """Close every connection and end the thread (joined: no thread outlives ``Context.uninit``)."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- network thread ---

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with aiohttp.ClientSession() as self._session:
            self._ready.set()
            await self._stopping.wait()
            for conn in list(self._connections):
                self._close(conn)
            tasks = [c.task for c in self._connections.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    def _report(self, notice: Notice) -> None:
        self.notices.put(notice)

    def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case Connect(conn=conn, messages=messages, url=url):
                    connection = _Connection(asyncio.create_task(self._connection(conn, url)))
                    for message in messages:
                        connection.outbox.put_nowait(message)
                    self._connections[conn] = connection
                case Send(conn=conn, message=message) if conn in self._connections:
                    self._connections[conn].outbox.put_nowait(message)
                case Heartbeat(conn=conn, interval=interval) if conn in self._connections:
                    connection = self._connections[conn]
                    if connection.heartbeat is None:
                        connection.heartbeat = asyncio.create_task(self._pinger(connection, interval))
                case Close(conn=conn):
                    self._close(conn)

    def _queue_binary(self, datagram: bytes) -> None:
        """On the newest connection: numbers only grow, so older ones are on their way out."""
        if not self._connections:
            return
        outbox = self._connections[max(self._connections)].outbox
        if outbox.qsize() < MAX_QUEUED_BINARY:  # else dropped, as a full queue on the wire drops
            outbox.put_nowait(datagram)

    def _close(self, conn: int) -> None:
        connection = self._connections.get(conn)
        if connection is not None:
            connection.task.cancel()

    async def _connection(self, conn: int, url: str = "") -> None:
        """Open (to ``url``, a node's base URL, else the context's), write the outbox, read until the
        socket ends; report what happened."""
        try:
            try:
                ws = await self._session.ws_connect(signal_url(url) if url else self.url, autoping=True)
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                self._report(Failed(conn, _reason(exc), time.monotonic()))
                return
            self._report(Opened(conn, time.monotonic()))
            connection = self._connections[conn]
            writer = asyncio.create_task(self._writer(ws, connection.outbox))
            try:
                reason = await self._reader(conn, ws)
            finally:
                writer.cancel()
                if connection.heartbeat is not None:
                    connection.heartbeat.cancel()
                await ws.close()
            self._report(Closed(conn, reason, time.monotonic()))
        except asyncio.CancelledError:
            pass  # closed on the session's request: it already forgot this connection
        finally:
            self._connections.pop(conn, None)

    async def _reader(self, conn: int, ws: aiohttp.ClientWebSocketResponse) -> str:
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.BINARY:
                if self.on_binary is not None:
                    self.on_binary(frame.data, time.monotonic())
                continue
            if frame.type is not aiohttp.WSMsgType.TEXT:
                if frame.type is aiohttp.WSMsgType.ERROR:
                    return f"connection error: {ws.exception()}"
                continue
            try:
                message = signalling.parse_server(frame.data, self.ignored)
            except signalling.ProtocolError as exc:  # a server bug must not take the client down
                log.warning("ignoring a malformed server message: %s", exc)
                continue
            self._report(Received(conn, message, time.monotonic()))
        return f"connection closed by the server (WebSocket code {ws.close_code})"

    async def _writer(self, ws: aiohttp.ClientWebSocketResponse, outbox: asyncio.Queue[Outgoing]) -> None:
        try:
            while True:
                item = await outbox.get()
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(signalling.encode(item))
        except (aiohttp.ClientError, ConnectionError) as exc:  # the reader sees the close and reports it
            log.debug("send failed: %s", exc)

    async def _pinger(self, connection: _Connection, interval: float) -> None:
        for ping_id in count(PING_ID_BASE):
            await asyncio.sleep(interval)
            connection.outbox.put_nowait(signalling.ping(ping_id, time.monotonic()))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"the server refused the WebSocket upgrade (HTTP {exc.status})"
    return f"cannot connect: {exc or type(exc).__name__}"
