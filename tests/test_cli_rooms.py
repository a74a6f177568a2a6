"""``opengme rooms|kick|mute`` against a real ``opengme serve`` subprocess, with real WebSocket members."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.core.signalling import KICKED
from opengme.errors import ErrorCode
from opengme.protocol import signalling as p
from opengme.store import App, AppStore
from support.processes import ServeProcess, opengme_cmd, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    served = start_server(tmp_path_factory.mktemp("cli-rooms") / "data")
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def app(server: ServeProcess) -> App:
    return server.dev_app()


def cli(server: ServeProcess, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = opengme_cmd(*args, "--data-dir", str(server.data_dir), "--server", url or server.url)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


async def acli(server: ServeProcess, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, server, *args, url=url)


class Member:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def recv(self) -> dict[str, Any]:
        return p.parse_server(await self.ws.receive_str(timeout=5))


@pytest.fixture
async def join(server: ServeProcess, app: App) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession() as session:
        members: list[Member] = []

        async def enter(open_id: str, room_id: str) -> Member:
            ws = await session.ws_connect(server.url.replace("http", "ws") + "/v1/signal")
            member = Member(ws)
            members.append(member)
            await ws.send_str(p.encode(p.hello(1, app.app_id, open_id, "test")))
            assert (await member.recv())["type"] == "hello_ok"
            auth = gen_auth_buffer(app.app_id, room_id, open_id, app.key)
            await ws.send_str(p.encode(p.enter(2, room_id, 1, auth)))
            assert (await member.recv())["type"] == "entered"
            return member

        yield enter
        for member in members:
            await member.ws.close()


async def test_rooms_lists_rooms_and_members(server: ServeProcess, app: App, join: Any) -> None:
    await join("10001", "lobby")
    await join("10002", "lobby")
    listing = await acli(server, "rooms", app.app_id)
    assert listing.returncode == 0, listing.stderr
    line = next(row for row in listing.stdout.splitlines() if row.startswith("lobby"))
    assert line.split() == ["lobby", "FLUENCY", "2"]
    members = await acli(server, "rooms", app.app_id, "lobby")
    assert members.returncode == 0 and "2 member(s)" in members.stdout
    assert [row.split()[0] for row in members.stdout.splitlines()[2:]] == ["10001", "10002"]
    as_json = json.loads((await acli(server, "rooms", app.app_id, "lobby", "--json")).stdout)
    assert [m["open_id"] for m in as_json["members"]] == ["10001", "10002"]


@pytest.mark.public_surface
async def test_kick_disconnects_the_member(server: ServeProcess, app: App, join: Any) -> None:
    victim = await join("10011", "arena")
    done = await acli(server, "kick", app.app_id, "arena", "10011", "--reason", "afk too long")
    assert done.returncode == 0 and "kicked 10011" in done.stdout, done.stderr
    assert await victim.recv() == p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, f"{KICKED}: afk too long")
    again = await acli(server, "kick", app.app_id, "arena", "10011")
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "opengme kick: AV_ERR_SERVER_ROOM_NOT_EXIST (10009): no room 'arena' in app " + app.app_id
    )


@pytest.mark.public_surface
async def test_mute_and_unmute(server: ServeProcess, app: App, join: Any) -> None:
    member = await join("10021", "studio")
    await join("10022", "studio")
    assert (await member.recv())["event"] == "enter"
    muted = await acli(server, "mute", app.app_id, "studio", "10021")
    assert muted.returncode == 0 and "muted 10021" in muted.stdout
    assert (await member.recv())["muted"] is True
    unmuted = await acli(server, "mute", app.app_id, "studio", "10021", "--off")
    assert unmuted.returncode == 0 and "unmuted 10021" in unmuted.stdout
    assert (await member.recv())["muted"] is False
    absent = await acli(server, "mute", app.app_id, "studio", "10029")
    assert absent.returncode == 1 and "AV_ERR_SERVER_ENDPOINT_NOT_EXIST (10010)" in absent.stderr
    assert len(absent.stderr.strip().splitlines()) == 1


def test_usage_and_unknown_app_exit_2(server: ServeProcess) -> None:
    unknown = cli(server, "rooms", "1399999999")
    assert unknown.returncode == 2 and "no app with AppID 1399999999" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    usage = cli(server, "kick", "1399999999")
    assert usage.returncode == 2 and "error:" in usage.stderr


def test_unreachable_server_is_one_line_exit_1(server: ServeProcess, app: App) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = cli(server, "rooms", app.app_id, url=url)
    assert result.returncode == 1 and "cannot reach the server" in result.stderr
    assert f"(is `opengme serve` running at {url}?)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_server_as_host_port_or_from_the_environment(server: ServeProcess, app: App) -> None:
    bare = cli(server, "rooms", app.app_id, url=server.url.removeprefix("http://"))
    assert bare.returncode == 0, bare.stderr
    env = {**os.environ, "OPENGME_URL": server.url}
    from_env = subprocess.run(opengme_cmd("rooms", app.app_id, "--data-dir", str(server.data_dir)),
                              capture_output=True, text=True, timeout=30, env=env)
    assert from_env.returncode == 0, from_env.stderr
    env["OPENGME_URL"] = "ftp://nowhere"
    refused = subprocess.run(opengme_cmd("rooms", app.app_id, "--data-dir", str(server.data_dir)),
                             capture_output=True, text=True, timeout=30, env=env)
    assert refused.returncode == 2
    assert refused.stderr == ("opengme rooms: OPENGME_URL must be a URL like http://127.0.0.1:8090 "
                              "(or just HOST:PORT), got 'ftp://nowhere'\n")


def test_a_rotated_key_is_refused_with_7006(tmp_path: Path) -> None:
    served = start_server(tmp_path / "data")
    try:
        store = AppStore(served.data_dir)
        app = store.list()[0]
        ok = cli(served, "rooms", app.app_id)
        assert ok.returncode == 0
        # a copy of the data dir with an older key: the server's registry has the new one
        other = tmp_path / "stale"
        other.mkdir()
        stale = AppStore(other)
        stale.create("dev", app_id=app.app_id, key=app.key)
        stale.close()
        store.rotate_key(app.app_id)
        store.close()
        cmd = opengme_cmd("rooms", app.app_id, "--data-dir", str(other), "--server", served.url)
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert refused.returncode == 1 and "AV_ERR_AUTH_FIALD (7006)" in refused.stderr
    finally:
        served.stop()
