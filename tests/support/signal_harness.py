"""An OpenGME server in the test's own event loop (127.0.0.1, port 0) and WebSocket clients that
speak the signalling protocol through opengme.protocol.signalling's builders; signed admin calls."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from opengme.authbuffer import gen_auth_buffer
from opengme.config import Settings
from opengme.errors import ErrorCode
from opengme.protocol import admin as signing
from opengme.protocol import signalling as p
from opengme.server.app import Server, build_server
from opengme.store import App

RECV_TIMEOUT = 3.0


async def start_on_loopback(server: Server, **runner_options: Any) -> web.AppRunner:
    """Serve a built server as ``serve`` does (base URL, start hooks) on a free 127.0.0.1 port;
    ``runner_options`` go to aiohttp's AppRunner."""
    runner = server.runner(handle_signals=False, access_log=None, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    for hook in server.on_start:
        await hook()
    return runner


async def stop_serving(server: Server, runner: web.AppRunner) -> None:
    """The reverse of ``start_on_loopback``, as ``serve`` stops: hooks last-first, then the runner."""
    for hook in reversed(server.on_stop):
        await hook()
    await runner.cleanup()
    server.store.close()


@dataclass
class Running:
    server: Server
    runner: web.AppRunner
    url: str
    app: App  # an app created for the test
    session: aiohttp.ClientSession
    clients: list[SignalClient] = field(default_factory=list)

    async def client(self, open_id: str | None = None, app: App | None = None) -> SignalClient:
        """A connected client; with ``open_id`` it has also completed ``hello``."""
        ws = await self.session.ws_connect(self.url.replace("http", "ws") + "/v1/signal")
        client = SignalClient(ws, app or self.app)
        self.clients.append(client)
        if open_id is not None:
            reply = await client.hello(open_id)
            assert reply["type"] == "hello_ok", reply
        return client

    async def member(self, open_id: str, room_id: str = "r1", room_type: int = 1) -> SignalClient:
        client = await self.client(open_id)
        reply = await client.enter(room_id, room_type)
        assert reply["type"] == "entered", reply
        return client

    async def stop(self) -> None:
        await stop_serving(self.server, self.runner)


async def start(settings: Settings, session: aiohttp.ClientSession, app: App | None = None) -> Running:
    """Start a server like ``serve`` does (hooks included) on a free loopback port."""
    server = build_server(settings)
    app = app or server.store.create("test")
    runner = await start_on_loopback(server)
    return Running(server, runner, server.base_url, app, session)


@asynccontextmanager
async def running_server(data_dir: Path, **settings: Any) -> AsyncIterator[Running]:
    async with aiohttp.ClientSession() as session:
        running = await start(Settings(host="127.0.0.1", port=0, data_dir=data_dir, **settings), session)
        try:
            yield running
        finally:
            for client in running.clients:
                await client.ws.close()
            await running.stop()


class SignalClient:
    """A test client speaking the protocol through opengme.protocol.signalling's builders."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, app: App) -> None:
        self.ws = ws
        self.app = app
        self.open_id = ""
        self._id = 0

    def next_id(self) -> int:
        self._id += 1
        return self._id

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(p.encode(message))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await self.ws.receive(timeout=timeout)
        assert frame.type is aiohttp.WSMsgType.TEXT, (frame.type, frame.data)
        return p.parse_server(frame.data)

    async def expect_closed(self, code: int | None = None) -> None:
        frame = await self.ws.receive(timeout=RECV_TIMEOUT)
        assert frame.type is aiohttp.WSMsgType.CLOSE, frame
        if code is not None:
            assert frame.data == code

    async def silent(self, seconds: float = 0.2) -> bool:
        try:
            frame = await self.ws.receive(timeout=seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {frame}")

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        reply = await self.recv()
        assert reply.get("id") == message["id"], (message, reply)
        return reply

    async def hello(self, open_id: str, **kw: Any) -> dict[str, Any]:
        self.open_id = open_id
        return await self.request(p.hello(self.next_id(), self.app.app_id, open_id, "0.1.0", **kw))

    def auth(self, room_id: str, **kw: Any) -> bytes:
        return gen_auth_buffer(self.app.app_id, room_id, self.open_id, self.app.key, **kw)

    async def enter(self, room_id: str, room_type: int = 1, auth: bytes | str | None = None,
                    resume_token: str | None = None) -> dict[str, Any]:
        buffer = self.auth(room_id) if auth is None else auth
        return await self.request(p.enter(self.next_id(), room_id, room_type, buffer, resume_token))

    async def switch(self, room_id: str, auth: bytes | None = None) -> dict[str, Any]:
        return await self.request(p.switch(self.next_id(), room_id, self.auth(room_id) if auth is None else auth))

    async def ping(self) -> dict[str, Any]:
        return await self.request(p.ping(self.next_id(), 1.5))


def is_error(reply: dict[str, Any], code: ErrorCode, fragment: str = "") -> bool:
    return reply["type"] == "error" and reply["code"] == code and fragment in reply["message"]


def members_of(message: dict[str, Any]) -> list[str]:
    return [m["open_id"] for m in message["members"]]


async def admin(srv: Running, method: str, path: str, body: dict[str, Any] | None = None,
                app: App | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """A signed admin API request (the test's app unless ``app``); (HTTP status, JSON reply)."""
    app = app or srv.app
    data = json.dumps(body).encode() if body is not None else b""
    signed = signing.signed_headers(app.app_id, app.key, method, path, data)
    async with srv.session.request(method, srv.url + path, data=data, headers={**signed, **(headers or {})}) as r:
        return r.status, await r.json()
