"""Client WebSocket connections of ``/v1/signal``: each one's outboxes and writer task, and the table
of open ones by id, which delivers the signalling core's messages (``Connections`` is the shell's
``Delivery``).

Outbound frames go through a per-connection queue drained by a writer task: pushes to other members
never block the sender, and a ``disconnect`` always reaches the client before the socket closes (the
SDK reconnects only when the socket drops *without* one).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Iterator
from itertools import count
from typing import Any

from aiohttp import WSCloseCode, web

from opengme.core.rooms import ConnId
from opengme.logs import fields
from opengme.protocol import signalling as proto

log = logging.getLogger("opengme.signalling")

OUTBOX_LIMIT = 1024  # frames queued for one client before it is dropped as too slow
MEDIA_OUTBOX_LIMIT = 64  # media datagrams queued for one client (~0.3 s of 5 speakers) before the oldest go
CLOSE_TIMEOUT = 1.0  # how long a closing socket waits for the client's close frame
_connection_ids = count(1)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def frame_text(message: dict[str, Any]) -> str:
    """The JSON text of one outbound frame, always valid UTF-8: a lone surrogate that client input
    carried into a reply (an unknown AppID quoted in an error, say) becomes U+FFFD instead of making
    the frame unsendable, which used to kill the connection's writer."""
    text = proto.encode(message)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


class Connection:
    """One client WebSocket: its id (the core's handle for it) and its outboxes.

    Two outboxes feed one writer task: control frames (JSON text, then maybe a close code), bounded by
    OUTBOX_LIMIT, past which the client is dropped as too slow; and media datagrams (the WebSocket
    fallback), a ring of MEDIA_OUTBOX_LIMIT where a lagging client loses its oldest voice instead.
    Control goes first, so signalling never waits behind audio.
    """

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.id: ConnId = next(_connection_ids)
        self.ws = ws
        self.closing = False  # no more frames are queued once set
        self._close_queued = False
        self._control: deque[str | int] = deque()
        self._media: deque[bytes] = deque(maxlen=MEDIA_OUTBOX_LIMIT)
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write())
        self._closer: asyncio.Future[bool] | None = None

    def send(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self._enqueue(frame_text(message))

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
            log.warning("client too slow, dropping it", extra=fields(conn=self.id))
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
        except Exception:  # a bug here must not leave a socket that nobody writes to nor closes
            log.exception("connection writer failed, closing", extra=fields(conn=self.id))
            self.closing = True
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.INTERNAL_ERROR)

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


class Connections:
    """This process's open connections by id. As the shell's ``Delivery`` it queues the core's
    messages and closes on the connection they are addressed to; one that is gone is skipped (it
    closed while the message was being decided)."""

    def __init__(self) -> None:
        self._by_id: dict[ConnId, Connection] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def add(self, conn: Connection) -> None:
        self._by_id[conn.id] = conn

    def discard(self, conn: Connection) -> None:
        self._by_id.pop(conn.id, None)

    def get(self, conn_id: ConnId) -> Connection | None:
        return self._by_id.get(conn_id)

    def send(self, conn_id: ConnId, message: dict[str, Any]) -> None:
        conn = self._by_id.get(conn_id)
        if conn is not None:
            conn.send(message)

    def close(self, conn_id: ConnId, code: int) -> None:
        conn = self._by_id.get(conn_id)
        if conn is not None:
            conn.close(code)
