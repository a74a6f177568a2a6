"""The SDK session in a cluster (docs/protocol.md "Cluster: redirect"), pure: following `redirect`
with the same hello and enter, the redirect limit, and the URLs a reconnect goes through."""
from __future__ import annotations

from typing import Any

import pytest

from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import signalling as proto
from opengme.sdk.session import MAX_REDIRECTS, Closed, Connect, Failed, Opened, Phase
from test_sdk_session import AUTH, Harness

ENTRY, B, C = "http://entry:1", "http://b:2", "http://c:3"


class ClusterHarness(Harness):
    """The session's harness, also keeping the URL of every connection it opened."""

    def __init__(self, **options: Any) -> None:
        super().__init__(url=ENTRY, **options)
        self.urls: list[str] = []

    def commands(self) -> list[Any]:
        out = super().commands()
        self.urls.extend(c.url for c in out if isinstance(c, Connect))
        return out

    def hello_ok(self, nodes: list[str] | None = None) -> None:
        self.s.handle(Opened(self.conn, self.now))
        self.feed(proto.hello_ok(self.last("hello")["id"], "0.1.0", 5.0, 90.0, nodes=nodes))

    def redirect(self, url: str, node: str = "n") -> None:
        self.feed(proto.redirect(self.last("enter")["id"], url, node))

    def entered(self, token: str = "tok") -> None:
        self.feed(proto.entered(self.last("enter")["id"], "r1", 1, 7, [], token, False))

    def lose(self, failed: bool = False) -> None:
        """The current connection breaks (or could not be opened); wait out the backoff's next attempt."""
        conn = self.conn
        self.s.handle((Failed if failed else Closed)(conn, "gone", self.now))
        while self.conn == conn:
            self.tick(0.05)


@pytest.fixture
def c() -> ClusterHarness:
    return ClusterHarness()


def test_a_redirect_opens_the_named_node_with_the_same_hello_and_enter(c: ClusterHarness) -> None:
    assert c.s.enter("r1", 1, AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    first_conn, first_enter = c.conn, c.last("enter")
    c.hello_ok(nodes=[ENTRY, B])
    c.redirect(B)
    assert c.closed == [first_conn] and c.conn != first_conn
    assert c.urls == [ENTRY, B]
    again = c.last("enter")
    assert again["auth_buffer"] == first_enter["auth_buffer"] and again["room_id"] == "r1"
    hellos = [{k: v for k, v in m.items() if k != "id"} for m in c.sent if m["type"] == "hello"]
    assert again["id"] != first_enter["id"] and len(hellos) == 2 and hellos[0] == hellos[1]
    assert c.events() == []  # no ENTER_ROOM yet: the redirect is invisible to the game
    c.hello_ok()
    c.entered()
    assert [e for e, _ in c.events()][:1] == [EventType.ENTER_ROOM]
    assert c.s.phase is Phase.IN_ROOM and c.s.url == B
    assert c.s.room is not None and c.s.room.server_url == B  # the media goes to the admitting node's host


def test_more_than_three_redirects_in_a_row_fail_the_entry_with_a_registry_code(c: ClusterHarness) -> None:
    assert c.s.enter("r1", 1, AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    for i in range(MAX_REDIRECTS):
        c.hello_ok()
        c.redirect(f"http://n{i}:1")
    assert len(c.urls) == MAX_REDIRECTS + 1
    c.hello_ok()
    c.redirect("http://loop:1")
    ((event, data),) = c.events()
    assert event is EventType.ENTER_ROOM and data["result"] == ErrorCode.AV_ERR_SERVER_FAILED
    assert "redirects in a row" in data["error_info"]
    assert c.s.phase is Phase.IDLE and len(c.urls) == MAX_REDIRECTS + 1


def test_a_new_entry_starts_at_the_entry_url_again(c: ClusterHarness) -> None:
    assert c.s.enter("r1", 1, AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    c.hello_ok()
    c.redirect(B)
    c.hello_ok()
    c.entered()
    assert c.s.exit(c.now) is ErrorCode.AV_OK
    c.commands()
    c.feed(proto.exited(c.last("exit")["id"]))
    assert c.s.enter("r2", 1, AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    assert c.urls[-1] == ENTRY


def test_reconnect_rotates_through_current_entry_and_cluster_urls_with_the_resume_token(c: ClusterHarness) -> None:
    assert c.s.enter("r1", 1, AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    c.hello_ok(nodes=[ENTRY, B, C])
    c.redirect(B)
    c.hello_ok(nodes=[ENTRY, B, C])
    c.entered(token="resume-1")
    c.events()
    c.lose()  # node B died: the first attempt tries B again (a blip), then the entry URL, then C
    assert c.events()[0][0] is EventType.RECONNECT_START
    tried = [c.urls[-1]]
    for _ in range(3):
        c.lose(failed=True)
        tried.append(c.urls[-1])
    assert tried == [B, ENTRY, C, B]
    enter = c.last("enter")
    assert enter["resume_token"] == "resume-1" and enter["auth_buffer"] == ""
    c.lose(failed=True)  # ENTRY answers: the room now lives on C
    c.hello_ok(nodes=[ENTRY, C])
    c.redirect(C)
    assert c.urls[-1] == C and c.last("enter")["resume_token"] == "resume-1"
    c.hello_ok(nodes=[ENTRY, C])
    c.entered(token="resume-2")
    assert [e for e, _ in c.events()] == [EventType.RECONNECT_SUCCESS]
    assert c.s.node_urls == [ENTRY, C] and c.s.room is not None and c.s.room.server_url == C


def test_a_reconnect_round_tries_every_known_node_at_once_and_backs_off_between_rounds(c: ClusterHarness) -> None:
    """A dead node refuses in a moment: waiting a backoff before the next node would only add to the
    failover; the backoff spaces whole rounds instead."""
    c.enter(token="resume-1")
    c.hello_ok(nodes=[ENTRY, B, C])  # the cluster as a later hello told it
    c.events()
    c.lose()  # the first attempt, after the first backoff: the node we were on
    assert c.urls[-1] == ENTRY
    started, opened = c.now, len(c.urls)
    for expected in (B, C):
        c.s.handle(Failed(c.conn, "refused", c.now))
        c.tick(0)
        assert c.urls[-1] == expected and c.now == started, "the next node of the round is tried at once"
    c.s.handle(Failed(c.conn, "refused", c.now))  # the round is over: a backoff before the next
    c.tick(0)
    assert len(c.urls) == opened + 2
    while len(c.urls) == opened + 2:
        c.tick(0.05)
    assert c.now - started >= 0.2 and c.urls[-1] == ENTRY


def test_too_many_redirects_while_reconnecting_is_one_failed_attempt_not_the_end(c: ClusterHarness) -> None:
    c.enter(token="resume-1")
    c.events()
    c.lose()
    c.events()
    for i in range(MAX_REDIRECTS + 1):
        c.hello_ok()
        c.redirect(f"http://n{i}:1")
    assert c.s.phase is Phase.RECONNECTING and c.events() == []  # backing off, then the next URL
    before = len(c.urls)
    while len(c.urls) == before:
        c.tick(0.05)
    assert c.last("enter")["resume_token"] == "resume-1"


def test_a_single_server_session_connects_without_a_url() -> None:
    h = Harness()
    assert h.s.enter("r1", 1, AUTH, h.now) is ErrorCode.AV_OK
    (connect,) = [x for x in h.s.take_commands() if isinstance(x, Connect)]
    assert connect.url == ""  # the transport's own URL


def test_a_switch_redirected_enters_the_new_room_on_the_named_node(c: ClusterHarness) -> None:
    c.enter(room="r1", members=[(3, "10002")])
    c.events()
    old = c.conn
    assert c.s.switch("r2", AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    switch = c.last("switch")
    c.feed(proto.redirect(switch["id"], B, "b"))
    assert c.closed[-1] == old and c.urls[-1] == B  # the old room is left with its connection
    enter = c.last("enter")
    assert enter["room_id"] == "r2" and enter["auth_buffer"] == switch["auth_buffer"] and "resume_token" not in enter
    c.hello_ok()
    c.feed(proto.entered(enter["id"], "r2", 1, 9, [(5, "10005")], "tok2", False))
    events = c.events()
    assert events[0] == (EventType.SWITCH_ROOM, {"result": 0, "error_info": ""})
    assert c.s.phase is Phase.IN_ROOM and c.s.room is not None and c.s.room.room_id == "r2"
    assert c.s.room.server_url == B


def test_a_switch_refused_on_the_node_it_was_sent_to_is_2002_and_out(c: ClusterHarness) -> None:
    c.enter(room="r1")
    c.events()
    assert c.s.switch("r2", AUTH, c.now) is ErrorCode.AV_OK
    c.commands()
    c.feed(proto.redirect(c.last("switch")["id"], B, "b"))
    c.hello_ok()
    c.feed(proto.error(c.last("enter")["id"], ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED, "room full"))
    ((event, data),) = c.events()
    assert event is EventType.SWITCH_ROOM and data["result"] == ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED
    assert "room full" in data["error_info"] and c.s.phase is Phase.IDLE
