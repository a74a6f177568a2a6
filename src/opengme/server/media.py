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
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from opengme.core.relay import Outgoing, Relay, RelayCounters, RoutePolicy, SessionIdTaken
from opengme.core.rooms import Member, RoomEvent
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.protocol.media import KEY_SIZE, MAX_DATAGRAM
from opengme.server import signalling
from opengme.server.connection import Connection
from opengme.server.signalling import Json

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.media")

WS = "ws"  # the host part of a WebSocket-fallback address: ("ws", connection id)
QUALITY_INTERVAL = 2.0
SOCKET_BUFFER = 4 << 20  # bytes; bursts from many members at once fit in the kernel queue
DROP_REASONS = ("malformed", "unknown_member", "unknown_addr", "auth", "replay", "muted", "challenge", "custom")
"""The relay's own drop counters (``RelayCounters.dropped_<reason>``); the shell adds ``oversized``
(a binary frame above MAX_DATAGRAM), ``ws_lagging`` (a fallback client's media outbox overflowed),
``ws_closed`` (for a fallback member whose socket is closing), ``send_error`` (an ICMP error of a UDP
send) and ``socket_buffer`` (the kernel's drops on the relay's socket, read at scrape time)."""
ADDRESS_EVENTS = ("challenges", "rebinds", "unreachable")
"""``RelayCounters`` fields copied into ``opengme_media_address_events_total`` by ``event``."""
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux's value; Python does not name it
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

RECEIVED = "opengme_media_packets_received_total"
FORWARDED = "opengme_media_packets_forwarded_total"
DROPPED = "opengme_media_packets_dropped_total"
ADDRESS = "opengme_media_address_events_total"
RELAY_SECONDS = "opengme_relay_datagram_seconds"
RELAY_SAMPLE = 64  # one UDP datagram in this many is timed for RELAY_SECONDS
RELAY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)

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


def get(server: Server) -> Media:
    return server.web_app[MEDIA]


class _UdpProtocol(asyncio.DatagramProtocol):
    """Datagram in, datagrams out: the whole per-packet path of the UDP side."""

    def __init__(self, media: Media) -> None:
        self.media = media
        self._count = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._count += 1
        if self._count % RELAY_SAMPLE:
            self.media.dispatch(self.media.relay.handle_datagram(data, addr, time.monotonic()))
            return
        started = time.perf_counter()  # one datagram in RELAY_SAMPLE is timed: the hot path stays lean
        self.media.dispatch(self.media.relay.handle_datagram(data, addr, time.monotonic()))
        self.media.server.metrics.observe(RELAY_SECONDS, time.perf_counter() - started)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors of earlier sends (a client that went away): the error queue says where to.
        self.media.count_drop("send_error")
        self.media.drain_errors()


class Media:
    """The relay's sessions, its UDP endpoint and the fallback connections that sent media."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.signalling = signalling.get(server)
        self.relay = Relay()
        self.quality_interval = QUALITY_INTERVAL
        self.udp_port = 0  # known once started
        self._transport: asyncio.DatagramTransport | None = None
        self._sessions: dict[int, Member] = {}  # by tinyid
        self._synced = RelayCounters()  # the relay counters as last copied into the metrics
        self._socket_drops = 0  # the kernel's drops on our socket as last copied into the metrics
        self._errors: socket.socket | None = None  # our UDP socket (a dup) for its error queue
        self._inode = 0  # our UDP socket's, to find it in /proc/net/udp
        self._ticker: asyncio.Task[None] | None = None
        self.signalling.media = self
        self.signalling.room_listeners.append(self._on_room_event)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.server.settings
        loop = asyncio.get_running_loop()
        preferred = settings.udp_port or (urlsplit(self.server.base_url).port or 0)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(settings.host, preferred))
        except OSError as exc:
            if not preferred:
                raise
            log.warning("UDP port taken, using a free one", extra=fields(port=preferred, error=str(exc)))
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(settings.host, 0))
        self._transport = transport
        sock = transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            self._errors = sock.dup()  # asyncio's wrapper has no recvmsg; a dup shares the queue
            self._errors.setblocking(False)
        except OSError:  # not Linux: ICMP errors stay anonymous (counted, not acted on)
            self._errors = None
        self._inode = os.fstat(sock.fileno()).st_ino
        self.udp_port = sock.getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_forever())
        log.info("media relay listening", extra=fields(udp_port=self.udp_port))

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self.sync_metrics()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None

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
        return proto.media_section(self.udp_port, key)

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
        self.dispatch(self.relay.handle_datagram(data, (WS, conn.id), time.monotonic()))

    def _on_room_event(self, event: RoomEvent) -> None:
        if event.kind == "leave" and self._sessions.pop(event.member.tinyid, None) is not None:
            self.relay.remove_member(event.member.tinyid)

    # --- datagrams out --------------------------------------------------------------------------

    def dispatch(self, out: Outgoing) -> None:
        """Send the relay's output: UDP addresses by the socket, fallback ones as binary frames."""
        transport, connections = self._transport, self.signalling.connections
        for datagram, addr in out:
            if addr[0] == WS:
                conn = connections.get(addr[1])
                if conn is None or conn.closing:
                    self.count_drop("ws_closed")
                elif not conn.send_media(datagram):
                    self.count_drop("ws_lagging")
            elif transport is not None:
                transport.sendto(datagram, addr)

    def drain_errors(self) -> None:
        """Read the socket's error queue: each entry names the destination of a send that failed."""
        sock = self._errors
        if sock is None:
            return
        for _ in range(64):  # bounded: the rest waits for the next error
            try:
                _, _, _, addr = sock.recvmsg(1, 256, MSG_ERRQUEUE)
            except OSError:  # the queue is empty (BlockingIOError)
                return
            self.relay.address_unreachable((addr[0], addr[1]))

    def socket_drops(self) -> int:
        """The kernel's count of datagrams it dropped for our UDP socket (``/proc/net/udp[6]``, the
        ``drops`` column of the line with our socket's inode); 0 where that is not available."""
        if self._transport is None:
            return self._socket_drops
        inode = str(self._inode)
        try:
            for table in ("/proc/net/udp", "/proc/net/udp6"):
                with open(table, encoding="ascii") as lines:
                    for line in lines:
                        cols = line.split()
                        if len(cols) > 12 and cols[9] == inode:
                            return int(cols[12])
        except (OSError, ValueError):
            pass
        return self._socket_drops

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

    def ws_fallback_members(self) -> float:
        return sum(1 for tinyid in self._sessions if (self.relay.activity(tinyid).addr or ("",))[0] == WS)
