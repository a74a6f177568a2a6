"""The media relay of ``opengme serve`` (docs/protocol.md "Media"): a thin I/O shell over the pure
``opengme.core.relay.Relay``.

- UDP: one asyncio datagram endpoint on ``settings.host``, port ``settings.udp_port`` (0 = the HTTP
  port's number, or any free port when that one is taken). Each datagram goes through
  ``Relay.handle_datagram`` and what comes back is sent at once: no task, queue or await per packet.
- WebSocket fallback: a binary frame on the signalling socket is a datagram from the address
  ``("ws", connection id)``; datagrams for such an address go out as binary frames through the
  connection's bounded media outbox (a lagging client loses its oldest voice, counted).
- Routing: the relay keeps per-speaker route tables, rebuilt on membership and route-policy changes
  (``Relay.set_route_policy``, ``Relay.update_routes``), never per packet.
- Sessions: signalling calls ``open_session`` for every entry, switch and resume, which adds the member
  to the relay under a fresh random key; departures of any kind arrive as room events.
- ICMP errors: the socket has IP_RECVERR set, so an error names the address that failed (the
  destination of the send that caused it, read from the socket's error queue); ``Relay.address_unreachable``
  then stops sending there until that address speaks again. Without the option Linux reports nothing
  for an unconnected socket, and asyncio's ``error_received`` never says which address failed.
- Kernel drops: the socket's own ``drops`` column of ``/proc/net/udp`` (datagrams the kernel discarded
  because the receive buffer was full, e.g. during a flood) is added to the dropped counter as reason
  ``socket_buffer`` at every scrape (Linux only; elsewhere it stays 0).
- Every ``quality_interval`` seconds, each member that sent media gets a ``quality`` push with its
  uplink loss (through signalling's ``delivery``, like every push); the relay's counters are copied
  into the ``/metrics`` counters at every scrape.
- Workers (``settings.workers``): 1 runs the relay here, on the signalling event loop; 0 (one per core)
  or N >= 2 runs it in N worker processes (``opengme.server.relay_pool``), each room on one of them;
  worker i listens on ``udp_port + i`` when ``udp_port`` is set (else on any free port), and each
  member's ``entered`` names its room's worker's port.
  Either way ``Media.relay`` is a :class:`RelayPlane`: the calls captions, recording, game voice and
  the console make, whichever process forwards the packets.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from opengme.core.relay import (
    Addr,
    MemberActivity,
    Relay,
    RelayCounters,
    RoomTap,
    RoutePolicy,
    SessionIdTaken,
    UplinkQuality,
    VoiceTap,
)
from opengme.core.rooms import Member, RoomEvent
from opengme.core.signalling import CLOSE_GOING_AWAY
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.protocol.media import KEY_SIZE, MAX_DATAGRAM
from opengme.server import signalling
from opengme.server.connection import Connection
from opengme.server.relay_pool import RelayPool
from opengme.server.relay_worker import SOCKET_BUFFER as SOCKET_BUFFER  # the relay's kernel buffers (loadtest)
from opengme.server.relay_worker import WS, UdpRelay
from opengme.server.signalling import Json

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.media")

QUALITY_INTERVAL = 2.0
DROP_REASONS = ("malformed", "unknown_member", "unknown_addr", "auth", "replay", "muted", "challenge", "custom")
"""The relay's own drop counters (``RelayCounters.dropped_<reason>``); the shell adds ``oversized``
(a binary frame above MAX_DATAGRAM), ``ws_lagging`` (a fallback client's media outbox overflowed),
``ws_closed`` (for a fallback member whose socket is closing), ``send_error`` (an ICMP error of a UDP
send) and ``socket_buffer`` (the kernel's drops on the relay's socket, read at scrape time)."""
ADDRESS_EVENTS = ("challenges", "rebinds", "unreachable")
"""``RelayCounters`` fields copied into ``opengme_media_address_events_total`` by ``event``."""

RECEIVED = "opengme_media_packets_received_total"
FORWARDED = "opengme_media_packets_forwarded_total"
DROPPED = "opengme_media_packets_dropped_total"
ADDRESS = "opengme_media_address_events_total"
RELAY_SECONDS = "opengme_relay_datagram_seconds"
RELAY_SAMPLE = 64  # one UDP datagram in this many is timed for RELAY_SECONDS
RELAY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
WORKER_DEATHS = "opengme_relay_worker_deaths_total"
WORKER_RESTARTS = "opengme_relay_worker_restarts_total"
WORKER_CPU = "opengme_relay_workers_cpu_seconds_total"

MEDIA: web.AppKey[Media] = web.AppKey("opengme.media")


def setup(server: Server) -> None:
    """Create the relay, attach it to signalling, start UDP after the HTTP site, add the metrics."""
    media = Media(server)
    server.web_app[MEDIA] = media
    server.on_start.append(media.start)
    server.on_stop.append(media.stop)
    m = server.metrics
    m.describe(RECEIVED, "counter", "Media datagrams received (UDP and WebSocket fallback).")
    m.describe(FORWARDED, "counter", "Media datagrams sent to listeners.")
    m.describe(DROPPED, "counter", "Media datagrams dropped, by reason.")
    m.describe(ADDRESS, "counter", "Member address changes: challenges sent to a new address, moves after "
               "a challenge was answered, addresses given up after an ICMP error.", ("event",))
    m.describe(RELAY_SECONDS, "histogram", f"Relay processing time of one UDP datagram (decrypt, route, "
               f"encrypt, queue the copies), sampled 1 in {RELAY_SAMPLE}.", buckets=RELAY_BUCKETS)
    m.gauge("opengme_media_ws_fallback_members", "Members whose media goes over the WebSocket fallback.",
            media.ws_fallback_members)
    m.on_collect(media.sync_metrics)
    if media.pool is not None:
        pool = media.pool
        m.gauge("opengme_relay_workers", "Relay worker processes running now (--workers).", lambda: pool.live)
        m.describe(WORKER_DEATHS, "counter", "Relay worker processes that died (each is restarted).")
        m.describe(WORKER_RESTARTS, "counter", "Relay worker processes restarted after a death.")
        m.describe(WORKER_CPU, "counter", "CPU seconds the relay worker processes used (process_cpu_seconds_total "
                   "counts the signalling process only).")


def get(server: Server) -> Media:
    return server.web_app[MEDIA]


class RelayPlane(Protocol):
    """The relay as signalling, game voice, captions, recording and the console use it: the pure
    ``Relay`` itself (``workers = 1``) or the ``RelayPool`` of worker processes."""

    @property
    def counters(self) -> RelayCounters: ...

    def add_member(self, room_id: str, tinyid: int, key: bytes) -> int: ...

    def remove_member(self, tinyid: int) -> bool: ...

    def set_muted(self, tinyid: int, muted: bool) -> None: ...

    def link(self, a: int, b: int) -> None: ...

    def unlink(self, tinyid: int) -> int | None: ...

    def set_route_policy(self, room_id: str, policy: RoutePolicy | None) -> None: ...

    def update_routes(self, tinyid: int) -> None: ...

    def set_routes(self, pairs: Iterable[tuple[int, int, bool]]) -> None: ...

    def listeners(self, tinyid: int) -> list[int]: ...

    def members(self, room_id: str) -> list[int]: ...

    def set_voice_tap(self, tinyid: int, tap: VoiceTap | None) -> None: ...

    def set_room_tap(self, room_id: str, tap: RoomTap | None) -> None: ...

    def activity(self, tinyid: int) -> MemberActivity: ...

    def speakers(self, room_id: str, now: float, hold: float = 0.5) -> list[int]: ...

    def take_uplink_quality(self) -> list[UplinkQuality]: ...


def worker_count(workers: int) -> int:
    """The number of relay processes ``settings.workers`` asks for (0: one per core)."""
    return workers if workers > 0 else (os.cpu_count() or 1)


class Media:
    """The relay's sessions, its UDP endpoint and the fallback connections that sent media."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.signalling = signalling.get(server)
        settings = server.settings
        count = worker_count(settings.workers)
        self.pool: RelayPool | None = None
        self._local: Relay | None = None  # the in-process relay (workers = 1)
        self.relay: RelayPlane
        if count > 1:
            self.relay = self.pool = RelayPool(self, count, settings.host, settings.udp_port, settings.log_level,
                                               settings.log_format)
        else:
            self.relay = self._local = Relay()
        self.quality_interval = QUALITY_INTERVAL
        self.udp_port = 0  # known once started (the in-process relay's)
        self._udp: UdpRelay | None = None
        self._sessions: dict[int, Member] = {}  # by tinyid
        self._synced = RelayCounters()  # the relay counters as last copied into the metrics
        self._socket_drops = 0  # the kernel's drops on the relay sockets as last copied into the metrics
        self._send_errors = 0  # the workers' ICMP send errors as last copied into the metrics
        self._deaths = self._restarts = 0  # the pool's, as last copied into the metrics
        self._cpu = 0.0  # the workers' CPU seconds, likewise
        self._ticker: asyncio.Task[None] | None = None
        self.signalling.media = self
        self.signalling.room_listeners.append(self._on_room_event)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.pool is not None:
            await self.pool.start()
            log.info("media relay workers listening", extra=fields(workers=self.pool.live, udp_ports=self.pool.ports))
        else:
            assert self._local is not None
            preferred = self.server.settings.udp_port or (urlsplit(self.server.base_url).port or 0)
            metrics = self.server.metrics
            self._udp = UdpRelay(self._local, self.send_ws, self.count_drop,
                                 lambda seconds: metrics.observe(RELAY_SECONDS, seconds), RELAY_SAMPLE)
            await self._udp.open(self.server.settings.host, preferred)
            self.udp_port = self._udp.port
            log.info("media relay listening", extra=fields(udp_port=self.udp_port))
        self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.sync_metrics()
        if self._udp is not None:
            self._udp.close()
        if self.pool is not None:
            await self.pool.stop()

    # --- sessions (signalling's MediaPlane) -----------------------------------------------------

    def open_session(self, member: Member, muted: bool) -> Json:
        while True:  # a key whose session id another member has is drawn again (odds 1 in 2**32/members)
            key = os.urandom(KEY_SIZE)
            try:
                self.relay.add_member(f"{member.app_id}\0{member.room_id}", member.tinyid, key)
                break
            except SessionIdTaken:
                continue
        self.relay.set_muted(member.tinyid, muted)
        self._sessions[member.tinyid] = member
        port = self.pool.port_of(member.tinyid) if self.pool is not None else self.udp_port
        return proto.media_section(port, key)

    def set_muted(self, member: Member, muted: bool) -> None:
        if member.tinyid in self._sessions:
            self.relay.set_muted(member.tinyid, muted)

    def share(self, member: Member, partner: Member | None) -> None:
        """Room sharing (issue 16): the relay links the two members' voices across their rooms."""
        if member.tinyid not in self._sessions:
            return
        if partner is None:
            self.relay.unlink(member.tinyid)
        elif partner.tinyid in self._sessions:
            self.relay.link(member.tinyid, partner.tinyid)
    # --- routes (game voice's RouteSink, opengme.core.game_voice) -------------------------------

    def set_route_policy(self, app_id: str, room_id: str, policy: RoutePolicy | None) -> None:
        self.relay.set_route_policy(f"{app_id}\0{room_id}", policy)

    def update_routes(self, tinyids: Iterable[int]) -> None:
        for tinyid in tinyids:
            if tinyid in self._sessions:
                self.relay.update_routes(tinyid)

    def set_routes(self, pairs: Iterable[tuple[int, int, bool]]) -> None:
        self.relay.set_routes(pairs)

    def listeners(self, tinyid: int) -> list[int]:
        return self.relay.listeners(tinyid) if tinyid in self._sessions else []

    def ws_datagram(self, conn: Connection, data: bytes) -> None:
        if len(data) > MAX_DATAGRAM:
            self.count_drop("oversized")
            return
        if self.pool is not None:
            self.pool.ws_datagram(conn.id, data)
        elif self._local is not None and self._udp is not None:
            self._udp.dispatch(self._local.handle_datagram(data, (WS, conn.id), time.monotonic()))

    def _on_room_event(self, event: RoomEvent) -> None:
        if event.kind == "leave" and self._sessions.pop(event.member.tinyid, None) is not None:
            self.relay.remove_member(event.member.tinyid)

    # --- datagrams out --------------------------------------------------------------------------

    def send_ws(self, datagram: bytes, addr: Addr) -> None:
        """A datagram for a WebSocket-fallback address ``("ws", connection id)``: a binary frame."""
        conn = self.signalling.connections.get(int(addr[1]))
        if conn is None or conn.closing:
            self.count_drop("ws_closed")
        elif not conn.send_media(datagram):
            self.count_drop("ws_lagging")

    def worker_lost(self, tinyids: list[int]) -> None:
        """The relay worker of these members died: close their connections as a server stop does
        (1001, no ``disconnect``), so that their SDKs resume onto a live worker."""
        for tinyid in tinyids:
            member = self._sessions.get(tinyid)
            if member is not None:
                self.signalling.connections.close(member.conn, CLOSE_GOING_AWAY)

    def socket_drops(self) -> int:
        """The kernel's count of datagrams it dropped for the relay's UDP socket(s)."""
        if self.pool is not None:
            return self.pool.socket_drops()
        return self._udp.socket_drops() if self._udp is not None else self._socket_drops

    def count_drop(self, reason: str) -> None:
        self.server.metrics.inc(DROPPED, reason=reason)

    # --- periodic work --------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.quality_interval)
            try:
                self.push_quality()
            except Exception:  # the ticker must outlive any bug in one pass
                log.exception("media ticker failed")

    def push_quality(self) -> None:
        """``quality`` to every member that sent media since the previous push."""
        delivery = self.signalling.delivery
        for q in self.relay.take_uplink_quality():
            member = self._sessions.get(q.tinyid)
            if member is not None:
                delivery.send(member.conn, proto.quality(q.loss, q.received, q.expected))

    def sync_metrics(self) -> None:
        """Copy the relay's counters into the metrics registry (increments since the last copy)."""
        now, before, metrics = self.relay.counters, self._synced, self.server.metrics
        metrics.inc(RECEIVED, now.received - before.received)
        metrics.inc(FORWARDED, now.forwarded - before.forwarded)
        for reason in DROP_REASONS:
            name = f"dropped_{reason}"
            metrics.inc(DROPPED, getattr(now, name) - getattr(before, name), reason=reason)
        for event in ADDRESS_EVENTS:
            metrics.inc(ADDRESS, getattr(now, event) - getattr(before, event), event=event)
        self._synced = replace(now)
        drops = self.socket_drops()
        metrics.inc(DROPPED, max(0, drops - self._socket_drops), reason="socket_buffer")
        self._socket_drops = drops
        if self.pool is not None:
            pool = self.pool
            send_errors = pool.send_errors()
            metrics.inc(DROPPED, send_errors - self._send_errors, reason="send_error")
            metrics.inc(WORKER_DEATHS, pool.deaths - self._deaths)
            metrics.inc(WORKER_RESTARTS, pool.restarts - self._restarts)
            cpu = pool.cpu_seconds()
            metrics.inc(WORKER_CPU, max(0.0, cpu - self._cpu))
            self._send_errors, self._deaths, self._restarts, self._cpu = send_errors, pool.deaths, pool.restarts, cpu

    def ws_fallback_members(self) -> float:
        return sum(1 for tinyid in self._sessions if (self.relay.activity(tinyid).addr or ("",))[0] == WS)
