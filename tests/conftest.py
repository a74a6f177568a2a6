"""Shared fixtures: servers (a real ``opengme serve`` process, one in the test's loop, one on a
background thread for the synchronous SDK) and SDK clients. Their helpers live in tests/support/."""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opengme.config import Settings
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.sdk import Context
from opengme.store import App
from support.processes import ServeProcess, start_server
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for
from support.signal_harness import Running, running_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    """A real server process on 127.0.0.1 with its own data directory; stopped after the test."""
    server = start_server(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Running]:
    """A server in the test's event loop with an app of its own; its clients are closed after the test."""
    async with running_server(tmp_path / "data") as running:
        yield running


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ThreadServer]]:
    """Makes thread servers (Settings overrides as keywords), each with its own data directory."""
    servers: list[ThreadServer] = []

    def make(**overrides: Any) -> ThreadServer:
        settings = Settings(port=0, data_dir=tmp_path / f"data{len(servers)}", **overrides)
        servers.append(ThreadServer(settings))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def server(make_server: Callable[..., ThreadServer]) -> ThreadServer:
    return make_server()


@pytest.fixture
def clients() -> Iterator[ClientMaker]:
    """Contexts initialised on this thread; exited and uninitialised afterwards (threads must end)."""
    made: list[SdkClient] = []

    def make(url: str, app: App, open_id: str, **options: Any) -> SdkClient:
        client = SdkClient(Context(url, **options), open_id)
        client.ctx.set_delegate(client.events)
        assert client.ctx.init(app.app_id, open_id) == ErrorCode.AV_OK
        made.append(client)
        return client

    yield make
    for c in made:
        if c.ctx.exit_room() == ErrorCode.AV_OK:
            wait_for([c], lambda: not c.ctx.is_room_entered() and bool(c.events.of(EventType.EXIT_ROOM)
                                                                          or c.events.of(EventType.ENTER_ROOM)))
        c.ctx.uninit()
    assert not [t for t in threading.enumerate() if t.name.startswith("opengme-sdk")]
