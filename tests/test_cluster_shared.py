"""The live records every node of a cluster agrees on (issue 18): removed members, admin nonces, who is
in which room, and admin actions sent to the node that serves the room. Two real servers in this
test's event loop on loopback share a real Redis (redis_url) and a real PostgreSQL (database_url);
the pure parts (snapshots, bus messages) are tested directly."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.gme.v20180711 import gme_client, models

from opengme.apikeys import ApiKey, ApiKeyStore
from opengme.authbuffer import gen_auth_buffer
from opengme.cluster.keys import Keys, split_url
from opengme.config import Settings
from opengme.core.rooms import Member, Room
from opengme.core.signalling import KICKED, REMOVED, Instant, Send, SignallingCore, prove
from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType
from opengme.protocol import admin as signing
from opengme.protocol import signalling as p
from opengme.protocol import tc3
from opengme.server import bus, cluster, console, shared_records
from opengme.server.actions import ACTIONS
from opengme.server.console_auth import COOKIE, CSRF_HEADER
from opengme.server.shared_records import MemberView, merge_rooms, parse_rooms, room_field, room_json, view_of
from opengme.store import App, AppStore, new_key
from support.cluster import postgres_database
from support.processes import ServeProcess, opengme_cmd, start_server
from support.redis_server import redis_prefix
from support.signal_harness import Running, SignalClient, admin, is_error, start

# --- pure parts ----------------------------------------------------------------------------------


def _room(room_id: str, *open_ids: str, app_id: str = "1400000001") -> Room:
    members = {o: Member(app_id, room_id, o, 100 + i, 1, 1000.0 + i) for i, o in enumerate(open_ids)}
    return Room(app_id, room_id, RoomType.FLUENCY, 999.0, members, muted={open_ids[0]})


def _game(member: Member) -> dict[str, Any]:
    return {"team": 1} if member.tinyid > 100 else {}


def test_room_snapshots_round_trip_and_merge_with_this_nodes_view_first() -> None:
    mine = view_of(_room("r1", "10001", "10002"), _game, "a")
    fields = [json.dumps(room_json(_room("r1", "10002", "10003"), _game, "b")).encode(),
              json.dumps(room_json(_room("r0", "20001"), _game, "b")).encode(), b"{not json", b'{"room_id": 1}']
    parsed = parse_rooms(fields)
    assert list(parsed) == fields[:2]  # the unreadable fields are left out
    theirs, other = parsed.values()
    assert theirs == view_of(_room("r1", "10002", "10003"), _game, "b") and other.room_id == "r0"
    assert theirs.members[0] == MemberView("10002", 100, 1000.0, True, {})
    merged = merge_rooms([mine, theirs, other])
    assert [v.room_id for v in merged] == ["r0", "r1"]
    assert merged[1].node == "a" and [m.open_id for m in merged[1].members] == ["10001", "10002", "10003"]
    assert merged[1].members[1] == mine.members[1]  # this node's facts win for a member both list
    assert room_field("1400000001", "a/b c") == "1400000001/a/b c"


def test_bus_messages_carry_results_and_the_owners_error_codes() -> None:
    text = bus.request_text("kick", {"room_id": "r1"}, "p:reply:x")
    assert bus.parse_request(text) == ("kick", {"room_id": "r1"}, "p:reply:x")
    for junk in ("[]", "nope", '{"op": "kick"}', '{"op": 1, "args": {}, "reply": "k"}', '{"op": "k", "args": {}, "reply": ""}'):
        assert bus.parse_request(junk) is None
    assert bus.parse_answer(bus.answer_text({"removed": 2})) == {"removed": 2}
    with pytest.raises(GmeError) as caught:
        bus.parse_answer(bus.answer_text(GmeError(ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST, "no room 'r9'")))
    assert (caught.value.code, caught.value.detail) == (ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST, "no room 'r9'")
    with pytest.raises(GmeError) as caught:
        bus.parse_answer('{"code": 999999, "detail": "from a newer node"}')
    assert caught.value.code is ErrorCode.AV_ERR_SERVER_FAILED


def test_the_core_tells_removals_and_refuses_a_resume_another_node_recorded() -> None:
    """The core's hooks, without sockets: a removal listener (node A) and a proof completed with the
    cluster's record (node B, which never saw the kick)."""
    now = Instant(1_700_000_000.0, 100.0)
    app = App("1400000001", new_key(), "test", created_at=now.wall, updated_at=now.wall, voice=True, ptt=True, stt=True,
              arrears=False, string_openid=False)
    node_a, node_b = SignallingCore(Settings()), SignallingCore(Settings())
    removed: list[tuple[str, float]] = []
    node_a.removal_listeners.append(lambda member, at: removed.append((member.open_id, at)))

    def enter(core: SignallingCore, conn: int, token: str | None, removed_at: float | None = None) -> dict[str, Any]:
        core.connected(conn, now)
        hello = p.hello(1, app.app_id, "10001", "0.1.0")
        core.receive(conn, hello, now, prove(core.begin(conn, hello, now), lambda _: app))  # type: ignore[arg-type]
        auth = b"" if token else gen_auth_buffer(app.app_id, "r1", "10001", app.key, now=now.wall)
        message = p.enter(2, "r1", 1, auth, token)
        proof = prove(core.begin(conn, message, now), lambda _: app)  # type: ignore[arg-type]
        output = core.receive(conn, message, now, dataclasses.replace(proof, removed_at=removed_at))
        [answer] = [a.message for a in output.actions if isinstance(a, Send) and a.message.get("id") == 2]
        return answer

    token = enter(node_a, 1, None)["resume_token"]
    node_a.kick(app.app_id, "r1", "10001", KICKED, now)
    assert removed == [("10001", now.wall)]
    refused = enter(node_b, 1, token, removed_at=now.wall)
    assert (refused["type"], refused["code"], refused["message"]) == ("error", ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)
    assert enter(node_b, 2, token, removed_at=now.wall - 3600)["type"] == "entered"  # removed before the token


# --- two nodes -----------------------------------------------------------------------------------


@dataclass
class Pair:
    a: Running
    b: Running
    redis: Any
    keys: Keys
    settings: Callable[[Path], Settings]

    def node_id(self, srv: Running) -> str:
        link = cluster.get(srv.server)
        assert link is not None
        return link.node_id

    async def register(self, *nodes: Running) -> None:
        """What the node registry (server/nodes.py) keeps: each node's hash, alive while it exists."""
        for srv in nodes:
            await self.redis.hset(self.keys.node(self.node_id(srv)), mapping={"url": srv.url, "started": 0})

    async def place(self, room_id: str, srv: Running) -> None:
        """What room placement writes: the node that serves the room."""
        await self.redis.set(self.keys.room(srv.app.app_id, room_id), self.node_id(srv))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    with redis_prefix() as redis_url, postgres_database() as database_url:
        url, prefix = split_url(redis_url)
        client = redis.asyncio.Redis.from_url(url)

        def settings(data_dir: Path) -> Settings:
            return Settings(host="127.0.0.1", port=0, data_dir=data_dir, redis_url=redis_url,
                            database_url=database_url)

        async with aiohttp.ClientSession() as session:
            a = await start(settings(tmp_path / "a"), session)
            b = await start(settings(tmp_path / "b"), session, app=a.app)
            pair = Pair(a, b, client, Keys(prefix), settings)
            await pair.register(a, b)
            try:
                yield pair
            finally:
                for srv in (pair.a, pair.b):
                    for c in srv.clients:
                        await c.ws.close()
                    await srv.stop()
                await client.aclose()


async def _eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll an async check until it returns something truthy (snapshots refresh every second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


async def _released(pair: Pair, room_key: str) -> bool:
    return await pair.redis.get(room_key) is None


async def _tc3(srv: Running, key: ApiKey, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """An API 3.0 call through Tencent Cloud's own SDK, pointed at ``srv`` (the SDK blocks: a thread)."""
    http = HttpProfile(protocol="http", endpoint=srv.url.removeprefix("http://"), reqTimeout=10)
    gme = gme_client.GmeClient(credential.Credential(key.secret_id, key.secret_key), "ap-guangzhou",
                               ClientProfile(httpProfile=http))
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params))
    response = await asyncio.to_thread(getattr(gme, action), request)
    data: dict[str, Any] = json.loads(response.to_json_string())
    return data


def _api_key(srv: Running) -> ApiKey:
    keys = ApiKeyStore(srv.server.settings.data_dir, srv.server.settings.database_url)
    try:
        return keys.create("cluster test")
    finally:
        keys.close()


async def _after_admin_push(member: SignalClient, kind: str) -> dict[str, Any]:
    """The next push of ``kind`` the member gets (skipping members pushes)."""
    while True:
        message = await member.recv()
        if message["type"] == kind:
            return message


async def test_a_room_on_node_a_is_listed_and_acted_on_through_node_b(pair: Pair) -> None:
    a, b = pair.a, pair.b
    one, two = await a.member("10001", room_id="r1"), await a.member("10002", room_id="r1")
    await one.recv()  # 10002 entered
    await pair.place("r1", a)

    async def listed() -> Any:
        status, reply = await admin(b, "GET", "/v1/admin/rooms")
        return reply["rooms"] if status == 200 else None

    assert await _eventually(listed) == [{"room_id": "r1", "room_type": 1, "members": 2}]
    status, info = await admin(b, "GET", "/v1/admin/rooms/r1")
    assert status == 200 and [m["open_id"] for m in info["members"]] == ["10001", "10002"]
    assert all(isinstance(m["tinyid"], int) and m["muted"] is False for m in info["members"])
    status, stays = await admin(b, "GET", "/v1/admin/inout?room_id=r1&open_id=10001")
    assert status == 200 and stays["in_out"][-1]["end"] is None  # online on node A

    # Mute and unmute through B's admin API: the member on A is told.
    status, reply = await admin(b, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10002", "nobody"], "muted": True})
    assert status == 200 and reply["results"] == [{"open_id": "10002", "code": 0},
                                                   {"open_id": "nobody", "code": ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST}]
    assert (await _after_admin_push(two, "mute"))["muted"] is True
    assert a.server.web_app[shared_records.SHARED_RECORDS] is not None
    assert await _eventually(lambda: _muted_on(b, "10002"))  # B's listing shows A's mute

    # The API 3.0 on B: the room's users, an unmute, a kick.
    key = _api_key(b)
    biz = int(a.app.app_id)
    described = await _tc3(b, key, "DescribeRoomInfo", {"SdkAppId": biz, "StrRoomIds": ["r1"]})
    assert described["RoomUsers"] == [{"RoomId": 0, "StrRoomId": "r1", "Uins": [10001, 10002], "StrUins": []}]
    unmuted = await _tc3(b, key, "ModifyUserMicStatus", {"BizId": biz, "RoomId": "r1",
                                                         "Users": [{"StrUid": "10002", "EnableMic": 2}]})
    assert unmuted["Result"] == 0, unmuted
    assert (await _after_admin_push(two, "mute"))["muted"] is False
    kicked = await _tc3(b, key, "DeleteRoomMember", {"BizId": biz, "RoomId": "r1", "DeleteType": 2, "StrUids": ["10002"]})
    assert kicked["DeleteResult"] == {"Code": 0, "ErrorMsg": ""}
    gone = await _after_admin_push(two, "disconnect")
    assert gone["code"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION

    # The signed admin API's kick on B: the last member is out too.
    status, reply = await admin(b, "POST", "/v1/admin/rooms/r1/kick", {"open_ids": ["10001"], "reason": "cheating"})
    assert (status, reply["results"]) == (200, [{"open_id": "10001", "code": 0}])
    out = await _after_admin_push(one, "disconnect")
    assert out["code"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION and "cheating" in out["reason"]

    # The room is gone: B answers as A would (10009), whether the room map still names A or not.
    status, reply = await admin(b, "POST", "/v1/admin/rooms/r1/kick", {"open_ids": ["10001"]})
    assert (status, reply["code"]) == (404, ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST)
    await pair.redis.delete(pair.keys.room(a.app.app_id, "r1"))
    status, reply = await admin(b, "POST", "/v1/admin/rooms/r1/dissolve")
    assert (status, reply["code"]) == (404, ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST)


async def _muted_on(srv: Running, open_id: str) -> bool:
    status, info = await admin(srv, "GET", "/v1/admin/rooms/r1")
    return status == 200 and any(m["open_id"] == open_id and m["muted"] for m in info["members"])


async def test_the_console_on_node_b_lists_and_dissolves_node_as_rooms(pair: Pair) -> None:
    a, b = pair.a, pair.b
    member = await a.member("10001", room_id="lobby")
    await pair.place("lobby", a)
    token = console.get(a.server).first_token  # the operator tokens are shared (database_url)
    assert token is not None
    headers = {"Origin": b.url}
    async with b.session.post(b.url + "/console/api/login", json={"token": token}, headers=headers) as reply:
        headers |= {CSRF_HEADER: (await reply.json())["csrf"], "Cookie": f"{COOKIE}={reply.cookies[COOKIE].value}"}

    async def rooms() -> Any:
        async with b.session.get(b.url + "/console/api/rooms", headers=headers) as reply:
            listed = await reply.json()
        return listed if listed["rooms"] else None

    listed = await _eventually(rooms)
    assert (listed["rooms_total"], listed["members_total"]) == (1, 1)
    room = listed["rooms"][0]
    assert (room["room_id"], room["node"], room["members"][0]["open_id"]) == ("lobby", pair.node_id(a), "10001")
    async with b.session.get(b.url + "/console/api/apps", headers=headers) as reply:
        usage = (await reply.json())["apps"][0]["usage"]
    assert (usage["rooms"], usage["members"]) == (1, 1)
    body = {"app_id": a.app.app_id, "room_id": "lobby", "open_id": "10001", "muted": True}
    async with b.session.post(b.url + "/console/api/mute", json=body, headers=headers) as reply:
        assert (await reply.json())["code"] == 0
    assert (await _after_admin_push(member, "mute"))["muted"] is True
    async with b.session.post(b.url + "/console/api/dissolve", json={"app_id": a.app.app_id, "room_id": "lobby"},
                              headers=headers) as reply:
        assert await reply.json() == {"code": 0, "removed": 1}
    assert (await _after_admin_push(member, "disconnect"))["code"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION


async def test_a_kicked_members_resume_token_is_refused_on_every_node_and_after_a_restart(pair: Pair) -> None:
    a, b = pair.a, pair.b
    kicked, kept = await a.client("10001"), await a.client("10002")
    token = (await kicked.enter("r1"))["resume_token"]
    kept_token = (await kept.enter("r1"))["resume_token"]
    status, _ = await admin(a, "POST", "/v1/admin/rooms/r1/kick", {"open_ids": ["10001"]})
    assert status == 200
    back = await b.client("10001")
    assert is_error(await back.enter("r1", auth=b"", resume_token=token), ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)
    # A member that was not removed resumes on B with its token alone (the check is the record, not the node).
    await kept.ws.close()
    room_key = pair.keys.room(a.app.app_id, "r1")
    assert await _eventually(lambda: _released(pair, room_key))  # r1 emptied on A: its placement is gone
    moved = await b.client("10002")
    assert (await moved.enter("r1", auth=b"", resume_token=kept_token))["type"] == "entered"
    # Node A restarts (a new node id, an empty memory): the record is still in Redis.
    data_dir = a.server.settings.data_dir
    for c in a.clients:
        await c.ws.close()
    await a.stop()
    pair.a = await start(pair.settings(data_dir), a.session, app=a.app)
    again = await pair.a.client("10001")
    assert is_error(await again.enter("r1", auth=b"", resume_token=token), ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)
    # A fresh AuthBuffer still lets it in: on B, which serves r1 now (10002 is there), so A redirects it.
    assert await again.enter("r1") == {"type": "redirect", "id": 3, "url": b.url, "node": pair.node_id(b)}
    ttl = await pair.redis.ttl(pair.keys.removed(a.app.app_id, "10001", "r1"))
    assert 0 < ttl <= a.server.settings.reconnect_give_up


async def test_an_admin_nonce_used_on_one_node_is_refused_on_the_other(pair: Pair) -> None:
    a, b = pair.a, pair.b
    path = "/v1/admin/rooms"
    headers = signing.signed_headers(a.app.app_id, a.app.key, "GET", path)
    async with a.session.get(a.url + path, headers=headers) as reply:
        assert reply.status == 200
    async with b.session.get(b.url + path, headers=headers) as reply:
        refused = await reply.json()
        assert reply.status == 401 and refused["code"] == ErrorCode.AV_ERR_AUTH_FIALD
        assert "already used" in refused["message"]
    nonce = headers[signing.HEADER_NONCE]
    ttl = await pair.redis.ttl(pair.keys.nonce(a.app.app_id, nonce))
    assert 0 < ttl <= 2 * a.server.settings.admin_max_skew
    assert (await admin(b, "GET", path))[0] == 200  # a fresh nonce passes


async def test_an_api3_request_replayed_to_another_node_gets_the_first_answer_and_is_not_carried_out(
        pair: Pair) -> None:
    a, b = pair.a, pair.b
    await a.member("10001", room_id="r2")
    await pair.place("r2", a)
    key = _api_key(a)
    body = json.dumps({"BizId": int(a.app.app_id), "RoomId": "r2", "DeleteType": 2, "StrUids": ["10001"]}).encode()
    host = a.url.removeprefix("http://")  # behind one public address every node sees the same Host
    ts = int(time.time())
    headers = {"Content-Type": "application/json", "Host": host, "X-TC-Action": "DeleteRoomMember",
               "X-TC-Version": "2018-07-11", "X-TC-Timestamp": str(ts), "X-TC-Region": "ap-guangzhou",
               "Authorization": tc3.authorization(key.secret_id, key.secret_key, ts, host, body)}

    async def send(srv: Running) -> dict[str, Any]:
        async with srv.session.post(srv.url + "/", data=body, headers=headers) as reply:
            answer: dict[str, Any] = (await reply.json())["Response"]
            return answer

    first = await send(a)
    assert first["DeleteResult"] == {"Code": 0, "ErrorMsg": ""}, first
    back = await a.member("10001", room_id="r2")  # back in the room: carrying the replay out would remove it
    replayed = await send(b)
    assert replayed["DeleteResult"] == first["DeleteResult"] and replayed["RequestId"] != first["RequestId"]
    assert await back.silent(0.3)
    assert [m.open_id for m in a.server.web_app[ACTIONS].room(a.app.app_id, "r2").members.values()] == ["10001"]


async def test_an_action_for_a_node_that_does_not_listen_is_one_clear_error(pair: Pair) -> None:
    await pair.redis.hset(pair.keys.node("gone"), mapping={"url": "http://127.0.0.1:9"})
    await pair.redis.set(pair.keys.room(pair.a.app.app_id, "r7"), "gone")
    status, reply = await admin(pair.b, "POST", "/v1/admin/rooms/r7/kick", {"open_ids": ["10001"]})
    assert (status, reply["code"]) == (400, ErrorCode.AV_ERR_SERVER_FAILED)
    assert "does not listen" in reply["message"]
    # A room map entry for a dead node (no node hash) is not followed: the room is simply not there.
    await pair.redis.delete(pair.keys.node("gone"))
    status, reply = await admin(pair.b, "POST", "/v1/admin/rooms/r7/kick", {"open_ids": ["10001"]})
    assert (status, reply["code"]) == (404, ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST)


# --- real `opengme serve` processes and the signed CLI -------------------------------------------


def _node_id(node: ServeProcess) -> str:
    """The node's id from its log line "joined cluster" (written before "listening")."""
    assert node.proc.stderr is not None
    while True:
        line = node.proc.stderr.readline()
        assert line, "the node ended without joining its cluster"
        if "joined cluster" in line:  # a JSON line (stderr is not a terminal)
            node_id: str = json.loads(line)["node_id"]
            return node_id


@pytest.mark.slow
async def test_the_signed_cli_kicks_and_mutes_through_another_serve_process(tmp_path: Path) -> None:
    with redis_prefix() as redis_url, postgres_database() as database_url:
        env = {"OPENGME_REDIS_URL": redis_url, "OPENGME_DATABASE_URL": database_url}
        node_a = start_server(tmp_path / "a", env=env, stderr=subprocess.PIPE)
        node_b = start_server(tmp_path / "b", env=env, stderr=subprocess.PIPE)
        url, prefix = split_url(redis_url)
        keys, client = Keys(prefix), redis.asyncio.Redis.from_url(url)
        try:
            ids = {_node_id(node_a): node_a, _node_id(node_b): node_b}
            for node_id, node in ids.items():
                await client.hset(keys.node(node_id), mapping={"url": node.url})
            store = AppStore(tmp_path / "a", database_url=database_url)
            app = store.list()[0]
            store.close()
            await client.set(keys.room(app.app_id, "arena"), next(i for i, n in ids.items() if n is node_a))

            def cli(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(opengme_cmd(*args, "--data-dir", str(tmp_path / "cli"), "--server", node_b.url),
                                      capture_output=True, text=True, timeout=30, env={**os.environ, **env})

            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(node_a.url.replace("http", "ws") + "/v1/signal")
                member = SignalClient(ws, app)
                assert (await member.hello("10001"))["type"] == "hello_ok"
                assert (await member.enter("arena"))["type"] == "entered"
                listing = await asyncio.to_thread(cli, "rooms", app.app_id, "arena")
                for _ in range(30):  # node A's snapshot: published within a second of the entry
                    if listing.returncode == 0:
                        break
                    await asyncio.sleep(0.2)
                    listing = await asyncio.to_thread(cli, "rooms", app.app_id, "arena")
                assert listing.returncode == 0 and "10001" in listing.stdout, listing.stderr
                muted = await asyncio.to_thread(cli, "mute", app.app_id, "arena", "10001")
                assert muted.returncode == 0 and "muted 10001" in muted.stdout, muted.stderr
                assert (await _after_admin_push(member, "mute"))["muted"] is True
                kicked = await asyncio.to_thread(cli, "kick", app.app_id, "arena", "10001", "--reason", "afk")
                assert kicked.returncode == 0 and "kicked 10001" in kicked.stdout, kicked.stderr
                assert await member.recv() == p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, f"{KICKED}: afk")
                await ws.close()
                again = await asyncio.to_thread(cli, "kick", app.app_id, "arena", "10001")
                assert again.returncode == 1 and "AV_ERR_SERVER_ROOM_NOT_EXIST (10009)" in again.stderr
        finally:
            node_a.stop()
            node_b.stop()
            await client.aclose()
