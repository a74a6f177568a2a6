"""The signed admin API: request signing, refusals (401/7006), rooms, kick, dissolve, mute, in/out."""
from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from opengme.core.signalling import KICKED
from opengme.errors import ErrorCode
from opengme.protocol import admin as signing
from opengme.protocol import signalling as p
from opengme.store import AppStore
from support.signal_harness import Running, admin, running_server

KEY = "0123456789abcdef"


# --- signing, pure -------------------------------------------------------------------------------


def test_signature_covers_every_part() -> None:
    base = ("POST", "/v1/admin/rooms/r/kick", "1700000000", "n" * 16, b'{"open_ids":["10001"]}')
    signature = signing.sign(KEY, *base)
    assert len(signature) == 64
    assert signing.sign(KEY, "post", *base[1:]) == signature  # the method is upper-cased
    for i, changed in enumerate(("GET", "/v1/admin/rooms/s/kick", "1700000001", "m" * 16, b"{}")):
        parts = list(base)
        parts[i] = changed
        assert signing.sign(KEY, *parts) != signature
    assert signing.sign("fedcba9876543210", *base) != signature


def verify(headers: dict[str, str], *, now: float = 1_700_000_000, body: bytes = b"",
           nonces: signing.NonceCache | None = None, path: str = "/v1/admin/rooms") -> str:
    return signing.verify_request(headers, "GET", path, body, {"1400000001": KEY}.get,
                                  nonces if nonces is not None else signing.NonceCache(), now, 300.0)


def test_verify_accepts_a_signed_request_once() -> None:
    headers = signing.signed_headers("1400000001", KEY, "GET", "/v1/admin/rooms", now=1_700_000_000)
    nonces = signing.NonceCache()
    assert verify(headers, nonces=nonces) == "1400000001"
    with pytest.raises(signing.AdminAuthError, match="already used"):
        verify(headers, nonces=nonces)
    # past the window the stored nonce is forgotten, and the timestamp check refuses the replay anyway
    with pytest.raises(signing.AdminAuthError, match="from the server's clock"):
        verify(headers, nonces=nonces, now=1_700_000_301)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({signing.HEADER_SIGNATURE: "0" * 64}, "bad signature"),
        ({signing.HEADER_SIGNATURE: "not hex"}, "bad signature"),
        ({signing.HEADER_APP_ID: "1400000002"}, "unknown AppID"),
        ({signing.HEADER_TIMESTAMP: "1699999000"}, "from the server's clock"),
        ({signing.HEADER_TIMESTAMP: "-5"}, "unix seconds"),
        ({signing.HEADER_NONCE: "short"}, "16-64"),
        ({signing.HEADER_NONCE: "has spaces in it, sadly"}, "16-64"),
        ({signing.HEADER_NONCE: ""}, "missing header"),
    ],
)
def test_verify_refusals(change: dict[str, str], fragment: str) -> None:
    headers = {**signing.signed_headers("1400000001", KEY, "GET", "/v1/admin/rooms", now=1_700_000_000), **change}
    with pytest.raises(signing.AdminAuthError, match=fragment):
        verify(headers)


def test_a_refused_request_does_not_burn_the_nonce() -> None:
    good = signing.signed_headers("1400000001", KEY, "GET", "/v1/admin/rooms", now=1_700_000_000)
    nonces = signing.NonceCache()
    with pytest.raises(signing.AdminAuthError):
        verify({**good, signing.HEADER_SIGNATURE: "f" * 64}, nonces=nonces)
    assert verify(good, nonces=nonces) == "1400000001"


def test_nonce_cache_stays_bounded_by_the_window() -> None:
    cache = signing.NonceCache()
    for i in range(5000):
        assert cache.add("a", f"nonce-{i:012d}", keep_until=i + 10, now=float(i))
    assert len(cache) < 2100


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.public_surface
async def test_refusals_are_401_with_7006(srv: Running) -> None:
    async with srv.session.get(srv.url + "/v1/admin/rooms") as r:
        assert r.status == 401 and (await r.json())["code"] == ErrorCode.AV_ERR_AUTH_FIALD
    stale = signing.signed_headers(srv.app.app_id, srv.app.key, "GET", "/v1/admin/rooms", now=1_000_000)
    async with srv.session.get(srv.url + "/v1/admin/rooms", headers=stale) as r:
        reply = await r.json()
        assert r.status == 401 and reply["code"] == ErrorCode.AV_ERR_AUTH_FIALD and "clock" in reply["message"]
    good = signing.signed_headers(srv.app.app_id, srv.app.key, "GET", "/v1/admin/rooms")
    async with srv.session.get(srv.url + "/v1/admin/rooms", headers=good) as r:
        assert r.status == 200
    async with srv.session.get(srv.url + "/v1/admin/rooms", headers=good) as r:
        assert r.status == 401 and "already used" in (await r.json())["message"]
    bad = {**good, signing.HEADER_NONCE: "another-nonce-0001"}
    async with srv.session.get(srv.url + "/v1/admin/rooms", headers=bad) as r:
        assert r.status == 401 and "signature" in (await r.json())["message"]
    # the body is signed: a different body with the same headers is refused
    headers = signing.signed_headers(srv.app.app_id, srv.app.key, "POST", "/v1/admin/rooms/r1/dissolve", b"{}")
    async with srv.session.post(srv.url + "/v1/admin/rooms/r1/dissolve", data=b'{"reason":"x"}', headers=headers) as r:
        assert r.status == 401
    # so is the query string
    path = "/v1/admin/inout?room_id=r1&open_id=10001"
    headers = signing.signed_headers(srv.app.app_id, srv.app.key, "GET", path)
    async with srv.session.get(srv.url + path.replace("10001", "10002"), headers=headers) as r:
        assert r.status == 401


async def test_rooms_listing_and_info_are_scoped_to_the_signing_app(srv: Running) -> None:
    a = await srv.member("10001", room_id="r1", room_type=2)
    await srv.member("10002", room_id="r1")
    await srv.member("10003", room_id="r2")
    status, reply = await admin(srv, "GET", "/v1/admin/rooms")
    assert status == 200 and reply["code"] == 0
    assert sorted((r["room_id"], r["room_type"], r["members"]) for r in reply["rooms"]) == [("r1", 2, 2), ("r2", 1, 1)]
    status, info = await admin(srv, "GET", "/v1/admin/rooms/r1")
    assert status == 200 and info["room_type"] == 2
    assert [(m["open_id"], m["muted"]) for m in info["members"]] == [("10001", False), ("10002", False)]
    assert all(m["tinyid"] > 0 and m["entered_at"] > 1e9 for m in info["members"])
    other = AppStore(srv.server.settings.data_dir).create("other")
    assert (await admin(srv, "GET", "/v1/admin/rooms", app=other))[1]["rooms"] == []
    status, reply = await admin(srv, "GET", "/v1/admin/rooms/r1", app=other)
    assert status == 404 and reply["code"] == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST
    assert a is not None


async def test_room_ids_with_slashes_and_spaces_are_reachable(srv: Running) -> None:
    room = "guild/7 raid?#%"
    await srv.member("10001", room_id=room)
    status, info = await admin(srv, "GET", "/v1/admin/rooms/" + urllib.parse.quote(room, safe=""))
    assert status == 200 and info["room_id"] == room


@pytest.mark.public_surface
async def test_kick(srv: Running) -> None:
    a = await srv.member("10001")
    b = await srv.member("10002")
    await a.recv()
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/kick",
                                {"open_ids": ["10002", "10009"], "reason": "cheating"})
    assert status == 200 and reply["results"] == [
        {"open_id": "10002", "code": 0},
        {"open_id": "10009", "code": ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST},
    ]
    assert await b.recv() == p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, f"{KICKED}: cheating")
    await b.expect_closed()
    assert (await a.recv())["event"] == "exit"
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/nowhere/kick", {"open_ids": ["10001"]})
    assert status == 404 and reply["code"] == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST
    for bad in ({}, {"open_ids": []}, {"open_ids": "10001"}, {"open_ids": ["10001"], "why": "x"},
                {"open_ids": ["10001"], "reason": 5}):
        status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/kick", bad)
        assert status == 400 and reply["code"] == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, bad


async def test_dissolve(srv: Running) -> None:
    a = await srv.member("10001")
    b = await srv.member("10002")
    await a.recv()
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/dissolve", {})
    assert status == 200 and reply["removed"] == 2
    for client in (a, b):
        message = await client.recv()  # straight to the disconnect: no exit pushes about each other
        assert message["type"] == "disconnect" and message["code"] == ErrorCode.AV_ERR_SERVER_NO_PERMISSION
        assert "dissolved" in message["reason"]
    assert (await admin(srv, "GET", "/v1/admin/rooms"))[1]["rooms"] == []
    assert (await admin(srv, "POST", "/v1/admin/rooms/r1/dissolve"))[0] == 404


@pytest.mark.public_surface
async def test_mute_and_unmute(srv: Running) -> None:
    a = await srv.member("10001")
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001", "10002"], "muted": True})
    assert reply["results"] == [{"open_id": "10001", "code": 0},
                                {"open_id": "10002", "code": ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST}]
    assert await a.recv() == p.mute(True, "muted by the server")
    assert (await admin(srv, "GET", "/v1/admin/rooms/r1"))[1]["members"][0]["muted"] is True
    # reconnecting does not escape the mute: the new entry is told it is muted
    other = await srv.member("10002")
    await a.recv()
    again = await srv.client("10001")
    assert (await again.enter("r1"))["muted"] is True
    await admin(srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": False, "reason": "behave"})
    assert await again.recv() == p.mute(False, "behave")
    status, reply = await admin(srv, "POST", "/v1/admin/rooms/r1/mute", {"open_ids": ["10001"], "muted": "yes"})
    assert status == 400
    assert other is not None


async def test_inout_times_are_persisted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running_server(data) as srv:
        a = await srv.member("10001")
        assert (await a.request(p.exit_(a.next_id())))["type"] == "exited"
        assert (await a.enter("r1"))["type"] == "entered"
        status, reply = await admin(srv, "GET", "/v1/admin/inout?room_id=r1&open_id=10001")
        assert status == 200
        first, current = reply["in_out"]
        assert first["start"] <= first["end"] <= current["start"] and current["end"] is None
        assert reply["duration"] >= 0
        status, reply = await admin(srv, "GET", "/v1/admin/inout?room_id=r1")
        assert status == 400 and reply["code"] == ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT
        app = srv.app
    # after a restart the stays are still there; the stop closed the open one
    async with running_server(data) as srv:
        srv.app = app
        status, reply = await admin(srv, "GET", "/v1/admin/inout?room_id=r1&open_id=10001")
        assert status == 200 and len(reply["in_out"]) == 2 and all(s["end"] for s in reply["in_out"])
        total = sum(s["end"] - s["start"] for s in reply["in_out"])
        assert reply["duration"] == pytest.approx(total, abs=0.01)
        assert (await admin(srv, "GET", "/v1/admin/inout?room_id=r2&open_id=10001"))[1]["in_out"] == []


async def test_admin_metrics_count_outcomes(srv: Running) -> None:
    await admin(srv, "GET", "/v1/admin/rooms")
    await admin(srv, "GET", "/v1/admin/rooms/none")
    metrics = srv.server.metrics
    assert metrics.value("opengme_admin_requests_total", code=0) == 1
    assert metrics.value("opengme_admin_requests_total", code=int(ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST)) == 1
