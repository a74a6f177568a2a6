"""The bare UDP forwarder ``--baseline`` measures the relay against: what a relay costs with no
signalling, no cryptography and no per-member state beyond an address (asyncio + uvloop, loopback).

Run as ``python -m opengme.loadtest.baseline``: binds 127.0.0.1 on a free port, prints ``PORT <n>``
and forwards until stdin closes. Control datagrams start with a zero byte (a media datagram never
does: its first byte carries the version bits):

- ``\\0J`` + room (u32): join that room from this address; answered with ``\\0J``;
- ``\\0C``: answered with ``\\0C`` + this process's CPU seconds (f64), so the load tester can charge
  the forwarder per forwarded packet exactly as it charges the relay.

Any other datagram is copied to every other address of its sender's room.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from typing import Final, cast

JOIN: Final = b"\0J"
CPU: Final = b"\0C"
ROOM: Final = struct.Struct(">I")
SECONDS: Final = struct.Struct(">d")


class Forwarder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.room_of: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self.rooms: dict[int, list[tuple[str, int]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport
        assert transport is not None
        if data[:1] != b"\0":
            for to in self.room_of.get(addr, ()):
                if to != addr:
                    transport.sendto(data, to)
        elif data[:2] == JOIN and len(data) == 2 + ROOM.size:
            if addr not in self.room_of:
                room = self.rooms.setdefault(ROOM.unpack_from(data, 2)[0], [])
                room.append(addr)
                self.room_of[addr] = room
            transport.sendto(JOIN, addr)
        elif data == CPU:
            transport.sendto(CPU + SECONDS.pack(time.process_time()), addr)


async def serve() -> None:
    """Forward on a socket with the relay's kernel buffers (a burst is queued, not dropped, by both)."""
    from opengme.server.media import SOCKET_BUFFER

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Forwarder, sock=sock)
    print(f"PORT {transport.get_extra_info('sockname')[1]}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # the load tester closes it (or exits)
    transport.close()


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows has no uvloop
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
