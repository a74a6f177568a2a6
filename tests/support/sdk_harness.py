"""The synchronous SDK against a real server that runs on its own loop in a background thread, and
the Poll-driven helpers the SDK tests wait with (GME's callbacks arrive only inside ``poll``)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opengme.authbuffer import gen_auth_buffer
from opengme.config import Settings
from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType, UserUpdateEvent
from opengme.protocol import admin as admin_signing
from opengme.sdk import Context
from opengme.sdk.media import MediaEngine
from opengme.server.app import build_server
from opengme.store import AppStore
from support.signal_harness import start_on_loopback, stop_serving


class Recorder:
    """A delegate that keeps what it was given, and on which thread."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any]]] = []
        self.threads: set[int] = set()

    def __call__(self, event: EventType, data: dict[str, Any]) -> None:
        self.events.append((event, data))
        self.threads.add(threading.get_ident())

    def of(self, event: EventType) -> list[dict[str, Any]]:
        return [d for e, d in self.events if e is event]

    def results(self, event: EventType) -> list[int]:
        return [d["result"] for d in self.of(event)]

    def users(self, event_id: UserUpdateEvent) -> list[str]:
        return [o for d in self.of(EventType.USER_UPDATE) if d["event_id"] == event_id for o in d["user_list"]]


@dataclass
class SdkClient:
    """A player: its context, openid and the events its delegate received."""

    ctx: Context
    open_id: str
    events: Recorder = field(default_factory=Recorder)


ClientMaker = Callable[..., SdkClient]  # the ``clients`` fixture: (url, app, open_id, **options)


def wait_for(clients: list[SdkClient], predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Pump every client (GME's Poll) until ``predicate`` holds (no client: just wait for it)."""
    deadline = time.monotonic() + timeout
    while True:
        for c in clients:
            c.ctx.poll()
        if predicate():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def wait_played(clients: list[SdkClient], seconds: float, *speakers: MemorySpeaker) -> None:
    """Pump until each of ``speakers`` has played ``seconds`` more of audio: time measured in the
    audio that flowed, so a stalled host waits longer instead of judging too little audio."""
    targets = [(s, s.frames_written + round(seconds / 0.02)) for s in speakers]
    wait_for(clients, lambda: all(s.frames_written >= target for s, target in targets), timeout=2 * seconds + 5)


def engine(client: SdkClient) -> MediaEngine:
    """The client's media engine (tests look at its route, counters and devices)."""
    return client.ctx._core.engine


class ThreadServer:
    """``build_server`` + an aiohttp AppRunner on its own loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.store = AppStore(settings.data_dir, database_url=settings.database_url)
        self.app = self.store.create("sdk-tests")

    async def _main(self) -> None:
        server = self.server = build_server(self.settings)
        # A short shutdown: the server's handlers linger ~2 s after a client closes first (see report).
        runner = await start_on_loopback(server, shutdown_timeout=0.2)
        self.url = server.base_url
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await stop_serving(server, runner)

    def close(self) -> None:
        """Stop serving (a test may stop it early; the fixture's second call does nothing)."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.store.close()

    @contextmanager
    def frozen(self, then: Callable[[], object] | None = None) -> Iterator[None]:
        """The server's event loop blocked while inside (a frozen server: nothing is read or answered),
        then ``then`` run on it before it looks at any socket again."""
        blocked, release = threading.Event(), threading.Event()

        def block() -> None:
            blocked.set()
            release.wait(30)

        self._loop.call_soon_threadsafe(block)
        if then is not None:
            self._loop.call_soon_threadsafe(then)
        assert blocked.wait(10)
        try:
            yield
        finally:
            release.set()

    def auth(self, room_id: str, open_id: str, **kw: Any) -> bytes:
        return gen_auth_buffer(self.app.app_id, room_id, open_id, self.app.key, **kw)

    def admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = admin_signing.signed_headers(self.app.app_id, self.app.key, "POST", path, data)
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={**headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())


def enter(server: ThreadServer, client: SdkClient, room_id: str, room_type: int = RoomType.FLUENCY) -> None:
    """Enter ``room_id`` and wait until the ENTER_ROOM callback says it worked."""
    count = len(client.events.of(EventType.ENTER_ROOM))
    assert client.ctx.enter_room(room_id, room_type, server.auth(room_id, client.open_id)) == ErrorCode.AV_OK
    wait_for([client], lambda: len(client.events.of(EventType.ENTER_ROOM)) > count)
    assert client.events.of(EventType.ENTER_ROOM)[-1]["result"] == ErrorCode.AV_OK, client.events.events[-1]


def listen(client: SdkClient) -> MemorySpeaker:
    """A memory speaker selected and switched on: what the client hears."""
    speaker = MemorySpeaker()
    ctrl = client.ctx.get_audio_ctrl()
    assert ctrl.register_speaker(speaker) == ErrorCode.AV_OK and ctrl.select_speaker(speaker.id) == ErrorCode.AV_OK
    assert ctrl.enable_speaker(True) == ErrorCode.AV_OK
    return speaker


def talk(client: SdkClient, path: Any) -> None:
    """Speak from an audio file (the mic switched on)."""
    ctrl = client.ctx.get_audio_ctrl()
    assert ctrl.use_mic_file(path) == ErrorCode.AV_OK and ctrl.enable_mic(True) == ErrorCode.AV_OK
