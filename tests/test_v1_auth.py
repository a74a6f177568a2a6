"""The per-app switch that refuses GME's v1 AuthBuffers (``opengme app set APPID --v1-auth off``),
end to end: the CLI sets it in the registry, a real ``opengme serve`` process then refuses v1 on room
entry, room switch and voice messages (upload and download) and keeps accepting v2 tokens."""
from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from opengme.authbuffer import V1, V2, gen_auth_buffer
from opengme.codec import voicefile as vf
from opengme.errors import ErrorCode
from opengme.protocol import ptt as proto
from opengme.store import App, AppStore
from support.audio import clip
from support.processes import ServeProcess, opengme_cmd
from support.signal_harness import SignalClient, is_error

E = ErrorCode
V1_OFF = "v1 format, which is turned off for this app"
V2_HINT = "gen_auth_buffer(..., version=2)"


def cli(served: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(opengme_cmd(*args, "--data-dir", str(served.data_dir)),
                          capture_output=True, text=True, timeout=30)


def new_app(served: ServeProcess, name: str) -> App:
    created = cli(served, "app", "create", name)
    assert created.returncode == 0, created.stderr
    store = AppStore(served.data_dir, create=False)
    try:
        return store.require(json.loads(created.stdout)["app_id"])
    finally:
        store.close()


def v1_auth(served: ServeProcess, app: App, value: str) -> dict[str, Any]:
    result = cli(served, "app", "set", app.app_id, "--v1-auth", value)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_switch_through_the_cli(served: ServeProcess) -> None:
    app = new_app(served, "switchy")
    shown = json.loads(cli(served, "app", "show", app.app_id).stdout)
    assert shown["v1_auth"] is True  # the default: a GME backend moves over unchanged
    assert v1_auth(served, app, "off")["v1_auth"] is False
    listed = {a["app_id"]: a for a in json.loads(cli(served, "app", "list", "--json").stdout)}
    assert listed[app.app_id]["v1_auth"] is False and "key" not in listed[app.app_id]
    table = cli(served, "app", "list").stdout.splitlines()
    assert table[0].split()[-1] == "V1-AUTH"
    assert next(line for line in table if line.startswith(app.app_id)).split()[-1] == "off"
    # `authbuffer verify` applies the app's switch as the server does.
    v1 = gen_auth_buffer(app.app_id, "r", "10001", app.key, version=V1)
    v1_text = base64.b64encode(v1).decode()
    refused = cli(served, "authbuffer", "verify", v1_text)
    assert refused.returncode == 1 and V1_OFF in refused.stderr and V2_HINT in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    v2 = gen_auth_buffer(app.app_id, "r", "10001", app.key, version=V2).decode()
    assert cli(served, "authbuffer", "verify", v2).returncode == 0
    assert v1_auth(served, app, "on")["v1_auth"] is True
    assert cli(served, "authbuffer", "verify", v1_text).returncode == 0
    bad = cli(served, "app", "set", app.app_id, "--v1-auth", "maybe")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


async def test_a_real_server_refuses_v1_entries_and_switches_when_off(served: ServeProcess) -> None:
    app = new_app(served, "entries")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(served.url.replace("http", "ws") + "/v1/signal")
        client = SignalClient(ws, app)
        assert (await client.hello("10001"))["type"] == "hello_ok"
        assert (await client.enter("a", auth=client.auth("a", version=V1)))["type"] == "entered"  # on by default
        assert (await client.request({"type": "exit", "id": client.next_id()}))["type"] == "exited"

        v1_auth(served, app, "off")  # another process; the server sees it on the next entry
        refused = await client.enter("a", auth=client.auth("a", version=V1))
        assert is_error(refused, E.AV_ERR_AUTH_FIALD, V1_OFF) and V2_HINT in refused["message"], refused
        assert (await client.enter("a", auth=client.auth("a", version=V2)))["type"] == "entered"
        switch = await client.switch("b", auth=client.auth("b", version=V1))
        assert is_error(switch, E.QAV_ERR_NOT_TRY_NEW_ROOM, V1_OFF), switch  # 7006 inside GME's 2001
        assert (await client.switch("b", auth=client.auth("b", version=V2)))["type"] == "switched"
        await ws.close()


async def test_voice_messages_refuse_v1_when_off(served: ServeProcess, tmp_path: Path) -> None:
    app = new_app(served, "messages")
    voice = vf.encode_voice_file(tmp_path / "m.ogg", clip(1.0)).read_bytes()

    def headers(version: int) -> dict[str, str]:
        return proto.auth_headers(app.app_id, "10001", gen_auth_buffer(app.app_id, "", "10001", app.key,
                                                                      version=version))

    async with aiohttp.ClientSession() as session:
        async def call(method: str, url: str, version: int, data: bytes | None = None) -> tuple[int, Any]:
            async with session.request(method, url, headers=headers(version), data=data) as resp:
                return resp.status, await resp.json() if resp.content_type == "application/json" else None

        status, stored = await call("POST", served.url + proto.FILES_PATH, V1, voice)
        assert status == 201, stored  # on by default
        v1_auth(served, app, "off")
        status, body = await call("POST", served.url + proto.FILES_PATH, V1, voice)
        assert (status, body["code"]) == (403, E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL) and V1_OFF in body["message"]
        status, body = await call("GET", stored["file_id"], V1)
        assert (status, body["code"]) == (403, E.QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL) and V1_OFF in body["message"]
        assert (await call("POST", served.url + proto.FILES_PATH, V2, voice))[0] == 201
        assert (await call("GET", stored["file_id"], V2))[0] == 200
