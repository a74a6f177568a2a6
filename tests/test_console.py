"""The web console's API and the browser-facing files, over HTTP against a real server on 127.0.0.1:
who may sign in and change things (session, CSRF, Origin), what the console shows and does, the
operator token command, the development signer, and the pure parts (sessions, chart history)."""
from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.authbuffer import decode_auth_buffer
from opengme.errors import ErrorCode, GmeError
from opengme.server import console, ptt
from opengme.server.console import MAX_BODY_BYTES, History, parse_json_object
from opengme.server.console_auth import COOKIE, CSRF_HEADER, OperatorTokens, Sessions, same_origin, token_hash
from support.processes import opengme_cmd
from support.signal_harness import Running
from support.speech import JOHN, JOHN_WORDS, words
from support.voice import transcode


class Operator:
    """An HTTP client of the console that keeps its cookie by hand (aiohttp's jar refuses IP hosts)."""

    def __init__(self, srv: Running) -> None:
        self.srv = srv
        self.origin = srv.url
        self.cookie: str | None = None
        self.csrf: str | None = None

    async def request(self, method: str, path: str, body: Any = None, *, origin: str | None = "",
                      csrf: str | None = "", cookie: str | None = "") -> tuple[int, dict[str, Any]]:
        headers = {}
        if (origin := self.origin if origin == "" else origin) is not None:
            headers["Origin"] = origin
        if (csrf := self.csrf if csrf == "" else csrf) is not None:
            headers[CSRF_HEADER] = csrf
        if (cookie := self.cookie if cookie == "" else cookie) is not None:
            headers["Cookie"] = f"{COOKIE}={cookie}"
        data = json.dumps(body).encode() if body is not None else None
        async with self.srv.session.request(method, self.srv.url + "/console/api" + path, data=data,
                                            headers=headers) as reply:
            if COOKIE in reply.cookies:
                self.cookie = reply.cookies[COOKIE].value
                self.set_cookie = reply.headers["Set-Cookie"]
            return reply.status, await reply.json()

    async def sign_in(self) -> None:
        token = console.get(self.srv.server).first_token
        assert token is not None
        status, reply = await self.request("POST", "/login", {"token": token})
        assert (status, reply["code"]) == (200, 0), reply
        self.csrf = reply["csrf"]


@pytest.fixture
async def operator(srv: Running) -> Operator:
    op = Operator(srv)
    await op.sign_in()
    return op


@pytest.mark.public_surface
async def test_the_console_refuses_requests_without_a_session_a_csrf_token_or_its_origin(
        srv: Running, operator: Operator) -> None:
    kick = {"app_id": srv.app.app_id, "room_id": "r1", "open_id": "10001"}
    await srv.member("10001")
    assert "HttpOnly" in operator.set_cookie and "SameSite=Strict" in operator.set_cookie
    assert "Path=/console" in operator.set_cookie
    # No session: reads and changes are refused.
    for method, path, body in (("GET", "/apps", None), ("GET", "/rooms", None), ("POST", "/kick", kick)):
        status, reply = await operator.request(method, path, body, cookie=None)
        assert (status, reply["code"]) == (401, ErrorCode.AV_ERR_SERVER_NO_PERMISSION), (path, reply)
    # A made-up session id is no session.
    status, reply = await operator.request("GET", "/apps", cookie="forged")
    assert status == 401
    # A change without the CSRF token, or with another one.
    for csrf in (None, "wrong", operator.csrf + "x"):  # type: ignore[operator]
        status, reply = await operator.request("POST", "/kick", kick, csrf=csrf)
        assert (status, reply["code"]) == (403, ErrorCode.AV_ERR_SERVER_NO_PERMISSION), reply
        assert CSRF_HEADER in reply["message"]
    # A change from another origin, or with no Origin at all, even with session and CSRF token.
    for origin in ("http://evil.example", "http://127.0.0.1:1", None):
        status, reply = await operator.request("POST", "/kick", kick, origin=origin)
        assert (status, reply["code"]) == (403, ErrorCode.AV_ERR_SERVER_NO_PERMISSION), reply
        assert "Origin" in reply["message"]
    # Nothing happened to the member; with all three the kick goes through.
    assert console.get(srv.server).snapshot()["rooms"][0]["members"][0]["open_id"] == "10001"
    status, reply = await operator.request("POST", "/kick", kick)
    assert (status, reply) == (200, {"code": 0})
    assert console.get(srv.server).snapshot() == {"rooms": [], "rooms_total": 0, "members_total": 0}


@pytest.mark.public_surface
async def test_sign_in_needs_the_operator_token_and_sign_out_ends_the_session(srv: Running) -> None:
    op = Operator(srv)
    status, reply = await op.request("POST", "/login", {"token": "not-the-token"})
    assert (status, reply["code"]) == (401, ErrorCode.AV_ERR_SERVER_NO_PERMISSION)
    status, reply = await op.request("POST", "/login", {"token": 5})
    assert (status, reply["code"]) == (400, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT)
    status, reply = await op.request("POST", "/login", {"token": console.get(srv.server).first_token},
                                     origin="http://evil.example")
    assert status == 403  # login CSRF: a foreign page cannot sign the browser in
    status, reply = await op.request("GET", "/session")
    assert reply == {"code": 0, "signed_in": False, "csrf": None}
    await op.sign_in()
    status, reply = await op.request("GET", "/session")
    assert reply == {"code": 0, "signed_in": True, "csrf": op.csrf}
    assert (await op.request("POST", "/logout", {}))[0] == 200
    assert (await op.request("GET", "/apps"))[0] == 401


async def test_a_new_operator_token_ends_the_sessions_of_the_old_one(srv: Running, operator: Operator) -> None:
    assert (await operator.request("GET", "/apps"))[0] == 200
    tokens = OperatorTokens(srv.server.settings.data_dir)
    try:
        tokens.issue(time.time())
    finally:
        tokens.close()
    assert (await operator.request("GET", "/apps"))[0] == 401


async def test_apps_are_created_switched_and_rekeyed_with_the_key_shown_once(srv: Running, operator: Operator) -> None:
    status, created = await operator.request("POST", "/apps", {"name": "racing"})
    assert status == 200 and len(created["key"]) == 16
    app_id = created["app"]["app_id"]
    assert "key" not in created["app"]
    status, listed = await operator.request("GET", "/apps")
    row = next(a for a in listed["apps"] if a["app_id"] == app_id)
    assert "key" not in row and row["usage"] == {"rooms": 0, "members": 0, "voice_minutes_30d": 0.0}
    assert listed["switches"] == ["voice", "ptt", "stt", "arrears", "dev_signing"]
    status, switched = await operator.request("POST", "/apps/switches", {"app_id": app_id, "voice": False,
                                                                         "dev_signing": True})
    assert status == 200 and switched["app"]["voice"] is False and switched["app"]["dev_signing"] is True
    assert srv.server.store.require(app_id).voice is False
    for bad in ({"app_id": app_id, "v1_auth": False}, {"app_id": app_id, "voice": "off"}, {"app_id": app_id}):
        status, reply = await operator.request("POST", "/apps/switches", bad)
        assert (status, reply["code"]) == (400, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT), bad
    status, rotated = await operator.request("POST", "/apps/rotate", {"app_id": app_id})
    assert rotated["key"] != created["key"] and srv.server.store.require(app_id).key == rotated["key"]
    status, reply = await operator.request("POST", "/apps/rotate", {"app_id": "1400000000"})
    assert (status, reply["code"]) == (400, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT)


async def test_live_rooms_mute_dissolve_errors_and_charts(srv: Running, operator: Operator) -> None:
    a = await srv.member("10001", "r1")
    await srv.member("10002", "r1")
    status, reply = await operator.request("GET", "/rooms")
    assert [m["open_id"] for m in reply["rooms"][0]["members"]] == ["10001", "10002"]
    assert reply["rooms"][0]["members"][0]["speaking"] is False
    body = {"app_id": srv.app.app_id, "room_id": "r1", "open_id": "10001", "muted": True}
    assert (await operator.request("POST", "/mute", body))[0] == 200
    push = await a.recv()
    while push["type"] == "members":  # 10002's entry comes first
        push = await a.recv()
    assert push["type"] == "mute" and push["muted"] is True
    assert (await operator.request("GET", "/rooms"))[1]["rooms"][0]["members"][0]["muted"] is True
    status, reply = await operator.request("POST", "/kick", {**body, "open_id": "10009"})
    assert (status, reply["code"]) == (404, ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST)
    status, reply = await operator.request("POST", "/dissolve", {"app_id": srv.app.app_id, "room_id": "r1"})
    assert reply == {"code": 0, "removed": 2}
    status, reply = await operator.request("POST", "/dissolve", {"app_id": srv.app.app_id, "room_id": "r1"})
    assert (status, reply["code"]) == (404, ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST)
    status, reply = await operator.request("GET", "/errors?q=7006")
    assert [e["name"] for e in reply["errors"]] == ["AV_ERR_AUTH_FIALD"]
    assert (await operator.request("GET", "/errors?q=authbuffer"))[1]["errors"]
    status, reply = await operator.request("GET", "/history")
    assert reply["samples"][-1]["rooms"] == 0 and len(reply["samples"]) >= 2  # the start's sample and now
    status, reply = await operator.request("GET", f"/messages?app_id={srv.app.app_id}")
    assert reply == {"code": 0, "messages": []}
    async with srv.session.get(srv.url + "/console/api/messages/audio?file_id=nothing",
                               headers={"Cookie": f"{COOKIE}={operator.cookie}"}) as r:
        assert r.status == 404


async def test_the_live_websocket_needs_a_session_and_the_console_origin(srv: Running, operator: Operator) -> None:
    url = srv.url.replace("http", "ws") + "/console/api/live"
    headers = {"Origin": srv.url, "Cookie": f"{COOKIE}={operator.cookie}"}
    await srv.member("10001", "r9")
    async with srv.session.ws_connect(url, headers=headers) as ws:
        snapshot = json.loads((await ws.receive(timeout=5)).data)
        assert snapshot["rooms"][0]["room_id"] == "r9"
    for refused in ({"Origin": "http://evil.example", "Cookie": headers["Cookie"]}, {"Origin": srv.url}):
        async with srv.session.get(url, headers=refused) as r:
            assert r.status in (401, 403)


async def test_pages_sdk_and_generated_constants_are_served_with_a_strict_policy(srv: Running) -> None:
    for path, kind in (("/console", "text/html"), ("/demo", "text/html"), ("/sdk/opengme.js", "text/javascript"),
                       ("/sdk/playback-worklet.js", "text/javascript"), ("/console/static/console.css", "text/css")):
        async with srv.session.get(srv.url + path) as r:
            assert r.status == 200 and r.content_type == kind, path
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Frame-Options"] == "DENY"
    async with srv.session.get(srv.url + "/sdk/gme-constants.js") as r:
        text = await r.text()
    assert '"ENTER_ROOM": 1' in text and '"AV_ERR_SERVER_NO_PERMISSION": 10003' in text
    assert '"BIND_MAGIC": "OpenGME-bind-v1\\u0000"' in text
    for path in ("/sdk/..%2Fconsole.py", "/sdk/.hidden.js", "/sdk/nothing.js", "/console/static/console.html.bak"):
        async with srv.session.get(srv.url + path) as r:
            assert r.status == 404, path


@pytest.mark.public_surface
async def test_the_development_signer_answers_only_for_apps_that_switch_it_on(srv: Running) -> None:
    body = json.dumps({"app_id": srv.app.app_id, "open_id": "10001", "room_id": "demo"})
    sign = srv.url + "/demo/api/authbuffer"
    async with srv.session.post(sign, data=body, headers={"Origin": srv.url}) as r:
        assert r.status == 403 and (await r.json())["errorCode"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION
    async with srv.session.get(srv.url + f"/demo/api/status?app_id={srv.app.app_id}") as r:
        assert await r.json() == {"app_exists": True, "dev_signing": False}
    srv.server.store.set(srv.app.app_id, dev_signing=True)
    async with srv.session.post(sign, data=body, headers={"Origin": "http://evil.example"}) as r:
        assert r.status == 403
    async with srv.session.post(sign, data=body, headers={"Origin": srv.url}) as r:
        reply = await r.json()
    assert reply["errorCode"] == 0
    claims = decode_auth_buffer(base64.b64decode(reply["userSig"]), srv.app.key)
    assert (claims.app_id, claims.room_id, claims.open_id) == (srv.app.app_id, "demo", "10001")
    async with srv.session.post(sign, data="[", headers={"Origin": srv.url}) as r:
        assert r.status == 400 and (await r.json())["errorCode"] == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT


def test_console_token_replaces_the_token_and_stores_only_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    missing = subprocess.run(opengme_cmd("console-token", "--data-dir", str(data)), capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "opengme serve" in missing.stderr
    tokens = OperatorTokens(data)
    first = tokens.issue_if_none(1.0)
    assert first is not None and tokens.issue_if_none(2.0) is None
    made = subprocess.run(opengme_cmd("console-token", "--data-dir", str(data)), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    second = made.stdout.split()[-1]
    assert tokens.matches(first) is None and tokens.matches(second) == token_hash(second)
    raw = (data / "opengme.db").read_bytes()
    assert second.encode() not in raw and first.encode() not in raw
    tokens.close()


def test_sessions_expire_and_are_capped() -> None:
    sessions = Sessions(lifetime=10, capacity=2)
    a = sessions.open("h", 0.0)
    b = sessions.open("h", 1.0)
    assert sessions.find(a.session_id, "h", 5.0) is a
    assert sessions.find(a.session_id, "other", 5.0) is None  # the token was replaced: gone for good
    assert sessions.find(a.session_id, "h", 5.0) is None
    c = sessions.open("h", 2.0)
    sessions.open("h", 3.0)  # over capacity: b, the oldest, goes
    assert sessions.find(b.session_id, "h", 4.0) is None and sessions.find(c.session_id, "h", 4.0) is c
    assert sessions.find(c.session_id, "h", 12.0) is None  # expired
    assert sessions.find(None, "h", 0.0) is None and sessions.find("", "h", 0.0) is None


@given(st.text(max_size=80))
def test_same_origin_accepts_only_the_exact_origin(origin: str) -> None:
    expected = origin.lower() == "http://127.0.0.1:8090"
    assert same_origin(origin, "http", "127.0.0.1:8090") is expected


def test_history_keeps_an_hour_and_computes_packet_rates() -> None:
    history = History(seconds=3600)
    history.record(0.0, 0, 0, 0)
    assert history.record(10.0, 1, 2, 500).packets_per_second == 50.0
    assert history.peek(20.0, 1, 2, 600).packets_per_second == 10.0
    assert history.record(5000.0, 0, 0, 600).packets_per_second == 0.0
    assert [s.at for s in history.samples()] == [5000.0]  # older than an hour: dropped


@given(st.binary(max_size=300) | st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c,
                                                                                                   max_size=4)).map(
    lambda v: json.dumps(v).encode()))
def test_console_bodies_are_a_json_object_or_10002(raw: bytes) -> None:
    try:
        body = parse_json_object(raw)
    except GmeError as exc:
        assert exc.code == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT
    else:
        assert isinstance(body, dict)


def test_console_bodies_refuse_deep_nesting_and_size() -> None:
    for raw in (b"[" * 4000, b" " * (MAX_BODY_BYTES + 1), b"\xff\xfe"):
        with pytest.raises(GmeError):
            parse_json_object(raw)
    assert parse_json_object(b"") == {}


async def test_voice_messages_are_listed_and_played_from_the_console(srv: Running, operator: Operator,
                                                                     tmp_path: Path) -> None:
    ogg = transcode(Path(__file__).parent / "data" / "speech_en_16k.wav", tmp_path / "m.ogg", "libopus", 16000,
                    "mono", seconds=1.0).read_bytes()
    stored = ptt.get(srv.server).storage.put(srv.app.app_id, "10001", ogg, 1000)
    _, reply = await operator.request("GET", f"/messages?app_id={srv.app.app_id}")
    assert [(m["file_id"], m["open_id"], m["duration_ms"]) for m in reply["messages"]] == [(stored.file_id, "10001", 1000)]
    async with srv.session.get(srv.url + "/console/api/messages/audio", params={"file_id": stored.file_id},
                               headers={"Cookie": f"{COOKIE}={operator.cookie}"}) as r:
        assert r.status == 200 and r.content_type == "audio/ogg" and await r.read() == ogg
    async with srv.session.get(srv.url + "/console/api/messages/audio", params={"file_id": stored.file_id}) as r:
        assert r.status == 401  # no session, no voice


def test_the_public_url_is_an_origin_of_its_own() -> None:
    assert same_origin("https://voice.example.com", "http", "127.0.0.1:8090", "https://voice.example.com/base")
    assert not same_origin("https://evil.example", "http", "127.0.0.1:8090", "https://voice.example.com")
    assert not same_origin("null", "http", "127.0.0.1:8090", "")
    assert not same_origin(None, "http", "127.0.0.1:8090", "https://voice.example.com")


@pytest.mark.public_surface
async def test_a_voice_message_transcript_comes_from_offline_recognition(srv: Running, operator: Operator,
                                                                         tmp_path: Path) -> None:
    ogg = transcode(JOHN, tmp_path / "john.ogg", "libopus", 16000, "mono").read_bytes()
    stored = ptt.get(srv.server).storage.put(srv.app.app_id, "10001", ogg, 4000)
    status, reply = await operator.request("POST", "/messages/transcript", {"file_id": stored.file_id})
    assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
    srv.server.store.set(srv.app.app_id, stt=False)
    status, reply = await operator.request("POST", "/messages/transcript", {"file_id": stored.file_id})
    assert (status, reply["code"]) == (403, ErrorCode.AV_ERR_SERVICE_NOT_OPENED)
    status, reply = await operator.request("POST", "/messages/transcript", {"file_id": "nothing"})
    assert status == 404


async def test_guessing_the_token_is_rate_limited(srv: Running) -> None:
    op = Operator(srv)
    statuses = [(await op.request("POST", "/login", {"token": f"guess{n}"}))[0] for n in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    status, reply = await op.request("POST", "/login", {"token": console.get(srv.server).first_token})
    assert (status, reply["code"]) == (429, ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED)  # even the right one, for now
