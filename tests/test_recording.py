"""Server-side recording (GME's StartRecord family): the pure timeline and names, then end to end
with two SDK members speaking through file mics, the real Tencent Cloud SDK starting and stopping
the task, mp3 files decoded and compared with what was said, and signed callbacks received in order
by a local HTTP receiver, also after it was down and the server restarted."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import multiprocessing
import runpy
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.gme.v20180711 import gme_client, models

from opengme.apikeys import ApiKeyStore
from opengme.cli import main
from opengme.codec.opus import FLUENCY, OpusEncoder
from opengme.config import Settings
from opengme.core import recording as rec
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol.admin import signed_headers
from opengme.protocol.media import MediaHeader, PacketType
from opengme.server.recording import RecorderWorker, RecordingDB
from opengme.storage import DiskStorage
from opengme.store import AppStore
from support.audio import clip, write_wav
from support.cluster import postgres_database, s3_server
from support.paths import REPO
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for

callback_is_authentic = runpy.run_path(str(REPO / "examples" / "gme_backend.py"))["callback_is_authentic"]
"""The README's backend example's check of a callback's signature."""

# --- pure ----------------------------------------------------------------------------------------


def test_frames_keep_real_time_through_jitter_stalls_and_pauses() -> None:
    clock = rec.StreamClock(start=100.0)
    # bursty arrivals: the media timestamps (320 samples a frame at 16 kHz) place the frames
    arrivals = [(100.0, 0), (100.05, 320), (100.05, 640), (100.06, 960), (100.10, 1280)]
    assert [clock.slot(t, ts, 320) for t, ts in arrivals] == [0, 1, 2, 3, 4]
    assert clock.slot(100.5, 2240, 320) == 7  # a 300 ms stall, then a burst: no gap, no stretch
    assert clock.slot(100.5, 1920, 320) == 6  # a late frame goes before, where it belongs
    assert clock.slot(103.0, 2240 + 320 * 100, 320) == 107  # a DTX pause: the timestamp jumped
    assert clock.slot(200.0, 99, 320) == 5000  # media clock and arrivals parted: anchored again
    track = rec.Track(first=0)
    one = np.full(rec.FRAME_SAMPLES, 1000, dtype=np.int16)
    track.add(0, one)
    track.add(2, one)
    track.add(2, np.full(rec.FRAME_SAMPLES, 32000, dtype=np.int16))  # mixed by addition, clipped
    pcm = track.take(3)
    assert len(pcm) == 3 * rec.FRAME_SAMPLES and pcm[0] == 1000 and pcm[rec.FRAME_SAMPLES] == 0
    assert pcm[-1] == 32767
    track.add(1, one)  # too late: that part is written
    assert track.end() == 3 and track.seconds() == pytest.approx(0.06)


def test_names_bodies_and_signatures_are_gme_s() -> None:
    assert rec.single_file_name("1400000001", "r1", "10001", 1700000000.7, 0) == \
        "1400000001_r1_10001/1700000000_0_audio.mp3"
    assert rec.mixed_file_name("1400000001", "r1", 7, 1700000000, 2) == "1400000001_r1/7_1700000000_2_audio.mp3"
    body = rec.callback_body("1400000001", "r1", "10001", 7, rec.CallbackMode.SINGLE, rec.EventType.UPLOADED,
                             1700000000, 0, "f.mp3")
    assert json.loads(body) == {"BizID": 1400000001, "RoomID": "r1", "UserID": "10001", "TaskID": 7,
                                "RecordMode": 0, "Timestamp": 1700000000, "EventType": 3,
                                "Detail": {"SeqNo": 0, "FileName": "f.mp3"}}
    assert rec.callback_signature(body, "k") == hmac.new(b"k", body, hashlib.sha1).hexdigest()
    assert [rec.retry_delay(n) for n in (1, 2, 3, 10)] == [1, 2, 4, 60]
    assert rec.Subscription(("a",)).includes("a") and not rec.Subscription(("a",)).includes("b")
    assert not rec.Subscription((), ("a",)).includes("a") and rec.Subscription().includes("z")


# --- end to end ----------------------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint for the callbacks: keeps (body, Signature header) in arrival order."""

    def __init__(self, port: int = 0) -> None:
        self.got: list[tuple[bytes, str]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((body, self.headers.get("Signature", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/gme"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def events(self, key: str) -> list[dict[str, Any]]:
        """The callbacks' bodies, each checked against its signature as the README's backend example does."""
        for body, signature in self.got:
            assert callback_is_authentic(body, signature, key)
            assert not callback_is_authentic(body + b" ", signature, key)
        return [json.loads(body) for body, _ in self.got]


@contextmanager
def receiver(port: int = 0) -> Iterator[Receiver]:
    r = Receiver(port)
    try:
        yield r
    finally:
        r.close()


def gme_for(server: ThreadServer) -> gme_client.GmeClient:
    keys = ApiKeyStore(server.settings.data_dir, server.settings.database_url)
    key = keys.create("recording test")
    keys.close()
    http = HttpProfile(protocol="http", endpoint=server.url.removeprefix("http://"), reqTimeout=10)
    return gme_client.GmeClient(credential.Credential(key.secret_id, key.secret_key), "ap-guangzhou",
                                ClientProfile(httpProfile=http))


def call(gme: gme_client.GmeClient, action: str, cls: type, **params: Any) -> Any:
    request = cls()
    request.from_json_string(json.dumps(params))
    return getattr(gme, action)(request)



def envelope(samples: np.ndarray, rate: int) -> np.ndarray:
    """RMS per 20 ms."""
    hop = rate // 50
    frames = samples[: len(samples) // hop * hop].astype(np.float64).reshape(-1, hop)
    return np.sqrt(np.mean(frames**2, axis=1))


def envelope_match(said: np.ndarray, recorded: np.ndarray) -> tuple[int, float]:
    """Where (in 20 ms frames) the envelope of ``said`` best lines up in the recording's, and the
    normalised correlation there."""
    x, y = envelope(said, 16_000), envelope(recorded, 48_000)
    best = (0, 0.0)
    for lag in range(len(y) - len(x) + 1):
        a, b = x - x.mean(), y[lag: lag + len(x)] - y[lag: lag + len(x)].mean()
        score = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
        if score > best[1]:
            best = (lag, score)
    return best


def decode_mp3(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    pcm = np.concatenate(chunks)
    return (pcm * 32767).astype(np.int16) if pcm.dtype.kind == "f" else pcm.astype(np.int16)


def download(server: ThreadServer, file_name: str) -> bytes:
    path = "/v1/admin/recordings?" + urllib.parse.urlencode({"file": file_name})
    headers = signed_headers(server.app.app_id, server.app.key, "GET", path)
    with urllib.request.urlopen(urllib.request.Request(server.url + path, headers=headers), timeout=10) as reply:
        assert reply.headers["Content-Type"] == "audio/mpeg"
        return bytes(reply.read())


def join(server: ThreadServer, clients: ClientMaker, open_ids: list[str]) -> list[SdkClient]:
    made = [clients(server.url, server.app, o, portaudio=False) for o in open_ids]
    for c in made:
        assert c.ctx.enter_room("rec", RoomType.FLUENCY, server.auth("rec", c.open_id)) == ErrorCode.AV_OK
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    return made


def talk(client: SdkClient, path: Path) -> None:
    ctrl = client.ctx.get_audio_ctrl()
    assert ctrl.use_mic_file(path) == ErrorCode.AV_OK
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK


@pytest.mark.slow
@pytest.mark.public_surface
def test_record_both_modes_two_speakers_and_signed_callbacks(
        make_server: Any, clients: ClientMaker, tmp_path: Path) -> None:
    server: ThreadServer = make_server()
    gme = gme_for(server)
    biz = int(server.app.app_id)
    with receiver() as got:
        assert main(["--data-dir", str(server.settings.data_dir), "recordings", "config", server.app.app_id,
                     "--callback-url", got.url]) == 0
        a, b = join(server, clients, ["10001", "10002"])
        task_id = call(gme, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="rec", RecordMode=3).TaskId
        assert call(gme, "DescribeTaskInfo", models.DescribeTaskInfoRequest, BizId=biz, RoomId="rec").TaskId == task_id
        speech_a, speech_b = clip(2.5), clip(2.5, offset_s=3.0)
        gap = np.zeros(16_000 * 3, dtype=np.int16)
        talk(a, write_wav(tmp_path / "a.wav", np.concatenate([speech_a, gap]), 16_000))  # A first, B 3 s later
        talk(b, write_wav(tmp_path / "b.wav", np.concatenate([gap, speech_b]), 16_000))
        time.sleep(6.5)
        call(gme, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=task_id)

        def stored() -> list[Any]:
            info = call(gme, "DescribeRecordInfo", models.DescribeRecordInfoRequest, BizId=biz, TaskId=task_id)
            return list(info.RecordInfo) if all(f.RecordStatus == rec.RecordStatus.UPLOADED
                                                 for f in info.RecordInfo) else []

        deadline = time.monotonic() + 15
        while not (files := stored()) and time.monotonic() < deadline:
            time.sleep(0.2)
        by_user = {f.UserId: f.FileName for f in files}
        assert len(files) == 3 and set(by_user) == {"10001", "10002", "0"}, files  # one file each: no mic toggle
        assert by_user["0"].startswith(f"{biz}_rec/{task_id}_") and by_user["10001"].startswith(f"{biz}_rec_10001/")
        pcm = {user: decode_mp3(download(server, name)) for user, name in by_user.items()}
        # each member's own file holds its speech; B's holds next to nothing while only A spoke
        assert envelope_match(speech_a, pcm["10001"])[1] > 0.85
        lag_b, score_b = envelope_match(speech_b, pcm["10002"])
        assert score_b > 0.85 and lag_b >= 125, lag_b
        b_env = envelope(pcm["10002"], 48_000)
        assert b_env[lag_b - 125: lag_b - 25].mean() < 0.1 * b_env[lag_b: lag_b + 125].mean()
        # the mixed file holds both, 3 s apart as they were said
        (lag_ma, score_ma), (lag_mb, score_mb) = envelope_match(speech_a, pcm["0"]), envelope_match(speech_b, pcm["0"])
        assert score_ma > 0.85 and score_mb > 0.85 and abs((lag_mb - lag_ma) * 0.02 - 3.0) < 0.3, (lag_ma, lag_mb)

        wait_for([a, b], lambda: len(got.got) >= 9, timeout=10)
        events = got.events(server.app.key)
        for user, name in by_user.items():
            mine = [e for e in events if e["Detail"]["FileName"] == name]
            assert [e["EventType"] for e in mine] == [1, 2, 3], mine
            assert all(e["TaskID"] == task_id and e["UserID"] == user and e["BizID"] == biz for e in mine)
            assert all(e["RecordMode"] == (1 if user == "0" else 0) for e in mine)


@pytest.mark.slow
@pytest.mark.public_surface
def test_full_recording_callbacks_survive_a_receiver_outage_and_a_restart(
        clients: ClientMaker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with receiver() as probe:
        port = probe.port  # a free port; nothing listens there until the receiver comes back
    server = ThreadServer(Settings(port=0, data_dir=data))
    try:
        assert main(["--data-dir", str(data), "recordings", "config", server.app.app_id, "--full", "single",
                     "--callback-url", f"http://127.0.0.1:{port}/gme"]) == 0
        (a,) = join(server, clients, ["10001"])
        talk(a, write_wav(tmp_path / "a.wav", clip(1.5), 16_000))
        time.sleep(2.5)
        assert a.ctx.exit_room() == ErrorCode.AV_OK  # the last one out: full recording stops
        db = RecordingDB(data)
        wait_for([a], lambda: db.pending_callbacks() >= 3 and db.tasks()[0].stopped_at is not None, timeout=10)
        time.sleep(1.5)  # the receiver is down: tries fail and back off
        assert db.pending_callbacks() == 3
        first = db.next_callback()
        assert first is not None and first[4] >= 1  # tried, failed, backing off
        db.close()
    finally:
        server.close()
    again = ThreadServer(Settings(port=0, data_dir=data))  # a restart with the callbacks still queued
    try:
        with receiver(port) as got:
            deadline = time.monotonic() + 20
            while len(got.got) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            events = got.events(server.app.key)  # signed with the key of the app that recorded
            assert [e["EventType"] for e in events] == [1, 2, 3]
            assert events[0]["UserID"] == "10001" and events[0]["RecordMode"] == 0
    finally:
        again.close()
    # operators fetch the file from the data directory
    name = events[0]["Detail"]["FileName"]
    assert name.startswith(f"{server.app.app_id}_rec_10001/")
    out = tmp_path / "got.mp3"
    assert main(["--data-dir", str(data), "recordings", "get", server.app.app_id, name, "-o", str(out)]) == 0
    assert envelope_match(clip(1.5), decode_mp3(out.read_bytes()))[1] > 0.85


@pytest.mark.slow
@pytest.mark.public_surface
def test_a_recording_goes_to_s3_and_its_rows_to_postgres(make_server: Any, clients: ClientMaker,
                                                          tmp_path: Path) -> None:
    """A cluster node's recorder process stores through the same storage_url and database_url."""
    with postgres_database() as database_url, s3_server() as s3:
        bucket = s3.bucket()
        server: ThreadServer = make_server(database_url=database_url, storage_url=s3.url(bucket))
        gme = gme_for(server)
        biz = int(server.app.app_id)
        (a,) = join(server, clients, ["10001"])
        task_id = call(gme, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="rec", RecordMode=1).TaskId
        talk(a, write_wav(tmp_path / "a.wav", clip(1.5), 16_000))
        time.sleep(2.5)
        call(gme, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=task_id)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (files := [
                f for f in call(gme, "DescribeRecordInfo", models.DescribeRecordInfoRequest, BizId=biz,
                                TaskId=task_id).RecordInfo if f.RecordStatus == rec.RecordStatus.UPLOADED]):
            time.sleep(0.2)
        (stored,) = files
        assert [key.startswith("voice/messages/") for key in s3.keys(bucket)] == [True]
        assert envelope_match(clip(1.5), decode_mp3(download(server, stored.FileName)))[1] > 0.85
        a.ctx.exit_room()
        server.close()


@pytest.mark.public_surface
def test_record_task_actions_and_their_refusals(make_server: Any) -> None:
    server: ThreadServer = make_server()
    gme = gme_for(server)
    biz = int(server.app.app_id)
    start = call(gme, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="empty", RecordMode=1)
    with pytest.raises(TencentCloudSDKException) as again:
        call(gme, "StartRecord", models.StartRecordRequest, BizId=biz, RoomId="empty", RecordMode=2)
    assert again.value.get_code() == "InvalidParameterValue" and "already" in again.value.get_message()
    call(gme, "ModifyRecordInfo", models.ModifyRecordInfoRequest, BizId=biz, TaskId=start.TaskId, RecordMode=2,
         SubscribeRecordUserIds={"SubscribeUserIds": ["10001"]})
    task = call(gme, "DescribeTaskInfo", models.DescribeTaskInfoRequest, BizId=biz, RoomId="empty")
    assert (task.TaskId, task.RecordMode, task.SubscribeRecordUserIds.SubscribeUserIds) == (start.TaskId, 2, ["10001"])
    call(gme, "StopRecord", models.StopRecordRequest, BizId=biz, TaskId=start.TaskId)
    info = call(gme, "DescribeRecordInfo", models.DescribeRecordInfoRequest, BizId=biz, TaskId=start.TaskId)
    assert (info.RoomId, info.RecordMode, info.RecordInfo) == ("empty", 2, [])  # nobody spoke: no file
    time.sleep(1.1)  # within the same second the same StopRecord is the same signed request: its answer again
    for action, cls, params, code in (
            ("StopRecord", models.StopRecordRequest, {"TaskId": start.TaskId}, "InvalidParameterValue"),
            ("StopRecord", models.StopRecordRequest, {"TaskId": 999}, "InvalidParameterValue"),
            ("StartRecord", models.StartRecordRequest, {"RoomId": "r", "RecordMode": 5}, "InvalidParameterValue"),
            ("DescribeTaskInfo", models.DescribeTaskInfoRequest, {"RoomId": "empty"}, "ResourceNotFound")):
        with pytest.raises(TencentCloudSDKException) as refused:
            call(gme, action, cls, BizId=biz, **params)
        assert refused.value.get_code() == code, (action, params)
    assert main(["--data-dir", str(server.settings.data_dir), "recordings", "list", server.app.app_id]) == 0


def test_a_member_s_file_is_cut_when_its_mic_goes_off_and_on(tmp_path: Path) -> None:
    """The recorder process's worker, fed as the server feeds it: real Opus in, real mp3 files out."""
    AppStore(tmp_path).close()
    db, storage = RecordingDB(tmp_path), DiskStorage(tmp_path)
    task = db.create_task("1400000001", "r1", rec.RecordMode.BOTH, rec.Subscription(), False, time.time())
    encoder, said = OpusEncoder(FLUENCY), clip(3.0)
    frames = [encoder.encode(said[i:i + 320]) for i in range(0, len(said) - 319, 320)]
    t0 = time.monotonic() - 4.2  # the packets arrived over the last 4 s
    batch: list[tuple[Any, ...]] = [("start", task, {7: "10001"}, t0, time.time())]

    def header(frame: int) -> bytes:  # as the relay hands it over: the sender's media clock in it
        return MediaHeader(PacketType.DATA, 1, seq=frame, timestamp=frame * 320).pack()

    batch += [(task.task_id, 7, header(f), frames[f], t0 + f * rec.FRAME_S) for f in range(50)]  # 1 s, mic off
    batch += [(task.task_id, 7, header(f + 100), frames[f], t0 + 3.0 + (f - 50) * rec.FRAME_S)
              for f in range(50, 100)]  # on again 2 s later
    batch += [(task.task_id, 7, header(200), b"\xff not opus", t0 + 4.1), ("quit",)]  # a bad packet is skipped
    feed, end = multiprocessing.Pipe()
    feed.send(batch)
    RecorderWorker(db, storage, tmp_path).run(end)
    files = db.files(task.task_id)
    assert sorted((f.user_id, f.seq) for f in files) == [("0", 0), ("10001", 0), ("10001", 1)]
    assert all(f.status == rec.RecordStatus.UPLOADED for f in files)
    single = [f for f in files if f.user_id == "10001"]
    assert [round(f.end - f.begin, 1) for f in single] == [1.0, 1.0]  # each file holds its second of speech
    mixed = next(f for f in files if f.user_id == "0")
    assert mixed.end is not None and 3.9 < mixed.end - mixed.begin < 4.2  # the mix keeps the pause
    assert db.pending_callbacks() == 0  # no callback URL configured: nothing queued
    db.close()
    storage.close()


def test_files_are_cut_at_the_segment_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GME cuts every 2 h; here 0.5 s, so that a 2 s stream in two batches makes two files of each kind."""
    monkeypatch.setattr(rec, "SEGMENT_SECONDS", 0.5)
    AppStore(tmp_path).close()
    db, storage = RecordingDB(tmp_path), DiskStorage(tmp_path)
    task = db.create_task("1400000001", "r1", rec.RecordMode.BOTH, rec.Subscription(), False, time.time())
    encoder, said = OpusEncoder(FLUENCY), clip(2.0)
    frames = [encoder.encode(said[i:i + 320]) for i in range(0, len(said) - 319, 320)]
    t0 = time.monotonic() - 2.2

    def packets(first: int, last: int) -> list[tuple[Any, ...]]:
        return [(task.task_id, 7, MediaHeader(PacketType.DATA, 1, seq=f, timestamp=f * 320).pack(), frames[f],
                 t0 + f * rec.FRAME_S) for f in range(first, last)]

    feed, end = multiprocessing.Pipe()
    feed.send([("start", task, {7: "10001"}, t0, time.time()), *packets(0, 50)])
    feed.send([*packets(50, 100), ("quit",)])
    RecorderWorker(db, storage, tmp_path).run(end)
    files = db.files(task.task_id)
    assert sorted((f.user_id, f.seq) for f in files) == [("0", 0), ("0", 1), ("10001", 0), ("10001", 1)]
    assert all(f.end is not None for f in files)
    assert sum(f.end - f.begin for f in files if f.user_id == "0") == pytest.approx(2.0, abs=0.05)  # nothing lost
    db.close()
    storage.close()
