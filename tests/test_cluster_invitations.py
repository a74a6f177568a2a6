"""Invitations across a cluster's nodes (issue 18): the inviter on one node, the invitee on another.
Two real servers in this test's event loop share a real Redis and a real PostgreSQL (protocol level),
and real ``opengme serve`` processes carry real SDK clients through an accepted invitation (the switch
redirected to the inviter's node)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import test_cluster_shared
from opengme.authbuffer import gen_auth_buffer
from opengme.cluster.keys import invitation
from opengme.core.rooms import Invitation
from opengme.core.signalling import Output
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType, InvitationSubEvent
from opengme.protocol import signalling as p
from opengme.server import shared_records, signalling
from opengme.server.invitations import parse_record, record_text
from support.audio import OUT_RATE, tone, write_wav
from support.sdk_harness import ClientMaker, SdkClient, listen, talk, wait_for, wait_played
from support.signal_harness import Running, SignalClient, is_error, start
from test_cluster_nodes import Ear, _sdk_enter
from test_cluster_nodes import cluster as serve_cluster
from test_cluster_shared import Pair
from test_signalling_core import APP_ID, Rig, reply, sent

pair = test_cluster_shared.pair  # the fixture: two nodes in this loop, a real Redis and PostgreSQL

# --- the record (pure) ---------------------------------------------------------------------------------


def test_an_invitation_record_round_trips_and_junk_is_unknown() -> None:
    record = Invitation("ab12", "1400000001", "r1", "10001", "10002", 1234.5)
    assert parse_record(record_text(record)) == record
    for junk in (None, b"{nope", b"[]", b'{"invite_id": "x"}'):
        assert parse_record(junk) is None


def test_the_cores_hooks_for_a_cluster_screen_answer_and_push() -> None:
    rig = Rig()
    bare = rig.connect()
    refused = rig.core.screen(bare, p.invite(1, "10002"), rig.now)
    assert isinstance(refused, Output) and is_error(reply(refused, bare), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "hello")
    host, guest, lurker = rig.member("10001", "party"), rig.member("10002", "lobby"), rig.hello("10003")
    screened = rig.core.screen(host, p.invite(7, "10002"), rig.now)
    assert not isinstance(screened, Output) and screened[2] is not None
    assert (screened[0], screened[1], screened[2].room_id) == (APP_ID, "10001", "party")
    assert rig.core.online(APP_ID, "10002") and not rig.core.online(APP_ID, "10003")  # a bare hello proves nothing
    push = p.invitation("ab", "10001", "party")
    delivered, out = rig.core.push(APP_ID, "10002", push)
    assert delivered and sent(out, guest) == [push] and sent(out, lurker) == []
    result = p.invitation_result("ab", "10002", True)
    assert rig.core.push(APP_ID, "10001", result, "lobby") == (False, Output())  # not in that room: nobody
    delivered, out = rig.core.push(APP_ID, "10001", result, "party")
    assert delivered and sent(out, host) == [result]
    answered = rig.core.answer(host, 7, GmeError(ErrorCode.AV_ERR_INVITET_FAILED, "not connected"))
    assert is_error(reply(answered, host), ErrorCode.AV_ERR_INVITET_FAILED, "not connected")
    assert sent(rig.core.answer(host, 7, p.invite_sent(7, "ab")), host) == [p.invite_sent(7, "ab")]


# --- two nodes in this loop -------------------------------------------------------------------------------


def _record(pair: Pair, invite_id: str) -> str:
    return invitation(pair.keys, pair.a.app.app_id, invite_id)


async def _seen_from(srv: Running, *open_ids: str, timeout: float = 5.0) -> None:
    """Wait until ``srv`` sees the openids in the other nodes' room snapshots (published within a second)."""
    records = shared_records.get(srv.server)
    assert records is not None
    deadline = time.monotonic() + timeout
    while True:
        listed = {m.open_id for view in await records.other_rooms() for m in view.members}
        if set(open_ids) <= listed:
            return
        assert time.monotonic() < deadline, f"{open_ids} not in the other nodes' snapshots"
        await asyncio.sleep(0.1)


async def _member(pair: Pair, srv: Running, open_id: str, room_id: str) -> SignalClient:
    await pair.place(room_id, srv)
    return await srv.member(open_id, room_id)


_PUSHES: dict[int, list[dict[str, Any]]] = {}  # by id(client): pushes read while waiting for a reply


async def _request(client: SignalClient, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to ``message``; pushes that come first are kept for ``_push``."""
    await client.send(message)
    while True:
        reply = await client.recv()
        if reply.get("id") == message["id"]:
            return reply
        _PUSHES.setdefault(id(client), []).append(reply)


async def _invite(inviter: SignalClient, open_id: str) -> dict[str, Any]:
    return await _request(inviter, p.invite(inviter.next_id(), open_id))


async def _answer(invitee: SignalClient, invite_id: str, accept: bool) -> dict[str, Any]:
    return await _request(invitee, p.invite_reply(invitee.next_id(), invite_id, accept))


async def _push(client: SignalClient, kind: str) -> dict[str, Any]:
    """The next push of ``kind`` (``members`` pushes of the room may come first)."""
    kept = _PUSHES.setdefault(id(client), [])
    while True:
        message = kept.pop(0) if kept else await client.recv()
        if message["type"] == kind:
            return message


async def test_an_invitation_crosses_nodes_both_ways_with_the_single_nodes_error_codes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    host = await _member(pair, a, "10001", "r1")
    mate = await a.member("10004", "r1")
    guest = await _member(pair, b, "10002", "r2")
    other = await b.member("10003", "r2")
    await _seen_from(a, "10002", "10003")
    sent = await _invite(host, "10002")
    assert sent["type"] == "invite_sent", sent
    invite_id = sent["invite_id"]
    push = await _push(guest, "invitation")
    assert (push["invite_id"], push["from_open_id"], push["room_id"]) == (invite_id, "10001", "r1")
    assert 0 < await pair.redis.pttl(_record(pair, invite_id)) <= 60_000  # the single node's expiry, in Redis
    # Someone else cannot answer it (and does not consume it); the invitee accepts on node B.
    assert is_error(await _answer(other, invite_id, True), ErrorCode.AV_ERR_ACCEPTT_FAILED, invite_id)
    accepted = await _answer(guest, invite_id, True)
    assert (accepted["type"], accepted["invite_id"], accepted["room_id"]) == ("invite_reply_ok", invite_id, "r1")
    result = await _push(host, "invitation_result")
    assert (result["invite_id"], result["open_id"], result["accepted"]) == (invite_id, "10002", True)
    assert await pair.redis.exists(_record(pair, invite_id)) == 0  # consumed
    assert is_error(await _answer(guest, invite_id, True), ErrorCode.AV_ERR_ACCEPTT_FAILED)
    assert is_error(await _answer(guest, "feedfacefeedface", False), ErrorCode.AV_ERR_REFUSE_FAILED)
    # Refused on node B: the inviter on node A hears so; the invitee's reply has no room.
    refused_id = (await _invite(host, "10003"))["invite_id"]
    assert (await _push(other, "invitation"))["invite_id"] == refused_id
    refused = await _answer(other, refused_id, False)
    assert (refused["type"], refused["invite_id"], refused.get("room_id")) == ("invite_reply_ok", refused_id, None)
    result = await _push(host, "invitation_result")
    assert (result["invite_id"], result["open_id"], result["accepted"]) == (refused_id, "10003", False)
    # Nobody online with that openid, or already in the room: 1801, and no record is left behind.
    assert is_error(await _invite(host, "10099"), ErrorCode.AV_ERR_INVITET_FAILED, "not connected")
    assert is_error(await _invite(host, "10004"), ErrorCode.AV_ERR_INVITET_FAILED, "already in room")
    assert await pair.redis.keys(_record(pair, "*")) == []
    # Not in a room: 10006, as on one node.
    assert (await _request(mate, p.exit_(mate.next_id())))["type"] == "exited"
    assert is_error(await _invite(mate, "10002"), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)
    # The accepted invitee's switch into r1 on node B is sent on to node A, which serves r1.
    moved = await _request(guest, p.switch(guest.next_id(), "r1", guest.auth("r1")))
    assert (moved["type"], moved["url"], moved["node"]) == ("redirect", a.url, pair.node_id(a))


async def test_expired_and_cancelled_invitations_are_refused_on_the_other_node(pair: Pair) -> None:
    a, b = pair.a, pair.b
    host = await _member(pair, a, "10001", "r1")
    guest = await _member(pair, b, "10002", "r2")
    await _seen_from(a, "10002")
    signalling.get(a.server).registry.invite_ttl = 0.3
    expired_id = (await _invite(host, "10002"))["invite_id"]
    assert (await _push(guest, "invitation"))["invite_id"] == expired_id
    await asyncio.sleep(0.5)
    assert await pair.redis.exists(_record(pair, expired_id)) == 0  # Redis let it go with the invitation
    assert is_error(await _answer(guest, expired_id, True), ErrorCode.AV_ERR_ACCEPTT_FAILED, "expired")
    assert is_error(await _answer(guest, expired_id, False), ErrorCode.AV_ERR_REFUSE_FAILED)
    # The inviter left its room before the answer: the invitation is cancelled, as on one node.
    signalling.get(a.server).registry.invite_ttl = 60.0
    cancelled_id = (await _invite(host, "10002"))["invite_id"]
    assert (await _push(guest, "invitation"))["invite_id"] == cancelled_id
    assert (await _request(host, p.exit_(host.next_id())))["type"] == "exited"
    assert is_error(await _answer(guest, cancelled_id, True), ErrorCode.AV_ERR_ACCEPTT_FAILED, "cancelled")
    assert await host.silent()


async def test_an_invitation_outlives_a_restart_of_the_node_that_issued_it(pair: Pair) -> None:
    a, b = pair.a, pair.b
    host = await _member(pair, a, "10001", "r1")
    guest = await _member(pair, b, "10002", "r2")
    await _seen_from(a, "10002")
    invite_id = (await _invite(host, "10002"))["invite_id"]
    assert (await _push(guest, "invitation"))["invite_id"] == invite_id
    data_dir = a.server.settings.data_dir
    for c in a.clients:
        await c.ws.close()
    await a.stop()  # a new node id and an empty memory when it is back
    pair.a = await start(pair.settings(data_dir), a.session, app=a.app)
    await pair.register(pair.a)
    back = await _member(pair, pair.a, "10001", "r1")
    reply = await _answer(guest, invite_id, True)
    assert reply["type"] == "invite_reply_ok" and reply["room_id"] == "r1", reply
    result = await _push(back, "invitation_result")
    assert (result["invite_id"], result["accepted"]) == (invite_id, True)


# --- real SDK clients on ``opengme serve`` nodes ---------------------------------------------------------


def _where(client: SdkClient) -> tuple[str, str]:
    """(room, node URL) of the client's session."""
    session = client.ctx._core.session
    assert session is not None and session.room is not None
    return session.room.room_id, session.room.server_url


def _invitations(client: SdkClient) -> list[dict[str, Any]]:
    return client.events.of(EventType.INVITATION)


def _members(client: SdkClient) -> set[str]:
    return set(client.ctx.get_room().get_members())


@pytest.mark.slow
def test_sdk_players_on_two_nodes_invite_accept_and_refuse(tmp_path: Path, clients: ClientMaker) -> None:
    with serve_cluster(tmp_path, 2) as (nodes, app, _):
        host = clients(nodes[0].url, app, "10001")
        guest = clients(nodes[1].url, app, "10002")
        shy = clients(nodes[1].url, app, "10003")
        _sdk_enter(host, app, "R1")
        _sdk_enter(guest, app, "R2")
        _sdk_enter(shy, app, "R2")
        r1_node, r2_node = _where(host)[1], _where(guest)[1]
        assert r1_node != r2_node  # the least loaded node took R2: the two rooms are on different nodes

        time.sleep(1.5)  # node 1 sees members of node 2 in its room snapshot (renewed within a second)
        assert host.ctx.invite("10002") == ErrorCode.AV_OK
        wait_for([host, guest], lambda: bool(_invitations(guest)), timeout=10)
        (received,) = _invitations(guest)
        assert (received["sub_event_type"], received["open_id"], received["room_id"]) == (
            InvitationSubEvent.RECEIVED, "10001", "R1")
        auth = gen_auth_buffer(app.app_id, "R1", "10002", app.key)
        assert guest.ctx.accept_invitation(received["invite_id"], auth) == ErrorCode.AV_OK
        both = {"10001", "10002"}
        wait_for([host, guest], lambda: bool(_invitations(host)) and _members(host) == both == _members(guest),
                 timeout=15)
        assert (_invitations(host)[-1]["sub_event_type"], _invitations(host)[-1]["open_id"]) == (
            InvitationSubEvent.ACCEPTED, "10002")
        assert _where(guest) == ("R1", r1_node)  # the switch was redirected to R1's node
        assert guest.events.results(EventType.SWITCH_ROOM) == [ErrorCode.AV_OK]
        heard = listen(guest)  # and they hear each other, on R1's node
        talk(host, write_wav(tmp_path / "a.wav", tone(440, 3), OUT_RATE))
        wait_played([host, guest], 1.5, heard)
        assert Ear(heard).hears(440)
        # Refused: the inviter on node 1 hears so from node 2.
        host.events.events.clear()
        assert host.ctx.invite("10003") == ErrorCode.AV_OK
        wait_for([host, shy], lambda: bool(_invitations(shy)), timeout=10)
        assert shy.ctx.refuse_invitation(_invitations(shy)[0]["invite_id"]) == ErrorCode.AV_OK
        wait_for([host, shy], lambda: bool(_invitations(host)), timeout=10)
        assert _invitations(host)[0]["sub_event_type"] == InvitationSubEvent.REFUSED
        assert _where(shy) == ("R2", r2_node)
