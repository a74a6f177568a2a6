"""The signalling WebSocket on a real server (127.0.0.1, port 0) with real aiohttp clients
(the harness is tests/support/signal_harness.py)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.config import Settings
from opengme.core.signalling import CLOSE_HEARTBEAT_LOST, TAKEN_OVER
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol import signalling as p
from opengme.protocol.resume import make_resume_token, resume_token_problem
from opengme.server.signalling import get as get_signalling
from opengme.store import AppStore
from support.signal_harness import Running, admin, is_error, members_of, running_server, start

# --- handshake ----------------------------------------------------------------------------------


@pytest.mark.public_surface
async def test_hello_ok_carries_protocol_and_timings(srv: Running) -> None:
    client = await srv.client()
    reply = await client.hello("10001")
    assert reply == p.hello_ok(1, reply["server_version"], 5.0, 90.0)
    assert is_error(await client.hello("10001"), ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION)


@pytest.mark.public_surface
async def test_protocol_mismatch_is_10007_naming_both_versions_then_close(srv: Running) -> None:
    client = await srv.client()
    await client.ws.send_str(json.dumps({"type": "hello", "id": 1, "protocol": 99, "future": "field"}))
    reply = await client.recv()
    assert is_error(reply, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "protocol 99") and reply["id"] == 1
    assert "accepts protocol 1" in reply["message"]
    await client.expect_closed()


async def test_video_and_unknown_abilities_are_not_granted_nor_refused(srv: Running) -> None:
    client = await srv.client()
    reply = await client.hello("10001", abilities=["audio", "video", "holograms"])
    assert reply["type"] == "hello_ok" and reply["abilities"] == ["audio"]
    assert (await client.enter("r1"))["type"] == "entered"


@pytest.mark.public_surface
async def test_requests_before_hello_are_10002(srv: Running) -> None:
    client = await srv.client()
    assert is_error(await client.ping(), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "hello")


async def test_hello_checks_the_app_and_its_openid_rule(srv: Running) -> None:
    client = await srv.client()
    unknown = await client.request(p.hello(client.next_id(), "1399999999", "10001", "0.1.0"))
    assert is_error(unknown, ErrorCode.AV_ERR_AUTH_FIALD, "unknown AppID")
    assert is_error(await client.hello("player-one"), ErrorCode.AV_ERR_AUTH_FIALD, "integer string")
    assert is_error(await client.hello("9999"), ErrorCode.AV_ERR_AUTH_FIALD, "greater than 10000")
    AppStore(srv.server.settings.data_dir).set(srv.app.app_id, string_openid=True)
    assert (await client.hello("player-one"))["type"] == "hello_ok"
    assert (await client.enter("r1"))["type"] == "entered"


# --- entering, members, room types ----------------------------------------------------------------


@pytest.mark.public_surface
async def test_entry_and_member_pushes(srv: Running) -> None:
    a = await srv.member("10001")
    b = await srv.client("10002")
    entered = await b.enter("r1")
    assert entered["room_id"] == "r1" and members_of(entered) == ["10001"] and entered["muted"] is False
    assert entered["tinyid"] > 0 and entered["tinyid"] not in [m["tinyid"] for m in entered["members"]]
    push = await a.recv()
    assert push == p.members_push("enter", [(entered["tinyid"], "10002")])
    assert (await b.request(p.exit_(b.next_id())))["type"] == "exited"
    assert await a.recv() == p.members_push("exit", [(entered["tinyid"], "10002")])
    assert is_error(await b.request(p.exit_(b.next_id())), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)
    # re-entering on the same connection after exit works; entering twice does not
    assert (await b.enter("r1"))["type"] == "entered"
    assert is_error(await b.enter("r1"), ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION)
    metrics = srv.server.metrics
    assert metrics.value("opengme_entries_total") == 3
    assert metrics.value("opengme_signal_messages_total", type="enter") == 4


async def test_closing_the_socket_leaves_the_room(srv: Running) -> None:
    a = await srv.member("10001")
    b = await srv.member("10002")
    await a.recv()
    await b.ws.close()
    assert (await a.recv())["event"] == "exit"
    assert get_signalling(srv.server).registry.member_count == 1


async def test_room_type_adoption_and_change(srv: Running) -> None:
    a = await srv.member("10001", room_type=RoomType.HIGHQUALITY)
    b = await srv.client("10002")
    entered = await b.enter("r1", room_type=RoomType.FLUENCY)
    assert entered["room_type"] == RoomType.HIGHQUALITY  # the room's, not the request's
    await a.recv()
    reply = await b.request(p.change_room_type(b.next_id(), RoomType.STANDARD))
    assert reply == p.room_type_changed(reply["id"], RoomType.STANDARD)
    assert await a.recv() == p.room_type_push(RoomType.STANDARD, "10002")
    assert await b.silent()  # the requester has its reply, not a push
    c = await srv.client("10003")
    assert (await c.enter("r1", room_type=RoomType.HIGHQUALITY))["room_type"] == RoomType.STANDARD
    lone = await srv.client("10004")
    assert is_error(await lone.request(p.change_room_type(lone.next_id(), 2)), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)


@pytest.mark.public_surface
async def test_same_openid_takes_over(srv: Running) -> None:
    other = await srv.member("10002")
    first = await srv.member("10001")
    assert (await other.recv())["event"] == "enter"
    second = await srv.client("10001")
    entered = await second.enter("r1")
    assert members_of(entered) == ["10002"]
    assert await first.recv() == p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, TAKEN_OVER)
    await first.expect_closed()
    assert [(m["event"], members_of(m)) for m in (await other.recv(), await other.recv())] == \
        [("exit", ["10001"]), ("enter", ["10001"])]
    assert await second.silent()  # it hears nothing about its predecessor
    assert get_signalling(srv.server).registry.member_count == 2


@pytest.mark.public_surface
async def test_member_limit_is_10005(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_members_per_room=1, max_rooms=1) as srv:
        await srv.member("10001")
        b = await srv.client("10002")
        assert is_error(await b.enter("r1"), ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "full")
        assert is_error(await b.enter("r2"), ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "room limit")


# --- per-entry app checks ---------------------------------------------------------------------


@pytest.mark.public_surface
async def test_each_auth_failure_is_7006_with_the_reason(srv: Running) -> None:
    client = await srv.client("10001")
    other = AppStore(srv.server.settings.data_dir).create("other")
    cases = [
        (b"garbage that is no AuthBuffer", ""),
        (client.auth("another-room"), "another-room"),
        (gen_auth_buffer(srv.app.app_id, "r1", "10002", srv.app.key), "openid '10002'"),
        (client.auth("r1", expire_at=1_000_000), "expired"),
        (client.auth("r1", version=1, expire_at=1_000_000), "expired"),
        (gen_auth_buffer(srv.app.app_id, "r1", "10001", other.key), ""),
        (gen_auth_buffer(other.app_id, "r1", "10001", other.key), f"AppID {other.app_id}"),
        (b"", ""),
    ]
    for buffer, fragment in cases:
        reply = await client.enter("r1", auth=buffer)
        assert is_error(reply, ErrorCode.AV_ERR_AUTH_FIALD, fragment), (buffer, reply)
        assert reply["message"]
    assert (await client.enter("r1", auth=client.auth("r1", version=1)))["type"] == "entered"  # GME's v1 works
    assert srv.server.metrics.value("opengme_errors_total", code=7006) == len(cases)


@pytest.mark.public_surface
async def test_console_switches_are_seen_by_the_next_entry(srv: Running) -> None:
    console = AppStore(srv.server.settings.data_dir)  # as `opengme app set` from another process
    client = await srv.client("10001")
    console.set(srv.app.app_id, arrears=True)
    assert is_error(await client.enter("r1"), ErrorCode.AV_ERR_CHARGE_OVERDUE, "arrears")
    console.set(srv.app.app_id, arrears=False, voice=False)
    assert is_error(await client.enter("r1"), ErrorCode.AV_ERR_SERVICE_NOT_OPENED, "voice")
    console.set(srv.app.app_id, arrears=True, voice=False)
    assert is_error(await client.enter("r1"), ErrorCode.AV_ERR_CHARGE_OVERDUE)  # arrears is checked first
    assert is_error(await client.enter("r1", auth=b"bad"), ErrorCode.AV_ERR_AUTH_FIALD)  # auth before both
    console.set(srv.app.app_id, arrears=False, voice=True)
    assert (await client.enter("r1"))["type"] == "entered"


# --- malformed input ------------------------------------------------------------------------------


@pytest.mark.public_surface
async def test_malformed_frames_get_errors_and_the_server_keeps_answering(srv: Running) -> None:
    client = await srv.client("10001")
    await client.ws.send_str("{not json")
    assert is_error(await client.recv(), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "JSON")
    await client.ws.send_str('{"type":"teleport","id":5}')
    reply = await client.recv()
    assert is_error(reply, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT) and reply["id"] == 5
    await client.ws.send_str('{"type":"ping","id":6,"t":1,"extra":true}')  # an unknown field is ignored
    assert await client.recv() == p.pong(6, 1)
    await client.ws.send_bytes(b"\x00\x01")
    assert is_error(await client.recv(), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "text frames")
    assert (await client.ping())["type"] == "pong"
    assert srv.server.metrics.value("opengme_signal_messages_total", type="invalid") == 2


async def test_oversized_frame_is_10002_then_1009(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_message_bytes=1000) as srv:
        client = await srv.client("10001")
        bystander = await srv.client("10002")
        await client.ws.send_str(p.encode(p.invite(client.next_id(), "x" * 1001)))
        reply = await client.recv()
        assert is_error(reply, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "exceeds")
        await client.expect_closed(code=p.CLOSE_TOO_BIG)
        assert (await bystander.ping())["type"] == "pong"


@pytest.mark.public_surface
async def test_a_handler_bug_is_10001_and_the_server_survives(srv: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    signalling = get_signalling(srv.server)

    def broken(*args: object) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setitem(signalling.core._handlers, "change_room_type", broken)
    client = await srv.member("10001")
    reply = await client.request(p.change_room_type(client.next_id(), 2))
    assert is_error(reply, ErrorCode.AV_ERR_SERVER_FAILED) and "injected" not in reply["message"]
    assert (await client.ping())["type"] == "pong"


# --- liveness and reconnect -----------------------------------------------------------------------


async def test_silent_member_is_closed_without_disconnect_and_resumes(tmp_path: Path) -> None:
    """Heartbeat loss closes the connection without `disconnect` (so the SDK resumes, as GME's client
    keeps reconnecting), the others see the member leave, and its resume token brings it back."""
    async with running_server(tmp_path, heartbeat_interval=0.05, member_timeout=0.4) as srv:
        silent = await srv.client("10001")
        token = (await silent.enter("r1"))["resume_token"]
        alive = await srv.member("10002")
        await silent.recv()  # 10002 entered
        pushes: list[dict[str, Any]] = []
        for _ in range(20):  # ping for ~1 s; the silent one must be gone meanwhile
            await alive.send(p.ping(alive.next_id(), 0.0))
            while True:
                try:
                    message = await alive.recv(timeout=0.05)
                except TimeoutError:
                    break
                if message["type"] != "pong":
                    pushes.append(message)
        assert [(m["type"], m["event"], members_of(m)) for m in pushes] == [("members", "exit", ["10001"])]
        await silent.expect_closed(CLOSE_HEARTBEAT_LOST)  # no `disconnect` frame before the close
        assert get_signalling(srv.server).registry.member_count == 1
        back = await srv.client("10001")
        assert (await back.enter("r1", auth=b"", resume_token=token))["type"] == "entered"
        assert members_of(await alive.recv()) == ["10001"]


@pytest.mark.public_surface
async def test_connection_without_hello_is_closed_after_the_entry_timeout(tmp_path: Path) -> None:
    async with running_server(tmp_path, heartbeat_interval=0.05, entry_timeout=0.2) as srv:
        client = await srv.client()
        message = await client.recv()
        assert message["type"] == "disconnect" and message["code"] == ErrorCode.AV_ERR_SERVER_TIMEOUT
        await client.expect_closed()


def test_resume_tokens_are_bound_to_app_openid_room_and_time() -> None:
    token = make_resume_token("k" * 16, "1400000001", "10001", "r1", 2000)
    assert resume_token_problem(token, "k" * 16, "1400000001", "10001", "r1", 1999.0) is None
    assert "expired" in resume_token_problem(token, "k" * 16, "1400000001", "10001", "r1", 2000.0)
    for args in (("j" * 16, "1400000001", "10001", "r1"), ("k" * 16, "1400000002", "10001", "r1"),
                 ("k" * 16, "1400000001", "10002", "r1"), ("k" * 16, "1400000001", "10001", "r2")):
        assert "does not match" in resume_token_problem(token, *args, 1000.0)
    assert "does not match" in resume_token_problem(token.replace("2000", "9999"), "k" * 16, "1400000001",
                                                    "10001", "r1", 1000.0)
    assert "malformed" in resume_token_problem("nonsense", "k" * 16, "1400000001", "10001", "r1", 1000.0)


async def test_resume_after_a_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with aiohttp.ClientSession() as session:
        settings = Settings(host="127.0.0.1", port=0, data_dir=data)
        first = await start(settings, session)
        a = await first.member("10001", room_type=RoomType.STANDARD)
        b = await first.client("10002")
        token = (await b.enter("r1"))["resume_token"]
        assert (await a.recv())["event"] == "enter"
        await first.stop()
        await b.expect_closed(code=aiohttp.WSCloseCode.GOING_AWAY)  # no `disconnect`: the SDK reconnects
        await a.expect_closed(code=aiohttp.WSCloseCode.GOING_AWAY)

        second = await start(settings, session, app=first.app)  # same data dir, same app and key
        try:
            c = await second.client("10002")
            entered = await c.enter("r1", room_type=RoomType.STANDARD, auth=b"", resume_token=token)
            assert entered["type"] == "entered" and entered["room_type"] == RoomType.STANDARD
            # the token only opens its own room, and a bad one without an AuthBuffer is 7006
            d = await second.client("10002")
            wrong = await d.enter("r2", auth=b"", resume_token=token)
            assert is_error(wrong, ErrorCode.AV_ERR_AUTH_FIALD, "resume token")
            # a bad token with a good AuthBuffer still enters (the AuthBuffer decides)
            assert (await d.enter("r2", resume_token=token))["type"] == "entered"
            # and a rotated key invalidates outstanding tokens
            AppStore(data).rotate_key(first.app.app_id)
            e = await second.client("10002")
            assert is_error(await e.enter("r1", auth=b"", resume_token=token), ErrorCode.AV_ERR_AUTH_FIALD)
        finally:
            for client in second.clients:
                await client.ws.close()
            await second.stop()


# --- switch ---------------------------------------------------------------------------------------


@pytest.mark.public_surface
async def test_switch_success_and_2001(srv: Running) -> None:
    a = await srv.member("10001", room_id="a", room_type=RoomType.STANDARD)
    b = await srv.member("10002", room_id="a")
    await a.recv()
    c = await srv.member("10003", room_id="b")
    switched = await b.switch("b")
    assert switched["type"] == "switched" and switched["room_id"] == "b" and members_of(switched) == ["10003"]
    assert (await a.recv())["event"] == "exit" and (await c.recv())["event"] == "enter"
    assert is_error(await b.switch("b"), ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, "already in room")
    refused = await b.switch("a", auth=b.auth("elsewhere"))
    assert is_error(refused, ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, "AV_ERR_AUTH_FIALD (7006)")
    assert await c.silent()  # b never left room b
    lone = await srv.client("10004")
    assert is_error(await lone.switch("a"), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)


@pytest.mark.public_surface
async def test_switch_2002_leaves_the_old_room(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_members_per_room=1) as srv:
        a = await srv.member("10001", room_id="a")
        await srv.member("10002", room_id="b")
        reply = await a.switch("b")
        assert is_error(reply, ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED, "full")
        assert [r.room_id for r in get_signalling(srv.server).registry.rooms(srv.app.app_id)] == ["b"]
        assert (await a.enter("a"))["type"] == "entered"  # out of any room, it may enter again


# --- invitations -----------------------------------------------------------------------------------


@pytest.mark.public_surface
async def test_invitation_flow_and_errors(srv: Running) -> None:
    host = await srv.member("10001", room_id="party")
    guest = await srv.member("10002", room_id="lobby")  # an entry proves the openid: invitations reach it
    assert (await guest.request(p.exit_(guest.next_id())))["type"] == "exited"
    assert is_error(await host.request(p.invite(host.next_id(), "10009")), ErrorCode.AV_ERR_INVITET_FAILED,
                    "not connected")
    assert is_error(await guest.request(p.invite(guest.next_id(), "10001")), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)

    sent = await host.request(p.invite(host.next_id(), "10002"))
    invitation = await guest.recv()
    assert invitation == p.invitation(sent["invite_id"], "10001", "party")
    ok = await guest.request(p.invite_reply(guest.next_id(), sent["invite_id"], True))
    assert ok == p.invite_reply_ok(ok["id"], sent["invite_id"], "party")
    assert await host.recv() == p.invitation_result(sent["invite_id"], "10002", True)
    again = await guest.request(p.invite_reply(guest.next_id(), sent["invite_id"], True))
    assert is_error(again, ErrorCode.AV_ERR_ACCEPTT_FAILED)

    sent = await host.request(p.invite(host.next_id(), "10002"))
    await guest.recv()
    no = await guest.request(p.invite_reply(guest.next_id(), sent["invite_id"], False))
    assert no == p.invite_reply_ok(no["id"], sent["invite_id"])
    assert await host.recv() == p.invitation_result(sent["invite_id"], "10002", False)
    assert is_error(await guest.request(p.invite_reply(guest.next_id(), sent["invite_id"], False)),
                    ErrorCode.AV_ERR_REFUSE_FAILED)

    assert (await guest.enter("party"))["type"] == "entered"
    await host.recv()
    assert is_error(await host.request(p.invite(host.next_id(), "10002")), ErrorCode.AV_ERR_INVITET_FAILED,
                    "already in")


# --- metrics --------------------------------------------------------------------------------------


async def test_metrics_endpoint_shows_rooms_members_and_counters(srv: Running) -> None:
    await srv.member("10001")
    await srv.member("10002", room_id="r2")
    async with srv.session.get(srv.url + "/metrics") as response:
        text = await response.text()
    assert "opengme_rooms 2.0" in text and "opengme_members 2.0" in text
    assert "opengme_entries_total 2.0" in text
    assert 'opengme_signal_messages_total{type="hello"} 2.0' in text


# --- nothing blocking on the event loop --------------------------------------------------------------


async def test_a_slow_app_registry_holds_up_only_the_requests_that_read_it(srv: Running) -> None:
    """While the registry is stuck (its lock held, as by a slow disk), hello and admin requests wait on
    worker threads; the loop keeps answering everyone else, and each connection's replies stay in order."""
    member = await srv.member("10001")
    waiting = await srv.client()
    lock = srv.server.store._lock
    lock.acquire()
    try:
        await waiting.send(p.hello(1, srv.app.app_id, "10002", "0.1.0"))
        await waiting.send(p.ping(2, 0.25))
        admin_call = asyncio.ensure_future(admin(srv, "GET", "/v1/admin/rooms"))
        for _ in range(3):
            assert (await member.ping())["type"] == "pong"
        assert await waiting.silent(0.1) and not admin_call.done()
    finally:
        lock.release()
    assert [(m["type"], m["id"]) for m in (await waiting.recv(), await waiting.recv())] == [("hello_ok", 1), ("pong", 2)]
    status, reply = await admin_call
    assert status == 200 and reply["rooms"] == [{"room_id": "r1", "room_type": 1, "members": 1}]


async def test_requests_sent_back_to_back_are_answered_in_order(srv: Running) -> None:
    client = await srv.client("10001")
    await client.send(p.enter(2, "r1", 1, client.auth("r1")))
    await client.send(p.ping(3, 0.5))
    await client.send(p.exit_(4))
    await client.send(p.enter(5, "r1", 1, b"no AuthBuffer"))
    await client.send(p.ping(6, 0.5))
    kinds = [(m["type"], m["id"]) for m in [await client.recv() for _ in range(5)]]
    assert kinds == [("entered", 2), ("pong", 3), ("exited", 4), ("error", 5), ("pong", 6)]
