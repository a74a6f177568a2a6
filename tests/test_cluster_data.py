"""The durable data several nodes share (issue 18): the database interface on SQLite and on a real
PostgreSQL, its migrations, and voice messages in a real S3-speaking server (moto, on loopback)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.codec import voicefile as vf
from opengme.core.recording import CallbackMode, RecordStatus, Subscription
from opengme.datadir import DataDirError
from opengme.db import MIGRATIONS, open_database
from opengme.protocol import ptt as proto
from opengme.server.actions import InOutLog
from opengme.server.console_auth import OperatorTokens
from opengme.server.recording import RecordingDB
from opengme.server.usage import Usage, UsageLog, day_of
from opengme.storage import MessageGone
from opengme.storage_s3 import ORPHAN_GRACE, S3Storage, parse_url
from opengme.store import AppStore, AppStoreError
from opengme.stt.transcripts import Transcripts
from support.audio import clip
from support.cluster import S3_ENV, S3Server, postgres_database, s3_server
from support.processes import opengme_cmd, start_server

DAY = 86_400.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test that takes it runs on both engines: "" (SQLite in the data directory) and PostgreSQL."""
    if request.param == "sqlite":
        yield ""
    else:
        with postgres_database() as url:
            yield url


def test_migrations_are_recorded_and_applied_once_on_both_engines(tmp_path: Path, database_url: str) -> None:
    first = open_database(tmp_path, database_url)
    second = open_database(tmp_path, database_url)  # finds everything applied: no step runs twice
    try:
        rows = second.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
        assert {"app_id", "key", "v1_auth", "dev_signing"} <= second.columns("apps")
        assert {"file_id", "sha256", "created_at"} <= second.columns("voice_messages")
        with pytest.raises(second.integrity_errors), second.transaction() as db:  # a failed transaction leaves nothing
            db.execute("INSERT INTO console_tokens VALUES (?, ?)", ("h", 1.0))
            db.execute("INSERT INTO console_tokens VALUES (?, ?)", ("h", 2.0))
        assert first.execute("SELECT * FROM console_tokens").fetchall() == []
    finally:
        first.close()
        second.close()


def test_nodes_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path, database_url: str) -> None:
    """Several nodes started together on an empty database: one creates the schema, the rest wait for
    it (found by examples/cluster/run-local.sh: two nodes raced on ``CREATE TABLE schema_version``)."""
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda i: open_database(tmp_path / f"n{i}", database_url) if database_url
                               else open_database(tmp_path, ""), range(4)))
    try:
        rows = opened[0].execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        for db in opened:
            db.close()


def test_the_app_registry_is_shared_by_two_stores_and_keeps_its_rules(tmp_path: Path, database_url: str) -> None:
    node_a = AppStore(tmp_path / "a", database_url=database_url) if database_url else AppStore(tmp_path)
    node_b = AppStore(tmp_path / "b", database_url=database_url) if database_url else AppStore(tmp_path)
    try:
        app = node_a.create("game", app_id="1400000123")
        assert node_b.require("1400000123") == app
        with pytest.raises(AppStoreError, match="already exists"):
            node_b.create("again", app_id="1400000123")
        changed = node_b.set(app.app_id, arrears=True, dev_signing=True)
        assert node_a.require(app.app_id).arrears and node_a.require(app.app_id).dev_signing
        assert node_a.rotate_key(app.app_id).key != changed.key
        assert node_b.require(app.app_id).created_at == pytest.approx(app.created_at, abs=1e-6)  # double precision
        assert [a.app_id for a in node_b.list()] == [app.app_id]
    finally:
        node_a.close()
        node_b.close()


def test_a_database_url_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match=r"cannot connect to the database postgresql://u:\*\*\*@127\.0\.0\.1:9/x"):
        AppStore(tmp_path, database_url="postgresql://u:secret@127.0.0.1:9/x")
    with pytest.raises(DataDirError, match="postgresql:// URL"):
        open_database(tmp_path, "mysql://127.0.0.1/x")


def test_storage_urls_are_parsed_or_refused_with_what_to_write() -> None:
    assert parse_url("s3://bucket/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1") == (
        "bucket", "a/b/", {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"})
    assert parse_url("s3://bucket") == ("bucket", "", {})
    for bad, reason in (("http://bucket/x", "s3://BUCKET"), ("s3://b?secret=x", "unknown option"),
                        ("s3://b?endpoint=ftp://h", "http")):
        with pytest.raises(ValueError, match=reason):
            parse_url(bad)


@pytest.fixture
def s3_storage(tmp_path: Path, s3: S3Server, database_url: str) -> Iterator[tuple[S3Storage, str]]:
    bucket = s3.bucket()
    storage = S3Storage(tmp_path, s3.url(bucket), 90 * DAY, database_url)
    yield storage, bucket
    storage.close()


def test_s3_messages_round_trip_and_are_deleted_with_their_objects(s3_storage: tuple[S3Storage, str],
                                                                    s3: S3Server) -> None:
    storage, bucket = s3_storage
    data = bytes(range(256)) * 300
    message = storage.put("1400000001", "10001", data, 1500)
    assert s3.keys(bucket) == [f"voice/messages/{message.file_id}.ogg"]
    found = storage.get(message.file_id)
    assert found == message
    assert storage.read(found) == data
    assert storage.list("1400000001", "10001") == [message]
    twin = storage.put("1400000001", "10002", data, 1500)  # the same bytes: an object of its own
    assert storage.delete(message.file_id)
    assert not storage.delete(message.file_id)
    assert storage.get(message.file_id) is None
    assert s3.keys(bucket) == [f"voice/messages/{twin.file_id}.ogg"]
    assert storage.read(twin) == data
    s3.client.put_object(Bucket=bucket, Key=f"voice/messages/{twin.file_id}.ogg", Body=b"torn")
    with pytest.raises(MessageGone, match="damaged"):
        storage.read(twin)
    s3.client.delete_object(Bucket=bucket, Key=f"voice/messages/{twin.file_id}.ogg")
    with pytest.raises(MessageGone, match="missing"):
        storage.read(twin)


def test_s3_retention_deletes_expired_objects_and_old_orphans_only(s3_storage: tuple[S3Storage, str],
                                                                   s3: S3Server) -> None:
    storage, bucket = s3_storage
    now = time.time()
    old = storage.put("1400000001", "10001", b"old message", 1000, now=now - 91 * DAY)
    new = storage.put("1400000001", "10001", b"new message", 1000, now=now)
    orphan = "voice/messages/" + "o" * 24 + ".ogg"  # an upload whose row never came (a crash between)
    s3.client.put_object(Bucket=bucket, Key=orphan, Body=b"orphan")
    assert storage.get("o" * 24) is None  # bytes without a row are never a message
    report = storage.clean_up(now)
    assert (report.expired, report.files) == (1, 1)  # the orphan is young: it may be an upload in progress
    assert storage.get(old.file_id) is None
    assert sorted(s3.keys(bucket)) == sorted([orphan, f"voice/messages/{new.file_id}.ogg"])
    report = storage.clean_up(now + 2 * ORPHAN_GRACE)
    assert (report.expired, report.files) == (0, 1)
    assert s3.keys(bucket) == [f"voice/messages/{new.file_id}.ogg"]
    assert hashlib.sha256(storage.read(new)).hexdigest() == new.sha256


def test_a_missing_bucket_is_one_line(tmp_path: Path, s3: S3Server) -> None:
    with pytest.raises(DataDirError, match="cannot use the bucket 'absent' of storage_url"):
        S3Storage(tmp_path, s3.url("absent"), DAY)


def test_transcripts_go_with_their_messages_on_both_engines(tmp_path: Path, database_url: str) -> None:
    texts = Transcripts(tmp_path, database_url)
    try:
        texts.put("a" * 24, "en-US", "first", 1.0)
        texts.put("a" * 24, "en-US", "second", 2.0)  # asking again replaces the text
        assert texts.get("a" * 24, "en-US") == "second"
        assert texts.forget_orphans() == 1  # no voice message of that id
        assert texts.get("a" * 24, "en-US") is None
    finally:
        texts.close()


# --- two real `opengme serve` nodes sharing one PostgreSQL database and one S3 bucket -------------


def _cli(env: dict[str, str], data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(opengme_cmd(*args, "--data-dir", str(data_dir)), capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def _http(method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
@pytest.mark.public_surface
def test_two_nodes_share_apps_and_voice_messages_through_postgres_and_s3(tmp_path: Path, s3: S3Server,
                                                                           pg_url: str) -> None:
    bucket = s3.bucket()
    shared = {**S3_ENV, "OPENGME_DATABASE_URL": pg_url, "OPENGME_STORAGE_URL": s3.url(bucket, "cluster")}
    node_a = start_server(tmp_path / "a", env=shared)
    node_b = start_server(tmp_path / "b", env=shared)
    try:
        created = _cli(shared, tmp_path / "admin", "app", "create", "shared game")  # any machine with the settings
        assert created.returncode == 0, created.stderr
        app = AppStore(tmp_path / "admin", database_url=pg_url).require(json.loads(created.stdout)["app_id"])
        voice = vf.encode_voice_file(tmp_path / "m.ogg", clip(2.0)).read_bytes()
        headers = {**proto.auth_headers(app.app_id, "10001", gen_auth_buffer(app.app_id, "", "10001", app.key)),
                   "Content-Type": proto.CONTENT_TYPE}
        status, body = _http("POST", node_a.url + proto.FILES_PATH, headers, voice)  # the CLI's app, seen by A
        assert status == 201, body
        file_id = json.loads(body)["file_id"].split(proto.FILES_PATH, 1)[1].split("?")[0].strip("/")
        assert s3.keys(bucket) == [f"cluster/messages/{file_id}.ogg"]
        assert node_a.stop(signal.SIGKILL) == -signal.SIGKILL  # node A dies: what it stored is not lost
        reader = proto.auth_headers(app.app_id, "10002", gen_auth_buffer(app.app_id, "", "10002", app.key))
        status, downloaded = _http("GET", node_b.url + f"{proto.FILES_PATH}/{file_id}", reader)
        assert status == 200 and downloaded == voice  # uploaded through A, byte-identical through B

        time.sleep(0.2)  # retention of 0.1 s: the message has expired
        cleaned = _cli({**shared, "OPENGME_PTT_RETENTION_DAYS": str(0.1 / DAY)}, tmp_path / "admin", "messages", "clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert "expired messages: 1, files removed: 1" in cleaned.stdout
        assert s3.keys(bucket) == []
        status, _ = _http("GET", node_b.url + f"{proto.FILES_PATH}/{file_id}", reader)
        assert status == 404
    finally:
        node_a.stop()
        node_b.stop()


async def test_stays_and_usage_counters_work_on_both_engines(tmp_path: Path, database_url: str) -> None:
    """The admin API's records (DescribeUserInAndOutTime, DescribeAppStatistics, the console's minutes)."""
    stays, usage = InOutLog(tmp_path, database_url), UsageLog(tmp_path, database_url)
    try:
        now = time.time()
        member = SimpleNamespace(app_id="1400000001", room_id="r1", open_id="10001", entered_at=now - 120)
        event = SimpleNamespace(kind="leave", member=member, at=now)
        stays.on_room_event(event)  # type: ignore[arg-type]
        usage.on_room_event(event)  # type: ignore[arg-type]
        usage.count("1400000001", Usage.PTT_UPLOADS, at=now)
        usage.count("1400000001", Usage.PTT_UPLOADS, at=now)  # the same day's counter grows
        assert await stays.stays("1400000001", "r1", "10001") == [(now - 120, now)]
        assert await stays.minutes(now - 60) == {"1400000001": pytest.approx(1.0)}
        day = day_of(now)
        assert await usage.days("1400000001", day, day) == {
            day: {Usage.VOICE_SECONDS: pytest.approx(120.0), Usage.PTT_UPLOADS: 2.0}}
    finally:
        stays.close()
        usage.close()


def test_recording_tables_work_on_both_engines(tmp_path: Path, database_url: str) -> None:
    db = RecordingDB(tmp_path, database_url)
    try:
        db.configure("1400000001", callback_url="http://127.0.0.1:9/cb")
        first = db.create_task("1400000001", "r1", 1, Subscription(), False, 10.0)
        second = db.create_task("1400000001", "r1", 1, Subscription(), False, 11.0)
        assert second.task_id > first.task_id > 0
        db.add_file(first, "10001", CallbackMode.SINGLE, 0, "a.mp3", 10.5)
        db.finish_file(first.task_id, "a.mp3", 12.5, RecordStatus.UPLOADED, "f" * 24)
        (stored,) = db.files(first.task_id)
        assert (stored.begin, stored.end, stored.file_id) == (10.5, 12.5, "f" * 24)
        db.enqueue("1400000001", b"\x00{json}\xff", 13.0)
        due = db.next_callback()
        assert due is not None and due[3] == b"\x00{json}\xff"
        db.delivered(due[0], 14.0)
        assert db.pending_callbacks() == 0
        db.stop_all(15.0)
        assert all(t.stopped_at == 15.0 for t in db.tasks("1400000001"))
    finally:
        db.close()


def test_nodes_starting_together_issue_one_console_token_between_them(tmp_path: Path, database_url: str) -> None:
    """Each node's first start offers a console token; on a shared database only one may be issued,
    or the token one node printed would stop working when the next node replaced it."""
    tokens = [OperatorTokens(tmp_path / f"n{i}" if database_url else tmp_path, database_url) for i in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            issued = [t for t in pool.map(lambda t: t.issue_if_none(time.time()), tokens) if t is not None]
        assert len(issued) == 1
        assert all(t.matches(issued[0]) is not None for t in tokens)
        assert tokens[0].issue_if_none(time.time()) is None
    finally:
        for t in tokens:
            t.close()


def test_a_dropped_postgres_connection_fails_one_call_and_the_next_reconnects(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    store = AppStore(tmp_path, database_url=pg_url)
    tokens = OperatorTokens(tmp_path, pg_url)
    try:
        app = store.create("game")
        for _ in range(2):
            with psycopg.connect(pg_url, autocommit=True) as admin:  # as a PostgreSQL restart or failover would
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            with pytest.raises(psycopg.OperationalError):
                store.get(app.app_id)
            assert store.require(app.app_id) == app
            with pytest.raises(psycopg.OperationalError):
                tokens.current()
            tokens.issue(time.time())  # a transaction too starts on a new connection
            assert tokens.current() is not None
    finally:
        store.close()
        tokens.close()


@pytest.mark.public_surface
def test_opengme_config_never_prints_the_database_password(tmp_path: Path) -> None:
    shown = subprocess.run(opengme_cmd("config", "--json"), capture_output=True, text=True, timeout=30, cwd=tmp_path,
                           env={**os.environ, "OPENGME_DATABASE_URL": "postgresql://opengme:s3cret@db:5432/opengme"})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["settings"]["database_url"]["value"] == "postgresql://opengme:***@db:5432/opengme"
    assert "s3cret" not in shown.stdout
    refused = subprocess.run(opengme_cmd("config"), capture_output=True, text=True, timeout=30, cwd=tmp_path,
                             env={**os.environ, "OPENGME_STORAGE_URL": "/var/voice"})
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("OPENGME_STORAGE_URL must be empty (the data directory) or a s3:// URL, "
                                           "got '/var/voice'")


def test_nodes_starting_together_make_one_dev_app(tmp_path: Path, database_url: str) -> None:
    stores = [AppStore(tmp_path / ("" if not database_url else str(i)), database_url=database_url) for i in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(lambda store: store.create_first("dev"), stores))
        assert sum(app is not None for app in made) == 1
        assert [app.name for app in stores[0].list()] == ["dev"]
    finally:
        for store in stores:
            store.close()
