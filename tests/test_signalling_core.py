"""The sans-I/O signalling core (opengme.core.signalling) driven directly: connection ids in, addressed
messages, closes and room events out, time passed in. No socket, task or clock anywhere."""
from __future__ import annotations

import dataclasses
from itertools import count
from typing import Any

import pytest

from opengme import __version__
from opengme.authbuffer import gen_auth_buffer
from opengme.config import Settings
from opengme.core.placement import PlacementTable
from opengme.core.rooms import Member
from opengme.core.signalling import (
    CLOSE_GOING_AWAY,
    CLOSE_HEARTBEAT_LOST,
    KICKED,
    REMOVED,
    TAKEN_OVER,
    Close,
    Credentials,
    Instant,
    Output,
    Send,
    SignallingCore,
    prove,
)
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol import signalling as p
from opengme.protocol.resume import make_resume_token
from opengme.store import App, new_key

Json = dict[str, Any]
APP_ID = "1400000001"
START = 1_700_000_000.0


def make_app(**switches: bool) -> App:
    values = {"voice": True, "ptt": True, "stt": True, "arrears": False, "string_openid": False, **switches}
    return App(APP_ID, new_key(), "test", created_at=START, updated_at=START, **values)


class Rig:
    """One core, the apps its ``prove`` reads, and both clocks, advanced by hand."""

    def __init__(self, **settings: Any) -> None:
        self.app = make_app()
        self.core = SignallingCore(Settings(**settings))
        self.wall, self.mono = START, 100.0
        self._conns = count(1)
        self._ids = count(1)
        self.open_ids: dict[int, str] = {}

    @property
    def now(self) -> Instant:
        return Instant(self.wall, self.mono)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def apps(self, app_id: str) -> App | None:
        return self.app if app_id == self.app.app_id else None

    def connect(self) -> int:
        conn = next(self._conns)
        self.core.connected(conn, self.now)
        return conn

    def request(self, conn: int, message: Json) -> Output:
        """As the shell does: begin, prove what it asks (here, at once), receive."""
        credentials = self.core.begin(conn, message, self.now)
        proof = prove(credentials, self.apps) if credentials is not None else None
        return self.core.receive(conn, message, self.now, proof)

    def hello(self, open_id: str) -> int:
        conn = self.connect()
        self.open_ids[conn] = open_id
        assert reply(self.request(conn, p.hello(next(self._ids), APP_ID, open_id, "0.1.0")), conn)["type"] == "hello_ok"
        return conn

    def auth(self, conn: int, room_id: str, **kw: Any) -> bytes:
        return gen_auth_buffer(APP_ID, room_id, self.open_ids[conn], self.app.key, now=self.wall, **kw)

    def enter(self, conn: int, room_id: str = "r1", auth: bytes | None = None, token: str | None = None,
              room_type: int = RoomType.FLUENCY) -> Output:
        buffer = self.auth(conn, room_id) if auth is None else auth
        return self.request(conn, p.enter(next(self._ids), room_id, room_type, buffer, token))

    def member(self, open_id: str, room_id: str = "r1") -> int:
        conn = self.hello(open_id)
        assert reply(self.enter(conn, room_id), conn)["type"] == "entered"
        return conn

    def ask(self, conn: int, build: Any, *args: Any) -> Output:
        return self.request(conn, build(next(self._ids), *args))


def sent(output: Output, conn: int) -> list[Json]:
    return [a.message for a in output.actions if isinstance(a, Send) and a.conn == conn]


def reply(output: Output, conn: int) -> Json:
    [message] = [m for m in sent(output, conn) if "id" in m]
    return message


def closed(output: Output) -> dict[int, int]:
    return {a.conn: a.code for a in output.actions if isinstance(a, Close)}


def is_error(message: Json, code: ErrorCode, fragment: str = "") -> bool:
    return message["type"] == "error" and message["code"] == code and fragment in message["message"]


def open_ids(message: Json) -> list[str]:
    return [m["open_id"] for m in message["members"]]


# --- handshake and order of checks -----------------------------------------------------------------


def test_hello_is_proven_then_answered() -> None:
    rig = Rig(heartbeat_interval=2.0, member_timeout=9.0)
    conn = rig.connect()
    message = p.hello(1, APP_ID, "10001", "0.1.0")
    credentials = rig.core.begin(conn, message, rig.now)
    assert credentials == Credentials(APP_ID, "10001", START)
    out = rig.core.receive(conn, message, rig.now, prove(credentials, rig.apps))
    assert out.actions == [Send(conn, p.hello_ok(1, __version__, 2.0, 9.0))] and not out.events
    again = p.hello(2, APP_ID, "10001", "0.1.0")
    assert rig.core.begin(conn, again, rig.now) is None  # refused before any proof is made
    assert is_error(reply(rig.core.receive(conn, again, rig.now), conn), ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION)


@pytest.mark.parametrize(("app_id", "open_id", "string_openid", "fragment"), [
    ("1399999999", "10001", False, "unknown AppID"),
    (APP_ID, "player-one", False, "integer string"),
    (APP_ID, "9999", False, "greater than 10000"),
])
def test_hello_refusals_are_7006_and_the_connection_stays(app_id: str, open_id: str, string_openid: bool,
                                                          fragment: str) -> None:
    rig = Rig()
    rig.app = make_app(string_openid=string_openid)
    conn = rig.connect()
    out = rig.request(conn, p.hello(1, app_id, open_id, "0.1.0"))
    assert is_error(reply(out, conn), ErrorCode.AV_ERR_AUTH_FIALD, fragment) and not closed(out)
    assert reply(rig.request(conn, p.hello(2, APP_ID, "10001", "0.1.0")), conn)["type"] == "hello_ok"


@pytest.mark.parametrize("message", [p.ping(1, 0.5), p.exit_(1), p.enter(1, "r1", 1, b"x"), p.invite(1, "10002")])
def test_every_request_before_hello_is_10002_without_a_proof(message: Json) -> None:
    rig = Rig()
    conn = rig.connect()
    assert rig.core.begin(conn, message, rig.now) is None
    assert is_error(reply(rig.core.receive(conn, message, rig.now), conn), ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                    "hello")


def test_a_request_that_needs_a_proof_and_has_none_is_10001_not_a_crash() -> None:
    rig = Rig()
    conn = rig.hello("10001")
    out = rig.core.receive(conn, p.enter(9, "r1", 1, b"x"), rig.now)  # a shell that skipped begin/prove
    assert is_error(reply(out, conn), ErrorCode.AV_ERR_SERVER_FAILED)
    assert reply(rig.ask(conn, p.ping, 1.0), conn)["type"] == "pong"


def test_prove_never_raises_a_failing_lookup_becomes_10001() -> None:
    def broken(app_id: str) -> App | None:
        raise OSError("disk gone")

    proof = prove(Credentials(APP_ID, "10001", START), broken)
    assert proof.app is None and proof.refused is not None and proof.refused.code == ErrorCode.AV_ERR_SERVER_FAILED


def test_protocol_errors_are_answered_and_close_when_asked() -> None:
    rig = Rig()
    conn = rig.connect()
    out = rig.core.refuse(conn, p.ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "not JSON"), rig.now)
    assert out.actions == [Send(conn, p.error(None, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "not JSON"))]
    out = rig.core.refuse(conn, p.ProtocolError(ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "v99", 1, p.CLOSE_NORMAL),
                          rig.now)
    assert out.actions == [Send(conn, p.error(1, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "v99")),
                           Close(conn, p.CLOSE_NORMAL)]
    assert rig.request(conn, p.ping(2, 1.0)).actions == []  # a closing connection is not answered


# --- entering -------------------------------------------------------------------------------------


def test_entry_replies_to_the_joiner_and_pushes_to_the_others() -> None:
    rig = Rig()
    a = rig.member("10001")
    b = rig.hello("10002")
    out = rig.enter(b, room_type=RoomType.HIGHQUALITY)
    entered = reply(out, b)
    assert entered["type"] == "entered" and open_ids(entered) == ["10001"] and entered["muted"] is False
    assert entered["room_type"] == RoomType.FLUENCY  # the room's type, not the request's
    assert "media" not in entered  # no relay attached to this core
    assert sent(out, a) == [p.members_push("enter", [(entered["tinyid"], "10002")])]
    assert [(e.kind, e.member.open_id, [o.open_id for o in e.others]) for e in out.events] == \
        [("enter", "10002", ["10001"])]
    assert rig.core.carries_media(b) and not rig.core.carries_media(rig.hello("10003"))
    again = p.enter(99, "r1", 1, rig.auth(b, "r1"))
    assert rig.core.begin(b, again, rig.now) is None
    assert is_error(reply(rig.core.receive(b, again, rig.now), b), ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION)


@pytest.mark.parametrize(("switches", "auth", "token", "expected", "fragment"), [
    ({}, "good", None, None, ""),
    ({}, "garbage", None, ErrorCode.AV_ERR_AUTH_FIALD, ""),
    ({}, "other-room", None, ErrorCode.AV_ERR_AUTH_FIALD, "other-room"),
    ({}, "expired", None, ErrorCode.AV_ERR_AUTH_FIALD, "expired"),
    ({}, "empty", None, ErrorCode.AV_ERR_AUTH_FIALD, ""),
    ({}, "empty", "good", None, ""),  # a resume: the token alone
    ({}, "garbage", "good", None, ""),  # the token holds: the AuthBuffer is not needed
    ({}, "empty", "other-room", ErrorCode.AV_ERR_AUTH_FIALD, "does not match"),
    ({}, "empty", "expired", ErrorCode.AV_ERR_AUTH_FIALD, "expired"),
    ({}, "empty", "malformed", ErrorCode.AV_ERR_AUTH_FIALD, "malformed"),
    ({}, "good", "other-room", None, ""),  # a bad token with a good AuthBuffer still enters
    ({}, "garbage", "other-room", ErrorCode.AV_ERR_AUTH_FIALD, ""),
    ({"arrears": True}, "good", None, ErrorCode.AV_ERR_CHARGE_OVERDUE, "arrears"),
    ({"voice": False}, "good", None, ErrorCode.AV_ERR_SERVICE_NOT_OPENED, "voice"),
    ({"arrears": True, "voice": False}, "good", None, ErrorCode.AV_ERR_CHARGE_OVERDUE, ""),  # arrears first
    ({"arrears": True}, "garbage", None, ErrorCode.AV_ERR_AUTH_FIALD, ""),  # authentication before both
    ({"arrears": True}, "empty", "good", ErrorCode.AV_ERR_CHARGE_OVERDUE, ""),  # a resume is checked too
])
def test_entry_checks_in_gmes_order(switches: dict[str, bool], auth: str, token: str | None,
                                    expected: ErrorCode | None, fragment: str) -> None:
    rig = Rig()
    conn = rig.hello("10001")
    rig.app = dataclasses.replace(rig.app, **switches)
    buffers = {"good": rig.auth(conn, "r1"), "garbage": b"no AuthBuffer", "empty": b"",
               "other-room": rig.auth(conn, "other-room"), "expired": rig.auth(conn, "r1", expire_at=1_000_000)}
    expiry = int(rig.wall + 60)
    tokens = {None: None, "good": make_resume_token(rig.app.key, APP_ID, "10001", "r1", expiry),
              "other-room": make_resume_token(rig.app.key, APP_ID, "10001", "r2", expiry),
              "expired": make_resume_token(rig.app.key, APP_ID, "10001", "r1", int(rig.wall) - 1),
              "malformed": "nonsense"}
    answer = reply(rig.enter(conn, auth=buffers[auth], token=tokens[token]), conn)
    if expected is None:
        assert answer["type"] == "entered", answer
    else:
        assert is_error(answer, expected, fragment), answer


def test_takeover_tells_the_old_client_then_shows_exit_and_enter() -> None:
    rig = Rig()
    other = rig.member("10002")
    first = rig.member("10001")
    second = rig.hello("10001")
    out = rig.enter(second)
    assert sent(out, first) == [p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, TAKEN_OVER)]
    assert closed(out) == {first: p.CLOSE_NORMAL}
    assert [(m["event"], open_ids(m)) for m in sent(out, other)] == [("exit", ["10001"]), ("enter", ["10001"])]
    assert [m["type"] for m in sent(out, second)] == ["entered"]  # nothing about its predecessor
    assert rig.ask(first, p.ping, 1.0).actions == []  # the old connection is closing: ignored
    assert rig.core.disconnected(first, rig.now).actions == []  # its socket closing changes nothing
    assert rig.core.registry.member_count == 2


def test_room_and_member_limits_are_10005() -> None:
    rig = Rig(max_members_per_room=1, max_rooms=1)
    rig.member("10001")
    b = rig.hello("10002")
    assert is_error(reply(rig.enter(b), b), ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "full")
    assert is_error(reply(rig.enter(b, "r2"), b), ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "room limit")


class PlacedRelays:
    """The core's media sessions placed on relay processes by the real placement table (as
    ``opengme serve --workers N`` places them), with no process behind: what the core sees."""

    def __init__(self) -> None:
        self.table = PlacementTable()

    def open_session(self, member: Member, muted: bool) -> Json:
        return {"udp_port": 40000 + int(self.table.place(f"{member.app_id}\0{member.room_id}")), "key": ""}

    def set_muted(self, member: Member, muted: bool) -> None: ...

    def share(self, member: Member, partner: Member | None) -> None: ...


def test_an_entry_no_relay_can_take_is_10005_and_leaves_no_member_behind() -> None:
    rig = Rig()
    relays = PlacedRelays()
    rig.core.media = relays
    a = rig.hello("10001")
    refused = reply(rig.enter(a), a)  # every relay process is restarting
    assert is_error(refused, ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "enter again in a moment")
    assert rig.core.registry.member_count == 0 and rig.core.registry.room_count == 0
    relays.table.add_target("1")
    entered = reply(rig.enter(a), a)
    assert entered["type"] == "entered" and entered["media"]["udp_port"] == 40001
    assert rig.core.registry.member_count == 1


# --- what may change while a proof is being made --------------------------------------------------------


def test_a_kick_while_a_resume_is_being_proven_wins() -> None:
    rig = Rig()
    old = rig.member("10001")
    token = make_resume_token(rig.app.key, APP_ID, "10001", "r1", int(rig.wall + 3600))
    new = rig.hello("10001")
    message = p.enter(50, "r1", 1, b"", token)
    credentials = rig.core.begin(new, message, rig.now)
    assert credentials is not None and credentials.resume_token == token
    proof = prove(credentials, rig.apps)  # in the shell: on a worker thread, while the loop goes on
    rig.core.kick(APP_ID, "r1", "10001", KICKED, rig.now)
    answer = reply(rig.core.receive(new, message, rig.now, proof), new)
    assert is_error(answer, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)  # 10003: what happened
    assert rig.core.registry.member_count == 0 and old != new
    assert reply(rig.enter(new), new)["type"] == "entered"  # a fresh AuthBuffer still lets it in


def test_a_switch_whose_member_was_kicked_meanwhile_goes_nowhere() -> None:
    rig = Rig()
    conn = rig.member("10001")
    message = p.switch(7, "r2", rig.auth(conn, "r2"))
    proof = prove(rig.core.begin(conn, message, rig.now), rig.apps)  # type: ignore[arg-type]
    out = rig.core.kick(APP_ID, "r1", "10001", "bye", rig.now)
    assert sent(out, conn) == [p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, f"{KICKED}: bye")]
    assert rig.core.receive(conn, message, rig.now, proof).actions == []  # closing: nothing more to say
    assert rig.core.registry.member_count == 0


def test_a_room_that_filled_up_meanwhile_refuses_the_entry() -> None:
    rig = Rig(max_members_per_room=1)
    late = rig.hello("10002")
    message = p.enter(3, "r1", 1, rig.auth(late, "r1"))
    proof = prove(rig.core.begin(late, message, rig.now), rig.apps)  # type: ignore[arg-type]
    rig.member("10001")
    assert is_error(reply(rig.core.receive(late, message, rig.now, proof), late),
                    ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED)


# --- in the room ----------------------------------------------------------------------------------------


def test_exit_switch_and_room_type() -> None:
    rig = Rig()
    a = rig.member("10001", "a")
    b = rig.member("10002", "a")
    c = rig.member("10003", "b")
    out = rig.ask(b, p.switch, "b", rig.auth(b, "b"))
    switched = reply(out, b)
    assert switched["type"] == "switched" and open_ids(switched) == ["10003"]
    assert [m["event"] for m in sent(out, a)] == ["exit"] and [m["event"] for m in sent(out, c)] == ["enter"]
    assert is_error(reply(rig.ask(b, p.switch, "b", rig.auth(b, "b")), b), ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM,
                    "already in room")
    refused = reply(rig.ask(b, p.switch, "a", rig.auth(b, "elsewhere")), b)
    assert is_error(refused, ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, "AV_ERR_AUTH_FIALD (7006)")
    out = rig.ask(c, p.change_room_type, RoomType.STANDARD)
    assert reply(out, c)["type"] == "room_type_changed"
    assert sent(out, b) == [p.room_type_push(RoomType.STANDARD, "10003")]
    out = rig.ask(b, p.exit_)
    assert reply(out, b)["type"] == "exited" and [m["event"] for m in sent(out, c)] == ["exit"]
    assert is_error(reply(rig.ask(b, p.exit_), b), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)
    assert is_error(reply(rig.ask(b, p.switch, "a", rig.auth(b, "a")), b), ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM)


def test_switch_2002_leaves_the_old_room() -> None:
    rig = Rig(max_members_per_room=1)
    a = rig.member("10001", "a")
    rig.member("10002", "b")
    assert is_error(reply(rig.ask(a, p.switch, "b", rig.auth(a, "b")), a), ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED)
    assert [r.room_id for r in rig.core.registry.rooms(APP_ID)] == ["b"]
    assert reply(rig.enter(a, "a"), a)["type"] == "entered"


def test_server_mute_survives_a_dropped_connection_and_a_resume_but_not_an_exit() -> None:
    rig = Rig()
    rig.member("10002")  # keeps the room (and so the mute) alive
    conn = rig.hello("10001")
    token = reply(rig.enter(conn), conn)["resume_token"]
    out = rig.core.set_muted(APP_ID, "r1", "10001", True)
    assert out.actions == [Send(conn, p.mute(True, "muted by the server"))]
    rig.core.disconnected(conn, rig.now)
    again = rig.hello("10001")
    entered = reply(rig.enter(again, auth=b"", token=token), again)
    assert entered["type"] == "entered" and entered["muted"] is True
    rig.ask(again, p.exit_)
    assert reply(rig.enter(again), again)["muted"] is False


def test_invitations_reach_every_connection_of_the_openid_and_expire() -> None:
    rig = Rig()
    host = rig.member("10001", "party")
    guests = [rig.member("10002", "lobby")]  # an entry proves the openid; hello alone does not
    rig.ask(guests[0], p.exit_)
    guests.append(rig.member("10002", "lobby"))
    rig.hello("10002")  # unproven: gets nothing
    assert is_error(reply(rig.ask(host, p.invite, "10009"), host), ErrorCode.AV_ERR_INVITET_FAILED, "not connected")
    out = rig.ask(host, p.invite, "10002")
    invite_id = reply(out, host)["invite_id"]
    assert [sent(out, g) for g in guests] == [[p.invitation(invite_id, "10001", "party")]] * 2
    out = rig.ask(guests[1], p.invite_reply, invite_id, True)
    assert reply(out, guests[1]) == p.invite_reply_ok(reply(out, guests[1])["id"], invite_id, "party")
    assert sent(out, host) == [p.invitation_result(invite_id, "10002", True)]
    late = reply(rig.ask(host, p.invite, "10002"), host)["invite_id"]
    rig.advance(61)
    rig.core.tick(rig.now)
    assert rig.core.registry.invitation_count == 0
    assert is_error(reply(rig.ask(guests[0], p.invite_reply, late, False), guests[0]), ErrorCode.AV_ERR_REFUSE_FAILED)


# --- time, removal and shutdown ---------------------------------------------------------------------------


def test_reaping_follows_the_monotonic_clock() -> None:
    rig = Rig(member_timeout=90.0, entry_timeout=30.0)
    silent = rig.member("10001")
    alive = rig.member("10002")
    idle = rig.hello("10003")
    rig.wall += 10_000  # an NTP step: nobody is dropped for it
    assert rig.core.tick(rig.now).actions == []
    for _ in range(10):
        rig.mono += 10
        rig.ask(alive, p.ping, 0.0)
    out = rig.core.tick(rig.now)
    assert sent(out, silent) == []  # no `disconnect`: its SDK resumes, as GME's client reconnects
    assert sent(out, idle) == [p.disconnect(ErrorCode.AV_ERR_SERVER_TIMEOUT, "no message for 90 s")]
    assert closed(out) == {silent: CLOSE_HEARTBEAT_LOST, idle: p.CLOSE_NORMAL}
    assert [(m["event"], open_ids(m)) for m in sent(out, alive)] == [("exit", ["10001"])]
    assert rig.core.registry.member_count == 1 and rig.core.tick(rig.now).actions == []


def test_a_connection_without_hello_is_closed_at_its_entry_deadline_whatever_it_sends() -> None:
    rig = Rig(entry_timeout=30.0)
    chatty = rig.connect()
    for _ in range(5):  # frames that are not a hello do not push the deadline back
        rig.advance(6)
        rig.core.refuse(chatty, p.ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "junk"), rig.now)
        rig.request(chatty, p.ping(1, 0.0))
    out = rig.core.tick(rig.now)
    assert sent(out, chatty) == [p.disconnect(ErrorCode.AV_ERR_SERVER_TIMEOUT, "no hello within 30 s")]
    assert closed(out) == {chatty: p.CLOSE_NORMAL}


def test_kick_and_dissolve_void_older_resume_tokens_only() -> None:
    rig = Rig()
    kicked = rig.hello("10001")
    token = reply(rig.enter(kicked), kicked)["resume_token"]
    watcher = rig.member("10002")
    out = rig.core.kick(APP_ID, "r1", "10001", "cheating", rig.now)
    assert sent(out, kicked) == [p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, f"{KICKED}: cheating")]
    assert [m["event"] for m in sent(out, watcher)] == ["exit"] and [e.kind for e in out.events] == ["leave"]
    back = rig.hello("10001")
    assert is_error(reply(rig.enter(back, auth=b"", token=token), back), ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)
    rig.advance(2)
    newer = reply(rig.enter(back), back)["resume_token"]  # issued after the kick
    out = rig.core.dissolve(APP_ID, "r1", "closing time", rig.now)
    assert closed(out) == {back: p.CLOSE_NORMAL, watcher: p.CLOSE_NORMAL} and len(out.events) == 2
    assert all(not e.others for e in out.events)  # nobody is left to tell
    rig.advance(2)
    last = rig.hello("10001")
    assert is_error(reply(rig.enter(last, auth=b"", token=newer), last), ErrorCode.AV_ERR_SERVER_NO_PERMISSION,
                    REMOVED)
    other = rig.hello("10003")  # nobody removed 10003: its token holds
    fresh = make_resume_token(rig.app.key, APP_ID, "10003", "r1", int(rig.wall + 3600))
    assert reply(rig.enter(other, auth=b"", token=fresh), other)["type"] == "entered"


def test_a_closed_socket_leaves_the_room_and_stops_its_invitations() -> None:
    rig = Rig()
    a = rig.member("10001")
    b = rig.member("10002")
    rig.member("10003", "other")
    assert reply(rig.ask(a, p.invite, "10003"), a)["type"] == "invite_sent"
    out = rig.core.disconnected(a, rig.now)
    assert [(m["event"], open_ids(m)) for m in sent(out, b)] == [("exit", ["10001"])]
    assert rig.core.registry.invitation_count == 0
    assert is_error(reply(rig.ask(b, p.invite, "10001"), b), ErrorCode.AV_ERR_INVITET_FAILED, "not connected")


def test_shutdown_closes_everyone_with_1001_and_no_disconnect() -> None:
    rig = Rig()
    members = [rig.member("10001"), rig.member("10002")]
    waiting = rig.connect()
    out = rig.core.shutdown(rig.now)
    assert out.actions == [Close(c, CLOSE_GOING_AWAY) for c in [*members, waiting]]  # no frame, no push
    assert [e.kind for e in out.events] == ["leave", "leave"] and rig.core.registry.member_count == 0


def test_a_handler_bug_is_10001_and_the_core_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    conn = rig.member("10001")

    def broken(*args: object) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setitem(rig.core._handlers, "change_room_type", broken)
    answer = reply(rig.ask(conn, p.change_room_type, 2), conn)
    assert is_error(answer, ErrorCode.AV_ERR_SERVER_FAILED) and "injected" not in answer["message"]
    assert reply(rig.ask(conn, p.ping, 1.0), conn)["type"] == "pong"
