"""The media relay of a real server (127.0.0.1, port 0): members enter over the signalling WebSocket,
then speak raw ``opengme.protocol.media`` datagrams over real UDP sockets or as binary WebSocket frames."""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from opengme.errors import ErrorCode
from opengme.protocol import signalling as p
from opengme.protocol.media import (
    BIND_MAGIC,
    MAX_DATAGRAM,
    Direction,
    MediaCrypto,
    MediaHeader,
    PacketType,
    session_id,
)
from opengme.server import media as media_part
from opengme.server.media import Media
from support.processes import ServeProcess
from support.signal_harness import Running, SignalClient, admin, running_server

QUIET = 0.25  # how long "nothing arrives" is watched for


class UdpPath(asyncio.DatagramProtocol):
    """A client's UDP socket on 127.0.0.1, connected to the relay."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, port: int) -> UdpPath:
        path = cls()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: path, remote_addr=("127.0.0.1", port))
        return path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(data)

    async def send(self, datagram: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram)

    async def recv(self, timeout: float) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WsPath:
    """The WebSocket fallback: datagrams as binary frames on the member's signalling socket; the
    text frames met on the way (pushes) are kept in ``texts``."""

    def __init__(self, client: SignalClient) -> None:
        self.ws = client.ws
        self.texts: list[dict[str, Any]] = []

    async def send(self, datagram: bytes) -> None:
        await self.ws.send_bytes(datagram)

    async def recv(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.ws.receive(timeout=max(0.001, deadline - time.monotonic()))
            if frame.type is aiohttp.WSMsgType.BINARY:
                return cast(bytes, frame.data)
            assert frame.type is aiohttp.WSMsgType.TEXT, frame
            self.texts.append(p.parse_server(frame.data))

    def close(self) -> None:
        pass


class Peer:
    """A member in a room with its media session: the signalling client, key, tinyid and path."""

    def __init__(self, client: SignalClient, entered: dict[str, Any], path: UdpPath | WsPath) -> None:
        self.client = client
        self.tinyid: int = entered["tinyid"]
        self.key = p.media_key(entered["media"])
        self.crypto = MediaCrypto.for_client(self.key)
        self.session = session_id(self.key)  # what our packets name, as the SDK's do
        self.path = path
        self.seq = 0

    def voice(self, payload: bytes) -> bytes:
        self.seq += 1
        header = MediaHeader(PacketType.DATA, self.session, seq=self.seq, timestamp=self.seq * 960, level=20,
                             voice=True)
        return self.crypto.seal(header, payload)

    def keepalive(self, timestamp: int = 0) -> bytes:
        return self.crypto.seal(MediaHeader(PacketType.KEEPALIVE, self.session, timestamp=timestamp), b"t")

    def answer(self, nonce: bytes) -> bytes:
        return self.crypto.seal(MediaHeader(PacketType.CHALLENGE, self.session), nonce)

    async def say(self, payload: bytes) -> None:
        await self.path.send(self.voice(payload))

    async def bind(self) -> None:
        """BIND until acknowledged, as the SDK does (3 tries, 300 ms apart); a CHALLENGE (the member
        had another address) is answered."""
        for _ in range(3):
            await self.path.send(self.crypto.seal_bind(self.session))
            try:
                header, payload = self.crypto.open(await self.path.recv(0.3))
                if header.ptype is PacketType.CHALLENGE:
                    await self.path.send(self.answer(payload))
                    header, payload = self.crypto.open(await self.path.recv(0.3))
            except TimeoutError:
                continue
            assert header.ptype is PacketType.BIND and payload == BIND_MAGIC
            assert header.direction is Direction.SERVER_TO_CLIENT and header.tinyid == self.tinyid
            return
        raise AssertionError(f"tinyid {self.tinyid}: no BIND acknowledgement")

    async def hear(self, timeout: float = 2.0) -> tuple[MediaHeader, bytes]:
        return self.crypto.open(await self.path.recv(timeout))

    async def hears_nothing(self) -> bool:
        try:
            datagram = await self.path.recv(QUIET)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected datagram {self.crypto.open(datagram)}")


class Rig:
    def __init__(self, srv: Running) -> None:
        self.srv = srv
        self.media = media_part.get(srv.server)
        self.paths: list[UdpPath] = []

    async def udp(self) -> UdpPath:
        path = await UdpPath.open(self.media.udp_port)
        self.paths.append(path)
        return path

    async def peer(self, open_id: str, room_id: str = "r1", ws: bool = False, bind: bool = True) -> Peer:
        client = await self.srv.client(open_id)
        entered = await client.enter(room_id)
        assert entered["type"] == "entered", entered
        assert entered["media"]["udp_port"] == self.media.udp_port
        peer = Peer(client, entered, WsPath(client) if ws else await self.udp())
        if bind:
            await peer.bind()
        return peer

    def counters(self) -> dict[str, int]:
        c = self.media.relay.counters
        return {name: getattr(c, name) for name in c.__dataclass_fields__}


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setattr(media_part, "QUALITY_INTERVAL", 0.3)  # 2 s in production; shorter keeps tests fast
    async with running_server(tmp_path / "data") as srv:
        rig = Rig(srv)
        try:
            yield rig
        finally:
            for path in rig.paths:
                path.close()


async def next_of(client: SignalClient, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    """The next text frame of type ``kind``, skipping pushes of other types."""
    deadline = time.monotonic() + timeout
    while True:
        message = await client.recv(max(0.001, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


# --- routing ---------------------------------------------------------------------------------------


async def test_udp_port_defaults_to_the_http_port_number(rig: Rig) -> None:
    http_port = int(rig.srv.url.rsplit(":", 1)[1])
    assert rig.media.udp_port == http_port


async def test_three_members_each_hears_the_others_with_its_own_key(rig: Rig) -> None:
    a, b, c = [await rig.peer(o) for o in ("10001", "10002", "10003")]
    assert len({a.key, b.key, c.key}) == 3
    frames = [os.urandom(60 + i) for i in range(5)]
    for frame in frames:
        await a.say(frame)
    for listener in (b, c):
        heard = [await listener.hear() for _ in frames]
        assert [payload for _, payload in heard] == frames
        assert {h.tinyid for h, _ in heard} == {a.tinyid}
        assert [h.seq for h, _ in heard] == [1, 2, 3, 4, 5]  # the speaker's media clock, end to end
    assert await a.hears_nothing()
    await c.say(b"from c")
    assert [(h.tinyid, pl) for h, pl in [await a.hear(), await b.hear()]] == [(c.tinyid, b"from c")] * 2


async def test_rooms_and_apps_are_separate(rig: Rig) -> None:
    a = await rig.peer("10001", "r1")
    other_room = await rig.peer("10002", "r2")
    other_app = rig.srv.server.store.create("second")
    client = await rig.srv.client("10003", app=other_app)
    entered = await client.enter("r1")
    same_name = Peer(client, entered, await rig.udp())
    await same_name.bind()
    await a.say(b"only for r1 of the first app")
    assert await other_room.hears_nothing() and await same_name.hears_nothing()


async def test_a_fallback_member_exchanges_with_udp_members_both_ways(rig: Rig) -> None:
    udp = await rig.peer("10001")
    other = await rig.peer("10002")
    ws = await rig.peer("10003", ws=True)
    assert rig.media.ws_fallback_members() == 1
    await ws.say(b"over the websocket")
    for listener in (udp, other):
        header, payload = await listener.hear()
        assert (header.tinyid, payload) == (ws.tinyid, b"over the websocket")
    await udp.say(b"over udp")
    header, payload = await ws.hear()
    assert (header.tinyid, payload) == (udp.tinyid, b"over udp")
    keepalive = ws.keepalive(123)
    await ws.path.send(keepalive)
    header, payload = await ws.hear()  # echoed for RTT
    assert (header.ptype, header.timestamp, payload) == (PacketType.KEEPALIVE, 123, b"t")


async def test_switching_to_udp_after_falling_back_moves_the_member(rig: Rig) -> None:
    listener = await rig.peer("10001")
    mover = await rig.peer("10002", ws=True)
    mover.path = await rig.udp()
    await mover.bind()
    assert rig.media.ws_fallback_members() == 0
    await listener.say(b"now by udp")
    assert (await mover.hear())[1] == b"now by udp"


# --- mute, exit -------------------------------------------------------------------------------------


async def test_server_mute_drops_the_members_packets_for_everyone(rig: Rig) -> None:
    a, b, c = [await rig.peer(o) for o in ("10001", "10002", "10003")]
    status, reply = await admin(rig.srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": True})
    assert status == 200 and reply["code"] == 0, reply
    before = rig.counters()["dropped_muted"]
    await a.say(b"muted")
    assert await b.hears_nothing() and await c.hears_nothing()
    assert rig.counters()["dropped_muted"] == before + 1
    await b.say(b"a still hears")
    assert (await a.hear())[1] == b"a still hears"
    await c.hear()
    await admin(rig.srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": False})
    await a.say(b"unmuted")
    assert (await b.hear())[1] == b"unmuted" and (await c.hear())[1] == b"unmuted"


async def test_a_mute_survives_reconnecting_with_a_new_key(rig: Rig) -> None:
    a = await rig.peer("10001")
    b = await rig.peer("10002")
    await admin(rig.srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": True})
    again = await rig.peer("10001")  # same openid: takes over, fresh tinyid and key
    assert again.key != a.key and again.tinyid != a.tinyid
    await again.say(b"still muted")
    assert await b.hears_nothing()


async def test_after_exit_the_members_packets_are_dropped(rig: Rig) -> None:
    a = await rig.peer("10001")
    b = await rig.peer("10002")
    ws = await rig.peer("10003", ws=True)
    await ws.client.send(p.exit_(ws.client.next_id()))
    while not any(m["type"] == "exited" for m in ws.path.texts):
        with contextlib.suppress(TimeoutError):
            await ws.path.recv(0.05)
    await a.client.send(p.exit_(a.client.next_id()))
    assert (await next_of(a.client, "exited"))["type"] == "exited"
    before = rig.counters()["dropped_unknown_member"]
    await a.say(b"gone")
    await ws.say(b"gone too")  # a stray frame after exit: dropped quietly, no error
    assert await b.hears_nothing()
    await b.say(b"nobody left to hear")
    assert await a.hears_nothing() and await ws.hears_nothing()
    assert rig.counters()["dropped_unknown_member"] == before + 2
    assert not [m for m in ws.path.texts if m["type"] == "error"]
    with pytest.raises(KeyError):
        rig.media.relay.activity(a.tinyid)


# --- hostile input ------------------------------------------------------------------------------------


async def test_garbage_forged_replayed_and_oversized_datagrams_do_no_harm(rig: Rig) -> None:
    a = await rig.peer("10001")
    b = await rig.peer("10002")
    ws = await rig.peer("10003", ws=True)
    unbound = await rig.peer("10004", bind=False)
    heard = a.voice(b"genuine")
    await a.path.send(heard)
    assert (await b.hear())[1] == b"genuine"
    await ws.hear()
    before = rig.counters()
    oversized_before = rig.srv.server.metrics.value(media_part.DROPPED, reason="oversized")
    rogue = await rig.udp()
    forged = bytearray(a.voice(b"x" * 40))
    forged[-1] ^= 1
    blobs = [os.urandom(n) for n in (0, 1, 15, 16, 31, 32, 33, 100, 1232, 1500)]
    blobs += [bytes(forged), heard, bytes(MAX_DATAGRAM + 1)]
    blobs += [bytes([0x41]) + os.urandom(7) + a.session.to_bytes(4, "big") + os.urandom(n) for n in (4, 40, 400)]
    for blob in blobs * 5:
        await rogue.send(blob)  # from an address the relay never learned
        await a.path.send(blob)  # from the member's own address
        await ws.path.send(blob)  # over the fallback
    await ws.path.send(os.urandom(MAX_DATAGRAM + 1))
    await a.path.send(heard)  # replayed
    await unbound.say(b"no BIND yet")  # genuine, but its address was never learned
    assert await b.hears_nothing()
    assert rogue.inbox.empty()  # (b waited QUIET above)
    after = rig.counters()
    assert after["received"] > before["received"] + 2 * len(blobs) * 5
    assert after["forwarded"] == before["forwarded"]
    for reason in ("dropped_malformed", "dropped_auth", "dropped_replay", "dropped_unknown_addr"):
        assert after[reason] > before[reason], reason
    oversized = sum(len(blob) > MAX_DATAGRAM for blob in blobs) * 5 + 1
    assert rig.srv.server.metrics.value(media_part.DROPPED, reason="oversized") == oversized_before + oversized
    # the server, the WebSocket and the genuine path are all still fine
    async with rig.srv.session.get(rig.srv.url + "/healthz") as r:
        assert r.status == 200
    await ws.client.send(p.ping(ws.client.next_id(), 1.0))
    await a.say(b"still works")
    assert (await b.hear())[1] == b"still works"
    assert (await ws.hear())[1] == b"still works"
    assert any(m["type"] == "pong" for m in ws.path.texts)


async def eventually(check: Any, timeout: float = 3.0) -> None:
    """Wait until ``check()`` holds (asserted), polling the loop the server runs on."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_members_downlink_cannot_be_redirected_from_another_socket(rig: Rig) -> None:
    """Issue 9 item 3: a genuine, fresh KEEPALIVE of a's (as an on-path attacker would capture and
    race) sent from another socket earns that socket one CHALLENGE it cannot read, and nothing else."""
    a, b = await rig.peer("10001"), await rig.peer("10002")
    home = rig.media.relay.activity(a.tinyid).addr
    attacker = await rig.udp()
    for t in range(3):
        await attacker.send(a.keepalive(t))
    challenge = await attacker.recv(1.0)
    header, nonce = a.crypto.open(challenge)  # (the attacker has no key: it cannot do this)
    assert header.ptype is PacketType.CHALLENGE and header.tinyid == a.tinyid and len(nonce) == 16
    for n in range(5):
        await b.say(b"for a %d" % n)
    for n in range(5):
        assert (await a.hear())[1] == b"for a %d" % n
    assert attacker.inbox.empty()  # no echo, no voice: only the one (paced) challenge
    assert rig.media.relay.activity(a.tinyid).addr == home
    attacker.close()  # the attacker's socket goes away: nothing was ever sent to it but the challenge
    await b.say(b"still home")
    assert (await a.hear())[1] == b"still home"
    assert rig.counters()["rebinds"] == 0 and rig.counters()["challenges"] == 1


async def test_nat_rebinding_recovers_after_answering_the_challenge(rig: Rig) -> None:
    """a's port changes (a NAT rebinding): its voice goes on at once, and after the challenge round
    trip b's voice reaches the new port. The old port gets nothing more."""
    a, b = await rig.peer("10001"), await rig.peer("10002")
    old = a.path
    a.path = await rig.udp()  # the same member, a new source port
    start = time.monotonic()
    await a.say(b"from the new port")
    assert (await b.hear())[1] == b"from the new port"
    header, nonce = a.crypto.open(await a.path.recv(1.0))
    assert header.ptype is PacketType.CHALLENGE
    await a.path.send(a.answer(nonce))
    header, payload = a.crypto.open(await a.path.recv(1.0))
    assert (header.ptype, payload) == (PacketType.BIND, BIND_MAGIC)
    await b.say(b"to the new port")
    assert (await a.hear())[1] == b"to the new port"
    assert time.monotonic() - start < 2.0
    assert old.inbox.empty()
    metrics = rig.srv.server.metrics
    rig.media.sync_metrics()
    assert metrics.value(media_part.ADDRESS, event="challenges") == 1
    assert metrics.value(media_part.ADDRESS, event="rebinds") == 1


async def test_the_relay_stops_sending_to_a_port_that_answers_with_icmp_errors(rig: Rig) -> None:
    a, b = await rig.peer("10001"), await rig.peer("10002")
    a.path.close()  # a's socket is gone: the kernel answers the relay's next datagram with an ICMP error
    for _ in range(3):
        await b.say(b"into the void")
        await asyncio.sleep(0.02)
    await eventually(lambda: rig.media.relay.activity(a.tinyid).addr is None)
    assert rig.counters()["unreachable"] == 1
    forwarded = rig.counters()["forwarded"]
    await b.say(b"not sent")
    await asyncio.sleep(0.05)
    assert rig.counters()["forwarded"] == forwarded  # nobody to send to
    a.path = await rig.udp()  # a comes back from a new socket: challenged, then heard again
    await a.bind()
    await b.say(b"welcome back")
    assert (await a.hear())[1] == b"welcome back"


async def test_forged_datagrams_are_dropped_before_any_crypto_and_kernel_drops_are_counted(rig: Rig) -> None:
    """Issue 9 item 2: datagrams naming a's (sequential, public) tinyid, or guessed ids, never reach
    the AEAD; a burst larger than the socket buffer shows up as ``socket_buffer`` drops."""
    a, b = await rig.peer("10001"), await rig.peer("10002")
    before = rig.counters()
    attacker = await rig.udp()
    guesses = [a.tinyid, b.tinyid, *(int.from_bytes(os.urandom(4)) for _ in range(200))]
    for tinyid in guesses:
        await attacker.send(MediaHeader(PacketType.DATA, tinyid, level=30).pack() + os.urandom(80))
    await eventually(lambda: rig.counters()["received"] >= before["received"] + len(guesses))
    after = rig.counters()
    assert after["dropped_unknown_member"] - before["dropped_unknown_member"] == len(guesses)
    assert after["dropped_auth"] == before["dropped_auth"]  # not one AEAD check
    # A burst sent while the relay cannot read (this test shares its event loop) overflows its buffer.
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        junk = MediaHeader(PacketType.DATA, a.tinyid, level=30).pack() + bytes(80)
        for _ in range(40_000):
            with contextlib.suppress(BlockingIOError):
                flood.sendto(junk, ("127.0.0.1", rig.media.udp_port))
    finally:
        flood.close()
    dropped = rig.media.socket_drops()
    assert dropped > 0
    async with rig.srv.session.get(rig.srv.url + "/metrics") as r:
        text = await r.text()
    assert f'opengme_media_packets_dropped_total{{reason="socket_buffer"}} {float(dropped)}' in text
    for _ in range(20):  # once the relay has read its way through the burst, voice flows again
        await a.say(b"still fine")
        with contextlib.suppress(TimeoutError):
            if (await b.hear(0.2))[1] == b"still fine":
                return
    raise AssertionError("no voice after the burst")


async def test_binary_frames_before_entering_are_an_error_and_the_socket_survives(rig: Rig) -> None:
    client = await rig.srv.client("10001")
    await client.ws.send_bytes(os.urandom(40))
    reply = await client.recv()
    assert reply["type"] == "error" and reply["code"] == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT
    assert (await client.ping())["type"] == "pong"


async def test_a_fallback_client_that_stops_reading_loses_voice_not_the_relay(rig: Rig) -> None:
    speaker = await rig.peer("10001")
    udp = await rig.peer("10002")
    stalled = await rig.peer("10003", ws=True)  # from here on it reads nothing
    payload = os.urandom(1200)
    for _burst in range(60):
        for _ in range(200):
            await speaker.say(payload)
        await asyncio.sleep(0.01)
        if rig.srv.server.metrics.value(media_part.DROPPED, reason="ws_lagging"):
            break
    assert rig.srv.server.metrics.value(media_part.DROPPED, reason="ws_lagging") > 0
    await speaker.say(b"the udp member is unaffected")
    while (await udp.hear())[1] != b"the udp member is unaffected":
        pass
    assert rig.media.relay.activity(stalled.tinyid).addr is not None  # still a member, still bound
    assert not stalled.client.ws.closed


# --- quality and metrics ------------------------------------------------------------------------------


async def test_quality_push_reports_the_uplink_loss(rig: Rig) -> None:
    a = await rig.peer("10001")
    b = await rig.peer("10002")
    for i in range(1, 101):
        datagram = a.voice(b"v")
        if i % 10 != 5:  # one packet in ten never leaves
            await a.path.send(datagram)
    received = expected = 0
    while expected < 101:  # the BIND (index 0) and 100 voice packets, over one or more windows
        push = await next_of(a.client, "quality")
        received += push["received"]
        expected += push["expected"]
        assert push["uplink_loss"] == pytest.approx(max(0.0, 1 - push["received"] / push["expected"]), abs=1e-4)
    assert (received, expected) == (91, 101)
    assert 0 <= (await next_of(b.client, "quality"))["uplink_loss"] < 0.01  # b sent only its BIND


async def test_metrics_show_the_media_counters(rig: Rig) -> None:
    a = await rig.peer("10001")
    b = await rig.peer("10002")
    await rig.peer("10003", ws=True)
    for _ in range(4):
        await a.say(b"counted")
    for _ in range(4):
        await b.hear()
    received = rig.media.relay.counters.received
    await a.path.send(b"junk")
    await a.path.send(b"\x41" + bytes(40))
    while rig.media.relay.counters.received < received + 2:  # both datagrams reached the relay
        await asyncio.sleep(0.005)
    rig.media.sync_metrics()
    async with rig.srv.session.get(rig.srv.url + "/metrics") as r:
        text = await r.text()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["opengme_media_packets_received_total"] >= 3 + 4 + 2  # 3 BINDs, 4 voice, 2 junk
    assert values["opengme_media_packets_forwarded_total"] >= 8  # 4 packets to 2 listeners
    assert values['opengme_media_packets_dropped_total{reason="malformed"}'] >= 1
    assert values['opengme_media_packets_dropped_total{reason="unknown_member"}'] >= 1
    assert values["opengme_media_ws_fallback_members"] == 1
    assert "# TYPE opengme_media_packets_dropped_total counter" in text


# --- connection lifecycle -----------------------------------------------------------------------------


async def test_handlers_end_at_once_when_clients_close_first(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as srv:
        clients = [await srv.member(str(10001 + i)) for i in range(4)]
        for client in clients:
            await client.ws.close()
        srv.clients.clear()
        start = time.monotonic()
    # the shutdown waits for the WebSocket handlers: none may linger after its client left
    assert time.monotonic() - start < 0.5


def test_media_is_a_part_of_the_server(tmp_path: Path) -> None:
    from opengme.config import Settings
    from opengme.server.app import build_server
    from opengme.server.signalling import get as get_signalling

    server = build_server(Settings(host="127.0.0.1", port=0, data_dir=tmp_path))
    try:
        media = media_part.get(server)
        assert isinstance(media, Media) and get_signalling(server).media is media
    finally:
        server.store.close()


async def test_the_served_process_relays_and_stops_cleanly(served: ServeProcess) -> None:
    """``opengme serve`` (uvloop, its own process): UDP on the HTTP port's number, survives a flood."""
    app = served.dev_app()
    port = int(served.url.rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as session:
        peers = []
        for open_id in ("10001", "10002"):
            client = SignalClient(await session.ws_connect(served.url.replace("http", "ws") + "/v1/signal"), app)
            assert (await client.hello(open_id))["type"] == "hello_ok"
            entered = await client.enter("r1")
            assert entered["media"]["udp_port"] == port
            peers.append(Peer(client, entered, await UdpPath.open(port)))
        a, b = peers
        for peer in peers:
            await peer.bind()
        for _ in range(300):
            await a.path.send(os.urandom(64))
        await a.say(b"through the flood")
        assert (await b.hear())[1] == b"through the flood"
        for peer in peers:
            peer.path.close()
            await peer.client.ws.close()
    assert served.stop() == 0
