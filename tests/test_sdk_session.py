"""The SDK's pure room state machine: every GME error rule, driven without sockets or clocks."""
from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from opengme.errors import ErrorCode
from opengme.events import ChangeRoomTypeSubEvent, EventType, InvitationSubEvent, RoomType, UserUpdateEvent
from opengme.protocol import signalling as proto
from opengme.sdk.session import (
    BACKOFF_MAX,
    Close,
    Closed,
    Connect,
    Failed,
    Heartbeat,
    Opened,
    Phase,
    Received,
    Send,
    Session,
)

APP = "1400000001"
ME = "10001"
AUTH = b"\x01" * 48


class Harness:
    """A Session plus a fake clock and the connection it last opened."""

    def __init__(self, **options: Any) -> None:
        self.s = Session(APP, ME, rng=random.Random(7), **options)
        self.now = 100.0
        self.conn = 0
        self.sent: list[dict[str, Any]] = []
        self.closed: list[int] = []
        self.heartbeats: list[float] = []

    def commands(self) -> list[Any]:
        out = self.s.take_commands()
        for c in out:
            match c:
                case Connect(conn=conn, messages=messages):
                    self.conn = conn
                    self.sent.extend(messages)
                case Send(message=message):
                    self.sent.append(message)
                case Close(conn=conn):
                    self.closed.append(conn)
                case Heartbeat(interval=interval):
                    self.heartbeats.append(interval)
        return out

    def events(self) -> list[tuple[EventType, dict[str, Any]]]:
        return self.s.take_events()

    def feed(self, message: dict[str, Any]) -> None:
        self.s.handle(Received(self.conn, message, self.now))
        self.commands()

    def last(self, kind: str) -> dict[str, Any]:
        return [m for m in self.sent if m["type"] == kind][-1]

    def tick(self, dt: float) -> None:
        self.now += dt
        self.s.tick(self.now)
        self.commands()

    def enter(self, room: str = "r1", room_type: int = 1, members: list[tuple[int, str]] | None = None,
              server_type: int | None = None, token: str = "tok") -> None:
        assert self.s.enter(room, room_type, AUTH, self.now) is ErrorCode.AV_OK
        self.commands()
        self.s.handle(Opened(self.conn, self.now))
        self.feed(proto.hello_ok(self.last("hello")["id"], "0.1.0", 5.0, 90.0))
        self.feed(proto.entered(self.last("enter")["id"], room, server_type or room_type, 7, members or [], token, False))

    def in_room(self, **kw: Any) -> Harness:
        self.enter(**kw)
        self.events()
        return self


def names(events: list[tuple[EventType, dict[str, Any]]]) -> list[EventType]:
    return [e for e, _ in events]


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- entry -----------------------------------------------------------------------------------------


def test_entry_pipelines_hello_and_enter_with_base64_auth(h: Harness) -> None:
    assert h.s.enter("r1", RoomType.FLUENCY, AUTH, h.now) == ErrorCode.AV_OK
    (connect,) = h.commands()
    assert isinstance(connect, Connect)
    hello, enter = connect.messages
    assert hello["type"] == "hello" and hello["app_id"] == APP and hello["open_id"] == ME
    assert hello["protocol"] == proto.PROTOCOL_VERSION
    assert enter["type"] == "enter" and enter["room_id"] == "r1" and enter["room_type"] == 1
    assert base64.b64decode(enter["auth_buffer"]) == AUTH and "resume_token" not in enter
    assert hello["id"] != enter["id"]
    assert h.s.phase is Phase.ENTERING and not h.s.entered


def test_v2_token_as_str_is_sent_as_its_utf8_bytes(h: Harness) -> None:
    assert h.s.enter("r1", 1, "OGME2.abc.def", h.now) == ErrorCode.AV_OK
    h.commands()
    assert base64.b64decode(h.last("enter")["auth_buffer"]) == b"OGME2.abc.def"


def test_entered_emits_enter_room_then_existing_members(h: Harness) -> None:
    h.enter(members=[(3, "10002"), (4, "10003")])
    events = h.events()
    assert events[0] == (EventType.ENTER_ROOM, {"result": ErrorCode.AV_OK, "error_info": ""})
    assert events[1] == (EventType.USER_UPDATE, {"event_id": UserUpdateEvent.ENTER, "user_list": [ME, "10002", "10003"]})  # yourself too, as GME
    assert len(events) == 2  # same room type: no CHANGE_ROOM_TYPE
    assert h.heartbeats == [5.0]
    assert h.s.entered and h.s.room is not None and h.s.room.tinyids == {ME: 7, "10002": 3, "10003": 4}


def test_room_type_of_the_room_replaces_yours_on_entry(h: Harness) -> None:
    h.enter(room_type=1, server_type=3)
    events = h.events()
    assert events[1] == (EventType.CHANGE_ROOM_TYPE, {
        "result": 0, "error_info": "", "sub_event_type": ChangeRoomTypeSubEvent.ENTERROOM, "new_room_type": 3})
    assert h.s.room is not None and h.s.room.room_type == RoomType.HIGHQUALITY


@pytest.mark.parametrize("room_id, room_type, auth", [
    ("", 1, AUTH), ("x" * 128, 1, AUTH), ("a\nb", 1, AUTH), (5, 1, AUTH),
    ("r", 0, AUTH), ("r", 4, AUTH), ("r", True, AUTH), ("r", "1", AUTH),
    ("r", 1, b""), ("r", 1, None), ("r", 1, 12), ("r", 1, b"x" * 5000),
])
def test_invalid_entry_arguments_are_1004_and_change_nothing(h: Harness, room_id: Any, room_type: Any, auth: Any) -> None:
    assert h.s.enter(room_id, room_type, auth, h.now) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert h.commands() == [] and h.s.phase is Phase.IDLE


def test_1001_entering_during_an_entry(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    assert h.s.enter("r1", 1, AUTH, h.now) == ErrorCode.AV_ERR_REPEATED_OPERATION
    assert h.s.enter("r2", 1, AUTH, h.now) == ErrorCode.AV_ERR_REPEATED_OPERATION
    assert h.commands() == []


def test_1003_same_room_and_7007_another_room(h: Harness) -> None:
    h.in_room()
    assert h.s.enter("r1", 1, AUTH, h.now) == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert h.s.enter("r2", 1, AUTH, h.now) == ErrorCode.AV_ERR_IN_OTHER_ROOM
    assert h.commands() == [] and h.events() == []


def test_refused_connection_is_7004_at_once(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.s.handle(Failed(h.conn, "connection refused", h.now))
    ((event, data),) = h.events()
    assert event is EventType.ENTER_ROOM and data["result"] == ErrorCode.AV_ERR_NET_REQUEST_FALLED
    assert "connection refused" in data["error_info"] and "7004" in data["error_info"]
    assert h.s.phase is Phase.IDLE


def test_no_answer_within_the_entry_timeout_is_1005() -> None:
    h = Harness(entry_timeout=2.0)
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.s.handle(Opened(h.conn, h.now))
    h.tick(1.9)
    assert h.events() == []
    h.tick(0.2)
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ENTER_ROOM, ErrorCode.AV_ERR_TIMEOUT)
    assert h.closed == [h.conn] and h.s.phase is Phase.IDLE


@pytest.mark.parametrize("code", [ErrorCode.AV_ERR_AUTH_FIALD, ErrorCode.AV_ERR_CHARGE_OVERDUE,
                                  ErrorCode.AV_ERR_SERVICE_NOT_OPENED, ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED])
def test_server_refusals_pass_through_with_the_reason(h: Harness, code: ErrorCode) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.feed(proto.hello_ok(h.last("hello")["id"], "0.1.0", 5.0, 90.0))
    h.feed(proto.error(h.last("enter")["id"], code, "the exact reason"))
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ENTER_ROOM, code)
    assert data["error_info"].endswith(": the exact reason") and str(int(code)) in data["error_info"]
    assert h.closed == [h.conn] and not h.s.entered


def test_protocol_mismatch_is_10007_from_the_server_or_from_hello_ok(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.feed(proto.error(h.last("hello")["id"], ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "protocol 1 vs 2"))
    h.feed(proto.error(h.last("enter")["id"], ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "send hello first"))
    assert [d["result"] for _, d in h.events()] == [ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT]
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.feed({**proto.hello_ok(h.last("hello")["id"], "9.0", 5.0, 90.0), "protocol": 2})
    ((_event, data),) = h.events()
    assert data["result"] == ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT
    assert "protocol 2" in data["error_info"] and "protocol 1" in data["error_info"]
    assert h.heartbeats == [] and not h.s.busy


def received(text: str) -> dict[str, Any]:
    """A server frame as the network thread hands it over: through the tolerant parser."""
    return proto.parse_server(text, proto.Ignored())


def test_a_newer_servers_extra_fields_and_pushes_change_nothing(h: Harness) -> None:
    """Extra fields in hello_ok, entered and pushes, and a push type this SDK does not know: the
    heartbeats start, the entry succeeds and the members push still makes USER_UPDATE."""
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    h.s.handle(Opened(h.conn, h.now))
    hello_ok = {**proto.hello_ok(h.last("hello")["id"], "2.0", 5.0, 90.0, ["audio", "spatial"]), "region": "eu"}
    h.feed(received(json.dumps(hello_ok)))
    assert h.heartbeats == [5.0]
    h.feed(received(json.dumps({"type": "weather", "id": h.last("enter")["id"], "sunny": True})))
    assert h.events() == [] and h.s.phase is Phase.ENTERING  # the entry still waits for its answer
    entered = {**proto.entered(h.last("enter")["id"], "r1", 1, 7, [], "tok", False), "shard": 3}
    h.feed(received(json.dumps(entered)))
    members = proto.members_push("enter", [(8, "10002")])
    members["members"][0]["team"] = "red"
    h.feed(received(json.dumps({**members, "team_mode": True})))
    assert [(e, d.get("result", d.get("user_list"))) for e, d in h.events()] == [
        (EventType.ENTER_ROOM, ErrorCode.AV_OK), (EventType.USER_UPDATE, [ME]), (EventType.USER_UPDATE, ["10002"])]


def test_an_older_servers_hello_ok_without_abilities_grants_audio(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    old = proto.hello_ok(h.last("hello")["id"], "0.0.9", 5.0, 90.0)
    del old["abilities"]
    h.feed(received(json.dumps(old)))
    h.feed(proto.entered(h.last("enter")["id"], "r1", 1, 7, [], "tok", False))
    assert h.heartbeats == [5.0] and h.s.entered


def test_audio_not_granted_ends_the_entry_with_10011(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    assert h.last("hello")["abilities"] == ["audio"]
    h.feed(proto.hello_ok(h.last("hello")["id"], "9.0", 5.0, 90.0, abilities=["video"]))
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ENTER_ROOM, ErrorCode.AV_ERR_SERVER_INVALID_ABILITY)
    assert "'audio'" in data["error_info"] and h.closed == [h.conn] and h.heartbeats == []


def test_exit_during_entry_is_7013_without_exit_room(h: Harness) -> None:
    h.s.enter("r1", 1, AUTH, h.now)
    h.commands()
    assert h.s.exit(h.now) == ErrorCode.AV_OK
    assert h.closed == [] and isinstance(h.commands()[0], Close)
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ENTER_ROOM, ErrorCode.AV_ERR_USER_CANCELED)
    h.feed(proto.entered(2, "r1", 1, 7, [], "tok", False))  # a late answer on the dropped connection
    assert h.events() == [] and h.s.phase is Phase.IDLE


# --- exit ------------------------------------------------------------------------------------------


def test_exit_outside_a_room_is_1201_and_twice_is_1001(h: Harness) -> None:
    assert h.s.exit(h.now) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    h.in_room()
    assert h.s.exit(h.now) == ErrorCode.AV_OK
    h.commands()
    assert h.last("exit")["type"] == "exit" and not h.s.entered
    assert h.s.exit(h.now) == ErrorCode.AV_ERR_REPEATED_OPERATION
    h.feed(proto.exited(h.last("exit")["id"]))
    assert h.events() == [(EventType.EXIT_ROOM, {"result": 0, "error_info": ""})]
    assert h.closed == [h.conn] and h.s.phase is Phase.IDLE


def test_an_unanswered_exit_still_ends(h: Harness) -> None:
    h.in_room()
    h.s.exit(h.now)
    h.commands()
    h.tick(10.0)
    assert names(h.events()) == [EventType.EXIT_ROOM] and h.s.phase is Phase.IDLE


def test_entering_again_while_the_exit_is_pending_finishes_the_exit(h: Harness) -> None:
    h.in_room()
    h.s.exit(h.now)
    h.commands()
    old = h.conn
    assert h.s.enter("r2", 1, AUTH, h.now) == ErrorCode.AV_OK
    h.commands()
    assert names(h.events()) == [EventType.EXIT_ROOM] and old in h.closed and h.conn != old


# --- switch ----------------------------------------------------------------------------------------


def test_switch_success_replaces_the_member_list(h: Harness) -> None:
    h.in_room(members=[(3, "10002")])
    assert h.s.switch("r2", AUTH, h.now) == ErrorCode.AV_OK
    h.commands()
    assert h.last("switch")["room_id"] == "r2" and base64.b64decode(h.last("switch")["auth_buffer"]) == AUTH
    assert h.s.switch("r3", AUTH, h.now) == ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
    assert h.s.exit(h.now) == ErrorCode.AV_ERR_EXCLUSIVE_OPERATION  # 1002: exiting during a switch
    assert h.s.enter("r3", 1, AUTH, h.now) == ErrorCode.AV_ERR_REPEATED_OPERATION
    h.feed(proto.switched(h.last("switch")["id"], "r2", 1, 9, [(5, "10005")], "tok2", False))
    assert h.events() == [
        (EventType.SWITCH_ROOM, {"result": 0, "error_info": ""}),
        (EventType.USER_UPDATE, {"event_id": UserUpdateEvent.EXIT, "user_list": ["10002"]}),
        (EventType.USER_UPDATE, {"event_id": UserUpdateEvent.ENTER, "user_list": [ME, "10005"]}),
    ]
    assert h.s.room is not None and h.s.room.room_id == "r2" and h.s.room.tinyid == 9


def test_switch_2001_keeps_the_old_room_and_2002_leaves_it(h: Harness) -> None:
    h.in_room()
    h.s.switch("r2", AUTH, h.now)
    h.commands()
    h.feed(proto.error(h.last("switch")["id"], ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, "bad auth"))
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.SWITCH_ROOM, ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM)
    assert h.s.entered and h.s.room is not None and h.s.room.room_id == "r1"
    h.s.switch("r2", AUTH, h.now)
    h.commands()
    h.feed(proto.error(h.last("switch")["id"], ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED, "room full"))
    ((event, data),) = h.events()
    assert data["result"] == ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED and not h.s.entered


def test_switch_into_the_current_room_is_1003_at_once(h: Harness) -> None:
    h.in_room()
    sent = len(h.sent)
    assert h.s.switch("r1", AUTH, h.now) == ErrorCode.AV_ERR_HAS_IN_THE_STATE  # as enter_room: treat as success
    h.commands()
    assert len(h.sent) == sent and h.events() == [] and h.s.phase is Phase.IN_ROOM


def test_an_unanswered_switch_is_2001_timeout_then_the_old_room_resumes() -> None:
    h = Harness(entry_timeout=5.0)
    h.in_room()
    old = h.conn
    h.s.switch("r2", AUTH, h.now)
    h.commands()
    h.tick(5.0)
    events = h.events()
    assert [(e, d["result"]) for e, d in events] == [
        (EventType.SWITCH_ROOM, ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM), (EventType.RECONNECT_START, ErrorCode.AV_OK)]
    assert "timeout" in events[0][1]["error_info"]
    assert old in h.closed and h.s.phase is Phase.RECONNECTING and h.s.room is not None and h.s.room.room_id == "r1"


def test_switch_outside_a_room_is_1201(h: Harness) -> None:
    assert h.s.switch("r2", AUTH, h.now) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert h.s.switch("", AUTH, h.now) == ErrorCode.AV_ERR_INVALID_ARGUMENT


# --- room type -------------------------------------------------------------------------------------


def test_change_room_type_start_then_one_complete(h: Harness) -> None:
    assert h.s.change_room_type(2, h.now) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    h.in_room()
    assert h.s.change_room_type(9, h.now) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert h.s.change_room_type(1, h.now) == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert h.s.change_room_type(2, h.now) == ErrorCode.AV_OK
    h.commands()
    h.feed(proto.room_type_changed(h.last("change_room_type")["id"], 2))
    h.feed(proto.room_type_push(2, ME))  # the push may come as well: still one COMPLETE
    subs = [(d["sub_event_type"], d["new_room_type"]) for _, d in h.events()]
    assert subs == [(ChangeRoomTypeSubEvent.START, 2), (ChangeRoomTypeSubEvent.COMPLETE, 2)]


def test_room_type_push_from_another_member_is_complete(h: Harness) -> None:
    h.in_room()
    h.feed(proto.room_type_push(3, "10002"))
    ((event, data),) = h.events()
    assert (event, data["sub_event_type"], data["new_room_type"]) == (
        EventType.CHANGE_ROOM_TYPE, ChangeRoomTypeSubEvent.COMPLETE, 3)


# --- members, mute, disconnect -----------------------------------------------------------------------


def test_member_pushes_update_the_list_and_fire_on_changes_only(h: Harness) -> None:
    h.in_room()
    h.feed(proto.members_push("enter", [(3, "10002")]))
    h.feed(proto.members_push("enter", [(3, "10002")]))
    h.feed(proto.members_push("exit", [(3, "10002")]))
    h.feed(proto.members_push("exit", [(3, "10002")]))
    assert [d for _, d in h.events()] == [
        {"event_id": UserUpdateEvent.ENTER, "user_list": ["10002"]},
        {"event_id": UserUpdateEvent.EXIT, "user_list": ["10002"]},
    ]


def test_mute_push_is_remembered_without_an_event(h: Harness) -> None:
    h.in_room()
    h.feed(proto.mute(True, "admin"))
    assert h.s.room is not None and h.s.room.muted and h.events() == []
    h.feed(proto.mute(False, "admin"))
    assert not h.s.room.muted


@pytest.mark.parametrize("code", [ErrorCode.AV_ERR_SERVER_NO_PERMISSION, ErrorCode.AV_ERR_SERVER_TIMEOUT])
def test_disconnect_push_leaves_the_room(h: Harness, code: ErrorCode) -> None:
    h.in_room()
    h.feed(proto.disconnect(code, "kicked by the server"))
    h.s.handle(Closed(h.conn, "closed", h.now))  # the close that follows must not start a reconnect
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ROOM_DISCONNECT, code)
    assert data["error_info"].endswith("kicked by the server") and h.s.phase is Phase.IDLE


# --- reconnect -------------------------------------------------------------------------------------


def test_drop_reconnects_with_the_resume_token_and_reports_member_changes(h: Harness) -> None:
    h.in_room(members=[(3, "10002"), (4, "10003")], token="resume-1")
    first = h.conn
    h.s.handle(Closed(first, "gone", h.now))
    ((event, _data),) = h.events()
    assert event is EventType.RECONNECT_START and h.s.entered  # the room is kept while reconnecting
    h.tick(0.09)
    assert h.conn == first  # 0.2 s ± 50 %: not before 0.1 s
    h.tick(0.25)
    assert h.conn != first
    enter = h.last("enter")
    assert enter["resume_token"] == "resume-1" and enter["auth_buffer"] == "" and enter["room_id"] == "r1"
    h.feed(proto.hello_ok(h.last("hello")["id"], "0.1.0", 5.0, 90.0))
    h.feed(proto.entered(enter["id"], "r1", 1, 8, [(4, "10003"), (6, "10006")], "resume-2", False))
    assert h.events() == [
        (EventType.RECONNECT_SUCCESS, {"result": 0, "error_info": ""}),
        (EventType.USER_UPDATE, {"event_id": UserUpdateEvent.EXIT, "user_list": ["10002"]}),
        (EventType.USER_UPDATE, {"event_id": UserUpdateEvent.ENTER, "user_list": ["10006"]}),
    ]
    assert h.s.room is not None and h.s.room.resume_token == "resume-2" and h.s.stats.reconnects == 1


def test_backoff_doubles_to_five_seconds_with_jitter(h: Harness) -> None:
    h.in_room()
    h.s.handle(Closed(h.conn, "gone", h.now))
    delays = []
    for _ in range(9):
        start, conn = h.now, h.conn
        while h.conn == conn:
            h.tick(0.01)
        delays.append(h.now - start)
        h.s.handle(Failed(h.conn, "refused", h.now))
    for attempt, delay in enumerate(delays):
        nominal = min(BACKOFF_MAX, 0.2 * 2**attempt)
        assert 0.5 * nominal - 0.02 <= delay <= 1.5 * nominal + 0.02
    assert max(delays) > 4.0


def test_reconnect_gives_up_with_room_disconnect() -> None:
    h = Harness(reconnect_give_up=3.0)
    h.in_room()
    h.s.handle(Closed(h.conn, "gone", h.now))
    h.events()
    for _ in range(400):
        h.tick(0.01)
        if h.s.phase is Phase.RECONNECTING and h.conn:
            h.s.handle(Failed(h.conn, "refused", h.now))
    ((event, data),) = h.events()
    assert (event, data["result"]) == (EventType.ROOM_DISCONNECT, ErrorCode.AV_ERR_TIMEOUT)
    assert h.s.phase is Phase.IDLE


def test_a_refused_resume_ends_in_room_disconnect(h: Harness) -> None:
    h.in_room()
    h.s.handle(Closed(h.conn, "gone", h.now))
    h.tick(1.0)
    h.feed(proto.error(h.last("enter")["id"], ErrorCode.AV_ERR_AUTH_FIALD, "resume token expired"))
    assert [(e, d["result"]) for e, d in h.events()] == [
        (EventType.RECONNECT_START, 0), (EventType.ROOM_DISCONNECT, ErrorCode.AV_ERR_AUTH_FIALD)]


def test_a_silent_connection_counts_as_dropped() -> None:
    h = Harness(heartbeat_interval=1.0)
    h.in_room()
    assert h.heartbeats == [1.0]  # the override beats the server's 5 s
    h.tick(2.9)
    assert h.events() == []
    h.feed(proto.pong(1 << 30, h.now - 0.004))
    assert h.s.stats.rtt == pytest.approx(0.004)
    h.tick(2.9)
    assert h.events() == []
    h.tick(0.2)
    assert names(h.events()) == [EventType.RECONNECT_START]


def test_exit_while_reconnecting_is_immediate(h: Harness) -> None:
    h.in_room()
    h.s.handle(Closed(h.conn, "gone", h.now))
    assert h.s.change_room_type(2, h.now) == ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
    assert h.s.exit(h.now) == ErrorCode.AV_OK
    assert names(h.events()) == [EventType.RECONNECT_START, EventType.EXIT_ROOM] and h.s.phase is Phase.IDLE


def test_reports_about_an_old_connection_are_ignored(h: Harness) -> None:
    h.in_room()
    old = h.conn
    h.s.exit(h.now)
    h.commands()
    h.feed(proto.exited(h.last("exit")["id"]))
    h.enter(room="r2")
    h.events()
    h.s.handle(Closed(old, "late close of the old socket", h.now))
    h.s.handle(Received(old, proto.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "old"), h.now))
    assert h.events() == [] and h.s.phase is Phase.IN_ROOM


# --- invitations -----------------------------------------------------------------------------------


def test_invitation_received_then_accepted_switches_into_the_inviters_room(h: Harness) -> None:
    h.in_room()
    assert h.s.accept_invitation("nope", AUTH, h.now) == ErrorCode.AV_ERR_ACCEPTT_FAILED
    assert h.s.refuse_invitation("nope", h.now) == ErrorCode.AV_ERR_REFUSE_FAILED
    h.feed(proto.invitation("inv1", "10009", "party"))
    ((event, data),) = h.events()
    assert (event, data["sub_event_type"], data["open_id"], data["room_id"]) == (
        EventType.INVITATION, InvitationSubEvent.RECEIVED, "10009", "party")
    assert h.s.accept_invitation("inv1", AUTH, h.now) == ErrorCode.AV_OK
    h.commands()
    reply = h.last("invite_reply")
    assert reply["invite_id"] == "inv1" and reply["accept"] is True
    h.feed(proto.invite_reply_ok(reply["id"], "inv1", "party"))
    assert h.last("switch")["room_id"] == "party" and h.s.phase is Phase.SWITCHING


def test_invite_failure_and_results_reach_the_inviter(h: Harness) -> None:
    assert h.s.invite("10002", h.now) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    h.in_room()
    assert h.s.invite("", h.now) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert h.s.invite("10002", h.now) == ErrorCode.AV_OK
    h.commands()
    h.feed(proto.error(h.last("invite")["id"], ErrorCode.AV_ERR_INVITET_FAILED, "not connected"))
    h.feed(proto.invitation_result("inv2", "10003", True))
    h.feed(proto.invitation_result("inv3", "10004", False))
    got = [(d["sub_event_type"], d["result"], d["open_id"]) for _, d in h.events()]
    assert got == [
        (InvitationSubEvent.CANCELED, ErrorCode.AV_ERR_INVITET_FAILED, "10002"),
        (InvitationSubEvent.ACCEPTED, 0, "10003"),
        (InvitationSubEvent.REFUSED, 0, "10004"),
    ]


def test_refusal_is_sent_and_a_failed_one_reported(h: Harness) -> None:
    h.in_room()
    h.feed(proto.invitation("inv1", "10009", "party"))
    h.events()
    assert h.s.refuse_invitation("inv1", h.now) == ErrorCode.AV_OK
    h.commands()
    reply = h.last("invite_reply")
    assert reply["accept"] is False
    h.feed(proto.error(reply["id"], ErrorCode.AV_ERR_REFUSE_FAILED, "expired"))
    ((_, data),) = h.events()
    assert (data["sub_event_type"], data["result"]) == (InvitationSubEvent.REFUSED, ErrorCode.AV_ERR_REFUSE_FAILED)


def test_accepting_outside_a_room_enters_the_inviters_room(h: Harness) -> None:
    h.in_room()
    h.feed(proto.invitation("inv1", "10009", "party"))
    h.s.exit(h.now)
    h.commands()
    h.feed(proto.exited(h.last("exit")["id"]))
    h.events()
    assert h.s.accept_invitation("inv1", AUTH, h.now) == ErrorCode.AV_OK
    (connect,) = h.commands()
    assert isinstance(connect, Connect)
    assert [m["type"] for m in connect.messages] == ["hello", "invite_reply", "enter"]
    assert len({m["id"] for m in connect.messages}) == 3
    assert connect.messages[2]["room_id"] == "party" and h.s.phase is Phase.ENTERING
    assert h.s.accept_invitation("inv1", AUTH, h.now) == ErrorCode.AV_ERR_ACCEPTT_FAILED  # used up
