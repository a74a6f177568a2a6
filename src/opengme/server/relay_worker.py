"""A UDP endpoint that carries one pure ``Relay``, and the relay worker process built on it
(``opengme serve --workers N``, issue 18).

- :class:`UdpRelay` is the whole per-packet path of a relay: a datagram in goes through
  ``Relay.handle_datagram`` and what comes back is sent at once. UDP addresses go out of its socket;
  WebSocket-fallback addresses (``("ws", connection id)``) go to ``send_ws`` (the server process
  writes them to the connection, a worker sends them back to the server process). The server process
  uses it for its in-process relay (``workers = 1``); each worker process uses one of its own.
- ICMP errors: the socket has IP_RECVERR set, so an error names the address that failed (read from
  the socket's error queue); ``Relay.address_unreachable`` then stops sending there. Kernel drops
  (the socket's ``drops`` column of ``/proc/net/udp``) are read on demand (Linux only; else 0).
- :class:`FrameLink`: the control pipe between the server process and a worker, one Unix socket with
  length-prefixed ``marshal`` frames, each a list of messages (tuples). Sends are batched: a message
  waits in a list until the event loop's next turn, so a burst of taps costs one write.
- The worker process (``python -m opengme.server.relay_worker --fd N --host H [--port P]``): binds a UDP
  socket (port P when free, else any free port), says ``("ready", port)``, then applies the control messages the server sends
  (:func:`apply`) and reports its counters, activity and uplink quality every REPORT_INTERVAL. It exits
  when the control pipe closes, so no worker outlives its server, even one killed with SIGKILL.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import marshal
import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

from opengme.core.relay import Addr, Outgoing, Relay
from opengme.logs import fields, setup_logging

log = logging.getLogger("opengme.media")

WS = "ws"  # the host part of a WebSocket-fallback address: ("ws", connection id)
SOCKET_BUFFER = 4 << 20  # bytes; bursts from many members at once fit in the kernel queue
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux's value; Python does not name it
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
REPORT_INTERVAL = 0.5  # seconds between a worker's reports (counters, activity, quality) to the server
_LENGTH = struct.Struct("!I")
Message = tuple[Any, ...]


def _deny(speaker: int, listener: int) -> bool:
    """A worker's policy for a room whose hearing rules live in the server process: no route is made
    here; the server sends the routes it computed (``routes`` messages)."""
    return False


class UdpRelay(asyncio.DatagramProtocol):
    """One UDP socket carrying one relay: datagram in, datagrams out, nothing awaited per packet."""

    def __init__(self, relay: Relay, send_ws: Callable[[bytes, Addr], None],
                 count_drop: Callable[[str], None], timed: Callable[[float], None] | None = None,
                 sample: int = 64) -> None:
        self.relay = relay
        self.send_ws = send_ws
        self.count_drop = count_drop
        self.timed = timed  # given: one datagram in ``sample`` is timed and its seconds handed there
        self.sample = sample
        self.port = 0  # known once open
        self._count = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._errors: socket.socket | None = None  # our UDP socket (a dup) for its error queue
        self._inode = 0  # our UDP socket's, to find it in /proc/net/udp
        self._drops = 0  # the kernel's drops as last read

    async def open(self, host: str, preferred: int) -> None:
        """Bind ``host:preferred`` (0: any free port; a taken preferred port falls back to a free one)."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, preferred))
        except OSError as exc:
            if not preferred:
                raise
            log.warning("UDP port taken, using a free one", extra=fields(port=preferred, error=str(exc)))
            transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
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
        self.port = sock.getsockname()[1]

    def close(self) -> None:
        self._drops = self.socket_drops()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._count += 1
        if self.timed is None or self._count % self.sample:
            self.dispatch(self.relay.handle_datagram(data, addr, time.monotonic()))
            return
        started = time.perf_counter()  # one datagram in ``sample`` is timed: the hot path stays lean
        self.dispatch(self.relay.handle_datagram(data, addr, time.monotonic()))
        self.timed(time.perf_counter() - started)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors of earlier sends (a client that went away): the error queue says where to.
        self.count_drop("send_error")
        self.drain_errors()

    def dispatch(self, out: Outgoing) -> None:
        """Send the relay's output: UDP addresses by the socket, fallback ones to ``send_ws``."""
        transport = self._transport
        for datagram, addr in out:
            if addr[0] == WS:
                self.send_ws(datagram, addr)
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
        ``drops`` column of the line with our socket's inode); the last value read once closed."""
        if self._transport is None:
            return self._drops
        inode = str(self._inode)
        try:
            for table in ("/proc/net/udp", "/proc/net/udp6"):
                with open(table, encoding="ascii") as lines:
                    for line in lines:
                        cols = line.split()
                        if len(cols) > 12 and cols[9] == inode:
                            self._drops = int(cols[12])
                            return self._drops
        except (OSError, ValueError):
            pass
        return self._drops


class FrameLink:
    """One end of a control pipe: batched sends, and the frames read one list of messages at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._pending: list[Message] = []

    @classmethod
    async def over(cls, sock: socket.socket) -> FrameLink:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    def send(self, message: Message) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(message)

    def flush(self) -> None:
        if not self._pending or self.writer.is_closing():
            self._pending.clear()
            return
        body = marshal.dumps(self._pending)
        self._pending = []
        self.writer.write(_LENGTH.pack(len(body)) + body)

    async def receive(self) -> list[Message]:
        """The next frame's messages; raises ``asyncio.IncompleteReadError`` (or ConnectionError) when
        the other end is gone."""
        size, = _LENGTH.unpack(await self.reader.readexactly(_LENGTH.size))
        messages: list[Message] = marshal.loads(await self.reader.readexactly(size))
        return messages

    def close(self) -> None:
        self.flush()
        self.writer.close()


# --- the worker process ----------------------------------------------------------------------------


class Worker:
    """A relay worker: its relay, its UDP endpoint and its control link to the server process."""

    def __init__(self, link: FrameLink) -> None:
        self.link = link
        self.relay = Relay()
        self.udp = UdpRelay(self.relay, self._send_ws, self._count_drop)
        self.send_errors = 0
        self._quality: dict[int, tuple[int, int]] = {}

    def _send_ws(self, datagram: bytes, addr: Addr) -> None:
        self.link.send(("ws", addr[1], datagram))

    def _count_drop(self, reason: str) -> None:
        self.send_errors += 1  # the endpoint's only own drop reason

    def apply(self, message: Message) -> None:
        """One control message of the server process (``opengme.server.relay_pool`` sends them)."""
        op, *args = message
        relay = self.relay
        if op == "ws":
            self.udp.dispatch(relay.handle_datagram(args[1], (WS, args[0]), time.monotonic()))
        elif op == "add":
            relay.add_member(args[0], args[1], args[2])
        elif op == "remove":
            relay.remove_member(args[0])
        elif op == "mute":
            relay.set_muted(args[0], args[1])
        elif op == "link":
            relay.link(args[0], args[1])
        elif op == "unlink":
            relay.unlink(args[0])
        elif op == "policy":  # the room's rules live in the server: it sends the routes they make
            relay.set_route_policy(args[0], _deny if args[1] else None)
        elif op == "update":
            relay.update_routes(args[0])
        elif op == "routes":
            relay.set_routes(args[0])
        elif op == "vtap":
            relay.set_voice_tap(args[0], self._voice_tap(args[0]) if args[1] else None)
        elif op == "rtap":
            relay.set_room_tap(args[0], self._room_tap(args[0]) if args[1] else None)
        elif op == "xlink":  # room sharing with a room another worker serves
            relay.set_link_tap(args[0], self._link_tap(args[0]) if args[1] else None)
        elif op == "inject":
            self.udp.dispatch(relay.inject(args[0], args[2], args[3], args[1]))
        elif op == "ping":  # everything sent before it has been applied
            self.link.send(("pong", args[0]))
        else:
            log.warning("unknown relay control message", extra=fields(op=op))

    def _voice_tap(self, tinyid: int) -> Callable[[bytes, bool], None]:
        send = self.link.send
        return lambda payload, voice: send(("vtap", tinyid, payload, voice))

    def _link_tap(self, tinyid: int) -> Callable[[bytes, bytes], None]:
        send = self.link.send
        return lambda header, payload: send(("xpkt", tinyid, header, payload))

    def _room_tap(self, room: str) -> Callable[[int, bytes, bytes, float], None]:
        send = self.link.send
        return lambda tinyid, header, payload, now: send(("rtap", room, tinyid, header, payload, now))

    def report(self) -> Message:
        """Counters, each member's activity (what the console and HAS_AUDIO read) and uplink quality."""
        relay = self.relay
        activity = []
        for tinyid in relay.member_ids():
            a = relay.activity(tinyid)
            activity.append((tinyid, a.addr, a.level, a.last_voice, a.last_packet))
        quality = [(q.tinyid, q.received, q.expected) for q in relay.take_uplink_quality()]
        return ("report", astuple(relay.counters), self.udp.socket_drops(), self.send_errors, time.process_time(),
                activity, quality)

    async def run(self, host: str, port: int) -> None:
        await self.udp.open(host, port)
        self.link.send(("ready", self.udp.port, os.getpid()))
        reporter = asyncio.create_task(self._report_forever())
        try:
            while True:
                try:
                    messages = await self.link.receive()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the server process is gone or stopping: so is this worker
                for message in messages:
                    try:
                        self.apply(message)
                    except (KeyError, ValueError) as exc:  # a member that left meanwhile, say
                        log.debug("relay control message skipped", extra=fields(op=message[0], error=str(exc)))
                    except Exception:  # the worker must outlive a bug in one message
                        log.exception("relay control message failed", extra=fields(op=message[0]))
        finally:
            reporter.cancel()
            self.udp.close()

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            self.link.send(self.report())


async def _main(fd: int, host: str, port: int) -> None:
    link = await FrameLink.over(socket.socket(fileno=fd))
    await Worker(link).run(host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="opengme.server.relay_worker")
    parser.add_argument("--fd", type=int, required=True, help="the control socket inherited from the server")
    parser.add_argument("--host", required=True, help="the address to bind the UDP socket on")
    parser.add_argument("--port", type=int, default=0, help="the UDP port to try first (0: any free one)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops the workers
    try:
        import uvloop  # as the server's own loop (opengme.server.app.run)

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover - Windows has no uvloop
        runner = asyncio.run
    runner(_main(args.fd, args.host, args.port))


if __name__ == "__main__":
    main()
