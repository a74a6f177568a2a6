"""Server-side recording in a cluster (issue 18): nodes sharing a real Redis (redis_url), a real
PostgreSQL (database_url) and a moto S3 (storage_url). A recording started, changed and stopped through
the API 3.0 of a node that does not serve the room is carried out by the node that does, with real
speech from an SDK member; both nodes describe it alike and its callbacks arrive once. A node killed
while recording has its task closed and its undelivered callback sent by a live node."""
from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.gme.v20180711 import models

from opengme.cli import main
from opengme.cluster.keys import HEARTBEAT, NODE_TTL, Keys, split_url
from opengme.core import recording as rec
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol.admin import signed_headers
from opengme.server import cluster, recording
from opengme.server.recording import REAP_INTERVAL, RecordingDB
from opengme.store import App
from support.audio import clip, write_wav
from support.cluster import postgres_database, s3_server
from support.processes import start_server
from support.redis_server import redis_prefix
from support.sdk_harness import ClientMaker, ThreadServer, wait_for
from test_recording import call, decode_mp3, envelope_match, gme_for, join, receiver, talk


def _node(server: ThreadServer) -> str:
    link = cluster.get(server.server)
    assert link is not None
    return link.node_id


def _download(url: str, app: App, file_name: str) -> bytes:
    path = "/v1/admin/recordings?" + urllib.parse.urlencode({"file": file_name})
    request = urllib.request.Request(url + path, headers=signed_headers(app.app_id, app.key, "GET", path))
    with urllib.request.urlopen(request, timeout=10) as reply:
        return bytes(reply.read())


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _described(gme: Any, biz: int, task_id: int) -> Any:
    return call(gme, "DescribeRecordInfo", models.DescribeRecordInfoRequest, BizId=biz, TaskId=task_id)


def test_each_callback_has_one_sender_and_a_dead_nodes_go_to_one_live_node(tmp_path: Path) -> None:
    """The shared tables' rules, on a real PostgreSQL: a node's sender sees only its node's callbacks;
    when a node is gone its tasks stop and its undelivered callbacks move to the one node that asked first."""
    with postgres_database() as database_url:
        a, b, c = (RecordingDB(tmp_path, database_url, node_id=n) for n in ("node-a", "node-b", "node-c"))
        b.configure("1400000001", callback_url="http://127.0.0.1:9/gme")
        task = a.create_task("1400000001", "r1", rec.RecordMode.SINGLE, rec.Subscription(), False, 100.0)
        a.enqueue("1400000001", b'{"n": 1}', 100.0)
        delivered = a.next_callback()
        assert delivered is not None and b.next_callback() is None and c.next_callback() is None
        a.delivered(delivered[0], 101.0)
        a.enqueue("1400000001", b'{"n": 2}', 102.0)
        assert (b.running("1400000001", "r1"), b.busy_nodes()) == (task, {"node-a"})
        assert b.close_node("node-a", 103.0) == (1, 1)  # one task stopped, one undelivered callback taken
        assert c.close_node("node-a", 103.5) == (0, 0)  # the second node to notice finds nothing left
        moved = b.next_callback()
        assert moved is not None and moved[3] == b'{"n": 2}' and a.next_callback() is None
        assert c.next_callback() is None and (b.pending_callbacks(), a.pending_callbacks()) == (1, 0)
        assert b.task("1400000001", task.task_id).stopped_at == 103.0  # type: ignore[union-attr]
        assert b.running("1400000001", "r1") is None and b.busy_nodes() == {"node-b"}
        for db in (a, b, c):
            db.close()


@pytest.mark.slow
def test_a_recording_run_through_node_b_records_the_room_node_a_serves(
        make_server: Any, clients: ClientMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with redis_prefix() as redis_url, postgres_database() as database_url, s3_server() as s3, receiver() as got:
        shared = {"redis_url": redis_url, "database_url": database_url, "storage_url": s3.url(s3.bucket())}
        a: ThreadServer = make_server(**shared)
        b: ThreadServer = make_server(**shared)
        app, biz = a.app, int(a.app.app_id)
        # the CLI sets the callback URL in the cluster's database, which both nodes read
        monkeypatch.setenv("OPENGME_DATABASE_URL", database_url)
        monkeypatch.setenv("OPENGME_REDIS_URL", redis_url)
        assert main(["--data-dir", str(a.settings.data_dir), "recordings", "config", app.app_id,
                     "--callback-url", got.url]) == 0
        (member,) = join(a, clients, ["10001"])  # the room is placed on node A, where its member is
        url, prefix = split_url(redis_url)
        placed = redis.Redis.from_url(url).get(Keys(prefix).room(app.app_id, "rec"))
        assert placed is not None and placed.decode() == _node(a)
        gme_b, gme_a = gme_for(b), gme_for(a)

        task_id = call(gme_b, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="rec", RecordMode=2).TaskId
        with pytest.raises(TencentCloudSDKException) as again:  # A's answer, A's refusal
            call(gme_b, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="rec", RecordMode=1)
        assert again.value.get_code() == "InvalidParameterValue" and "already" in again.value.get_message()
        call(gme_b, "ModifyRecordInfo", models.ModifyRecordInfoRequest, BizId=biz, TaskId=task_id, RecordMode=1)
        for gme in (gme_a, gme_b):
            task = call(gme, "DescribeTaskInfo", models.DescribeTaskInfoRequest, BizId=biz, RoomId="rec")
            assert (task.TaskId, task.RecordMode) == (task_id, 1)
        db = RecordingDB(tmp_path, database_url)
        assert db.task(app.app_id, task_id).node == _node(a)  # type: ignore[union-attr]
        # a task for a room nobody is in yet runs on the node asked (B): B's callback sender runs too
        later = call(gme_b, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="later", RecordMode=1).TaskId
        assert db.task(app.app_id, later).node == _node(b)  # type: ignore[union-attr]

        talk(member, write_wav(tmp_path / "a.wav", clip(1.5), 16_000))
        time.sleep(2.5)
        call(gme_b, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=task_id)
        assert db.task(app.app_id, task_id).stopped_at is not None  # type: ignore[union-attr]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                (files := _described(gme_b, biz, task_id).RecordInfo)
                and all(f.RecordStatus == rec.RecordStatus.UPLOADED for f in files)):
            time.sleep(0.2)
        described_b, described_a = _described(gme_b, biz, task_id), _described(gme_a, biz, task_id)
        assert described_b.to_json_string().replace(described_b.RequestId, "") == \
            described_a.to_json_string().replace(described_a.RequestId, "")
        (stored,) = described_b.RecordInfo
        assert (stored.UserId, described_b.RoomId, described_b.RecordMode) == ("10001", "rec", 1)
        assert envelope_match(clip(1.5), decode_mp3(_download(b.url, app, stored.FileName)))[1] > 0.85  # via B

        wait_for([member], lambda: len(got.got) >= 3, timeout=10)
        time.sleep(1.5)  # a second sender would have sent its copies by now
        events = got.events(app.key)
        assert [e["EventType"] for e in events] == [1, 2, 3], events  # started, completed, uploaded: once each
        assert all(e["TaskID"] == task_id and e["Detail"]["FileName"] == stored.FileName for e in events)
        capsys.readouterr()
        assert main(["--data-dir", str(tmp_path / "cli"), "recordings", "list", app.app_id, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)[0]  # the CLI, on any machine, reads the cluster's tables
        assert (listed["task_id"], listed["node"], [f["file_name"] for f in listed["files"]]) == \
            (task_id, _node(a), [stored.FileName])
        sender_a = RecordingDB(tmp_path, database_url, node_id=_node(a))
        assert sender_a.pending_callbacks() == 0
        sender_a.close()

        # The task started on B for a room nobody was in yet moves to the node where the room then
        # forms (A): same task, now tapping the room there.
        assert member.ctx.exit_room() == ErrorCode.AV_OK
        time.sleep(2 * HEARTBEAT)  # both nodes' heartbeats say empty: a tie, and an entry stays on the node asked
        second = clients(a.url, app, "10002", portaudio=False)
        assert second.ctx.enter_room("later", RoomType.FLUENCY, a.auth("later", "10002")) == ErrorCode.AV_OK
        wait_for([second], lambda: db.task(app.app_id, later).node == _node(a), timeout=10)  # type: ignore[union-attr]
        assert redis.Redis.from_url(url).get(Keys(prefix).room(app.app_id, "later")) == _node(a).encode()
        assert call(gme_b, "DescribeTaskInfo", models.DescribeTaskInfoRequest, BizId=biz, RoomId="later").TaskId == later
        call(gme_b, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=later)  # carried out by A now
        assert db.task(app.app_id, later).stopped_at is not None  # type: ignore[union-attr]
        db.close()
        second.ctx.exit_room()
        a.close()
        b.close()  # before their database goes


@pytest.mark.slow
def test_a_killed_nodes_task_is_closed_and_its_callback_sent_by_a_live_node(make_server: Any,
                                                                            tmp_path: Path) -> None:
    with redis_prefix() as redis_url, postgres_database() as database_url:
        b: ThreadServer = make_server(redis_url=redis_url, database_url=database_url)
        app, biz = b.app, int(b.app.app_id)
        with receiver() as probe:
            port = probe.port  # nothing listens there until the receiver comes back
        db = RecordingDB(tmp_path, database_url)
        db.configure(app.app_id, callback_url=f"http://127.0.0.1:{port}/gme")
        a = start_server(tmp_path / "a", env={"OPENGME_REDIS_URL": redis_url, "OPENGME_DATABASE_URL": database_url})
        try:
            gme_a = gme_for(ThreadServerView(a.url, b))
            task_id = call(gme_a, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="gone",
                           RecordMode=1).TaskId  # no room yet: node A, which got it, runs the task
            task = db.task(app.app_id, task_id)
            assert task is not None and task.node not in ("", _node(b)) and task.stopped_at is None
            # a callback A's recorder queued and could not deliver yet (the receiver is down)
            queued = RecordingDB(tmp_path, database_url, node_id=task.node)
            queued.enqueue(app.app_id, b'{"from": "node a"}', time.time())
            _until(lambda: (queued.next_callback() or (0, "", "", b"", 0, 0.0))[4] >= 1)
            queued.close()
        finally:
            a.stop(signal.SIGKILL)
        killed = time.monotonic()
        with receiver(port) as got:
            _until(lambda: db.task(app.app_id, task_id).stopped_at is not None,  # type: ignore[union-attr]
                   timeout=10 + 2 * REAP_INTERVAL)
            closed_after = time.monotonic() - killed
            _until(lambda: len(got.got) >= 1)
            time.sleep(1.0)
            assert [body for body, _ in got.got] == [b'{"from": "node a"}']  # once, signed by B
            assert got.events(app.key)
        assert closed_after < 3.0 + 2 * REAP_INTERVAL + 1.0, closed_after  # the hash expires, then the next pass
        gme_b = gme_for(b)
        with pytest.raises(TencentCloudSDKException) as none:
            call(gme_b, "DescribeTaskInfo", models.DescribeTaskInfoRequest, BizId=biz, RoomId="gone")
        assert none.value.get_code() == "ResourceNotFound"
        with pytest.raises(TencentCloudSDKException) as stopped:
            call(gme_b, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=task_id)
        assert "not running" in stopped.value.get_message()
        again = call(gme_b, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="gone", RecordMode=1).TaskId
        assert again != task_id and db.task(app.app_id, again).node == _node(b)  # type: ignore[union-attr]
        db.close()
        b.close()  # before its database goes


class ThreadServerView:
    """What ``gme_for`` needs of a server (its URL and settings) for an ``opengme serve`` node of the
    cluster that ``peer`` belongs to: the API key goes into the shared database."""

    def __init__(self, url: str, peer: ThreadServer) -> None:
        self.url = url
        self.settings = peer.settings


@pytest.mark.slow
def test_a_node_taken_for_dead_while_frozen_stops_the_task_the_others_closed(make_server: Any,
                                                                             tmp_path: Path) -> None:
    with redis_prefix() as redis_url, postgres_database() as database_url:
        a: ThreadServer = make_server(redis_url=redis_url, database_url=database_url)
        b: ThreadServer = make_server(redis_url=redis_url, database_url=database_url)
        app, biz = a.app, int(a.app.app_id)
        task_id = call(gme_for(a), "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="stall",
                       RecordMode=1).TaskId
        recorder = recording.get(a.server)
        assert [t.task_id for t in recorder.active.values()] == [task_id]
        db = RecordingDB(tmp_path, database_url)
        with a.frozen():  # no heartbeat: its hash expires and B closes its task
            _until(lambda: db.task(app.app_id, task_id).stopped_at is not None,  # type: ignore[union-attr]
                   timeout=NODE_TTL + 2 * REAP_INTERVAL + 2)
        _until(lambda: not recorder.active, timeout=2 * REAP_INTERVAL + 1)  # A, back, stops tapping the room
        again = call(gme_for(b), "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="stall", RecordMode=1)
        assert db.task(app.app_id, again.TaskId).node == _node(b)  # type: ignore[union-attr]
        db.close()
        a.close()
        b.close()


@pytest.mark.slow
def test_a_task_another_node_started_for_a_room_served_here_comes_here(make_server: Any, clients: ClientMaker,
                                                                       tmp_path: Path) -> None:
    """StartRecord on B raced with the room's first entry on A (A looked for a task before B wrote it):
    A's next pass finds B's task for a room A serves and takes it over."""
    with redis_prefix() as redis_url, postgres_database() as database_url:
        a: ThreadServer = make_server(redis_url=redis_url, database_url=database_url)
        b: ThreadServer = make_server(redis_url=redis_url, database_url=database_url)
        app = a.app
        member = clients(a.url, app, "10001", portaudio=False)
        assert member.ctx.enter_room("heal", RoomType.FLUENCY, a.auth("heal", "10001")) == ErrorCode.AV_OK
        wait_for([member], member.ctx.is_room_entered)
        racing = RecordingDB(tmp_path, database_url, node_id=_node(b))  # what B's start wrote, too late
        task = racing.create_task(app.app_id, "heal", rec.RecordMode.SINGLE, rec.Subscription(), False, time.time())
        recorder = recording.get(a.server)
        wait_for([member], lambda: racing.task(app.app_id, task.task_id).node == _node(a),  # type: ignore[union-attr]
                 timeout=REAP_INTERVAL + 2)
        wait_for([member], lambda: [t.task_id for t in recorder.active.values()] == [task.task_id])
        racing.close()
        member.ctx.exit_room()
        a.close()
        b.close()
