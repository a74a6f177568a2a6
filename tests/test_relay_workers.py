"""``opengme serve --workers 2``: the media relay in two worker processes beside the signalling
process (issue 18). Real processes throughout: the server subprocess, its workers, SDK clients with
real Opus over real UDP (or the WebSocket fallback)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.core.signalling import CLOSE_GOING_AWAY
from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.server import media as media_part
from opengme.server import relay_pool
from opengme.store import App
from support.audio import OUT_RATE, band, tone, write_wav
from support.processes import ServeProcess, start_server
from support.sdk_harness import ClientMaker, SdkClient, engine, listen, talk, wait_for
from support.signal_harness import Running, running_server
from test_server_media import Peer, UdpPath, WsPath, eventually, next_of

pytestmark = pytest.mark.slow
_STARTED = re.compile(r"relay worker (?:re)?started worker=(\d+) pid=(\d+) udp_port=(\d+)")


class Workers:
    """A ``serve --workers 2`` process and what its log says about its workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.log_path = tmp_path / "serve.log"
        self.log = self.log_path.open("w")
        self.served = start_server(tmp_path / "data", "--workers", "2", "--log-format", "text",
                                   stderr=self.log.fileno())
        self.app = self.served.dev_app()

    def started(self) -> list[tuple[int, int, int]]:
        """(slot, pid, udp port) of every worker start logged so far, in order."""
        return [(int(s), int(p), int(u)) for s, p, u in _STARTED.findall(self.log_path.read_text())]

    def pid_of_port(self, port: int) -> int:
        return next(pid for _, pid, udp in reversed(self.started()) if udp == port)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.served.url + "/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0  # a counter appears with its first count

    def close(self) -> None:
        self.served.stop()
        self.log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    try:
        yield running
    finally:
        running.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def join(served: ServeProcess, app: App, clients: ClientMaker, room: str, *open_ids: str,
         **options: Any) -> list[SdkClient]:
    made = [clients(served.url, app, o, portaudio=False, **options) for o in open_ids]
    for c in made:
        assert c.ctx.enter_room(room, RoomType.STANDARD, gen_auth_buffer(app.app_id, room, c.open_id, app.key)) \
            == ErrorCode.AV_OK
    wait_for(made, lambda: all(sorted(c.ctx.get_room().get_members()) == sorted(open_ids) for c in made), timeout=10)
    return made


def media_port(client: SdkClient) -> int:
    """The UDP port the server named in this client's last ``entered`` (its room's worker)."""
    session = client.ctx._core.session
    assert session is not None and session.room is not None and session.room.media is not None
    return int(session.room.media["udp_port"])


def hears(speaker: MemorySpeaker, freq: float) -> bool:
    return band(speaker.peek(25), freq) > 1000  # the last half second carries ``freq``


def speak(clients: list[SdkClient], tmp_path: Path, *freqs: float) -> list[MemorySpeaker]:
    """Each client says its own tone (10 s) and listens; returns their speakers."""
    speakers = [listen(c) for c in clients]
    for c, freq in zip(clients, freqs, strict=True):
        talk(c, write_wav(tmp_path / f"{c.open_id}.wav", tone(freq, 10), OUT_RATE))
    return speakers


def test_rooms_spread_over_the_workers_and_members_hear_each_other(
        workers: Workers, clients: ClientMaker, tmp_path: Path) -> None:
    assert workers.metric("opengme_relay_workers") == 2
    ports = {udp for _, _, udp in workers.started()}
    a, b = join(workers.served, workers.app, clients, "r1", "10001", "10002")
    c, d = join(workers.served, workers.app, clients, "r2", "10003", "10004")
    assert media_port(a) == media_port(b) and media_port(c) == media_port(d)  # a room lives on one worker
    assert {media_port(a), media_port(c)} == ports  # two rooms, one on each worker
    heard_a, heard_b, heard_c, heard_d = speak([a, b, c, d], tmp_path, 440, 1000, 660, 880)
    wait_for([a, b, c, d], lambda: hears(heard_b, 440) and hears(heard_a, 1000)
             and hears(heard_d, 660) and hears(heard_c, 880), timeout=10)
    assert not hears(heard_d, 440) and not hears(heard_b, 660)  # rooms stay apart
    # the workers' counters reach /metrics with their next report
    wait_for([], lambda: workers.metric("opengme_media_packets_forwarded_total") > 100, timeout=5)
    assert workers.metric("opengme_relay_workers_cpu_seconds_total") > 0


def test_a_websocket_fallback_member_talks_through_its_rooms_worker(
        workers: Workers, clients: ClientMaker, tmp_path: Path) -> None:
    ws, = join(workers.served, workers.app, clients, "mixed", "10001", media_transport="ws")
    udp = clients(workers.served.url, workers.app, "10002", portaudio=False)
    udp.ctx.enter_room("mixed", RoomType.STANDARD,
                       gen_auth_buffer(workers.app.app_id, "mixed", "10002", workers.app.key))
    wait_for([ws, udp], lambda: ws.ctx.get_room().get_members() == ["10001", "10002"], timeout=10)
    heard_ws, heard_udp = speak([ws, udp], tmp_path, 440, 1000)
    wait_for([ws, udp], lambda: hears(heard_udp, 440) and hears(heard_ws, 1000), timeout=10)
    assert "media_route: ws" in ws.ctx.get_room().get_quality_tips()


def test_a_killed_worker_is_restarted_and_its_members_resume_onto_a_live_one(
        workers: Workers, clients: ClientMaker, tmp_path: Path) -> None:
    a, b = join(workers.served, workers.app, clients, "r1", "10001", "10002")
    c, d = join(workers.served, workers.app, clients, "r2", "10003", "10004")
    heard_a, heard_b, heard_c, heard_d = speak([a, b, c, d], tmp_path, 440, 1000, 660, 880)
    everyone = [a, b, c, d]
    wait_for(everyone, lambda: hears(heard_b, 440) and hears(heard_a, 1000) and hears(heard_d, 660), timeout=10)
    victim = workers.pid_of_port(media_port(a))
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(everyone, lambda: bool(a.events.of(EventType.RECONNECT_START) and b.events.of(EventType.RECONNECT_START)))
    wait_for(everyone, lambda: bool(a.events.of(EventType.RECONNECT_SUCCESS) and b.events.of(EventType.RECONNECT_SUCCESS)),
             timeout=15)
    resumed = time.monotonic() - killed
    heard_b.take_all()
    heard_c.take_all()
    received = engine(b).counters.received
    # speech flows again: half a second of a's packets through the new worker, and the tone in b's ear
    wait_for(everyone, lambda: engine(b).counters.received > received + 25 and hears(heard_b, 440), timeout=10)
    print(f"kill -9 of a relay worker: resumed after {resumed:.2f} s, heard again after {time.monotonic() - killed:.2f} s")
    wait_for(everyone, lambda: hears(heard_c, 880), timeout=5)  # and went on in the other worker's room
    assert media_port(a) == media_port(b) != 0
    assert not c.events.of(EventType.RECONNECT_START)  # the other worker's room never noticed
    assert a.events.results(EventType.RECONNECT_SUCCESS)[0] == ErrorCode.AV_OK
    assert not a.events.of(EventType.ROOM_DISCONNECT) and a.ctx.is_room_entered()
    wait_for([], lambda: len(workers.started()) == 3, timeout=10)  # the slot got a new process
    assert not alive(victim)
    assert workers.metric("opengme_relay_workers") == 2
    assert workers.metric("opengme_relay_worker_deaths_total") == 1
    assert workers.metric("opengme_relay_worker_restarts_total") == 1
    text = workers.log_path.read_text()
    assert "relay worker died" in text and f"pid={victim}" in text


def test_members_resume_when_every_worker_died_at_once(workers: Workers, clients: ClientMaker,
                                                       tmp_path: Path) -> None:
    """No live worker to move to: the members resume once a replacement is up."""
    a, b = join(workers.served, workers.app, clients, "r1", "10001", "10002")
    _, heard_b = speak([a, b], tmp_path, 440, 1000)
    wait_for([a, b], lambda: hears(heard_b, 440), timeout=10)
    for _, pid, _ in workers.started():
        os.kill(pid, signal.SIGKILL)
    wait_for([a, b], lambda: bool(a.events.of(EventType.RECONNECT_SUCCESS) and b.events.of(EventType.RECONNECT_SUCCESS)),
             timeout=15)
    heard_b.take_all()
    wait_for([a, b], lambda: hears(heard_b, 440), timeout=10)
    assert len(workers.started()) == 4 and media_port(a) in {udp for _, _, udp in workers.started()[2:]}
    assert not a.events.of(EventType.ROOM_DISCONNECT)


def test_no_worker_outlives_its_server(workers: Workers) -> None:
    pids = [pid for _, pid, _ in workers.started()]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    assert workers.served.stop(signal.SIGTERM) == 0
    wait_for([], lambda: not any(alive(pid) for pid in pids), timeout=5)


def test_workers_exit_when_their_server_is_killed(tmp_path: Path) -> None:
    served = start_server(tmp_path / "data", "--workers", "2", "--log-format", "text", stderr=subprocess.PIPE)
    try:
        children = Path(f"/proc/{served.proc.pid}/task/{served.proc.pid}/children").read_text().split()
        assert len(children) == 2
        served.stop(signal.SIGKILL)
        wait_for([], lambda: not any(alive(int(pid)) for pid in children), timeout=5)
    finally:
        served.stop()



# --- the pool's control plane: an in-process server with two real worker processes ---------------


class PoolRig:
    """A ``workers = 2`` server in the test's loop and members speaking raw datagrams over UDP."""

    def __init__(self, srv: Running) -> None:
        self.srv = srv
        self.media = media_part.get(srv.server)
        self.paths: list[UdpPath] = []

    async def peer(self, open_id: str, room_id: str = "r1") -> Peer:
        client = await self.srv.client(open_id)
        entered = await client.enter(room_id)
        assert entered["type"] == "entered", entered
        self.paths.append(await UdpPath.open(entered["media"]["udp_port"]))
        peer = Peer(client, entered, self.paths[-1])
        await peer.bind()
        return peer

    async def settled(self) -> None:
        assert self.media.pool is not None
        await self.media.pool.settled()

    def room(self, room_id: str = "r1") -> str:
        return f"{self.srv.app.app_id}\0{room_id}"

    async def aclose(self) -> None:
        for path in self.paths:
            path.close()


@pytest.fixture
async def pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PoolRig]:
    monkeypatch.setattr(media_part, "QUALITY_INTERVAL", 0.3)  # 2 s in production
    async with running_server(tmp_path / "data", workers=2) as srv, contextlib.aclosing(PoolRig(srv)) as rig:
        yield rig


async def test_hearing_rules_kept_in_the_server_reach_the_worker(pool: PoolRig) -> None:
    """A room's RoutePolicy (game voice's teams and range) is a callable in the server process: the
    worker gets the routes it makes, and each later change (update_routes, set_routes)."""
    blocked = {(1, 3)}  # speaker 1 is not heard by 3

    def hears(speaker: int, listener: int) -> bool:
        return (speaker, listener) not in blocked

    relay, settled = pool.media.relay, pool.settled
    relay.set_route_policy(pool.room(), hears)
    a, b, c = [await pool.peer(o) for o in ("10001", "10002", "10003")]
    assert (a.tinyid, c.tinyid) == (1, 3) and relay.listeners(1) == [2]
    await settled()
    await a.say(b"one")
    assert (await b.hear())[1] == b"one"
    assert await c.hears_nothing()
    blocked.clear()
    relay.update_routes(1)
    await settled()
    await a.say(b"two")
    assert (await c.hear())[1] == b"two"
    assert (await b.hear())[1] == b"two"
    relay.set_routes([(1, 2, False)])
    await settled()
    await a.say(b"three")
    assert (await c.hear())[1] == b"three"
    assert await b.hears_nothing()
    relay.set_route_policy(pool.room(), None)  # everyone hears everyone again
    await settled()
    await c.say(b"four")
    assert (await a.hear())[1] == b"four" and (await b.hear())[1] == b"four"


async def test_taps_quality_and_activity_come_back_from_the_worker(pool: PoolRig) -> None:
    relay = pool.media.relay
    room_packets: list[tuple[int, bytes]] = []
    voice_payloads: list[bytes] = []
    relay.set_room_tap(pool.room(), lambda tinyid, header, payload, now: room_packets.append((tinyid, payload)))
    a, b = await pool.peer("10001"), await pool.peer("10002")
    relay.set_voice_tap(a.tinyid, lambda payload, voice: voice_payloads.append(payload))
    await pool.settled()
    await a.say(b"hello")
    assert (await b.hear())[1] == b"hello"
    await eventually(lambda: room_packets == [(a.tinyid, b"hello")] and voice_payloads == [b"hello"])
    quality = await next_of(a.client, "quality")  # the worker's uplink report, pushed from here
    assert quality["received"] >= 2  # the BIND and the voice
    relay.set_room_tap(pool.room(), None)
    await pool.settled()
    await a.say(b"again")
    assert (await b.hear())[1] == b"again"
    await eventually(lambda: len(voice_payloads) == 2)
    assert len(room_packets) == 1  # the room tap is off, the voice tap on
    for _ in range(100):  # a's voice goes on until the console's view (the worker's reports) says so
        await a.say(b"talking")
        if relay.activity(a.tinyid).addr is not None and relay.speakers(pool.room(), time.monotonic()) == [a.tinyid]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a is never seen speaking")
    assert relay.activity(a.tinyid).addr == a.path.transport.get_extra_info("sockname")


async def test_room_sharing_between_rooms_on_two_workers_goes_through_the_server(pool: PoolRig) -> None:
    """Each linked member's voice reaches the other room although another worker serves it: its worker
    hands the packet on, the other one seals it for its room; unlinking stops it."""
    relay = pool.media.relay
    a, c = await pool.peer("10001", "r1"), await pool.peer("10003", "r1")
    b, d = await pool.peer("10002", "r2"), await pool.peer("10004", "r2")
    assert relay.port_of(a.tinyid) != relay.port_of(b.tinyid)  # the two rooms are on two workers
    relay.link(a.tinyid, b.tinyid)
    await pool.settled()
    await a.say(b"from r1")
    assert (await c.hear())[1] == b"from r1"
    for listener in (b, d):
        header, payload = await listener.hear()
        assert payload == b"from r1" and header.tinyid == a.tinyid
    await b.say(b"from r2")
    assert (await d.hear())[1] == b"from r2"
    for listener in (a, c):
        assert (await listener.hear())[1] == b"from r2"
    await c.say(b"not linked")  # only the linked members cross
    assert (await a.hear())[1] == b"not linked"
    assert await d.hears_nothing()
    assert relay.unlink(a.tinyid) == b.tinyid
    await pool.settled()
    await a.say(b"alone again")
    assert (await c.hear())[1] == b"alone again"
    assert await d.hears_nothing() and await b.hears_nothing()


async def test_websocket_fallback_datagrams_go_to_the_rooms_worker(pool: PoolRig) -> None:
    a = await pool.peer("10001")
    client = await pool.srv.client("10002")
    entered = await client.enter("r1")
    ws = Peer(client, entered, WsPath(client))
    await ws.bind()
    await ws.say(b"over ws")
    assert (await a.hear())[1] == b"over ws"
    await a.say(b"over udp")
    assert (await ws.hear())[1] == b"over udp"


def two_free_udp_ports() -> int:
    """A port P with P and P + 1 both free for UDP on 127.0.0.1 (now)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two adjacent free UDP ports")


async def test_worker_i_listens_on_udp_port_plus_i(tmp_path: Path) -> None:
    port = two_free_udp_ports()
    async with running_server(tmp_path / "data", workers=2, udp_port=port) as srv:
        pool = media_part.get(srv.server).pool
        assert pool is not None and sorted(pool.ports) == [port, port + 1]
        client = await srv.client("10001")
        entered = await client.enter("r1")
        assert entered["media"]["udp_port"] == port  # the first room goes to worker 0


async def test_a_worker_that_stops_answering_is_killed_and_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_pool, "HANG_TIMEOUT", 1.0)  # 10 s in production
    async with running_server(tmp_path / "data", workers=2) as srv:
        pool = media_part.get(srv.server).pool
        assert pool is not None
        client = await srv.client("10001")
        entered = await client.enter("r1")
        stuck = pool.pids[pool.ports.index(entered["media"]["udp_port"])]
        os.kill(stuck, signal.SIGSTOP)
        try:
            await client.expect_closed(CLOSE_GOING_AWAY)  # told to resume, without a `disconnect`
            await eventually(lambda: pool.restarts == 1 and pool.live == 2, timeout=5)
            assert stuck not in pool.pids and not alive(stuck)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGKILL)
