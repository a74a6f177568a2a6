"""The door of the HTTP/WebSocket listener: connection caps and the header deadline (issue 9 item 6).

aiohttp reads headers for as long as a client cares to send them, and accepts every connection
until the process runs out of file descriptors. The gate wraps each connection's protocol:

- at most ``max_connections`` open connections in total and ``max_ip_connections`` from
  one IP address (0 = no cap); one over a cap is closed at once, counted in
  ``opengme_connections_refused_total{reason}`` and logged (at most once per ``LOG_EVERY`` seconds
  per reason, with how many were refused meanwhile);
- a connection must complete a request's headers within ``http_header_timeout`` of opening, and
  again within each further period while no request is being handled (a keep-alive connection idle
  that long is closed too); traffic that does not complete headers does not extend it. A WebSocket
  is past the gate once upgraded: the signalling core's ``entry_timeout`` takes over.

``GatedRunner`` is the ``web.AppRunner`` that ``serve`` (and the tests' servers) use.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from opengme.config import Settings
from opengme.logs import fields
from opengme.server.metrics import Metrics

log = logging.getLogger("opengme.server")

LOG_EVERY = 10.0  # seconds between two log lines of one kind of refusal


class Gate:
    """Open connections by address, the caps, and the throttled log of refusals."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.total = 0
        self.by_address: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()  # since the last log line, by reason
        self._logged_at: dict[str, float] = {}
        metrics.describe("opengme_connections_refused_total", "counter",
                         "TCP connections closed at once by a connection cap, or for missing the header deadline.",
                         labels=("reason",))
        metrics.gauge("opengme_connections", "Open HTTP/WebSocket connections.", lambda: self.total)

    def admit(self, address: str) -> bool:
        """Count a new connection in; False (nothing counted) when a cap refuses it."""
        s = self.settings
        if s.max_connections and self.total >= s.max_connections:
            self.refused("max_connections", address)
            return False
        if s.max_ip_connections and address and self.by_address[address] >= s.max_ip_connections:
            self.refused("max_ip_connections", address)
            return False
        self.total += 1
        if address:
            self.by_address[address] += 1
        return True

    def leave(self, address: str) -> None:
        self.total -= 1
        if address:
            self.by_address[address] -= 1
            if self.by_address[address] <= 0:
                del self.by_address[address]

    def refused(self, reason: str, address: str) -> None:
        self.metrics.inc("opengme_connections_refused_total", reason=reason)
        self._refused[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY) >= LOG_EVERY:
            log.warning("connection refused", extra=fields(reason=reason, address=address,
                                                           refused_since_last_log=self._refused[reason],
                                                           limit=getattr(self.settings, reason, None)))
            self._logged_at[reason] = now
            self._refused[reason] = 0


class GatedProtocol(asyncio.Protocol):
    """One connection: aiohttp's ``RequestHandler`` behind the gate's checks."""

    def __init__(self, inner: RequestHandler, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.address = ""
        self.admitted = False
        self._transport: asyncio.BaseTransport | None = None
        self._seen = 0  # requests whose headers had arrived at the last deadline check
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self.gate.admit(self.address):
            self._abort(transport)
            return
        self.admitted = True
        self._transport = transport
        self.inner.connection_made(transport)
        self._arm()

    @staticmethod
    def _abort(transport: asyncio.BaseTransport) -> None:
        """Drop at once (uvloop's transports are not ``asyncio.Transport`` subclasses, hence the duck typing)."""
        abort = getattr(transport, "abort", None)
        (abort or transport.close)()

    def _arm(self) -> None:
        timeout = self.gate.settings.http_header_timeout
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._deadline)

    def _deadline(self) -> None:
        """Close unless a request's headers arrived since the last check or one is being handled.
        (``_request_count``, ``_current_request`` and ``_upgraded`` are aiohttp's RequestHandler's.)"""
        inner: Any = self.inner
        if self._transport is None or inner._upgraded:
            return
        if inner._request_count > self._seen or inner._current_request is not None:
            self._seen = inner._request_count
            self._arm()
            return
        self.gate.refused("http_header_timeout", self.address)
        self._abort(self._transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None
        self.gate.leave(self.address)
        self.inner.connection_lost(exc)


class GatedServer:
    """aiohttp's ``web.Server`` as a protocol factory whose connections pass the gate."""

    def __init__(self, server: web.Server, gate: Gate) -> None:
        self._server = server
        self._gate = gate

    def __call__(self) -> GatedProtocol:
        return GatedProtocol(self._server(), self._gate)

    def __getattr__(self, name: str) -> Any:  # shutdown, connections … as aiohttp's runner uses them
        return getattr(self._server, name)


class GatedRunner(web.AppRunner):
    """``web.AppRunner`` whose listeners admit connections through ``gate``."""

    def __init__(self, app: web.Application, gate: Gate, **options: Any) -> None:
        super().__init__(app, **options)
        self._gate = gate

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GatedServer(server, self._gate)  # type: ignore[return-value]
