"""Forward compatibility of the signalling protocol against real servers (127.0.0.1, port 0): a newer
client's unknown fields and abilities, a newer server's unknown fields and pushes, an older server's
``hello_ok`` without ``abilities``, and the major-version and ability rules of ``hello``. The audio
end to end case (each side hears the other) is in test_voice_e2e.py; the parsers' own tolerance in
test_signalling_protocol.py."""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.protocol import signalling as p
from support.newer_peer import newer_server, with_unknowns
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, enter, wait_for
from support.signal_harness import Running, SignalClient, is_error, members_of

REQUESTS = ("hello", "enter", "ping", "change_room_type", "invite", "invite_reply", "switch", "exit")


async def ask(client: SignalClient, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` grown with fields (and in hello an ability) this server does not know."""
    await client.send(with_unknowns(message))
    reply = await client.recv()
    assert reply.get("id") == message["id"], (message, reply)
    return reply


async def test_a_newer_client_sending_unknown_fields_in_every_request_is_served_as_usual(srv: Running) -> None:
    before = Counter(p.IGNORED.fields)
    current = await srv.member("10002", room_id="r1")
    invitee = await srv.member("10003", room_id="lobby")  # invitations reach proven connections only
    a = await srv.client()
    a.open_id = "10001"

    hello_ok = await ask(a, p.hello(a.next_id(), srv.app.app_id, "10001", "9.0.0"))
    assert hello_ok["type"] == "hello_ok" and hello_ok["abilities"] == ["audio"]  # "holograms": not granted, no 10011
    entered = await ask(a, p.enter(a.next_id(), "r1", RoomType.FLUENCY, a.auth("r1")))
    assert entered["type"] == "entered" and members_of(entered) == ["10002"] and p.media_key(entered["media"])
    assert await current.recv() == p.members_push("enter", [(entered["tinyid"], "10001")])
    ping = p.ping(a.next_id(), 2.5)
    assert await ask(a, ping) == p.pong(ping["id"], 2.5)
    changed = await ask(a, p.change_room_type(a.next_id(), RoomType.STANDARD))
    assert changed["type"] == "room_type_changed" and changed["room_type"] == RoomType.STANDARD
    assert await current.recv() == p.room_type_push(RoomType.STANDARD, "10001")

    sent = await ask(a, p.invite(a.next_id(), "10003"))
    assert sent["type"] == "invite_sent"
    assert await invitee.recv() == p.invitation(sent["invite_id"], "10001", "r1")
    refusal = await ask(invitee, p.invite_reply(invitee.next_id(), sent["invite_id"], False))
    assert refusal == p.invite_reply_ok(refusal["id"], sent["invite_id"])
    assert await a.recv() == p.invitation_result(sent["invite_id"], "10003", False)

    switched = await ask(a, p.switch(a.next_id(), "r2", a.auth("r2")))
    assert switched["type"] == "switched" and switched["room_id"] == "r2" and switched["members"] == []
    assert await current.recv() == p.members_push("exit", [(entered["tinyid"], "10001")])
    assert (await ask(a, p.exit_(a.next_id())))["type"] == "exited"

    ignored = Counter(p.IGNORED.fields) - before
    assert {kind for kind in REQUESTS if ignored[f"{kind}.x_future"] and ignored[f"{kind}.trace_id"]} == set(REQUESTS)


@pytest.mark.public_surface
async def test_an_unknown_request_type_is_10007_and_the_connection_stays_open(srv: Running) -> None:
    client = await srv.member("10001")
    await client.send({"type": "teleport", "id": 41, "to": "moon"})
    reply = await client.recv()
    assert is_error(reply, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "teleport") and reply["id"] == 41
    assert (await client.ping())["type"] == "pong"


def enter_result(server: ThreadServer, client: SdkClient) -> dict[str, Any]:
    assert client.ctx.enter_room("r", RoomType.FLUENCY, server.auth("r", client.open_id)) == ErrorCode.AV_OK
    wait_for([client], lambda: bool(client.events.of(EventType.ENTER_ROOM)))
    (data,) = client.events.of(EventType.ENTER_ROOM)
    return data


@pytest.mark.public_surface
def test_a_server_of_another_major_version_ends_the_entry_with_10007(
        server: ThreadServer, clients: ClientMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    newer_server(monkeypatch, lambda m: {**m, "protocol": 2} if m["type"] == "hello_ok" else m, unknown_push=False)
    a = clients(server.url, server.app, "10001", portaudio=False)
    data = enter_result(server, a)
    assert data["result"] == ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT and not a.ctx.is_room_entered()
    assert "protocol 2" in data["error_info"] and "protocol 1" in data["error_info"]


@pytest.mark.public_surface
def test_a_server_that_does_not_grant_audio_ends_the_entry_with_10011(
        server: ThreadServer, clients: ClientMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    newer_server(monkeypatch, lambda m: {**m, "abilities": ["video"]} if m["type"] == "hello_ok" else m,
                 unknown_push=False)
    a = clients(server.url, server.app, "10001", portaudio=False)
    data = enter_result(server, a)
    assert data["result"] == ErrorCode.AV_ERR_SERVER_INVALID_ABILITY and not a.ctx.is_room_entered()
    assert "'audio'" in data["error_info"]


def test_an_older_servers_hello_ok_without_abilities_means_audio(
        server: ThreadServer, clients: ClientMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    newer_server(monkeypatch, lambda m: {k: v for k, v in m.items() if k != "abilities"}, unknown_push=False)
    a = clients(server.url, server.app, "10001", portaudio=False)
    enter(server, a, "r")
    assert a.ctx.get_room().get_room_id() == "r"


def test_a_newer_servers_unknown_fields_and_pushes_are_counted_by_the_sdk(
        server: ThreadServer, clients: ClientMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    newer_server(monkeypatch)
    a, b = (clients(server.url, server.app, o, portaudio=False) for o in ("10001", "10002"))
    enter(server, a, "r")
    enter(server, b, "r")
    wait_for([a, b], lambda: a.ctx.get_room().get_members() == ["10001", "10002"])
    ignored = a.ctx._core.transport.ignored
    assert ignored.types["future_push"] >= 3  # before hello_ok, entered and the members push at least
    assert {"hello_ok.x_future", "entered.trace_id", "entered.media.relay_hint", "members.member.team"} <= set(ignored.fields)
