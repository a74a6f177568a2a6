"""The load test's I/O: simulated members on one asyncio loop (pure parts in ``plan``, ``pacing``, ``stats``).

Each member opens the real signalling WebSocket (``hello``, then ``enter`` with an AuthBuffer signed
with the app's key, as ``opengme join`` does), then binds its own connected UDP socket to the relay
with the real BIND (``MediaCrypto.seal_bind``) and waits for the acknowledgement. Speakers send
DATA datagrams built with the real header (``MediaHeader``) and sealed with their session key
(``MediaCrypto.seal``), paced at 50 per second each (``pacing.Pacer``); the payload has the size of
the room type's Opus frames and starts with the send time. Every member counts the DATA datagrams
forwarded to it and opens one in ``SAMPLE_EVERY`` with its key (which also proves the relay re-sealed
it) to read the send time: that is the end-to-end latency, measured on one clock. Listeners send a
KEEPALIVE every second and everyone pings the signalling every ``heartbeat_interval``, as the SDK.

``--baseline`` plays the same plan through ``baseline``'s bare forwarder (no signalling, no
cryptography on the forwarder; the members still seal and open as they do with the relay, so the load
tester's own cost is the same on both sides).
"""
from __future__ import annotations

import asyncio
import itertools
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

import aiohttp

from opengme import __version__
from opengme.authbuffer import gen_auth_buffer
from opengme.events import RoomType
from opengme.loadtest import baseline
from opengme.loadtest.pacing import Pacer
from opengme.loadtest.plan import DRAIN_S, FRAMES_PER_SECOND, Plan
from opengme.loadtest.stats import Entries, Timeline, Traffic
from opengme.protocol import signalling as proto
from opengme.protocol.media import (
    TYPE_MASK,
    Flags,
    MediaCrypto,
    MediaHeader,
    MediaPacketError,
    PacketType,
    session_id,
)

SAMPLE_EVERY: Final = 4
"""Receivers open one forwarded datagram in this many to read its send time (all are counted)."""
JOIN_CONCURRENCY: Final = 32
"""Members entering at once: a crowd arriving, not one connection storm."""
BIND_TRIES: Final = 3
BIND_INTERVAL_S: Final = 0.3  # as the SDK (sdk.media_session)
KEEPALIVE_S: Final = 1.0
REPLY_TIMEOUT_S: Final = 10.0
MAX_SENDER_KEYS: Final = 64
"""Baseline: the speakers each member keeps a key for to open their datagrams (others are counted only)."""
PROGRESS_S: Final = 0.5
_STAMP: Final = struct.Struct(">dI")  # send time (this process's monotonic clock), sender index
_DATA: Final = int(PacketType.DATA)

Progress = Callable[[str], None]


class NoServer(Exception):
    """Nothing answers at the server URL."""


class BaselineError(Exception):
    """The bare forwarder did not start or does not answer."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom the members enter: ``url``, or spread over ``urls`` (a cluster's nodes;
    each entry may be redirected to the node serving its room)."""

    url: str  # http(s) base URL
    app_id: str
    key: str  # the app's permission key: members sign their own AuthBuffers
    urls: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def servers(self) -> tuple[str, ...]:
        return self.urls or (self.url,)

    def entry_url(self, index: int) -> str:
        """Where member ``index`` starts its entry: the servers in turn."""
        servers = self.servers
        return servers[index % len(servers)]


def frame_shape(room_type: int) -> tuple[int, int]:
    """(payload bytes, samples) of one 20 ms Opus frame at the room type's bitrate and rate (GME §3.3,
    ``codec.opus.profile_for``)."""
    from opengme.codec.opus import profile_for

    profile = profile_for(room_type)
    return max(_STAMP.size, profile.bitrate // 8 // FRAMES_PER_SECOND), profile.frame_samples


class Meter:
    """Counts what members receive while a traffic phase is on, into ``traffic`` and ``timeline``."""

    def __init__(self) -> None:
        self.traffic = Traffic()
        self.timeline = Timeline(time.monotonic(), 1.0)
        self.on = False
        self._count = 0

    def start(self, now: float, interval: float) -> None:
        self.timeline = Timeline(now, interval)
        self.on = True

    def packet(self, member: Member, data: bytes) -> None:
        if not self.on:
            return
        now = time.monotonic()
        self.traffic.received += 1
        interval = self.timeline.at(now)
        interval.received += 1
        self._count += 1
        if self._count % SAMPLE_EVERY:
            return
        payload = member.open(data)
        if payload is None or len(payload) < _STAMP.size:
            return
        latency = now - _STAMP.unpack_from(payload)[0]
        self.traffic.latency.add(latency)
        interval.latency.add(latency)


class Member(asyncio.DatagramProtocol):
    """One simulated member's media endpoint (and, with the relay, its signalling connection)."""

    def __init__(self, index: int, plan: Plan, meter: Meter) -> None:
        self.index = index
        self.room = plan.room_of(index)
        self.speaks = plan.speaks(index)
        self.room_type = RoomType(plan.room_type)
        self.meter = meter
        self.crypto: MediaCrypto | None = None
        self.sid = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.heartbeat = 5.0  # the server's heartbeat_interval (hello_ok)
        self.cpu: asyncio.Future[bytes] | None = None
        # baseline only: the speakers' keys by session id, and the openers made from them
        self.keys: dict[int, bytes] = {}
        self._openers: dict[int, MediaCrypto] = {}

    # --- media ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data and data[0] & TYPE_MASK == _DATA:
            self.meter.packet(self, data)
        elif data[:1] == b"\0":
            self._control(data)
        elif not self.ready.done():
            self._acknowledged(data)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (nothing listens yet, or any more): the BIND retries or the run ends."""

    def _control(self, data: bytes) -> None:
        """The bare forwarder's answers: to a join, and to a CPU query."""
        if data == baseline.JOIN and not self.ready.done():
            self.ready.set_result(None)
        elif data.startswith(baseline.CPU) and self.cpu is not None and not self.cpu.done():
            self.cpu.set_result(data)

    def _acknowledged(self, data: bytes) -> None:
        """The relay's BIND acknowledgement makes the member ready."""
        try:
            header, _ = self.own.open(data)
        except MediaPacketError:
            return
        if header.ptype is PacketType.BIND:
            self.ready.set_result(None)

    @property
    def own(self) -> MediaCrypto:
        assert self.crypto is not None, "no session key yet"
        return self.crypto

    def open(self, data: bytes) -> bytes | None:
        """The payload of a forwarded DATA datagram: with the relay, sealed with this member's key; with
        the bare forwarder, still sealed with the speaker's (opened under its session id)."""
        try:
            if not self.keys:
                return self.own.open_payload(data)
            sid = int.from_bytes(data[8:12])
            opener = self._openers.get(sid)
            if opener is None:
                if sid not in self.keys or len(self._openers) >= MAX_SENDER_KEYS:
                    return None
                opener = self._openers[sid] = MediaCrypto.for_server(self.keys[sid])
            return opener.open_payload(data)
        except MediaPacketError:
            return None

    def send(self, datagram: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(datagram)

    def voice(self, frame: int, now: float, padding: bytes, samples: int) -> None:
        """One DATA datagram of frame ``frame`` (``samples`` per frame), stamped ``now``, as the SDK's
        uplink builds it."""
        header = MediaHeader(PacketType.DATA, self.sid, seq=frame & 0xFFFF,
                             timestamp=(frame * samples) & 0xFFFFFFFF, level=20, voice=True,
                             flags=Flags.MARKER if frame == 0 else Flags.FEC, room_type=self.room_type)
        self.send(self.own.seal(header, _STAMP.pack(now, self.index) + padding))

    def keepalive(self) -> None:
        self.send(self.own.seal(MediaHeader(PacketType.KEEPALIVE, self.sid, room_type=self.room_type), b""))

    async def bind(self, first: bytes) -> bool:
        """Send ``first`` until acknowledged (BIND_TRIES, BIND_INTERVAL_S apart, as the SDK)."""
        for _ in range(BIND_TRIES):
            self.send(first)
            try:
                await asyncio.wait_for(asyncio.shield(self.ready), BIND_INTERVAL_S)
                return True
            except TimeoutError:
                continue
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- signalling --------------------------------------------------------------------------------------


async def _request(ws: aiohttp.ClientWebSocketResponse, message: dict[str, object]) -> dict[str, object]:
    """Send one request and read up to its reply (pushes in between are skipped)."""
    await ws.send_str(proto.encode(message))
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            frame = await ws.receive()
            if frame.type is not aiohttp.WSMsgType.TEXT:
                raise Closed(f"the server closed the connection ({frame.extra or frame.type.name})")
            reply = proto.parse_server(frame.data)
            if reply.get("id") == message["id"]:
                return reply


class Closed(Exception):
    """The signalling connection ended while a reply was awaited."""


def _why(exc: Exception) -> str:
    """A failed entry's reason, worded so that members failing alike are counted together."""
    if isinstance(exc, Closed):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {REPLY_TIMEOUT_S:g} s"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return "the server refused or closed the connection"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _refusal(reply: dict[str, object]) -> str:
    return f"{reply.get('code')}: {reply.get('message')}" if reply.get("type") == "error" else str(reply.get("type"))


async def _enter(member: Member, target: Target, session: aiohttp.ClientSession, run: str,
                 entries: Entries) -> None:
    """hello → enter (following up to MAX_REDIRECTS ``redirect``s, as the SDK does) → UDP BIND;
    records the entry latency (connect to ``entered``, redirects included) or why it failed."""
    room_id, open_id = f"lt{run}r{member.room}", str(int(run) * 10000 + member.index + 10001)
    started = time.monotonic()
    url = target.entry_url(member.index)
    stage = "connect"
    try:
        for _ in range(proto.MAX_REDIRECTS + 1):
            ws = member.ws = await session.ws_connect(url.replace("http", "ws", 1) + "/v1/signal")
            stage = "hello"
            hello = await _request(ws, proto.hello(1, target.app_id, open_id, __version__))
            if hello.get("type") != "hello_ok":
                entries.fail(f"hello refused: {_refusal(hello)}")
                return
            member.heartbeat = float(cast(float, hello["heartbeat_interval"]))
            auth = gen_auth_buffer(target.app_id, room_id, open_id, target.key)
            stage = "enter"
            entered = await _request(ws, proto.enter(2, room_id, member.room_type, auth))
            if entered.get("type") != "redirect":
                break
            entries.redirected += 1
            await ws.close()
            url, stage = str(entered["url"]), "connect"
        if entered.get("type") != "entered":
            entries.fail(f"enter refused: {_refusal(entered)}")
            return
        entries.latency.append(time.monotonic() - started)
        media = cast(dict[str, object], entered["media"])
        key = proto.media_key(media)
    except (aiohttp.ClientError, OSError, Closed, ValueError, proto.ProtocolError) as exc:
        entries.fail(f"signalling ({stage}): {_why(exc)}")
        return
    member.crypto, member.sid = MediaCrypto.for_client(key), session_id(key)
    loop = asyncio.get_running_loop()
    host = urlsplit(url).hostname or "127.0.0.1"  # the relay of the node that admitted the member
    try:
        await loop.create_datagram_endpoint(lambda: member, remote_addr=(host, int(cast(int, media["udp_port"]))))
    except OSError as exc:
        entries.fail(f"UDP to {host}:{media['udp_port']}: {exc.strerror or exc}")
        return
    if await member.bind(member.own.seal_bind(member.sid, room_type=member.room_type)):
        entries.entered += 1
    else:
        entries.fail(f"no acknowledgement of BIND from the relay at {host}:{media['udp_port']}")


async def _keep_signalling(members: list[Member], interval: float) -> None:
    """Read (and drop) every member's pushes; ping each every ``interval`` (spread over it)."""
    async def one(member: Member, delay: float) -> None:
        ws = member.ws
        assert ws is not None

        async def pings() -> None:
            await asyncio.sleep(delay)
            for n in itertools.count(3):
                try:
                    await ws.send_str(proto.encode(proto.ping(n, time.time())))
                except (aiohttp.ClientError, ConnectionError):
                    return  # closed: the reader below ends too
                await asyncio.sleep(interval)

        pinger = asyncio.create_task(pings())
        try:
            async for _ in ws:
                pass
        finally:
            pinger.cancel()

    await asyncio.gather(*(one(m, interval * i / max(1, len(members))) for i, m in enumerate(members)),
                         return_exceptions=True)


CPU_FIGURES: Final = ("process_cpu_seconds_total", "opengme_relay_workers_cpu_seconds_total")
"""The server process's CPU and, with ``--workers N``, its relay worker processes' (added up)."""
FORWARDED: Final = "opengme_media_packets_forwarded_total"
SERVER_FIGURES: Final = (*CPU_FIGURES, FORWARDED)


async def _server_figures(session: aiohttp.ClientSession, urls: Iterable[str]) -> dict[str, float]:
    """The servers' CPU seconds and forwarded-packet counts from their ``/metrics`` (those they have),
    added up over the servers (a cluster's nodes)."""
    found: dict[str, float] = {}
    for url in urls:
        try:
            async with session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as response:
                text = await response.text() if response.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError):
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in SERVER_FIGURES:
                try:
                    found[name] = found.get(name, 0.0) + float(value)
                except ValueError:
                    continue
    return found


# --- the traffic phase ------------------------------------------------------------------------------


async def _traffic(members: list[Member], plan: Plan, meter: Meter, progress: Progress, label: str) -> Traffic:
    """Every speaker sends ``plan.frames`` paced frames; receivers count until DRAIN_S after the last."""
    speakers = [m for m in members if m.speaks]
    listeners = [m for m in members if not m.speaks]
    in_room: dict[int, int] = {}
    for m in members:
        in_room[m.room] = in_room.get(m.room, 0) + 1
    size, samples = frame_shape(plan.room_type)
    padding = os.urandom(size - _STAMP.size)
    start = time.monotonic() + 0.05
    pacer = Pacer(len(speakers), plan.frames, start)
    meter.start(start, max(0.1, min(1.0, plan.duration / 20)))
    traffic = meter.traffic
    cpu = time.process_time()
    next_keepalive = start
    shown = start
    while not pacer.done:
        now = time.monotonic()
        for packet in pacer.due(now):
            index, frame = pacer.speaker(packet)
            speaker = speakers[index]
            speaker.voice(frame, now, padding, samples)
            traffic.sent += 1
            traffic.expected += in_room[speaker.room] - 1
        if now >= next_keepalive:
            next_keepalive += KEEPALIVE_S
            for m in listeners:
                m.keepalive()
        if now >= shown:
            shown += PROGRESS_S
            progress(_live(label, now - start, plan.duration, traffic, meter.timeline))
        await asyncio.sleep(pacer.wait(time.monotonic()))
    await asyncio.sleep(DRAIN_S)
    meter.on = False
    traffic.tester_cpu_s = time.process_time() - cpu
    traffic.seconds = plan.frames / FRAMES_PER_SECOND
    traffic.skipped = pacer.skipped
    return traffic


def _live(label: str, elapsed: float, duration: float, traffic: Traffic, timeline: Timeline) -> str:
    """The live progress line: the last full interval's rate and latency."""
    times, rates, p50, p99 = timeline.series()
    last = len(times) - 2  # the interval in progress is partial
    rate = f"{rates[last]:,.0f}/s (p50 {p50[last]:.2f} ms, p99 {p99[last]:.2f} ms)" if last >= 0 else "…"
    return f"{label} {min(elapsed, duration):5.1f}/{duration:g} s: sent {traffic.sent:,}, " \
           f"received {traffic.received:,}, now {rate}"


# --- the two runs ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RelayResult:
    entries: Entries
    traffic: Traffic
    timeline: Timeline


def allow_descriptors(needed: int) -> None:
    """Raise the soft open-file limit towards ``needed`` (each member holds a TCP and a UDP socket),
    as far as the hard limit allows; a shell's default of 1024 would stop a run at ~500 members."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def run_relay(plan: Plan, target: Target, progress: Progress) -> RelayResult:
    """Enter every member through the signalling, run the traffic, leave. Raises NoServer when nothing
    answers at ``target.url``."""
    allow_descriptors(2 * plan.total + 256)
    meter = Meter()
    entries = Entries(plan.total)
    run = str(random.randrange(10_000, 100_000))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in target.servers:
            try:
                async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)):
                    pass
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise NoServer(str(exc)) from None
        members = [Member(i, plan, meter) for i in range(plan.total)]
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)

        async def enter(member: Member) -> None:
            async with gate:
                await _enter(member, target, session, run, entries)

        started = time.monotonic()
        joining = asyncio.gather(*(enter(m) for m in members))
        while not joining.done():
            progress(f"entering: {entries.entered} of {plan.total} in {time.monotonic() - started:.1f} s")
            await asyncio.wait([joining], timeout=PROGRESS_S)
        entries.seconds = time.monotonic() - started
        inside = [m for m in members if m.ready.done()]
        connected = [m for m in members if m.ws is not None]
        keeper = asyncio.create_task(_keep_signalling(connected, min((m.heartbeat for m in connected), default=5.0)))
        try:
            if inside:
                before = await _server_figures(session, target.servers)
                traffic = await _traffic(inside, plan, meter, progress, "relay")
                after = await _server_figures(session, target.servers)
                if CPU_FIGURES[0] in before and CPU_FIGURES[0] in after:
                    traffic.cpu_s = sum(after.get(name, 0.0) - before.get(name, 0.0) for name in CPU_FIGURES)
                if before and FORWARDED in after:  # a counter appears at its first increment
                    traffic.server_forwarded = round(after[FORWARDED] - before.get(FORWARDED, 0.0))
            else:
                traffic = meter.traffic
        finally:
            keeper.cancel()
            await _leave(members)
    return RelayResult(entries, traffic, meter.timeline)


async def _leave(members: Iterable[Member]) -> None:
    async def one(member: Member) -> None:
        member.close()
        if member.ws is not None and not member.ws.closed:
            try:
                await member.ws.send_str(proto.encode(proto.exit_(1 << 30)))
                await member.ws.close()
            except (aiohttp.ClientError, ConnectionError):
                pass

    await asyncio.gather(*(one(m) for m in members))


async def run_baseline(plan: Plan, progress: Progress) -> tuple[Traffic, Timeline]:
    """The same plan through a bare forwarder subprocess on 127.0.0.1."""
    proc = subprocess.Popen([sys.executable, "-m", "opengme.loadtest.baseline"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line.startswith("PORT "):
            raise BaselineError(f"the bare forwarder did not start ({line.strip() or 'no output'})")
        port = int(line.split()[1])
        meter = Meter()
        members = [Member(i, plan, meter) for i in range(plan.total)]
        keys = {}
        loop = asyncio.get_running_loop()
        for member in members:
            key = os.urandom(32)
            member.crypto, member.sid = MediaCrypto.for_client(key), session_id(key)
            if member.speaks:
                keys[member.sid] = key
            await loop.create_datagram_endpoint(lambda m=member: m, remote_addr=("127.0.0.1", port))  # type: ignore[misc]
        for member in members:
            member.keys = keys
            if not await member.bind(baseline.JOIN + baseline.ROOM.pack(member.room)):
                raise BaselineError("the bare forwarder does not answer on 127.0.0.1")
        probe = members[0]
        before = await _forwarder_cpu(probe)
        traffic = await _traffic(members, plan, meter, progress, "baseline")
        after = await _forwarder_cpu(probe)
        if before is not None and after is not None:
            traffic.cpu_s = after - before
        for member in members:
            member.close()
        return traffic, meter.timeline
    finally:
        proc.kill()
        proc.wait()


async def _forwarder_cpu(member: Member) -> float | None:
    """The bare forwarder's CPU seconds (its answer to a ``\\0C`` datagram), None when it does not answer."""
    member.cpu = asyncio.get_running_loop().create_future()
    for _ in range(BIND_TRIES):
        member.send(baseline.CPU)
        try:
            data = await asyncio.wait_for(asyncio.shield(member.cpu), BIND_INTERVAL_S)
        except TimeoutError:
            continue
        return float(baseline.SECONDS.unpack_from(data, len(baseline.CPU))[0])
    return None
