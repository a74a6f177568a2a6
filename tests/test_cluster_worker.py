"""Speech file jobs on ``opengme worker`` processes (issue 18): the job envelope and its tolerant reader,
the queue on a real Redis (each job once, a dead worker's job taken over, the app's limit across nodes),
and real ``opengme serve`` + ``opengme worker`` processes sharing Redis, PostgreSQL and S3, with the
real recogniser."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.authbuffer import gen_auth_buffer
from opengme.cluster import keys as k
from opengme.cluster.jobs import CLAIM_IDLE, REPLY_TTL, BadJob, Job, JobConsumer, JobKind, JobQueue, Result
from opengme.cluster.keys import Keys, split_url
from opengme.codec import voicefile as vf
from opengme.errors import ErrorCode, GmeError
from opengme.protocol import ptt as proto
from opengme.protocol import stt as sproto
from opengme.store import App, AppStore
from support.cluster import S3_ENV, S3Server, postgres_database, s3_server
from support.processes import ServeProcess, opengme_cmd, start_server
from support.redis_server import redis_prefix
from support.speech import JOHN, JOHN_WORDS, read_wav, words

FILE_ID = "A" * 24


def _job(**changes: object) -> Job:
    base = Job("j1", JobKind.TRANSCRIBE, "1400000001", time.time() + 60, "opengme:stt:reply:j1", file_id=FILE_ID)
    return Job(**{**base.__dict__, **changes})  # type: ignore[arg-type]


# --- the envelope ------------------------------------------------------------------------------------


def test_a_job_round_trips_as_bytes_and_unknown_fields_are_ignored() -> None:
    for job in (_job(), _job(kind=JobKind.SPEAK, file_id="", text="hello there", speaking_rate=1.25, language="en-GB")):
        wire = {key.encode(): value.encode() for key, value in job.encode().items()}
        assert Job.decode({**wire, b"priority": b"high", b"\xff": b"\xfe"}) == job  # as redis-py reads a stream entry
    result = Result("j1", "w1", text="john", data=b"\x00\xffOgg")
    assert Result.decode(result.encode()) == result
    with pytest.raises(GmeError) as failed:
        Result("j1", "w1", code=999_999, detail="odd").check()
    assert failed.value.code == ErrorCode.QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR  # an unknown code is a failure


@pytest.mark.parametrize(("changes", "reason"), [
    ({"kind": "translate"}, "kind is unknown"), ({"job_id": ""}, "job_id"), ({"app_id": "a:b"}, "app_id"),
    ({"deadline": "soon"}, "deadline is not a number"), ({"deadline": "nan"}, "finite"), ({"reply": ""}, "reply"),
    ({"file_id": "../etc/passwd"}, "file_id"), ({"language": "x" * 40}, "language"), ({"file_id": b"\xff" * 24}, "UTF-8"),
])
def test_a_malformed_job_says_which_field(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadJob, match=reason):
        Job.decode({**_job().encode(), **changes})
    speak = {**_job(kind=JobKind.SPEAK, text="hi").encode()}
    for bad in ({"text": ""}, {"speaking_rate": "3"}, {"text": "x" * (sproto.MAX_TEXT + 1)}):
        with pytest.raises(BadJob, match="out of range"):
            Job.decode({**speak, **bad})


_NAMES = ["job_id", "kind", "app_id", "deadline", "reply", "file_id", "language", "text", "speaking_rate"]
_VALUES = (st.sampled_from(["transcribe", "speak", "1400000001", FILE_ID, "en-US", "1.0", "1e309", "-0", "inf"])
           | st.text(max_size=40) | st.binary(max_size=40) | st.floats().map(repr))


@given(st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=8), _VALUES)
       | st.dictionaries(st.sampled_from(_NAMES).map(str.encode) | st.binary(max_size=8), st.binary(max_size=40)))
def test_the_envelope_reader_answers_a_valid_job_or_bad_job(entry: dict[Any, Any]) -> None:
    try:
        job = Job.decode(entry)
    except BadJob as exc:
        assert str(exc)
        return
    assert job.kind in JobKind and job.job_id and job.app_id and job.reply and job.deadline == job.deadline
    assert job.file_id if job.kind is JobKind.TRANSCRIBE else job.text
    assert Job.decode(job.encode()) == job


@given(st.binary(max_size=200) | st.dictionaries(st.sampled_from(["job_id", "worker", "code", "text", "data"]),
                                                  st.none() | st.integers() | st.text(max_size=20)).map(
                                                      lambda d: json.dumps(d).encode()))
def test_the_result_reader_answers_a_result_or_bad_job(raw: bytes) -> None:
    try:
        result = Result.decode(raw)
    except BadJob:
        return
    assert Result.decode(result.encode()) == result


# --- the queue on a real Redis ----------------------------------------------------------------------


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_prefix() as url:
        yield url


def _clients(redis_url: str) -> tuple[Any, Keys]:
    import redis.asyncio

    url, prefix = split_url(redis_url)
    return redis.asyncio.Redis.from_url(url, socket_timeout=5), Keys(prefix)


async def test_the_app_limit_holds_across_nodes_and_a_dead_nodes_jobs_leave_at_their_deadline(redis_url: str) -> None:
    (r1, keys), (r2, _) = _clients(redis_url), _clients(redis_url)
    node_a, node_b = JobQueue(r1, keys), JobQueue(r2, keys)
    try:
        later = time.time() + 60
        assert await node_a.admit("1400000001", "a1", 2, later)
        assert await node_b.admit("1400000001", "b1", 2, later)
        assert not await node_a.admit("1400000001", "a2", 2, later)  # the third of the app, whichever node
        assert await node_b.admit("1400000002", "b2", 2, later)  # another app has its own limit
        await node_b.release("1400000001", "b1")
        assert await node_a.admit("1400000001", "a2", 2, time.time() + 0.2)
        assert not await node_a.admit("1400000001", "a3", 2, later)
        time.sleep(0.3)  # a2's node died without releasing it: past its deadline it no longer counts
        assert await node_a.admit("1400000001", "a3", 2, later)
        assert await node_a.admit("1400000001", "x", 0, later)  # 0: no limit
        assert await r1.ttl(k.stt_running(keys, "1400000001")) > 55  # the counter goes with its last job
    finally:
        await r1.aclose()
        await r2.aclose()


@pytest.mark.slow
async def test_each_job_runs_once_malformed_entries_are_dropped_and_a_dead_workers_job_is_taken_over(
        redis_url: str) -> None:
    (r1, keys), (r2, _) = _clients(redis_url), _clients(redis_url)
    first, second = JobConsumer(r1, keys, "w1"), JobConsumer(r2, keys, "w2")
    try:
        await first.join()
        await second.join()  # the group exists already: joining again is fine
        stream, sent = k.stt_jobs(keys), _job()
        await r1.xadd(stream, {"kind": "transcribe", "note": "no id, no app"})
        await r1.xadd(stream, sent.encode())
        taken = await first.take(5, block=0.5)
        assert [(job, claimed) for _, job, claimed in taken] == [(sent, False)]
        assert await r1.xlen(stream) == 1  # the malformed entry is acknowledged and gone
        assert await second.take(5, block=0.2) == []  # the job is w1's: it runs once
        await first.heartbeat({"slots": 1}, [taken[0][0]])
        assert await JobQueue(r1, keys).live_workers() == 1
        time.sleep(CLAIM_IDLE + 0.3)  # w1 died: no heartbeat refreshes its job
        (entry_id, job, claimed), = await second.take(5, block=0.2)
        assert (entry_id, job, claimed) == (taken[0][0], sent, True)
        await second.answer(entry_id, job, Result(job.job_id, "w2", text="done"))
        assert await r2.xlen(stream) == 0
        assert 0 < await r2.ttl(job.reply) <= REPLY_TTL  # a node that gave up leaves nothing for long
        assert Result.decode((await r2.blpop([job.reply], timeout=1))[1]).text == "done"
    finally:
        await r1.aclose()
        await r2.aclose()


def test_a_worker_without_redis_url_is_one_line(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENGME_")}
    done = subprocess.run(opengme_cmd("worker"), capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("opengme worker: no redis_url: a worker takes its jobs from the nodes' Redis")
    assert "OPENGME_REDIS_URL or --redis-url" in done.stderr
    env["OPENGME_REDIS_URL"] = "redis://127.0.0.1:6379/0"  # no database_url, storage_url or node data directory
    done = subprocess.run(opengme_cmd("worker"), capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("opengme worker: no database_url and storage_url, and no node's voice messages in")


# --- real nodes and workers -------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """An ``opengme worker`` subprocess in a process group of its own (its recognition processes die with it),
    and its log lines as they come."""

    proc: subprocess.Popen[str]
    log: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, env: dict[str, str], *flags: str) -> WorkerProcess:
        proc = subprocess.Popen(opengme_cmd("worker", *flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, **env}, start_new_session=True)
        worker = cls(proc)
        threading.Thread(target=worker._read, daemon=True).start()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.match(r"OpenGME worker \w+ ready", line), (line, worker.log)
        return worker

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.log.append(json.loads(line))
            except ValueError:  # not a log line: a traceback, say
                self.log.append({"msg": "(not JSON)", "line": line})

    def lines(self, msg: str, **match: object) -> list[dict[str, Any]]:
        return [entry for entry in self.log
                if entry.get("msg") == msg and all(entry.get(key) == value for key, value in match.items())]

    def wait_for(self, msg: str, timeout: float = 60.0, **match: object) -> dict[str, Any]:
        """The last log line ``msg`` with these fields, once there is one."""
        deadline = time.monotonic() + timeout
        while not self.lines(msg, **match):
            assert time.monotonic() < deadline, f"no {msg!r} {match} in {self.log}"
            time.sleep(0.02)
        return self.lines(msg, **match)[-1]

    def recognition_processes(self) -> list[int]:
        """The worker's pool processes (spawned children; not multiprocessing's resource tracker)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        assert found, "the worker has no recognition process"
        return found

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Cluster:
    env: dict[str, str]
    node: ServeProcess
    app: App
    s3: S3Server | None = None
    bucket: str = ""

    def headers(self, open_id: str = "10001") -> dict[str, str]:
        return proto.auth_headers(self.app.app_id, open_id, gen_auth_buffer(self.app.app_id, "", open_id, self.app.key))

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.node.url + path, data=body, method="POST",
                                         headers={**self.headers(), "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=90) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def upload(self, data: bytes) -> str:
        status, body = self.post(proto.FILES_PATH, data, proto.CONTENT_TYPE)
        assert status == 201, body
        return str(body["file_id"]).split(proto.FILES_PATH, 1)[1].split("?")[0].strip("/")

    def text(self, file_id: str) -> tuple[int, dict[str, Any]]:
        return self.post(f"{proto.FILES_PATH}/{file_id}{sproto.TEXT_SUFFIX}", json.dumps({"language": "en-US"}).encode())

    def worker_jobs(self) -> float:
        """The node's count of file jobs it sent to workers."""
        with urllib.request.urlopen(self.node.url + "/metrics", timeout=5) as reply:
            found = re.findall(r'^opengme_stt_worker_jobs_total\{kind="transcribe"\} (\S+)$', reply.read().decode(), re.M)
        return float(found[0]) if found else 0.0


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, s3: S3Server, redis_url: str) -> Iterator[Cluster]:
    """A node with the cluster's Redis, PostgreSQL and S3; its stt_workers are the local path's."""
    with postgres_database() as pg_url:
        bucket = s3.bucket()
        env = {**S3_ENV, "OPENGME_DATABASE_URL": pg_url, "OPENGME_STORAGE_URL": s3.url(bucket),
               "OPENGME_REDIS_URL": redis_url}
        node = start_server(tmp_path / "node", env=env)
        try:
            store = AppStore(tmp_path / "node", database_url=pg_url)
            app = store.list()[0]
            store.close()
            yield Cluster(env, node, app, s3, bucket)
        finally:
            node.stop()


@pytest.fixture(scope="module")
def john() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return vf.encode_voice_file(Path(folder) / "john.ogg", read_wav(JOHN)).read_bytes()


@pytest.mark.slow
def test_a_worker_transcribes_and_without_one_the_node_does(cluster: Cluster, john: bytes, tmp_path: Path) -> None:
    alone = cluster.upload(john)
    status, reply = cluster.text(alone)  # no worker yet: the node's own recognition processes
    assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
    assert cluster.worker_jobs() == 0

    worker = WorkerProcess.start(cluster.env, "--data-dir", str(tmp_path / "worker"))
    try:
        file_id = cluster.upload(john)
        status, reply = cluster.text(file_id)
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS and reply["cached"] is False, reply
        assert cluster.worker_jobs() == 1  # the node sent it ...
        done = worker.wait_for("speech job done", file_id=file_id)  # ... and the worker recognised it
        assert (done["code"], done["kind"]) == (0, "transcribe")
        assert cluster.text(file_id)[1]["cached"] is True  # the node stored the text: a repeat answers at once
        assert cluster.worker_jobs() == 1

        status, spoken = cluster.post(sproto.SPEECH_PATH, json.dumps({"text": "hello world"}).encode())
        assert status == 201 and spoken["text"] == "hello world", spoken
        assert worker.wait_for("speech job done", kind="speak")["code"] == 0  # synthesised there, stored by the node

        damaged = cluster.upload(john)
        assert cluster.s3 is not None
        cluster.s3.client.put_object(Bucket=cluster.bucket, Key=f"voice/messages/{damaged}.ogg", Body=b"torn")
        status, reply = cluster.text(damaged)  # the worker cannot read it: the storage's failure, as on a node
        assert (status, reply["code"]) == (503, ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR), reply
        assert worker.wait_for("speech job done", file_id=damaged)["code"] == ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR
        crashing = cluster.upload(john)
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(cluster.text, crashing)
            worker.wait_for("speech job started", file_id=crashing)
            for pid in worker.recognition_processes():
                os.kill(pid, signal.SIGKILL)  # the recogniser dies under the job: it fails as on a node
            status, reply = asked.result(timeout=60)
        assert (status, reply["code"]) == (422, ErrorCode.QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR), reply
        status, reply = cluster.text(crashing)  # new recognition processes take the next job
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply

        os.killpg(worker.proc.pid, signal.SIGINT)  # Ctrl-C in its terminal: every process of the group gets it
        assert worker.proc.wait(timeout=30) == 0
        worker.wait_for("speech worker stopped")
        assert not worker.lines("(not JSON)")  # one clean stop, no traceback from a recognition process
    finally:
        worker.kill()
    status, reply = cluster.text(cluster.upload(john))  # the worker left: the node does it again
    assert status == 200 and words(reply["text"]) >= JOHN_WORDS
    assert cluster.worker_jobs() == 4  # the worker's four: john, the damaged one, the crash and its repeat
    status, reply = cluster.text(damaged)  # and answers a damaged message alike
    assert (status, reply["code"]) == (503, ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR), reply


def _at(line: dict[str, Any]) -> float:
    """When a log line was written (its ``ts``, UTC to the millisecond)."""
    from datetime import datetime

    return datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


@pytest.mark.slow
@pytest.mark.parametrize("gone", ["killed", "stopped twice"])
def test_a_job_whose_worker_goes_is_finished_by_another(cluster: Cluster, john: bytes, tmp_path: Path,
                                                        gone: str) -> None:
    """Killed: its job is taken over once idle for CLAIM_IDLE. Stopped twice (SIGTERM, then SIGTERM
    again to hurry): it gives the job back, and the other worker takes it at once."""
    workers = [WorkerProcess.start(cluster.env, "--data-dir", str(tmp_path / name), "--stt-workers", "1")
               for name in ("a", "b")]
    try:
        file_id = cluster.upload(john)
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(cluster.text, file_id)
            deadline = time.monotonic() + 30
            while not (took := [w for w in workers if w.lines("speech job started", file_id=file_id)]):
                assert time.monotonic() < deadline, "no worker took the job"
                time.sleep(0.01)
            leaving, other = took[0], workers[1 - workers.index(took[0])]
            if gone == "killed":
                leaving.kill()  # the machine goes away mid-recognition, recognition processes and all
            else:
                leaving.proc.send_signal(signal.SIGTERM)  # stop taking jobs ...
                assert leaving.wait_for("speech worker stopping")["running"] == 1
                leaving.proc.send_signal(signal.SIGTERM)  # ... and hurry: give the running one back
                assert leaving.proc.wait(timeout=30) == 0
            status, reply = asked.result(timeout=90)
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
        taken = other.wait_for("speech job started", file_id=file_id)
        assert taken["claimed"] is True
        assert other.wait_for("speech job done", file_id=file_id)["code"] == 0
        assert not leaving.lines("speech job done")
        assert cluster.worker_jobs() == 1
        if gone == "stopped twice":
            assert leaving.lines("speech job given back")
            waited = _at(taken) - _at(leaving.wait_for("speech worker stopped"))
            assert waited < CLAIM_IDLE - 2, waited  # at once, not after a dead worker's timeout
    finally:
        for worker in workers:
            worker.kill()


@pytest.mark.slow
def test_a_stopping_worker_finishes_its_job_and_when_the_last_dies_the_node_runs_it(cluster: Cluster, john: bytes,
                                                                                   tmp_path: Path) -> None:
    worker = WorkerProcess.start(cluster.env, "--data-dir", str(tmp_path / "a"), "--stt-workers", "1")
    try:
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(cluster.text, cluster.upload(john))
            worker.wait_for("speech job started")
            worker.proc.send_signal(signal.SIGTERM)  # mid-job: it finishes the job, then stops
            status, reply = asked.result(timeout=90)
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
        assert worker.proc.wait(timeout=30) == 0
        assert worker.wait_for("speech worker stopped")["jobs"] == 1
    finally:
        worker.kill()

    last = WorkerProcess.start(cluster.env, "--data-dir", str(tmp_path / "b"), "--stt-workers", "1")
    try:
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(cluster.text, cluster.upload(john))
            last.wait_for("speech job started")
            last.kill()  # no other worker: the node takes the job back and runs it itself
            started = time.monotonic()
            status, reply = asked.result(timeout=90)
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
        assert time.monotonic() - started < 20
        assert cluster.worker_jobs() == 2
    finally:
        last.kill()


@pytest.mark.slow
def test_the_apps_file_job_limit_holds_across_nodes(cluster: Cluster, john: bytes, tmp_path: Path) -> None:
    env = {**cluster.env, "OPENGME_STT_MAX_FILE_JOBS": "1"}
    first, second = cluster, Cluster(env, start_server(tmp_path / "second", env=env), cluster.app)
    worker = WorkerProcess.start(cluster.env, "--data-dir", str(tmp_path / "w"), "--stt-workers", "1")
    try:
        busy, other = first.upload(john), second.upload(john)
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(first.text, busy)
            worker.wait_for("speech job started")
            status, refused = second.text(other)  # the app's one job (its limit here) runs through the first node
            assert (status, refused["code"]) == (429, ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR), refused
            assert asked.result(timeout=90)[0] == 200
        status, reply = second.text(other)  # the slot is free again, on any node
        assert status == 200 and words(reply["text"]) >= JOHN_WORDS, reply
    finally:
        worker.kill()
        second.node.stop()
