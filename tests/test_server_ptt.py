"""Voice messages over HTTP against real servers: upload, download (AuthBuffer or signed link),
every refusal with its GME code, nothing stored when refused, retention, and kill -9 mid-upload."""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.codec import voicefile as vf
from opengme.config import Settings, load_settings
from opengme.errors import ErrorCode
from opengme.protocol import ptt as proto
from opengme.server import ptt as server_ptt
from opengme.server import usage
from opengme.server.usage import day_of
from opengme.storage import DiskStorage
from opengme.store import App
from support.audio import clip
from support.paths import SPEECH_WAV
from support.processes import start_server
from support.signal_harness import Running, running_server
from support.voice import transcode

E = ErrorCode


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Three seconds of real speech as the SDK will record it."""
    return vf.encode_voice_file(tmp_path_factory.mktemp("ptt") / "m.ogg", clip(3.0)).read_bytes()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_server(tmp_path / "data", ptt_max_bytes=200_000, ptt_max_duration_ms=10_000) as running:
        yield running


def auth(app: App, open_id: str, buffer: bytes | None = None, header_open_id: str | None = None,
         **kw: Any) -> dict[str, str]:
    """The three PTT headers, with a fresh room-less AuthBuffer unless ``buffer`` is given."""
    buf = gen_auth_buffer(app.app_id, "", open_id, app.key, **kw) if buffer is None else buffer
    return proto.auth_headers(app.app_id, header_open_id or open_id, buf)


async def call(running: Running, method: str, url: str, headers: dict[str, str] | None = None,
               data: Any = None) -> tuple[int, Any, bytes]:
    """(status, JSON body or None, raw body)."""
    async with running.session.request(method, url, headers=headers, data=data) as resp:
        raw = await resp.read()
        body = json.loads(raw) if resp.content_type == "application/json" else None
        return resp.status, body, raw


async def upload(running: Running, data: Any, headers: dict[str, str]) -> tuple[int, Any]:
    status, body, _ = await call(running, "POST", running.url + proto.FILES_PATH, headers, data)
    return status, body


def _plain_get(url: str, headers: dict[str, str] | None = None) -> bytes:
    """A download with the standard library's HTTP client (blocking: run it in a thread)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        return bytes(resp.read())


def stored(running: Running) -> list[Path]:
    return sorted(p for p in (running.server.settings.data_dir / "messages").rglob("*") if p.is_file())


async def test_upload_then_another_openid_downloads_the_same_bytes(srv: Running, voice: bytes) -> None:
    status, reply = await upload(srv, voice, auth(srv.app, "10001"))
    assert status == 201 and reply["code"] == 0, reply
    assert reply["file_id"].startswith(srv.url + proto.FILES_PATH + "/")
    assert (reply["size"], reply["sha256"]) == (len(voice), hashlib.sha256(voice).hexdigest())
    assert abs(reply["duration_ms"] - 3000) <= 20
    status, _, raw = await call(srv, "GET", reply["file_id"], auth(srv.app, "10002"))
    assert status == 200 and raw == voice
    async with srv.session.get(reply["file_id"], headers=auth(srv.app, "10002")) as resp:
        assert resp.headers[proto.HEADER_SHA256] == hashlib.sha256(await resp.read()).hexdigest()
        assert resp.content_type == "audio/ogg"
    # The signed link opens with no header at all, in a plain HTTP client.
    assert await asyncio.to_thread(_plain_get, reply["download_url"]) == voice
    # A fresh link for someone else.
    status, link, _ = await call(srv, "POST", reply["file_id"] + proto.LINK_SUFFIX, auth(srv.app, "10003"))
    assert status == 200 and "openid=10003" in link["download_url"]
    status, _, raw = await call(srv, "GET", link["download_url"])
    assert status == 200 and raw == voice
    m = srv.server.metrics
    assert m.value(server_ptt.UPLOADS) == 1 and m.value(server_ptt.DOWNLOADS) == 4
    assert m.value(server_ptt.UPLOAD_BYTES) == len(voice)
    today = day_of(time.time())  # the upload counts in the app's usage (GME's DescribeAppStatistics)
    assert (await usage.get(srv.server).days(srv.app.app_id, today, today))[today][usage.Usage.PTT_UPLOADS] == 1


async def test_string_openids_travel_percent_encoded(srv: Running, voice: bytes) -> None:
    srv.server.store.set(srv.app.app_id, string_openid=True)
    status, reply = await upload(srv, voice, auth(srv.app, "玩家 one/two"))
    assert status == 201, reply
    (message,) = server_ptt.get(srv.server).storage.list(srv.app.app_id)
    assert message.open_id == "玩家 one/two"
    status, _, raw = await call(srv, "GET", reply["download_url"])
    assert status == 200 and raw == voice


async def test_files_from_ffmpeg_encoders_are_accepted(srv: Running, tmp_path: Path) -> None:
    data = transcode(SPEECH_WAV, tmp_path / "stereo.ogg", "libopus", 48_000, "stereo").read_bytes()
    async with running_server(tmp_path / "other") as big:  # default limits: 1 MiB, 58 s
        status, reply = await upload(big, data, auth(big.app, "10001"))
        assert status == 201, reply
        assert 16_700 <= reply["duration_ms"] <= 16_760


@pytest.mark.public_surface
async def test_upload_refusals_have_their_codes_and_store_nothing(srv: Running, voice: bytes,
                                                                  tmp_path: Path) -> None:
    app, other_key = srv.app, "A" * 16
    long_file = vf.encode_voice_file(tmp_path / "long.ogg", clip(12.0)).read_bytes()
    vorbis = transcode(SPEECH_WAV, tmp_path / "v.ogg", "vorbis", 44_100, "stereo", 2.0).read_bytes()
    no_buffer = {proto.HEADER_APP_ID: app.app_id, proto.HEADER_OPEN_ID: "10001"}
    cases: list[tuple[str, dict[str, str], Any, ErrorCode, int]] = [
        ("no AuthBuffer", no_buffer, voice, E.QAVPTTERROR_UPLOAD_APPINFO_UNSET, 401),
        ("wrong key", auth(app, "10001", gen_auth_buffer(app.app_id, "", "10001", other_key)), voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("another openid", auth(app, "10001", header_open_id="10002"), voice, E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("expired", auth(app, "10001", expire_at=int(time.time()) - 1), voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("a room's buffer", auth(app, "10001", gen_auth_buffer(app.app_id, "r1", "10001", app.key)), voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("openid breaks the app's rule", auth(app, "player-one"), voice, E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("openid not UTF-8", {**auth(app, "10001"), proto.HEADER_OPEN_ID: "%FF"}, voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("unknown app", {**auth(app, "10001"), proto.HEADER_APP_ID: "1499999999"}, voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("garbage header", {**auth(app, "10001"), proto.HEADER_AUTH_BUFFER: "%%%"}, voice,
         E.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL, 403),
        ("too big", auth(app, "10001"), voice + bytes(200_000), E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 413),
        ("too long", auth(app, "10001"), long_file, E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 413),
        ("not Ogg", auth(app, "10001"), SPEECH_WAV.read_bytes()[:100_000], E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 422),
        ("Vorbis", auth(app, "10001"), vorbis, E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 422),
        ("truncated", auth(app, "10001"), voice[:-100], E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 422),
        ("empty", auth(app, "10001"), b"", E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR, 422),
    ]
    for name, headers, data, code, http in cases:
        status, body = await upload(srv, data, headers)
        assert (status, body["code"]) == (http, code), (name, body)
        assert body["message"], name
    assert stored(srv) == [] and srv.server.metrics.value(server_ptt.UPLOADS) == 0
    assert srv.server.metrics.value(server_ptt.REFUSALS, code=int(E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR)) >= 6


async def test_fuzzed_uploads_are_each_refused_with_8193_and_stored_nowhere(srv: Running, voice: bytes) -> None:
    """Truncations, bit flips, random bytes and huge page sizes, through the real endpoint."""
    rng = random.Random(12)
    bodies = [voice[: rng.randrange(len(voice))] for _ in range(15)]
    for _ in range(15):
        flipped = bytearray(voice)
        flipped[rng.randrange(len(voice))] ^= 1 << rng.randrange(8)
        bodies.append(bytes(flipped))
    bodies += [rng.randbytes(rng.randrange(1, 5000)) for _ in range(10)]
    bodies += [b"OggS\0\2" + bytes(20) + b"\xff" + b"\xff" * 255 + rng.randbytes(100) for _ in range(5)]
    for body in bodies:
        status, reply = await upload(srv, body, auth(srv.app, "10001"))
        assert (status, reply["code"]) == (422, E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR), reply
    assert stored(srv) == [] and srv.server.metrics.value(server_ptt.UPLOADS) == 0


@pytest.mark.public_surface
async def test_a_chunked_body_is_cut_at_the_limit(srv: Running, voice: bytes) -> None:
    """No Content-Length (chunked): the server refuses once the body passes the limit."""

    async def body() -> AsyncIterator[bytes]:
        yield voice
        for _ in range(20):
            yield bytes(50_000)

    try:
        status, reply = await upload(srv, body(), auth(srv.app, "10001"))
        assert (status, reply["code"]) == (413, E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR)
    except aiohttp.ClientError:
        pass  # the server may close the connection while the client still sends: also a refusal
    assert stored(srv) == []
    assert srv.server.metrics.value(server_ptt.REFUSALS, code=int(E.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR)) == 1


async def test_a_stalled_upload_is_refused_after_the_upload_timeout(tmp_path: Path, voice: bytes) -> None:
    """Half a body, then nothing: 8195 (HTTP 408) once ``ptt_upload_timeout`` passes; nothing stored."""
    stalled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield voice[: len(voice) // 2]
        await stalled.wait()  # the rest never comes while the server waits

    async with running_server(tmp_path / "data", ptt_upload_timeout=0.5) as running:
        started = time.monotonic()
        try:
            status, reply = await upload(running, body(), auth(running.app, "10001"))
            assert (status, reply["code"]) == (408, E.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL)
            assert "ptt_upload_timeout" in reply["message"]
        except aiohttp.ClientError:
            pass  # the server may close the connection while the client still holds it open: a refusal too
        finally:
            stalled.set()
        assert time.monotonic() - started < 5
        assert stored(running) == []
        assert running.server.metrics.value(server_ptt.REFUSALS, code=int(E.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL)) == 1


async def test_switches_app_ptt_off_is_7012_and_arrears_7005_both_ways(srv: Running, voice: bytes) -> None:
    _, reply = await upload(srv, voice, auth(srv.app, "10001"))
    for switch, code in (({"ptt": False}, E.AV_ERR_SERVICE_NOT_OPENED), ({"arrears": True}, E.AV_ERR_CHARGE_OVERDUE)):
        srv.server.store.set(srv.app.app_id, **switch)
        assert (await upload(srv, voice, auth(srv.app, "10001")))[1]["code"] == code
        assert (await call(srv, "GET", reply["file_id"], auth(srv.app, "10002")))[1]["code"] == code
        assert (await call(srv, "GET", reply["download_url"]))[1]["code"] == code
        srv.server.store.set(srv.app.app_id, ptt=True, arrears=False)
    assert len(stored(srv)) == 1


@pytest.mark.public_surface
async def test_download_refusals_have_their_codes(srv: Running, voice: bytes) -> None:
    app = srv.app
    _, reply = await upload(srv, voice, auth(app, "10001"))
    url, link = reply["file_id"], reply["download_url"]
    other_app = srv.server.store.create("other")
    tampered = link.replace("openid=10001", "openid=10002")
    expired = proto.signed_link(url, app.key, app.app_id, "10001", url.rsplit("/", 1)[1], int(time.time()) - 1)
    unknown = url[:-4] + ("aaaa" if not url.endswith("aaaa") else "bbbb")
    cases = [
        ("no AuthBuffer", url, {}, E.QAVPTTERROR_DOWNLOAD_APPINFO_UNSET, 401),
        ("wrong key", url, auth(app, "10002", gen_auth_buffer(app.app_id, "", "10002", "B" * 16)),
         E.QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL, 403),
        ("another openid", url, auth(app, "10002", header_open_id="10003"), E.QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL, 403),
        ("unknown file id", unknown, auth(app, "10002"), E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, 404),
        ("malformed file id", srv.url + proto.FILES_PATH + "/..%2f..", auth(app, "10002"),
         E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, 404),
        ("another app's file", url, auth(other_app, "10002"), E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR, 404),
        ("tampered link", tampered, {}, E.QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL, 403),
        ("expired link", expired, {}, E.QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL, 403),
        ("half a link", url + "?sig=00", {}, E.QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL, 403),
    ]
    for name, target, headers, code, http in cases:
        status, body, _ = await call(srv, "GET", target, headers)
        assert (status, body["code"]) == (http, code), (name, body)
    # Deleted by an operator: gone for everyone, links included.
    assert srv.server.web_app[server_ptt.PTT].storage.delete(url.rsplit("/", 1)[1])
    for target, headers in ((url, auth(app, "10002")), (link, {})):
        status, body, _ = await call(srv, "GET", target, headers)
        assert (status, body["code"]) == (404, E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR)


@pytest.mark.public_surface
async def test_retention_removes_expired_messages_and_their_files(srv: Running, voice: bytes,
                                                                  tmp_path: Path) -> None:
    ptt = server_ptt.get(srv.server)
    _, old = await upload(srv, voice, auth(srv.app, "10001"))
    _, new = await upload(srv, vf.encode_voice_file(tmp_path / "new.ogg", clip(1.5)).read_bytes(), auth(srv.app, "10002"))
    await ptt.retain(now=time.time() + 89 * 86_400)
    assert (await call(srv, "GET", old["file_id"], auth(srv.app, "10003")))[0] == 200
    await ptt.retain(now=time.time() + 91 * 86_400)
    for reply in (old, new):
        status, body, _ = await call(srv, "GET", reply["file_id"], auth(srv.app, "10003"))
        assert (status, body["code"]) == (404, E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR)
    assert stored(srv) == []
    assert srv.server.metrics.value(server_ptt.EXPIRED) == 2


async def test_the_periodic_pass_expires_messages_on_its_own(tmp_path: Path, voice: bytes) -> None:
    async with running_server(tmp_path / "data", ptt_retention_days=1.5 / 86_400, ptt_cleanup_interval=1) as srv:
        _, reply = await upload(srv, voice, auth(srv.app, "10001"))
        deadline = time.monotonic() + 15
        while stored(srv) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert stored(srv) == []
        status, body, _ = await call(srv, "GET", reply["file_id"], auth(srv.app, "10001"))
        assert (status, body["code"]) == (404, E.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR)


# --- a real server process killed with SIGKILL in the middle of uploads --------------------------


def _post(url: str, app: App, open_id: str, data: bytes) -> dict[str, Any]:
    request = urllib.request.Request(url + proto.FILES_PATH, data=data, method="POST",
                                     headers={**auth(app, open_id), "Content-Type": proto.CONTENT_TYPE})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _half_upload(url: str, app: App, data: bytes) -> socket.socket:
    """Send the headers and half the body of an upload, then stop (the socket stays open)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in auth(app, "10009").items())
    sock.sendall(f"POST {proto.FILES_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(data)}\r\n"
                 f"{head}\r\n".encode() + data[: len(data) // 2])
    return sock


@pytest.mark.slow
def test_kill_9_mid_upload_leaves_no_partial_message_and_keeps_every_completed_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    app = server.dev_app()
    files = [vf.encode_voice_file(tmp_path / f"{i}.ogg", clip(2.0, offset_s=i)).read_bytes() for i in range(6)]
    completed: list[dict[str, Any]] = []
    stop = threading.Event()

    def keep_uploading() -> None:
        i = 0
        while not stop.is_set():
            try:
                completed.append(_post(server.url, app, "10001", files[i % len(files)]))
            except (OSError, urllib.error.URLError):
                return  # the server died under us
            i += 1

    half = _half_upload(server.url, app, files[0])
    uploader = threading.Thread(target=keep_uploading)
    uploader.start()
    deadline = time.monotonic() + 30
    while len(completed) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL  # during uploads, one of them half sent
    stop.set()
    uploader.join(10)
    half.close()
    assert len(completed) >= 5

    storage = DiskStorage(data_dir)
    rows = storage.list(app.app_id)
    shas = {hashlib.sha256(f).hexdigest() for f in files}
    assert {m.sha256 for m in rows} <= shas  # only whole files: no half message, nothing torn
    assert {r["sha256"] for r in completed} <= {m.sha256 for m in rows}
    assert all(storage.read(m) for m in rows)
    storage.close()

    restarted = start_server(data_dir)
    try:
        for reply in completed:
            file_id = reply["file_id"].split(proto.FILES_PATH, 1)[1]
            body = _plain_get(restarted.url + proto.FILES_PATH + file_id, auth(app, "10002"))
            assert hashlib.sha256(body).hexdigest() == reply["sha256"]
        # The retention pass at start-up removed any orphan file of the killed uploads.
        storage = DiskStorage(data_dir)
        live = {m.sha256 for m in storage.list(app.app_id)}
        storage.close()
        deadline = time.monotonic() + 10
        while {p.stem for p in (data_dir / "messages").rglob("*.ogg")} != live and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {p.stem for p in (data_dir / "messages").rglob("*.ogg")} == live
        assert not list((data_dir / "messages" / "tmp").iterdir())
    finally:
        restarted.stop()


@pytest.mark.public_surface
async def test_storage_failures_are_8195_on_upload_and_12291_on_download(srv: Running, voice: bytes,
                                                                         tmp_path: Path) -> None:
    """Real disk failures: the file's shard folder is taken by a file; the stored file became a folder."""
    sha = hashlib.sha256(voice).hexdigest()
    root = srv.server.settings.data_dir / "messages"
    (root / sha[:2]).write_bytes(b"in the way")
    status, body = await upload(srv, voice, auth(srv.app, "10001"))
    assert (status, body["code"]) == (503, E.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL)
    (root / sha[:2]).unlink()
    _, reply = await upload(srv, voice, auth(srv.app, "10001"))
    blob = root / sha[:2] / f"{sha}.ogg"
    blob.unlink()
    blob.mkdir()
    status, body, _ = await call(srv, "GET", reply["file_id"], auth(srv.app, "10002"))
    assert (status, body["code"]) == (503, E.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL)


def test_voice_message_settings_come_from_the_environment_like_the_others() -> None:
    settings = load_settings(config_file=None, environ={"OPENGME_PTT_MAX_BYTES": "5000",
                                                        "OPENGME_PTT_RETENTION_DAYS": "7",
                                                        "OPENGME_PUBLIC_URL": "https://voice.example.com"})
    assert (settings.ptt_max_bytes, settings.ptt_retention_days) == (5000, 7.0)
    assert proto.file_url(settings.public_url, "abc") == "https://voice.example.com/v1/ptt/files/abc"
    assert Settings().ptt_max_duration_ms == 58_000 and Settings().ptt_max_bytes == 1 << 20
