"""Several ``opengme serve`` nodes as one service (issue 18): the node registry and room placement in
a real Redis, ``redirect`` at the protocol level, SDK clients with real Opus following it, and
failover when the node serving a room is killed. Nodes are real subprocesses on loopback sharing a
real Redis (a private key prefix) and a real PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.cluster.keys import HEARTBEAT, NODE_TTL, Keys, split_url
from opengme.core.placement import NoTarget
from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.protocol import signalling as proto
from opengme.server.nodes import ClusterView, NodeInfo, Redirect
from opengme.store import App, AppStore
from support.audio import OUT_RATE, band, tone, write_wav
from support.cluster import postgres_database
from support.processes import ServeProcess, start_server
from support.redis_server import redis_prefix
from support.sdk_harness import ClientMaker, SdkClient, listen, talk, wait_for, wait_played

# --- the pure decisions -------------------------------------------------------------------------------


def _view(me: str, **members: int) -> ClusterView:
    view = ClusterView(me)
    view.update({n: NodeInfo(n, f"http://{n}:1", members=m) for n, m in members.items()})
    return view


def test_a_new_room_goes_to_the_least_loaded_live_node_and_a_burst_spreads() -> None:
    view = _view("a", a=10, b=2, c=2)
    assert view.candidate() == "b"  # least loaded, ties by name
    assert view.candidate() == "c"  # b now counts the placement: the next goes to c
    assert view.candidate() == "b"
    view.update(view.nodes)  # a heartbeat's fresh loads replace the guesses
    assert view.candidate() == "b"


def test_this_node_is_a_candidate_before_its_heartbeat_is_read_back_and_wins_ties() -> None:
    assert ClusterView("me").candidate() == "me"
    assert _view("me", other=3).candidate() == "me"
    tie = _view("b", a=1, b=1, c=4)
    assert tie.candidate() == "b"  # tied with the least loaded: no redirect needed
    assert tie.candidate() == "a"  # b counts the placement now


def test_the_claimed_owner_decides_admit_here_or_redirect() -> None:
    view = _view("a", a=0, b=0)
    assert view.decide("a") is None
    assert view.decide("b") == Redirect("b", "http://b:1")
    assert view.decide("c", "http://c:9") == Redirect("c", "http://c:9")  # not in the view yet: its hash said
    with pytest.raises(LookupError):
        view.decide("c")
    assert view.urls() == ["http://a:1", "http://b:1"]


def test_node_hashes_round_trip_and_broken_ones_are_dead() -> None:
    info = NodeInfo("n1", "http://127.0.0.1:8080", 9000, 3, 7, 1700000000.5)
    raw = {k.encode(): v.encode() for k, v in info.as_hash().items()}
    assert NodeInfo.from_hash("n1", raw) == info
    assert NodeInfo.from_hash("n1", {}) is None  # expired
    assert NodeInfo.from_hash("n1", {b"url": b"http://x", b"members": b"many"}) is None


def test_choose_refuses_no_targets() -> None:
    from opengme.core.placement import choose

    with pytest.raises(NoTarget):
        choose({})


# --- real nodes ---------------------------------------------------------------------------------------


@contextmanager
def cluster(tmp_path: Path, count: int, **settings: str) -> Iterator[tuple[list[ServeProcess], App, dict[str, str]]]:
    """``count`` nodes sharing a fresh Redis prefix and a fresh PostgreSQL database (``settings``:
    more OPENGME_* variables); the app is the ``dev`` app the first start created (in PostgreSQL, so
    every node knows it); the environment that reaches them is the third item."""
    with redis_prefix() as redis_url, postgres_database() as pg_url, ExitStack() as stack:
        env = {"OPENGME_REDIS_URL": redis_url, "OPENGME_DATABASE_URL": pg_url, "OPENGME_HEARTBEAT_INTERVAL": "1",
               "OPENGME_MEMBER_TIMEOUT": "3", **settings}
        nodes = []
        for i in range(count):
            node = start_server(tmp_path / f"n{i}", env=env)
            stack.callback(node.stop, signal.SIGKILL)
            nodes.append(node)
        time.sleep(HEARTBEAT + 0.3)  # every node has read the others' hashes back once
        store = AppStore(tmp_path / "n0", database_url=pg_url)
        try:
            app = store.list()[0]
        finally:
            store.close()
        yield nodes, app, env


def _redis(redis_url: str) -> tuple[Any, Keys]:
    import redis

    url, prefix = split_url(redis_url)
    return redis.Redis.from_url(url, decode_responses=True), Keys(prefix)


async def _ask(session: aiohttp.ClientSession, url: str, app: App, open_id: str, room_id: str,
               resume_token: str | None = None) -> tuple[dict[str, Any], dict[str, Any], aiohttp.ClientWebSocketResponse]:
    """hello + enter pipelined on a new connection: (hello_ok, the enter's answer, the socket)."""
    ws = await session.ws_connect(url.rstrip("/") + proto.SIGNAL_PATH)
    auth = b"" if resume_token else gen_auth_buffer(app.app_id, room_id, open_id, app.key)
    await ws.send_str(proto.encode(proto.hello(1, app.app_id, open_id, "test")))
    await ws.send_str(proto.encode(proto.enter(2, room_id, RoomType.FLUENCY, auth, resume_token)))
    hello = json.loads((await ws.receive(timeout=10)).data)
    answer = json.loads((await ws.receive(timeout=10)).data)
    return hello, answer, ws


async def _enter_following(session: aiohttp.ClientSession, url: str, app: App, open_id: str,
                           room_id: str) -> tuple[str, dict[str, Any], aiohttp.ClientWebSocketResponse]:
    """Enter, following one redirect: (the URL that admitted, entered, socket)."""
    _, answer, ws = await _ask(session, url, app, open_id, room_id)
    if answer["type"] == "redirect":
        await ws.close()
        url = answer["url"]
        _, answer, ws = await _ask(session, url, app, open_id, room_id)
    assert answer["type"] == "entered", answer
    return url, answer, ws


@pytest.mark.slow
def test_redirect_at_the_protocol_level_room_keys_and_a_clean_stop(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as (nodes, app, env):
        r, keys = _redis(env["OPENGME_REDIS_URL"])
        a, b = nodes
        node_ids = sorted(r.smembers(keys.nodes))
        assert len(node_ids) == 2
        by_url = {r.hget(keys.node(n), "url"): n for n in node_ids}
        assert set(by_url) == {a.url, b.url}
        assert 0 < r.pttl(keys.node(node_ids[0])) <= NODE_TTL * 1000
        assert all(int(r.hget(keys.node(n), "udp_port")) > 0 for n in node_ids)  # the relays' ports

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                hello, first, first_ws = await _ask(session, a.url, app, "10009", "r1")
                assert sorted(hello["nodes"]) == sorted([a.url, b.url])
                if first["type"] == "redirect":
                    await first_ws.close()
                    _, first, first_ws = await _ask(session, first["url"], app, "10009", "r1")
                assert first["type"] == "entered", first
                # the room is on one node (10009 stays in it); whoever asks the other is redirected there
                owner = r.get(keys.room(app.app_id, "r1"))
                owner_url = r.hget(keys.node(owner), "url")
                other_url = b.url if owner_url == a.url else a.url
                _, answer, ws = await _ask(session, other_url, app, "10002", "r1")
                assert answer == {"type": "redirect", "id": 2, "url": owner_url, "node": owner}
                await ws.close()
                async with session.get(other_url + "/metrics") as response:
                    assert re.search(r"^opengme_redirects_total [1-9]", await response.text(), re.M)
                url1, _, ws1 = await _enter_following(session, a.url, app, "10001", "r1")
                url2, entered2, ws2 = await _enter_following(session, b.url, app, "10002", "r1")
                assert url1 == url2 == owner_url
                assert sorted(m["open_id"] for m in entered2["members"]) == ["10001", "10009"]  # one room, one node
                assert r.ttl(keys.room(app.app_id, "r1")) == -1  # in use: lasting
                other = next(n for n in node_ids if n != owner)
                r.set(keys.room(app.app_id, "r3"), other)  # room r3 is served by the other node
                auth = gen_auth_buffer(app.app_id, "r3", "10001", app.key)
                await ws1.send_str(proto.encode(proto.switch(3, "r3", auth)))
                switched = await _reply(ws1, 3)
                assert switched == {"type": "redirect", "id": 3, "url": other_url, "node": other}
                await ws1.close()
                await ws2.close()
                await first_ws.close()
                await _until(lambda: r.get(keys.room(app.app_id, "r1")) is None)  # emptied: released
                _, _, ws3 = await _enter_following(session, a.url, app, "10003", "r2")
                owner2 = r.get(keys.room(app.app_id, "r2"))
                assert owner2 is not None
                owner_node = a if r.hget(keys.node(owner2), "url") == a.url else b
                assert owner_node.stop(signal.SIGTERM) == 0  # graceful: its hash and room keys go
                assert r.get(keys.room(app.app_id, "r2")) is None
                assert not r.exists(keys.node(owner2)) and owner2 not in r.smembers(keys.nodes)
                await ws3.close()

        asyncio.run(scenario())


async def _reply(ws: aiohttp.ClientWebSocketResponse, request_id: int) -> dict[str, Any]:
    """The reply to request ``request_id`` (pushes before it are skipped)."""
    while True:
        message = json.loads((await ws.receive(timeout=10)).data)
        if message.get("id") == request_id:
            return dict(message)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# --- SDK clients with real Opus -------------------------------------------------------------------------


def _sdk_enter(client: SdkClient, app: App, room_id: str) -> None:
    auth = gen_auth_buffer(app.app_id, room_id, client.open_id, app.key)
    assert client.ctx.enter_room(room_id, RoomType.FLUENCY, auth) == ErrorCode.AV_OK
    wait_for([client], lambda: bool(client.events.of(EventType.ENTER_ROOM)), timeout=15)
    assert client.events.of(EventType.ENTER_ROOM)[-1]["result"] == ErrorCode.AV_OK, client.events.events


def _node_of(client: SdkClient) -> str:
    session = client.ctx._core.session
    assert session is not None and session.room is not None
    return session.room.server_url


class Ear:
    """What a speaker played, kept as it comes: whether its last 0.2 s carry a tone."""

    def __init__(self, speaker: MemorySpeaker) -> None:
        self.speaker = speaker
        self.recent = np.zeros(0, dtype=np.int16)

    def hears(self, freq: float) -> bool:
        window = OUT_RATE // 5
        self.recent = np.concatenate([self.recent, self.speaker.take_all()])[-window:]
        return len(self.recent) == window and band(self.recent, freq) > 500

    def forget(self) -> None:
        self.speaker.take_all()
        self.recent = self.recent[:0]


@pytest.mark.slow
def test_members_entering_through_three_nodes_share_one_node_and_hear_each_other(
        tmp_path: Path, clients: ClientMaker) -> None:
    with cluster(tmp_path, 3) as (nodes, app, _):
        members = [clients(node.url, app, open_id) for node, open_id in zip(nodes, ("10001", "10002", "10003"),
                                                                               strict=True)]
        for member in members:
            _sdk_enter(member, app, "party")
        owner = _node_of(members[0])
        assert {_node_of(m) for m in members} == {owner}  # whoever they asked, one node serves the room
        wait_for(members, lambda: all(len(m.ctx.get_room().get_members()) == 3 for m in members))
        heard_b, heard_c = listen(members[1]), listen(members[2])
        talk(members[0], write_wav(tmp_path / "a.wav", tone(440, 4), OUT_RATE))
        wait_played(members, 1.5, heard_b, heard_c)
        assert Ear(heard_b).hears(440) and Ear(heard_c).hears(440)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_when_the_serving_node_dies_or_stops_members_resume_on_a_live_node_and_hear_again(
        tmp_path: Path, clients: ClientMaker, stop: signal.Signals) -> None:
    with cluster(tmp_path, 3) as (nodes, app, _):
        a = clients(nodes[0].url, app, "10001")
        b = clients(nodes[1].url, app, "10002")
        for member in (a, b):
            _sdk_enter(member, app, "squad")
        owner_url = _node_of(a)
        assert _node_of(b) == owner_url
        speaker = listen(b)
        heard = Ear(speaker)
        assert a.ctx.get_audio_ctrl().use_mic_file(write_wav(tmp_path / "a.wav", tone(440, 2), OUT_RATE),
                                                   loop=True) == ErrorCode.AV_OK
        assert a.ctx.get_audio_ctrl().enable_mic(True) == ErrorCode.AV_OK
        wait_played([a, b], 1.0, speaker)
        assert heard.hears(440)
        victim = next(node for node in nodes if node.url == owner_url)
        killed = time.monotonic()
        assert victim.stop(stop) == (-signal.SIGKILL if stop is signal.SIGKILL else 0)  # SIGTERM: drops its keys
        heard.forget()

        def back() -> bool:
            return bool(b.events.of(EventType.RECONNECT_SUCCESS)) and heard.hears(440)

        wait_for([a, b], back, timeout=20)
        gap = time.monotonic() - killed
        print(f"{stop.name} failover: speech heard again {gap:.2f} s after the serving node was stopped")
        for member in (a, b):
            assert member.events.results(EventType.RECONNECT_START) == [ErrorCode.AV_OK]
            assert member.events.results(EventType.RECONNECT_SUCCESS) == [ErrorCode.AV_OK]
        assert _node_of(a) == _node_of(b) != owner_url  # one live node serves the room now
        assert gap < 15.0


@pytest.mark.slow
def test_an_entry_refused_after_placement_leaves_no_room_key(tmp_path: Path) -> None:
    with cluster(tmp_path, 1, OPENGME_MAX_ROOMS="1") as (nodes, app, env):
        r, keys = _redis(env["OPENGME_REDIS_URL"])

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                _, entered, ws = await _ask(session, nodes[0].url, app, "10001", "first")
                assert entered["type"] == "entered"
                _, refused, ws2 = await _ask(session, nodes[0].url, app, "10002", "second")
                assert refused["type"] == "error" and refused["code"] == ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED
                await _until(lambda: r.get(keys.room(app.app_id, "second")) is None)
                assert r.get(keys.room(app.app_id, "first")) is not None
                await ws.close()
                await ws2.close()

        asyncio.run(scenario())


def test_a_redis_that_lost_its_data_gets_the_nodes_and_their_rooms_back(tmp_path: Path) -> None:
    """Redis keeps nothing on disk by default: after a restart (here: every key of the prefix
    deleted) each node registers again at its next heartbeat and names itself for its rooms again,
    so an entry through another node is still sent to the room's node instead of splitting it."""
    with cluster(tmp_path, 2) as (nodes, app, env):
        r, keys = _redis(env["OPENGME_REDIS_URL"])

        async def scenario() -> None:
            async with aiohttp.ClientSession() as session:
                url, _, ws = await _enter_following(session, nodes[0].url, app, "10001", "kept")
                owner = r.get(keys.room(app.app_id, "kept"))
                r.delete(*r.keys(f"{keys.prefix}:*"))
                await _until(lambda: r.get(keys.room(app.app_id, "kept")) == owner, timeout=5)
                assert r.exists(keys.node(owner))
                other = next(node.url for node in nodes if node.url != url)
                _, answer, ws2 = await _ask(session, other, app, "10002", "kept")
                assert answer["type"] == "redirect" and answer["url"] == url, answer
                await ws.close()
                await ws2.close()

        asyncio.run(scenario())
