"""Inputs and sequences a code review found could crash, wedge or fool the server."""
from __future__ import annotations

import time

import pytest

from opengme.core.signalling import CLOSE_HEARTBEAT_LOST
from opengme.errors import ErrorCode
from opengme.protocol import admin as signing
from opengme.protocol import signalling as p
from opengme.protocol.resume import make_resume_token, resume_token_problem
from opengme.server.signalling import get as get_signalling
from support.signal_harness import Running, admin, is_error


async def test_deeply_nested_json_is_10002_and_the_connection_stays(srv: Running) -> None:
    client = await srv.client()
    await client.ws.send_str("[" * 5000 + "]" * 5000)
    assert is_error(await client.recv(), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "nested too deeply")
    assert (await client.hello("10001"))["type"] == "hello_ok"


def test_parse_server_refuses_deep_nesting_with_a_protocol_error() -> None:
    try:
        p.parse_server('{"a":' * 3000 + "1" + "}" * 3000)
    except p.ProtocolError as exc:
        assert exc.code == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT
    else:
        raise AssertionError("deep nesting was accepted")


async def test_absurd_admin_timestamp_is_401_not_500(srv: Running) -> None:
    for stamp in ("9" * 5000, "²", "-1", "1.5"):
        headers = {signing.HEADER_TIMESTAMP: stamp}
        status, reply = await admin(srv, "GET", "/v1/admin/rooms", headers=headers)
        assert status == 401 and reply["code"] == ErrorCode.AV_ERR_AUTH_FIALD, stamp
    assert (await admin(srv, "GET", "/v1/admin/rooms"))[0] == 200  # the server is fine


def test_resume_token_with_non_ascii_digits_is_malformed_not_a_crash() -> None:
    for token in ("².abc", "9" * 5000 + ".abc", "١٢٣.abc", ".abc", "123."):
        assert "malformed" in resume_token_problem(token, "k" * 16, "1400000001", "10001", "r1", 1.0), token


@pytest.mark.public_surface
async def test_a_kicked_member_cannot_come_back_with_its_old_resume_token(srv: Running) -> None:
    victim = await srv.client("10001")
    entered = await victim.enter("r1")
    token = entered["resume_token"]
    await srv.member("10002")
    status, _ = await admin(srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": True})
    assert status == 200
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/kick", {"open_ids": ["10001"]})
    assert status == 200 and reply["results"] == [{"open_id": "10001", "code": 0}]
    again = await srv.client("10001")
    refused = await again.enter("r1", auth=b"", resume_token=token)
    # 10003, what happened (its `disconnect` push may have been lost), not 7006
    assert is_error(refused, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "removed this member")
    # a fresh AuthBuffer from the game's backend still lets the player back in
    assert (await again.enter("r1"))["type"] == "entered"


async def test_a_dissolved_rooms_tokens_are_void_too(srv: Running) -> None:
    member = await srv.client("10001")
    token = (await member.enter("r1"))["resume_token"]
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/dissolve", {})
    assert status == 200 and reply["removed"] == 1
    again = await srv.client("10001")
    assert is_error(await again.enter("r1", auth=b"", resume_token=token), ErrorCode.AV_ERR_SERVER_NO_PERMISSION)


def test_resume_tokens_still_work_for_members_nobody_removed() -> None:
    token = make_resume_token("k" * 16, "1400000001", "10001", "r1", 5000)
    assert resume_token_problem(token, "k" * 16, "1400000001", "10001", "r1", 10.0) is None


async def test_inout_writes_queued_on_the_worker_are_seen_by_the_next_query(srv: Running) -> None:
    for _ in range(3):
        member = await srv.member("10003")
        await member.request(p.exit_(member.next_id()))
    status, reply = await admin(srv, "GET", "/v1/admin/inout?room_id=r1&open_id=10003")
    assert status == 200 and len(reply["in_out"]) == 3 and all(s["end"] is not None for s in reply["in_out"])


async def test_liveness_follows_the_monotonic_clock_not_the_wall_clock(
    srv: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await srv.member("10001")
    signalling = get_signalling(srv.server)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 10_000)  # an NTP step forward
    signalling.reap(time.monotonic())
    assert signalling.registry.find(srv.app.app_id, "10001") is not None  # still in the room
    signalling.reap(time.monotonic() + srv.server.settings.member_timeout + 1)  # really silent
    await member.expect_closed(CLOSE_HEARTBEAT_LOST)  # no `disconnect`: the SDK resumes
    assert signalling.registry.find(srv.app.app_id, "10001") is None
