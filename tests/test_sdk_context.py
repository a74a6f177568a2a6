"""``Context`` rules that need no OpenGME server: lifecycle, threads, and failing networks on loopback."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.sdk import Context, Room
from opengme.sdk.core import signal_url
from support.sdk_harness import Recorder

APP = "1400000001"
ME = "10001"
AUTH = b"\x02" * 48


def wait_for(ctx: Context, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        ctx.poll()
        time.sleep(0.005)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts and never answers (the WebSocket upgrade hangs)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for s in accepted:
        s.close()
    listener.close()


@pytest.fixture
def ctx() -> Iterator[Context]:
    context = Context(f"http://127.0.0.1:{closed_port()}")
    yield context
    context.exit_room()
    context.uninit()


def sdk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("opengme-sdk")]


# --- URL and singleton -----------------------------------------------------------------------------


def test_signal_url_is_derived_from_the_base_url() -> None:
    assert signal_url("http://127.0.0.1:8090") == "ws://127.0.0.1:8090/v1/signal"
    assert signal_url("https://voice.example/") == "wss://voice.example/v1/signal"
    assert signal_url("ws://127.0.0.1:1/v1/signal") == "ws://127.0.0.1:1/v1/signal"
    with pytest.raises(ValueError):
        Context("127.0.0.1:8090")


def test_get_instance_is_a_singleton_and_other_contexts_coexist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Context, "_instance", None)
    one = Context.get_instance("http://127.0.0.1:9")
    assert Context.get_instance() is one and Context.get_instance("http://127.0.0.1:9/") is one
    with pytest.raises(ValueError):
        Context.get_instance("http://127.0.0.1:10")
    other = Context("http://127.0.0.1:9")
    assert other is not one
    assert one.init(APP, ME) == ErrorCode.AV_OK and other.init(APP, "10002") == ErrorCode.AV_OK
    assert one.uninit() == ErrorCode.AV_OK and other.uninit() == ErrorCode.AV_OK


# --- lifecycle -------------------------------------------------------------------------------------


@pytest.mark.public_surface
def test_everything_before_init_is_1101(ctx: Context) -> None:
    room = ctx.get_room()
    calls: list[Callable[[], object]] = [
        ctx.poll, ctx.pause, ctx.resume, ctx.uninit, ctx.exit_room,
        lambda: ctx.enter_room("r1", 1, AUTH), lambda: ctx.switch_room("r1", AUTH),
        lambda: ctx.invite("10002"), lambda: ctx.accept_invitation("i", AUTH), lambda: ctx.refuse_invitation("i"),
        lambda: room.change_room_type(2), lambda: room.request_view("10002"),
    ]
    assert [call() for call in calls] == [ErrorCode.AV_ERR_CONTEXT_NOT_EXIST] * len(calls)
    assert room.get_open_id(5) == (ErrorCode.AV_ERR_CONTEXT_NOT_EXIST, "")
    assert room.get_tiny_id(ME) == (ErrorCode.AV_ERR_CONTEXT_NOT_EXIST, 0)
    assert (ctx.is_room_entered(), room.get_room_type(), room.get_room_id(), room.get_members()) == (False, 0, "", [])
    assert ctx.get_sdk_version() == "0.1.0" and ctx.set_delegate(Recorder()) == ErrorCode.AV_OK


@pytest.mark.public_surface
def test_init_rules_1004_1003_1102(ctx: Context) -> None:
    assert ctx.init("not-a-number", ME) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctx.init(APP, "") == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctx.init(APP, "x" * 128) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctx.init(APP, ME) == ErrorCode.AV_OK
    assert ctx.init(APP, ME) == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert ctx.init(APP, "10002") == ErrorCode.AV_ERR_CONTEXT_NOT_STOPPED
    assert ctx.uninit() == ErrorCode.AV_OK
    assert ctx.init(APP, "10002") == ErrorCode.AV_OK  # uninit is how GME switches accounts


@pytest.mark.public_surface
def test_room_calls_outside_a_room_are_1201_and_get_room_is_one_object(ctx: Context) -> None:
    ctx.init(APP, ME)
    room = ctx.get_room()
    assert isinstance(room, Room) and ctx.get_room() is room
    assert room.get_room_type() == 0 and room.get_room_id() == "" and not room.is_server_muted()
    assert ctx.exit_room() == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert ctx.switch_room("r2", AUTH) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert room.change_room_type(2) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert room.request_view("10002") == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert room.get_open_id(1) == (ErrorCode.AV_ERR_ROOM_NOT_EXIST, "")
    assert room.get_tiny_id(ME) == (ErrorCode.AV_ERR_ROOM_NOT_EXIST, 0)
    assert ctx.invite("10002") == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert "state: idle" in room.get_quality_tips()


@pytest.mark.public_surface
def test_calls_from_another_thread_are_1007_and_change_nothing(ctx: Context) -> None:
    ctx.init(APP, ME)
    results: dict[str, object] = {}

    def elsewhere() -> None:
        room = ctx.get_room()
        results.update(
            enter=ctx.enter_room("r1", 1, AUTH), exit=ctx.exit_room(), poll=ctx.poll(), uninit=ctx.uninit(),
            init=ctx.init(APP, ME), delegate=ctx.set_delegate(None), pause=ctx.pause(),
            switch=ctx.switch_room("r1", AUTH), change=room.change_room_type(2), view=room.request_view(ME),
            entered=ctx.is_room_entered(), type=room.get_room_type(), tips=room.get_quality_tips(),
            open_id=room.get_open_id(1), tiny_id=room.get_tiny_id(ME), members=room.get_members(),
        )

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    refused = ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
    for name in ("enter", "exit", "poll", "uninit", "init", "delegate", "pause", "switch", "change", "view"):
        assert results[name] == refused, name
    assert results["open_id"] == (refused, "") and results["tiny_id"] == (refused, 0)
    assert (results["entered"], results["type"], results["tips"], results["members"]) == (False, 0, "", [])
    assert not ctx.is_room_entered() and ctx.exit_room() == ErrorCode.AV_ERR_ROOM_NOT_EXIST  # nothing started
    assert ctx.poll() == ErrorCode.AV_OK


def test_pause_and_resume(ctx: Context) -> None:
    ctx.init(APP, ME)
    assert not ctx.is_paused()
    assert ctx.pause() == ErrorCode.AV_OK and ctx.is_paused()
    assert ctx.resume() == ErrorCode.AV_OK and not ctx.is_paused()


def test_uninit_joins_the_network_thread() -> None:
    before = len(sdk_threads())
    contexts = [Context(f"http://127.0.0.1:{closed_port()}") for _ in range(3)]
    for i, c in enumerate(contexts):
        assert c.init(APP, str(10001 + i)) == ErrorCode.AV_OK
    assert len(sdk_threads()) == before + 3
    for c in contexts:
        assert c.uninit() == ErrorCode.AV_OK
    assert len(sdk_threads()) == before


# --- failing networks ------------------------------------------------------------------------------


@pytest.mark.public_surface
def test_closed_port_is_7004_promptly(ctx: Context) -> None:
    events = Recorder()
    ctx.set_delegate(events)
    ctx.init(APP, ME)
    start = time.monotonic()
    assert ctx.enter_room("r1", 1, AUTH) == ErrorCode.AV_OK
    assert events.events == []  # events only inside poll
    wait_for(ctx, lambda: bool(events.events), timeout=1.0)
    assert time.monotonic() - start < 1.0
    (data,) = events.of(EventType.ENTER_ROOM)
    assert data["result"] == ErrorCode.AV_ERR_NET_REQUEST_FALLED and "connect" in data["error_info"].lower()
    assert events.threads == {threading.get_ident()} and not ctx.is_room_entered()


@pytest.mark.public_surface
def test_a_server_that_never_answers_is_1005_after_the_entry_timeout(silent_server: str) -> None:
    ctx = Context(silent_server, entry_timeout=0.5)
    events = Recorder()
    ctx.set_delegate(events)
    ctx.init(APP, ME)
    start = time.monotonic()
    ctx.enter_room("r1", 1, AUTH)
    assert ctx.enter_room("r1", 1, AUTH) == ErrorCode.AV_ERR_REPEATED_OPERATION  # 1001
    assert ctx.uninit() == ErrorCode.AV_ERR_ROOM_NOT_EXITED  # 1202 while the entry runs
    wait_for(ctx, lambda: bool(events.events), timeout=3.0)
    assert 0.5 <= time.monotonic() - start < 1.5
    assert [d["result"] for d in events.of(EventType.ENTER_ROOM)] == [ErrorCode.AV_ERR_TIMEOUT]
    assert ctx.uninit() == ErrorCode.AV_OK


@pytest.mark.public_surface
def test_exit_during_entry_is_7013(silent_server: str) -> None:
    ctx = Context(silent_server)
    events = Recorder()
    ctx.set_delegate(events)
    ctx.init(APP, ME)
    ctx.enter_room("r1", 1, AUTH)
    assert ctx.exit_room() == ErrorCode.AV_OK
    wait_for(ctx, lambda: bool(events.events))
    for _ in range(5):
        ctx.poll()
    assert [(e, d["result"]) for e, d in events.events] == [(EventType.ENTER_ROOM, ErrorCode.AV_ERR_USER_CANCELED)]
    assert ctx.uninit() == ErrorCode.AV_OK


def test_a_raising_delegate_does_not_stop_the_pump(ctx: Context) -> None:
    seen: list[EventType] = []

    def delegate(event: EventType, data: dict[str, Any]) -> None:
        seen.append(event)
        raise RuntimeError("game bug")

    ctx.set_delegate(delegate)
    ctx.init(APP, ME)
    ctx.enter_room("r1", 1, AUTH)
    wait_for(ctx, lambda: bool(seen), timeout=1.0)
    assert ctx.enter_room("r1", 1, AUTH) == ErrorCode.AV_OK  # the context still works
    wait_for(ctx, lambda: len(seen) == 2, timeout=1.0)
