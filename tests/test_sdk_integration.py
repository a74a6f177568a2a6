"""The SDK against a real OpenGME server on 127.0.0.1: in-process (own thread and loop) or a subprocess."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.errors import ErrorCode
from opengme.events import ChangeRoomTypeSubEvent, EventType, InvitationSubEvent, RoomType, UserUpdateEvent
from opengme.protocol import signalling as proto
from opengme.sdk import Context
from opengme.server.signalling import get as get_signalling
from support.processes import ServeProcess, start_server
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, enter, wait_for

# --- rooms and members -----------------------------------------------------------------------------


@pytest.mark.public_surface
def test_entry_member_events_and_lookups(server: ThreadServer, clients: ClientMaker) -> None:
    a = clients(server.url, server.app, "10001", heartbeat_interval=0.1)  # an rtt for the tips soon
    b = clients(server.url, server.app, "10002")
    enter(server, a, "lobby")
    assert a.ctx.is_room_entered() and a.ctx.get_room().get_room_id() == "lobby"
    assert a.ctx.get_room().get_room_type() == RoomType.FLUENCY
    enter(server, b, "lobby")
    wait_for([a, b], lambda: a.events.users(UserUpdateEvent.ENTER) == ["10001", "10002"])  # self first
    assert b.events.users(UserUpdateEvent.ENTER) == ["10002", "10001"]  # self, then who was there
    room = a.ctx.get_room()
    assert room.get_members() == ["10001", "10002"]
    code, tinyid = room.get_tiny_id("10002")
    assert code == ErrorCode.AV_OK and tinyid > 0 and room.get_open_id(tinyid) == (ErrorCode.AV_OK, "10002")
    assert room.get_tiny_id("10999") == (ErrorCode.AV_ERR_OPENID_TO_TINYID_FAILED, 0)  # 1502
    assert room.get_open_id(tinyid + 1000) == (ErrorCode.AV_ERR_TINYID_TO_OPENID_FAILED, "")  # 1501
    assert room.request_view("10999") == ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST  # 1401
    assert room.request_view("10002") == ErrorCode.AV_ERR_ENDPOINT_HAS_NOT_VIDEO  # 1402
    assert a.ctx.enter_room("lobby", 1, server.auth("lobby", "10001")) == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert a.ctx.enter_room("other", 1, server.auth("other", "10001")) == ErrorCode.AV_ERR_IN_OTHER_ROOM
    assert a.ctx.uninit() == ErrorCode.AV_ERR_ROOM_NOT_EXITED  # 1202
    wait_for([a, b], lambda: "rtt_ms: -" not in a.ctx.get_room().get_quality_tips(), timeout=8)
    tips = a.ctx.get_room().get_quality_tips()
    assert "room: lobby" in tips and "members: 2" in tips and server.url.split("//")[1] in tips
    assert b.ctx.exit_room() == ErrorCode.AV_OK
    wait_for([a, b], lambda: a.events.users(UserUpdateEvent.EXIT) == ["10002"])
    assert b.events.results(EventType.EXIT_ROOM) == [ErrorCode.AV_OK] and not b.ctx.is_room_entered()
    assert b.ctx.get_room().get_room_type() == 0


def test_v1_buffer_and_v2_token_as_text_both_enter(server: ThreadServer, clients: ClientMaker) -> None:
    a, b = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    v1 = server.auth("r", "10001", version=1)
    assert a.ctx.enter_room("r", 1, v1) == ErrorCode.AV_OK
    v2_text = server.auth("r", "10002").decode()
    assert b.ctx.enter_room("r", 1, v2_text) == ErrorCode.AV_OK
    wait_for([a, b], lambda: bool(a.events.of(EventType.ENTER_ROOM) and b.events.of(EventType.ENTER_ROOM)))
    assert a.events.results(EventType.ENTER_ROOM) == b.events.results(EventType.ENTER_ROOM) == [ErrorCode.AV_OK]


def test_room_type_adoption_and_change(server: ThreadServer, clients: ClientMaker) -> None:
    a, b = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    enter(server, a, "r", RoomType.STANDARD)
    enter(server, b, "r", RoomType.FLUENCY)
    (adopted,) = b.events.of(EventType.CHANGE_ROOM_TYPE)
    assert (adopted["sub_event_type"], adopted["new_room_type"]) == (ChangeRoomTypeSubEvent.ENTERROOM, 2)
    assert b.ctx.get_room().get_room_type() == RoomType.STANDARD
    assert a.ctx.get_room().change_room_type(RoomType.HIGHQUALITY) == ErrorCode.AV_OK
    wait_for([a, b], lambda: len(b.events.of(EventType.CHANGE_ROOM_TYPE)) == 2
             and len(a.events.of(EventType.CHANGE_ROOM_TYPE)) == 2)
    assert [(d["sub_event_type"], d["new_room_type"]) for d in a.events.of(EventType.CHANGE_ROOM_TYPE)] == [
        (ChangeRoomTypeSubEvent.START, 3), (ChangeRoomTypeSubEvent.COMPLETE, 3)]
    assert b.events.of(EventType.CHANGE_ROOM_TYPE)[1]["sub_event_type"] == ChangeRoomTypeSubEvent.COMPLETE
    assert a.ctx.get_room().get_room_type() == b.ctx.get_room().get_room_type() == RoomType.HIGHQUALITY


@pytest.mark.public_surface
def test_switch_room_and_2001(server: ThreadServer, clients: ClientMaker) -> None:
    a, b = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    enter(server, a, "r1")
    enter(server, b, "r1")
    # Into the room it is in: 1003 at once (as enter_room and change_room_type), no SWITCH_ROOM later.
    assert b.ctx.switch_room("r1", server.auth("r1", "10002")) == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert b.ctx.switch_room("r2", server.auth("r2", "10002")) == ErrorCode.AV_OK
    assert b.ctx.exit_room() == ErrorCode.AV_ERR_EXCLUSIVE_OPERATION  # 1002 during the switch
    assert b.ctx.switch_room("r3", server.auth("r3", "10002")) == ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
    wait_for([a, b], lambda: bool(b.events.of(EventType.SWITCH_ROOM)) and a.events.users(UserUpdateEvent.EXIT))
    assert b.events.results(EventType.SWITCH_ROOM) == [ErrorCode.AV_OK]  # one event: the 1003 queued none
    assert b.ctx.get_room().get_room_id() == "r2" and b.ctx.get_room().get_members() == ["10002"]
    assert b.events.users(UserUpdateEvent.EXIT) == ["10001"] and a.events.users(UserUpdateEvent.EXIT) == ["10002"]
    bad = server.auth("r9", "10002")  # a buffer for another room
    assert b.ctx.switch_room("r3", bad) == ErrorCode.AV_OK
    wait_for([b], lambda: len(b.events.of(EventType.SWITCH_ROOM)) == 2)
    assert b.events.results(EventType.SWITCH_ROOM)[1] == ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM
    assert b.ctx.get_room().get_room_id() == "r2"


@pytest.mark.public_surface
def test_a_switch_that_times_out_is_2001_and_the_old_room_resumes(server: ThreadServer,
                                                                  clients: ClientMaker) -> None:
    """GME's SwitchRoom fails with 2001 (still in the old room) or 2002, never 1005: a switch the
    server does not answer in time is 2001 "timeout", and the SDK resumes the old room."""
    b = clients(server.url, server.app, "10002", entry_timeout=2.0)
    enter(server, b, "r1")
    with server.frozen():  # the server reads nothing: the switch goes unanswered
        assert b.ctx.switch_room("r2", server.auth("r2", "10002")) == ErrorCode.AV_OK
        wait_for([b], lambda: bool(b.events.of(EventType.SWITCH_ROOM)))
    wait_for([b], lambda: bool(b.events.of(EventType.RECONNECT_SUCCESS)), timeout=10)
    (failed,) = b.events.of(EventType.SWITCH_ROOM)
    assert failed["result"] == ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM and "timeout" in failed["error_info"]
    assert [e for e, _ in b.events.events if e in (EventType.SWITCH_ROOM, EventType.RECONNECT_START,
                                                   EventType.RECONNECT_SUCCESS)] == [
        EventType.SWITCH_ROOM, EventType.RECONNECT_START, EventType.RECONNECT_SUCCESS]
    assert b.ctx.get_room().get_room_id() == "r1" and not b.events.of(EventType.ROOM_DISCONNECT)


@pytest.mark.public_surface
def test_server_refusals_reach_enter_room(server: ThreadServer, clients: ClientMaker) -> None:
    a = clients(server.url, server.app, "10001")
    a.ctx.enter_room("r", 1, server.auth("elsewhere", "10001"))
    wait_for([a], lambda: bool(a.events.of(EventType.ENTER_ROOM)))
    (refused,) = a.events.of(EventType.ENTER_ROOM)
    assert refused["result"] == ErrorCode.AV_ERR_AUTH_FIALD and "room" in refused["error_info"].lower()
    server.store.set(server.app.app_id, arrears=True)
    a.ctx.enter_room("r", 1, server.auth("r", "10001"))
    wait_for([a], lambda: len(a.events.of(EventType.ENTER_ROOM)) == 2)
    server.store.set(server.app.app_id, arrears=False, voice=False)
    a.ctx.enter_room("r", 1, server.auth("r", "10001"))
    wait_for([a], lambda: len(a.events.of(EventType.ENTER_ROOM)) == 3)
    assert a.events.results(EventType.ENTER_ROOM)[1:] == [ErrorCode.AV_ERR_CHARGE_OVERDUE,
                                                          ErrorCode.AV_ERR_SERVICE_NOT_OPENED]
    assert not a.ctx.is_room_entered()


def test_string_openid_is_for_the_server_to_refuse(server: ThreadServer, clients: ClientMaker) -> None:
    a = clients(server.url, server.app, "player-one")
    a.ctx.enter_room("r", 1, server.auth("r", "player-one"))
    wait_for([a], lambda: bool(a.events.of(EventType.ENTER_ROOM)))
    assert a.events.results(EventType.ENTER_ROOM) == [ErrorCode.AV_ERR_AUTH_FIALD]


def test_kick_and_mute_through_the_admin_api(server: ThreadServer, clients: ClientMaker) -> None:
    a, b = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    enter(server, a, "r")
    enter(server, b, "r")
    assert server.admin("/v1/admin/rooms/r/mute", {"open_ids": ["10002"], "muted": True})["code"] == 0
    wait_for([a, b], lambda: b.ctx.get_room().is_server_muted())
    assert server.admin("/v1/admin/rooms/r/kick", {"open_ids": ["10002"], "reason": "cheating"})["code"] == 0
    wait_for([a, b], lambda: bool(b.events.of(EventType.ROOM_DISCONNECT)) and a.events.users(UserUpdateEvent.EXIT))
    (kicked,) = b.events.of(EventType.ROOM_DISCONNECT)
    assert kicked["result"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION and kicked["error_info"].endswith("cheating")
    assert not b.ctx.is_room_entered() and not b.events.of(EventType.RECONNECT_START)


@pytest.mark.public_surface
def test_missed_heartbeats_close_the_connection_and_the_sdk_resumes(make_server: Callable[..., ThreadServer],
                                           clients: ClientMaker) -> None:
    server = make_server(member_timeout=0.5, heartbeat_interval=0.2)
    quiet = clients(server.url, server.app, "10001", heartbeat_interval=60.0, reconnect_give_up=2.0)  # never pings
    alive = clients(server.url, server.app, "10002")  # pings at the server's 0.2 s
    enter(server, alive, "r")  # first: had its pings not counted, it would be dropped before the other
    enter(server, quiet, "r")
    # GME drops the connection after 90 s of silence, and its client reconnects: no ROOM_DISCONNECT
    # (10004 is for connections that never entered), but RECONNECT_START then RECONNECT_SUCCESS.
    wait_for([quiet, alive], lambda: bool(quiet.events.of(EventType.RECONNECT_SUCCESS)), timeout=5)
    assert quiet.events.results(EventType.RECONNECT_START)[0] == ErrorCode.AV_OK
    assert "WebSocket code 4000" in quiet.events.of(EventType.RECONNECT_START)[0]["error_info"]
    assert not quiet.events.of(EventType.ROOM_DISCONNECT) and quiet.ctx.get_room().get_room_id() == "r"
    wait_for([quiet, alive], lambda: alive.events.users(UserUpdateEvent.ENTER).count("10001") >= 2)
    assert alive.events.users(UserUpdateEvent.EXIT)[:1] == ["10001"]  # it left, and came back with its token
    assert alive.ctx.is_room_entered() and not alive.events.of(EventType.ROOM_DISCONNECT)
    # The final ROOM_DISCONNECT stays for when reconnecting gives up (GME: 60 min; here the server is gone).
    server.close()
    wait_for([quiet], lambda: bool(quiet.events.of(EventType.ROOM_DISCONNECT)), timeout=10)
    (gone,) = quiet.events.of(EventType.ROOM_DISCONNECT)
    assert gone["result"] == ErrorCode.AV_ERR_TIMEOUT and "gave up" in gone["error_info"]


@pytest.mark.public_surface
def test_a_kick_whose_disconnect_was_lost_is_10003_on_resume(make_server: Callable[..., ThreadServer],
                                                             clients: ClientMaker) -> None:
    """The server kicks a member whose connection is already dead: the `disconnect` push never
    arrives, the SDK resumes, and the server answers what happened (10003 removed from the room)
    rather than 7006."""
    server = make_server(heartbeat_interval=0.2)  # the SDK gives a silent connection up after 0.6 s
    victim = clients(server.url, server.app, "10001")
    enter(server, victim, "r")
    # While the server is frozen the SDK drops the silent connection and tries to resume; the kick runs
    # on the server's loop before it reads any socket again, so its push goes to the dead connection.
    with server.frozen(then=lambda: get_signalling(server.server).kick(server.app.app_id, "r", "10001")):
        wait_for([victim], lambda: bool(victim.events.of(EventType.RECONNECT_START)))
    wait_for([victim], lambda: bool(victim.events.of(EventType.ROOM_DISCONNECT)), timeout=10)
    assert victim.events.results(EventType.RECONNECT_START) == [ErrorCode.AV_OK]
    (removed,) = victim.events.of(EventType.ROOM_DISCONNECT)
    assert removed["result"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION, removed  # 10003, not 7006
    assert "removed" in removed["error_info"] and not victim.ctx.is_room_entered()
    enter(server, victim, "r")  # a fresh AuthBuffer still lets the player back in


@pytest.mark.public_surface
def test_invitation_accepted_and_refused(server: ThreadServer, clients: ClientMaker) -> None:
    host, guest = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    enter(server, host, "party")
    enter(server, guest, "lobby")
    assert host.ctx.invite("10002") == ErrorCode.AV_OK
    wait_for([host, guest], lambda: bool(guest.events.of(EventType.INVITATION)))
    (invited,) = guest.events.of(EventType.INVITATION)
    assert (invited["sub_event_type"], invited["open_id"], invited["room_id"]) == (
        InvitationSubEvent.RECEIVED, "10001", "party")
    assert guest.ctx.accept_invitation(invited["invite_id"], server.auth("party", "10002")) == ErrorCode.AV_OK
    wait_for([host, guest], lambda: bool(guest.events.of(EventType.SWITCH_ROOM))
             and host.events.users(UserUpdateEvent.ENTER) == ["10001", "10002"])
    assert guest.events.results(EventType.SWITCH_ROOM) == [ErrorCode.AV_OK]
    assert guest.ctx.get_room().get_room_id() == "party"
    (answer,) = host.events.of(EventType.INVITATION)
    assert (answer["sub_event_type"], answer["open_id"]) == (InvitationSubEvent.ACCEPTED, "10002")
    assert host.ctx.invite("10002") == ErrorCode.AV_OK  # already here: 1801
    third = clients(server.url, server.app, "10003")
    enter(server, third, "lobby")
    assert host.ctx.invite("10003") == ErrorCode.AV_OK
    wait_for([host, third], lambda: bool(third.events.of(EventType.INVITATION)) and len(host.events.of(EventType.INVITATION)) == 2)
    assert host.events.of(EventType.INVITATION)[1]["result"] == ErrorCode.AV_ERR_INVITET_FAILED
    assert third.ctx.refuse_invitation(third.events.of(EventType.INVITATION)[0]["invite_id"]) == ErrorCode.AV_OK
    wait_for([host, third], lambda: len(host.events.of(EventType.INVITATION)) == 3)
    assert host.events.of(EventType.INVITATION)[2]["sub_event_type"] == InvitationSubEvent.REFUSED


def test_accepting_after_leaving_enters_the_inviters_room(server: ThreadServer, clients: ClientMaker) -> None:
    host, guest = clients(server.url, server.app, "10001"), clients(server.url, server.app, "10002")
    enter(server, host, "party")
    enter(server, guest, "lobby")
    host.ctx.invite("10002")
    wait_for([host, guest], lambda: bool(guest.events.of(EventType.INVITATION)))
    guest.ctx.exit_room()
    wait_for([host, guest], lambda: bool(guest.events.of(EventType.EXIT_ROOM)))
    invite_id = guest.events.of(EventType.INVITATION)[0]["invite_id"]
    assert guest.ctx.accept_invitation(invite_id, server.auth("party", "10002")) == ErrorCode.AV_OK
    wait_for([host, guest], lambda: len(guest.events.of(EventType.ENTER_ROOM)) == 2
             and bool(host.events.of(EventType.INVITATION)))
    assert guest.events.results(EventType.ENTER_ROOM) == [ErrorCode.AV_OK, ErrorCode.AV_OK]
    assert guest.ctx.get_room().get_room_id() == "party"
    assert host.events.of(EventType.INVITATION)[0]["sub_event_type"] == InvitationSubEvent.ACCEPTED


def test_contexts_on_their_own_threads(server: ThreadServer, clients: ClientMaker) -> None:
    """GME's threading rule per context: each one lives on the thread that called init."""
    watcher = clients(server.url, server.app, "10001")
    enter(server, watcher, "r")
    outcomes: dict[str, list[int]] = {}

    def player(open_id: str) -> None:
        client = SdkClient(Context(server.url), open_id)
        client.ctx.set_delegate(client.events)
        client.ctx.init(server.app.app_id, open_id)
        client.ctx.enter_room("r", 1, server.auth("r", open_id))
        wait_for([client], lambda: "10001" in client.ctx.get_room().get_members())  # sees the watcher
        client.ctx.exit_room()
        wait_for([client], lambda: bool(client.events.of(EventType.EXIT_ROOM)))
        outcomes[open_id] = [*client.events.results(EventType.ENTER_ROOM), *client.events.results(EventType.EXIT_ROOM)]
        client.ctx.uninit()

    threads = [threading.Thread(target=player, args=(str(10002 + i),)) for i in range(3)]
    for t in threads:
        t.start()
    wait_for([watcher], lambda: not any(t.is_alive() for t in threads), timeout=10)
    assert outcomes == {o: [0, 0] for o in ("10002", "10003", "10004")}
    wait_for([watcher], lambda: len(watcher.events.users(UserUpdateEvent.EXIT)) == 3)
    assert sorted(watcher.events.users(UserUpdateEvent.ENTER)) == ["10001", "10002", "10003", "10004"]


PLAYER_SCRIPT = """
import json, sys, time
from opengme.sdk import Context
url, app_id, open_id, room, auth = sys.argv[1:6]
ctx = Context(url)
ctx.set_delegate(lambda e, d: print(json.dumps({"event": e.name, **{k: int(v) if isinstance(v, int) else v
                                                                      for k, v in d.items()}}), flush=True))
ctx.init(app_id, open_id)
ctx.enter_room(room, 1, bytes.fromhex(auth))
deadline = time.monotonic() + 10
while time.monotonic() < deadline and ctx.get_room().get_members() != [open_id, "10001"]:
    ctx.poll(); time.sleep(0.01)
exited = []
ctx.set_delegate(lambda e, d: (print(json.dumps({"event": e.name, **d}), flush=True), exited.append(e.name)))
ctx.exit_room()
while "EXIT_ROOM" not in exited:
    ctx.poll(); time.sleep(0.01)
sys.exit(ctx.uninit())
"""


def test_a_context_in_another_process(server: ThreadServer, clients: ClientMaker) -> None:
    a = clients(server.url, server.app, "10001")
    enter(server, a, "r")
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAYER_SCRIPT, server.url, server.app.app_id, "10002", "r",
         server.auth("r", "10002").hex()],
        stdout=subprocess.PIPE, text=True,
    )
    wait_for([a], lambda: proc.poll() is not None, timeout=20)
    events = [json.loads(line) for line in proc.stdout or ()]
    assert proc.returncode == 0
    assert events[0] == {"event": "ENTER_ROOM", "result": 0, "error_info": ""}
    assert {"event": "USER_UPDATE", "event_id": 1, "user_list": ["10002", "10001"]} in events
    assert events[-1] == {"event": "EXIT_ROOM", "result": 0, "error_info": ""}
    wait_for([a], lambda: a.events.users(UserUpdateEvent.EXIT) == ["10002"])
    assert a.events.users(UserUpdateEvent.ENTER) == ["10001", "10002"]


# --- against a server process: restarts, stalls, protocol mismatch -------------------------------------


@pytest.mark.slow
def test_reconnect_after_the_server_restarts(tmp_path: Path, clients: ClientMaker) -> None:
    served = start_server(tmp_path / "data")
    port = served.url.rsplit(":", 1)[1]
    app = served.dev_app()
    a = clients(served.url, app, "10001")
    b = clients(served.url, app, "10002")
    for c in (a, b):
        c.ctx.enter_room("r", 1, gen_auth_buffer(app.app_id, "r", c.open_id, app.key))
    wait_for([a, b], lambda: a.ctx.get_room().get_members() == ["10001", "10002"])
    served.stop(signal.SIGKILL)
    try:
        wait_for([a, b], lambda: bool(a.events.of(EventType.RECONNECT_START) and b.events.of(EventType.RECONNECT_START)))
        assert a.ctx.is_room_entered()  # the room is kept while reconnecting (and the restart takes a while)
        served = start_server(tmp_path / "data", port=int(port))
        wait_for([a, b], lambda: bool(a.events.of(EventType.RECONNECT_SUCCESS) and b.events.of(EventType.RECONNECT_SUCCESS)),
                 timeout=15)
        wait_for([a, b], lambda: a.ctx.get_room().get_members() == ["10001", "10002"])
        assert not a.events.of(EventType.ROOM_DISCONNECT) and "reconnects: 1" in a.ctx.get_room().get_quality_tips()
    finally:
        served.stop()


@pytest.mark.slow
def test_a_stalled_server_is_noticed_by_the_missing_pongs(tmp_path: Path, clients: ClientMaker) -> None:
    served = start_server(tmp_path / "data")
    app = served.dev_app()
    a = clients(served.url, app, "10001", heartbeat_interval=0.2, entry_timeout=2.0)
    a.ctx.enter_room("r", 1, gen_auth_buffer(app.app_id, "r", "10001", app.key))
    wait_for([a], lambda: a.ctx.is_room_entered())
    os.kill(served.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        wait_for([a], lambda: bool(a.events.of(EventType.RECONNECT_START)), timeout=3)
        assert time.monotonic() - start < 1.5  # 3 heartbeat intervals, not the 90 s server timeout
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    try:
        wait_for([a], lambda: bool(a.events.of(EventType.RECONNECT_SUCCESS)), timeout=10)
        assert a.ctx.get_room().get_room_id() == "r"
    finally:
        served.stop()


@pytest.mark.public_surface
def test_protocol_mismatch_is_10007(served: ServeProcess, clients: ClientMaker,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    app = served.dev_app()
    a = clients(served.url, app, "10001")
    monkeypatch.setattr(proto, "PROTOCOL_VERSION", 2)  # an SDK from the future
    a.ctx.enter_room("r", 1, gen_auth_buffer(app.app_id, "r", "10001", app.key))
    wait_for([a], lambda: bool(a.events.of(EventType.ENTER_ROOM)))
    (data,) = a.events.of(EventType.ENTER_ROOM)
    assert data["result"] == ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT and "protocol 2" in data["error_info"]
    assert "accepts protocol 1" in data["error_info"]
