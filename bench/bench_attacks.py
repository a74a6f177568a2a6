"""What one hostile client does to everyone else: legitimate voice latency and loss during attacks.

Starts a real ``opengme serve`` on 127.0.0.1 with a fresh data directory, puts two legitimate
members in a FLUENCY room (real signalling, real AuthBuffers, encrypted UDP media), and has one
send a 50 packet/s voice stream whose payload carries its send time; the other measures latency
(p50/p99) and loss. Each attack runs in its own process for ``--seconds`` after a quiet phase of the
same length, and the script prints both phases side by side:

- ``enter``: 16 sockets say hello, then send ``enter`` with a 4 KiB garbage AuthBuffer in a loop
  (issue 9 item 1: AuthBuffer crypto before authentication);
- ``forge``: one process floods UDP datagrams with garbage ciphertext that name the legitimate
  members' tinyids (public: in every downlink header and room member list) and, as often, guessed
  32-bit ids (item 2: against a server that routes uplink by tinyid each costs an AEAD check; since
  packets name a secret session id, guessing is all an attacker without the key can do);
- ``invite``: an authenticated member sends ``invite`` as fast as the server answers (item 4);
- ``halfopen``: 1,000 TCP connections that send half an HTTP request and stall (item 6); the
  script also reports whether ``/healthz`` and a new entry still work during the attack.

Only public interfaces are used (the CLI, the signalling WebSocket, the media packet format), so the
script measures any server version. Bounded: every phase has a time limit, traffic stays on loopback.

    python bench/bench_attacks.py [--attacks enter,forge,invite,halfopen] [--seconds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from opengme.authbuffer import gen_auth_buffer
from opengme.protocol import signalling as proto
from opengme.protocol.media import MediaCrypto, MediaHeader, MediaPacketError, PacketType

try:
    from opengme.protocol.media import session_id
except ImportError:  # measuring a version from before session ids (PYTHONPATH): packets name the tinyid
    session_id = None  # type: ignore[assignment]
from opengme.store import App, AppStore

ROOM = "bench"
PACKETS_PER_SECOND = 50
_STAMP = struct.Struct(">d")
_LISTENING = re.compile(r"OpenGME listening on (http://\S+)")


# --- the server ---------------------------------------------------------------------------------


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "opengme", "serve", "--port", "0", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = _LISTENING.search(proc.stdout.readline())
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit("the server did not start")


# --- a legitimate member: real signalling, encrypted UDP -------------------------------------


@dataclass
class Member:
    """One member in the room, with its signalling socket and media session."""

    open_id: str
    ws: aiohttp.ClientWebSocketResponse
    tinyid: int
    wire_id: int  # what its packets name: the session id (the tinyid before session ids)
    crypto: MediaCrypto
    sock: socket.socket
    next_id: int = 10
    texts: list[dict[str, Any]] = field(default_factory=list)


async def request(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request and return its reply (pushes before it are skipped)."""
    await ws.send_str(proto.encode(message))
    deadline = time.monotonic() + timeout
    while True:
        frame = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"connection ended: {frame.type}")
        reply: dict[str, Any] = proto.parse_server(frame.data)
        if reply.get("id") == message["id"]:
            return reply


async def join(session: aiohttp.ClientSession, url: str, app: App, open_id: str) -> Member:
    ws = await session.ws_connect(url + proto.SIGNAL_PATH)
    await request(ws, proto.hello(1, app.app_id, open_id, "bench"))
    buffer = gen_auth_buffer(app.app_id, ROOM, open_id, app.key)
    entered = await request(ws, proto.enter(2, ROOM, 1, buffer))
    if entered["type"] != "entered":
        raise RuntimeError(f"entry refused: {entered}")
    key = base64.b64decode(entered["media"]["key"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((urlsplit(url).hostname or "127.0.0.1", entered["media"]["udp_port"]))
    sock.setblocking(False)
    crypto = MediaCrypto.for_client(key)
    loop = asyncio.get_running_loop()
    wire_id = entered["tinyid"] if session_id is None else session_id(key)
    for _ in range(20):  # BIND until acknowledged
        sock.send(crypto.seal_bind(wire_id))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3)
            return Member(open_id, ws, entered["tinyid"], wire_id, crypto, sock)
    raise RuntimeError("no BIND acknowledgement")


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    sent: int = 0

    def report(self) -> str:
        if not self.latencies:
            return f"p50    -      p99    -      loss {1.0 if self.sent else 0.0:6.1%}"
        ordered = sorted(self.latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        loss = max(0.0, 1 - len(ordered) / self.sent) if self.sent else 0.0
        return f"p50 {statistics.median(ordered) * 1e3:7.1f} ms  p99 {p99 * 1e3:7.1f} ms  loss {loss:6.1%}"


async def voice(speaker: Member, listener: Member, seconds: float) -> Phase:
    """50 packets/s from ``speaker``; ``listener`` measures latency and loss (1 s grace for stragglers)."""
    phase = Phase()
    loop = asyncio.get_running_loop()

    async def listen() -> None:
        while True:
            data = await loop.sock_recv(listener.sock, 2048)
            try:
                header, payload = listener.crypto.open(data)
            except MediaPacketError:
                continue
            if header.ptype is PacketType.DATA and len(payload) >= _STAMP.size:
                phase.latencies.append(time.time() - _STAMP.unpack_from(payload)[0])

    listener_task = asyncio.create_task(listen())
    start = time.monotonic()
    seq = 0
    while time.monotonic() - start < seconds:
        payload = _STAMP.pack(time.time()) + bytes(72)
        header = MediaHeader(PacketType.DATA, speaker.wire_id, seq=seq & 0xFFFF, timestamp=seq * 320, level=30,
                             voice=True)
        with contextlib.suppress(BlockingIOError):
            speaker.sock.send(speaker.crypto.seal(header, payload))
        phase.sent += 1
        seq += 1
        await asyncio.sleep(max(0.0, start + seq / PACKETS_PER_SECOND - time.monotonic()))
    await asyncio.sleep(1.0)
    listener_task.cancel()
    return phase


# --- attacks (each in its own process, bounded by a deadline) --------------------------------


def attack_enter(url: str, app_id: str, tinyids: list[int], seconds: float) -> None:
    async def one(session: aiohttp.ClientSession, n: int, deadline: float) -> None:
        ws = await session.ws_connect(url + proto.SIGNAL_PATH)
        await request(ws, proto.hello(1, app_id, str(20000 + n), "attacker"))
        garbage = os.urandom(4096)
        i = 2
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await request(ws, proto.enter(i, ROOM, 1, garbage), timeout=5)
            i += 1

    async def run() -> None:
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one(session, n, deadline) for n in range(16)), return_exceptions=True)

    asyncio.run(run())


def attack_forge(url: str, app_id: str, tinyids: list[int], seconds: float) -> None:
    port = udp_port_of(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.monotonic() + seconds
    junk = os.urandom(80)
    sent = 0
    while time.monotonic() < deadline:
        for known in tinyids:  # each known tinyid, then as many guesses
            for wire_id in (known, int.from_bytes(os.urandom(4))):
                header = MediaHeader(PacketType.DATA, wire_id, seq=sent & 0xFFFF, timestamp=0, level=30).pack()
                with contextlib.suppress(OSError):
                    sock.sendto(header + junk, ("127.0.0.1", port))
                sent += 1
    print(f"    forge: {sent / seconds:,.0f} forged datagrams/s sent", flush=True)


def attack_invite(url: str, app_id: str, tinyids: list[int], seconds: float) -> None:
    async def run() -> None:
        store_key = os.environ["BENCH_APP_KEY"]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url + proto.SIGNAL_PATH)
            await request(ws, proto.hello(1, app_id, "30001", "attacker"))
            buffer = gen_auth_buffer(app_id, "attacker-room", "30001", store_key)
            await request(ws, proto.enter(2, "attacker-room", 1, buffer))
            deadline = time.monotonic() + seconds
            i, answered = 3, 0
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    await request(ws, proto.invite(i, "10002"), timeout=5)
                    answered += 1
                i += 1
            print(f"    invite: {answered / seconds:,.0f} invites/s answered", flush=True)

    asyncio.run(run())


def attack_halfopen(url: str, app_id: str, tinyids: list[int], seconds: float) -> None:
    parts = urlsplit(url)
    socks = []
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if time.monotonic() > deadline:
            break
        try:
            s = socket.create_connection((parts.hostname, parts.port), timeout=2)
            s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        except OSError:
            break
    print(f"    halfopen: {len(socks)} stalled connections open", flush=True)
    time.sleep(max(0.0, deadline - time.monotonic()))
    for s in socks:
        s.close()


ATTACKS = {"enter": attack_enter, "forge": attack_forge, "invite": attack_invite, "halfopen": attack_halfopen}


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def udp_port_of(url: str) -> int:
    return int(os.environ["BENCH_UDP_PORT"]) if "BENCH_UDP_PORT" in os.environ else urlsplit(url).port or 0


async def still_works(session: aiohttp.ClientSession, url: str, app: App) -> str:
    """Whether /healthz answers and a new member can enter, during the attack."""
    try:
        async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as reply:
            health = "ok" if reply.status == 200 else f"HTTP {reply.status}"
    except Exception as exc:
        health = f"fails ({type(exc).__name__})"
    try:
        started = time.monotonic()
        member = await asyncio.wait_for(join(session, url, app, "10003"), 10)
        entry = f"entry in {(time.monotonic() - started) * 1e3:.0f} ms"
        await member.ws.close()
        member.sock.close()
    except Exception as exc:
        entry = f"entry fails ({type(exc).__name__})"
    return f"/healthz {health}, {entry}"


async def main(attacks: list[str], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        store = AppStore(data)
        app = store.create("bench")
        store.close()
        proc, url = start_server(data)
        try:
            async with aiohttp.ClientSession() as session:
                a = await join(session, url, app, "10001")
                b = await join(session, url, app, "10002")
                os.environ["BENCH_APP_KEY"] = app.key
                os.environ["BENCH_UDP_PORT"] = str(a.sock.getpeername()[1])
                print(f"server {url}; members 10001 (tinyid {a.tinyid}) → 10002 (tinyid {b.tinyid}), "
                      f"{PACKETS_PER_SECOND} packets/s, {seconds:g} s per phase")
                for name in attacks:
                    quiet = await voice(a, b, seconds)
                    attacker = mp.get_context("spawn").Process(
                        target=ATTACKS[name], args=(url, app.app_id, [a.tinyid, b.tinyid], seconds))
                    attacker.start()
                    await asyncio.sleep(min(1.0, seconds / 4))
                    cpu_before, wall_before = server_cpu(proc.pid), time.monotonic()
                    during_task = asyncio.create_task(voice(a, b, seconds))
                    await asyncio.sleep(seconds / 2)
                    check = await still_works(session, url, app)
                    during = await during_task
                    cpu = (server_cpu(proc.pid) - cpu_before) / (time.monotonic() - wall_before)
                    attacker.join(seconds + 30)
                    if attacker.is_alive():
                        attacker.kill()
                    print(f"{name:9s} quiet:  {quiet.report()}")
                    print(f"{'':9s} attack: {during.report()}   (server CPU {cpu:.0%} of a core; {check})", flush=True)
                    await asyncio.sleep(1.0)
                for m in (a, b):
                    await m.ws.close()
                    m.sock.close()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated: " + ", ".join(ATTACKS))
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each quiet and attack phase")
    args = parser.parse_args()
    chosen = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
    asyncio.run(main(chosen, args.seconds))
