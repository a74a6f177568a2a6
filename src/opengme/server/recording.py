"""Server-side recording (GME's StartRecord family) and its signed callbacks.

- A recorded room's voice packets are tapped off the relay (``Relay.set_room_tap``: one deque append per
  forwarded packet; the relay forwards exactly as before). A feeder thread sends them in batches to
  the recorder process (started with the first recording), which decodes the Opus, places the frames
  on the timeline, mixes for the mixed mode and writes mp3 through PyAV. A process, not a thread:
  a thread doing that work would take the GIL from the relay (measured: plain rooms forwarded 43 %
  less beside one recorded room; bench/bench_recording.py).
- A finished file goes into the voice-message storage (``MessageStorage.put``, under the member's
  openid, or ``0`` for a mixed file) and is listed in ``record_files``.
- Callbacks (started, completed, uploaded) are rows of ``record_callbacks`` in ``opengme.db``,
  written before anything is sent, and delivered in order by a thread of the recorder process with
  back-off; a row stays
  until the app's URL answered 2xx, so a restart loses none.
- Full recording (``opengme recordings config APPID --full MODE``) starts a task when a room's first
  member enters and stops it when the last one leaves.
- In a cluster (``redis_url``) each action runs on the node concerned, over the bus (``record_*``
  actions); with ``database_url`` too the tables are shared and every row names its node, so any node
  describes any task, task ids are unique, a dead node's tasks are closed by a live one and each
  callback has one sender (see :class:`Recorder`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from opengme.cluster.keys import NODE_TTL
from opengme.config import Settings
from opengme.core import recording as rec
from opengme.core.recording import CallbackMode, EventType, RecordStatus, Subscription
from opengme.core.relay import RoomTap
from opengme.core.rooms import RoomEvent
from opengme.db import open_database
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.server import bus, cluster, shared_records, signalling
from opengme.server import media as media_
from opengme.server import ptt as ptt_

if TYPE_CHECKING:
    from opengme.codec.opus import OpusDecoder
    from opengme.server.app import Server
    from opengme.storage import MessageStorage
    from opengme.store import AppStore

log = logging.getLogger("opengme.recording")

Json = dict[str, Any]

TMP_FOLDER = "recordings-tmp"
FLUSH_DELAY = 0.3  # seconds a frame may arrive late and still be written in its place
TICK = 0.25
CALLBACK_TIMEOUT = 5.0
BITRATE = 48_000  # bit/s of the mp3 files (mono speech)
INBOX_LIMIT = 20_000  # packets waiting for the recorder (8 s of a room of 5); past it, packets are dropped
FEED_INTERVAL = 0.2  # seconds between two batches to the recorder process (few wake-ups of the relay process)
BACKLOG = 5.0  # seconds packets may wait in the pipe (the recorder process's start) and still count


@dataclass(frozen=True)
class Task:
    task_id: int
    app_id: str
    room_id: str
    mode: int
    subscription: Subscription
    auto: bool
    started_at: float
    stopped_at: float | None
    node: str = ""  # the cluster node that runs it ('' on a single node)


@dataclass(frozen=True)
class RecordFile:
    task_id: int
    user_id: str
    mode: int
    seq: int
    file_name: str
    begin: float
    end: float | None
    status: int
    file_id: str | None


def shared_url(settings: Settings) -> str:
    """Where the recording tables live: the shared database only in a cluster (``redis_url`` and
    ``database_url``), else the node's own ``opengme.db`` ('')."""
    return settings.database_url if settings.redis_url else ""


class RecordingDB:
    """The recording tables (:mod:`opengme.db`); safe to share between threads (and with the CLI).

    On a single node (``node_id`` '') they are the node's own: a start stops every task the previous
    run left and the sender delivers every callback. In a cluster they are shared (:func:`shared_url`),
    so each task and callback row names its node: a node closes only the tasks of dead nodes (and of
    its own graceful stop), and its sender delivers only its own node's callbacks (a dead node's are
    taken over by one live node, atomically), so none goes out twice."""

    def __init__(self, data_dir: Path, database_url: str = "", node_id: str = "") -> None:
        self._lock = threading.Lock()
        self._db = open_database(Path(data_dir), database_url)
        self.errors = self._db.errors
        self.node_id = node_id

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows as tuples, in the order of the statement's columns."""
        with self._lock:
            cursor = self._db.execute(sql, args)
            return [] if cursor.description is None else [tuple(row.values()) for row in cursor.fetchall()]

    # settings
    def settings(self, app_id: str) -> tuple[str, int]:
        """(callback URL, full-recording mode or 0)."""
        rows = self._run("SELECT callback_url, full_mode FROM record_settings WHERE app_id = ?", (app_id,))
        return (rows[0][0], rows[0][1]) if rows else ("", 0)

    def configure(self, app_id: str, callback_url: str | None = None, full_mode: int | None = None) -> tuple[str, int]:
        url, mode = self.settings(app_id)
        url = url if callback_url is None else callback_url
        mode = mode if full_mode is None else full_mode
        self._run("INSERT INTO record_settings VALUES (?, ?, ?) ON CONFLICT (app_id) DO UPDATE "
                  "SET callback_url = excluded.callback_url, full_mode = excluded.full_mode", (app_id, url, mode))
        return url, mode

    # tasks
    def create_task(self, app_id: str, room_id: str, mode: int, subscription: Subscription, auto: bool,
                    now: float) -> Task:
        ((task_id,),) = self._run(
            "INSERT INTO record_tasks (app_id, room_id, mode, subscription, auto, started_at, node_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING task_id",
            (app_id, room_id, mode, json.dumps(subscription.to_json()), int(auto), now, self.node_id))
        return Task(task_id, app_id, room_id, mode, subscription, auto, now, None, self.node_id)

    def task(self, app_id: str, task_id: int) -> Task | None:
        rows = self._run("SELECT * FROM record_tasks WHERE app_id = ? AND task_id = ?", (app_id, task_id))
        return _task(rows[0]) if rows else None

    def tasks(self, app_id: str | None = None) -> list[Task]:
        if app_id is None:
            return [_task(r) for r in self._run("SELECT * FROM record_tasks ORDER BY task_id")]
        return [_task(r) for r in self._run("SELECT * FROM record_tasks WHERE app_id = ? ORDER BY task_id", (app_id,))]

    def modify_task(self, task_id: int, mode: int, subscription: Subscription) -> None:
        self._run("UPDATE record_tasks SET mode = ?, subscription = ? WHERE task_id = ?",
                  (mode, json.dumps(subscription.to_json()), task_id))

    def stop_task(self, task_id: int, now: float) -> None:
        self._run("UPDATE record_tasks SET stopped_at = ? WHERE task_id = ? AND stopped_at IS NULL", (now, task_id))

    def stop_all(self, now: float) -> None:
        """At start: tasks a previous run left running stopped with it."""
        self._run("UPDATE record_tasks SET stopped_at = ? WHERE stopped_at IS NULL", (now,))

    # tasks in a cluster
    def running(self, app_id: str, room_id: str) -> Task | None:
        """The task recording the room, on any node."""
        rows = self._run("SELECT * FROM record_tasks WHERE app_id = ? AND room_id = ? AND stopped_at IS NULL "
                         "ORDER BY task_id LIMIT 1", (app_id, room_id))
        return _task(rows[0]) if rows else None

    def running_elsewhere(self) -> list[Task]:
        """The running tasks of the other nodes."""
        return [_task(r) for r in self._run("SELECT * FROM record_tasks WHERE stopped_at IS NULL AND node_id <> ? "
                                            "ORDER BY task_id", (self.node_id,))]

    def busy_nodes(self) -> set[str]:
        """The nodes with running tasks or undelivered callbacks (whose death must be cleaned up after)."""
        rows = self._run("SELECT node_id FROM record_tasks WHERE stopped_at IS NULL AND node_id <> '' UNION "
                         "SELECT node_id FROM record_callbacks WHERE delivered_at IS NULL AND node_id <> ''")
        return {str(row[0]) for row in rows}

    def close_node(self, node_id: str, now: float) -> tuple[int, int]:
        """A node is gone: its running tasks stopped, its undelivered callbacks this node's to send
        (each row moves once: a second node doing the same finds none left). (tasks, callbacks)."""
        tasks = self._run("UPDATE record_tasks SET stopped_at = ? WHERE node_id = ? AND stopped_at IS NULL "
                          "RETURNING task_id", (now, node_id))
        callbacks: list[tuple[Any, ...]] = []
        if node_id != self.node_id:
            callbacks = self._run("UPDATE record_callbacks SET node_id = ? WHERE node_id = ? AND delivered_at IS NULL "
                                  "RETURNING id", (self.node_id, node_id))
        return len(tasks), len(callbacks)

    def move_task(self, task: Task) -> Task | None:
        """``task`` taken over from its node by this one; None when it stopped or moved meanwhile."""
        rows = self._run("UPDATE record_tasks SET node_id = ? WHERE task_id = ? AND node_id = ? AND stopped_at IS NULL "
                         "RETURNING task_id", (self.node_id, task.task_id, task.node))
        return self.task(task.app_id, task.task_id) if rows else None

    # files
    def add_file(self, task: Task, user_id: str, mode: CallbackMode, seq: int, file_name: str, begin: float) -> None:
        self._run("INSERT INTO record_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
                  (task.task_id, task.app_id, task.room_id, user_id, int(mode), seq, file_name, begin,
                   int(RecordStatus.RECORDING)))

    def finish_file(self, task_id: int, file_name: str, end: float, status: RecordStatus, file_id: str | None) -> None:
        self._run('UPDATE record_files SET "end" = ?, status = ?, file_id = ? WHERE task_id = ? AND file_name = ?',
                  (end, int(status), file_id, task_id, file_name))

    def files(self, task_id: int) -> list[RecordFile]:
        rows = self._run('SELECT task_id, user_id, mode, seq, file_name, "begin", "end", status, file_id FROM record_files '
                         'WHERE task_id = ? ORDER BY "begin", file_name', (task_id,))
        return [RecordFile(*r) for r in rows]

    def file(self, app_id: str, file_name: str) -> RecordFile | None:
        rows = self._run('SELECT task_id, user_id, mode, seq, file_name, "begin", "end", status, file_id FROM record_files '
                         "WHERE app_id = ? AND file_name = ?", (app_id, file_name))
        return RecordFile(*rows[0]) if rows else None

    # callbacks
    def enqueue(self, app_id: str, body: bytes, now: float) -> None:
        url, _ = self.settings(app_id)
        if url:
            self._run("INSERT INTO record_callbacks (app_id, url, body, next_at, node_id) VALUES (?, ?, ?, ?, ?)",
                      (app_id, url, body, now, self.node_id))

    def next_callback(self) -> tuple[int, str, str, bytes, int, float] | None:
        """The oldest undelivered callback: (id, app, url, body, attempts, next try)."""
        rows = self._run("SELECT id, app_id, url, body, attempts, next_at FROM record_callbacks "
                         "WHERE delivered_at IS NULL AND node_id = ? ORDER BY id LIMIT 1", (self.node_id,))
        return (int(rows[0][0]), rows[0][1], rows[0][2], bytes(rows[0][3]), int(rows[0][4]), float(rows[0][5])) \
            if rows else None

    def delivered(self, callback_id: int, now: float) -> None:
        self._run("UPDATE record_callbacks SET delivered_at = ? WHERE id = ?", (now, callback_id))

    def failed(self, callback_id: int, attempts: int, next_at: float) -> None:
        self._run("UPDATE record_callbacks SET attempts = ?, next_at = ? WHERE id = ?", (attempts, next_at, callback_id))

    def pending_callbacks(self) -> int:
        return int(self._run("SELECT count(*) FROM record_callbacks WHERE delivered_at IS NULL AND node_id = ?",
                             (self.node_id,))[0][0])


def _task(row: tuple[Any, ...]) -> Task:
    return Task(row[0], row[1], row[2], row[3], Subscription.from_json(json.loads(row[4])), bool(row[5]), row[6], row[7], row[8] if len(row) > 8 else "")


# --- the worker: decoding, mixing, mp3 -----------------------------------------------------------


class Mp3Writer:
    """One mp3 file through PyAV (libmp3lame), written to a temporary file."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self._out = av.open(str(path), "w", format="mp3")
        self._stream: Any = self._out.add_stream("libmp3lame", rate=rec.RATE, layout="mono")
        self._stream.bit_rate = BITRATE
        self._pts = 0
        self.samples = 0

    def write(self, pcm: np.ndarray) -> None:
        if not len(pcm):
            return
        import av

        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rec.RATE
        frame.pts = self._pts
        self._pts += len(pcm)
        self.samples += len(pcm)
        for packet in self._stream.encode(frame):
            self._out.mux(packet)

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()
        try:
            return self.path.read_bytes()
        finally:
            self.path.unlink(missing_ok=True)


@dataclass
class _Segment:
    user_id: str
    mode: CallbackMode
    seq: int
    file_name: str
    begin: float
    track: rec.Track
    writer: Mp3Writer
    last: float  # monotonic time of the last packet


@dataclass
class _TaskState:
    task: Task
    t0: float  # monotonic time of slot 0
    wall0: float
    members: dict[int, str] = field(default_factory=dict)  # tinyid -> openid
    decoders: dict[int, OpusDecoder] = field(default_factory=dict)
    clocks: dict[int, rec.StreamClock] = field(default_factory=dict)
    singles: dict[int, _Segment] = field(default_factory=dict)
    mixed: _Segment | None = None
    seqs: dict[str, int] = field(default_factory=dict)  # next SeqNo per user ("0": mixed)
    latest: float = 0.0  # arrival time of the newest packet


class RecorderWorker:
    """Turns tapped packets into mp3 files, in the recorder process; fed by ``run``'s batches only."""

    def __init__(self, db: RecordingDB, storage: MessageStorage, tmp: Path) -> None:
        self.db = db
        self.storage = storage
        self.tmp = tmp
        self.tasks: dict[int, _TaskState] = {}

    def run(self, conn: Connection) -> None:
        """Handle the batches from ``conn`` (and cut, mix and write every TICK) until ``("quit",)``."""
        next_tick = time.monotonic()
        while True:
            batch: list[tuple[Any, ...]] = []
            try:
                if conn.poll(TICK):
                    batch = conn.recv()
            except (EOFError, OSError):  # the server is gone: finish the files, then end
                batch = [("quit",)]
            try:
                for item in batch:
                    if item[0] == "quit":
                        for state in list(self.tasks.values()):
                            self._stop(state)
                        return
                    self._handle(item)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    for state in list(self.tasks.values()):
                        self._flush(state, now)
            except Exception:  # a bad file or disk must not end recording for every room
                log.exception("recording worker error")

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if isinstance(kind, int):
            state = self.tasks.get(kind)
            if state is not None:
                self._packet(state, item[1], item[2], item[3], item[4])
        elif kind == "start":
            task, members, t0, wall0 = item[1], item[2], item[3], item[4]
            self.tasks[task.task_id] = _TaskState(task, t0, wall0, dict(members))
        elif kind == "member":
            state = self.tasks.get(item[1])
            if state is not None:
                state.members[item[2]] = item[3]
        elif kind == "leave":
            state = self.tasks.get(item[1])
            if state is not None:
                segment = state.singles.pop(item[2], None)
                if segment is not None:
                    self._close(state, segment)
                state.members.pop(item[2], None)
                state.clocks.pop(item[2], None)
                state.decoders.pop(item[2], None)
        elif kind == "modify":
            state = self.tasks.get(item[1])
            if state is not None:
                state.task = item[2]
        elif kind == "stop":
            state = self.tasks.get(item[1])
            if state is not None:
                self._stop(state)

    def _packet(self, state: _TaskState, tinyid: int, header: bytes, payload: bytes, at: float) -> None:
        from opengme.codec.opus import STANDARD, CodecError, OpusDecoder, profile_for

        task = state.task
        state.latest = max(state.latest, at)
        user = state.members.get(tinyid)
        if user is None or not task.subscription.includes(user):
            return
        decoder = state.decoders.get(tinyid)
        if decoder is None:
            decoder = state.decoders[tinyid] = OpusDecoder(STANDARD, sample_rate=rec.RATE)
        try:
            pcm = decoder.decode(payload)
        except CodecError:
            return
        clock = state.clocks.get(tinyid)
        if clock is None:
            clock = state.clocks[tinyid] = rec.StreamClock(state.t0)
        try:
            frame_samples = profile_for(header[13] >> 4).frame_samples  # the sender's room type: its clock rate
        except (ValueError, KeyError, IndexError):
            return
        slot = clock.slot(at, int.from_bytes(header[4:8]), frame_samples)
        if rec.records_single(task.mode):
            segment = state.singles.get(tinyid)
            if segment is not None and at - segment.last > rec.MIC_GAP:  # the mic was off meanwhile
                del state.singles[tinyid]
                self._close(state, segment)
                segment = None
            if segment is None:
                segment = state.singles[tinyid] = self._open(state, user, CallbackMode.SINGLE, slot)
            segment.track.add(slot, pcm)
            segment.last = at
        if rec.records_mixed(task.mode):
            if state.mixed is None:
                state.mixed = self._open(state, rec.MIXED_USER, CallbackMode.MIXED, slot)
            state.mixed.track.add(slot, pcm)
            state.mixed.last = at

    def _open(self, state: _TaskState, user: str, mode: CallbackMode, slot: int) -> _Segment:
        task = state.task
        seq = state.seqs.get(user, 0)
        state.seqs[user] = seq + 1
        begin = state.wall0 + slot * rec.FRAME_S
        name = (rec.single_file_name(task.app_id, task.room_id, user, begin, seq) if mode is CallbackMode.SINGLE
                else rec.mixed_file_name(task.app_id, task.room_id, task.task_id, begin, seq))
        writer = Mp3Writer(self.tmp / f"{secrets.token_hex(8)}.mp3")
        self.db.add_file(task, user, mode, seq, name, begin)
        self._callback(task, user, mode, EventType.STARTED, seq, name)
        return _Segment(user, mode, seq, name, begin, rec.Track(slot), writer, time.monotonic())

    def _callback(self, task: Task, user: str, mode: CallbackMode, event: EventType, seq: int, name: str) -> None:
        now = time.time()
        self.db.enqueue(task.app_id, rec.callback_body(task.app_id, task.room_id, user, task.task_id, mode, event,
                                                       now, seq, name), now)

    def _flush(self, state: _TaskState, now: float) -> None:
        # The task's clock is its packets' (a backlog in the pipe, e.g. while this process starts,
        # must not cut files or write silence over frames still on their way), or, when no packet
        # comes at all, the wall clock less the longest backlog allowed for.
        clock = max(state.latest, now - BACKLOG)
        upto = round((clock - state.t0 - FLUSH_DELAY) / rec.FRAME_S)
        for tinyid, segment in list(state.singles.items()):
            if clock - segment.last <= rec.MIC_GAP:
                segment.writer.write(segment.track.take(upto))
                if segment.track.seconds() < rec.SEGMENT_SECONDS:
                    continue
            del state.singles[tinyid]  # mic off, or 2 h: the next packet opens the next file
            self._close(state, segment)
        mixed = state.mixed
        if mixed is not None:
            mixed.writer.write(mixed.track.take(upto))
            if mixed.track.seconds() >= rec.SEGMENT_SECONDS:
                state.mixed = None
                self._close(state, mixed)

    def _close(self, state: _TaskState, segment: _Segment) -> None:
        segment.writer.write(segment.track.take(segment.track.end()))
        data = segment.writer.finish()
        task = state.task
        end = segment.begin + segment.writer.samples / rec.RATE
        self._callback(task, segment.user_id, segment.mode, EventType.COMPLETED, segment.seq, segment.file_name)
        stored = self.storage.put(task.app_id, segment.user_id, data, round(1000 * (end - segment.begin)))
        self.db.finish_file(task.task_id, segment.file_name, end, RecordStatus.UPLOADED, stored.file_id)
        self._callback(task, segment.user_id, segment.mode, EventType.UPLOADED, segment.seq, segment.file_name)
        log.info("recording stored", extra=fields(app_id=task.app_id, room_id=task.room_id, task_id=task.task_id,
                                                  file_name=segment.file_name, bytes=len(data)))

    def _stop(self, state: _TaskState) -> None:
        for segment in state.singles.values():
            self._close(state, segment)
        state.singles.clear()
        if state.mixed is not None:
            self._close(state, state.mixed)
            state.mixed = None
        self.tasks.pop(state.task.task_id, None)


# --- callbacks -----------------------------------------------------------------------------------


class CallbackSender:
    """Delivers ``record_callbacks`` in order, one at a time, retrying with back-off (its own thread)."""

    def __init__(self, db: RecordingDB, store: AppStore) -> None:
        self.db = db
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opengme-record-callbacks", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                due = self.db.next_callback()
            except self.db.errors:
                log.exception("cannot read the callback queue")
                due = None
            if due is None or due[5] > time.time():
                self._stop.wait(0.1)
                continue
            callback_id, app_id, url, body, attempts, _ = due
            if self._send(app_id, url, body):
                self.db.delivered(callback_id, time.time())
            else:
                self.db.failed(callback_id, attempts + 1, time.time() + rec.retry_delay(attempts + 1))

    def _send(self, app_id: str, url: str, body: bytes) -> bool:
        app = self.store.get(app_id)
        if app is None:
            return True  # the app is gone: nobody to tell
        headers = {"Content-Type": "application/json", "Signature": rec.callback_signature(body, app.key)}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=CALLBACK_TIMEOUT) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.info("recording callback not delivered", extra=fields(app_id=app_id, reason=str(exc)))
            return False


# --- the recorder process and its feeder ---------------------------------------------------------


def _recorder_main(conn: Connection, settings: Settings, node_id: str) -> None:
    """The recorder process: decoding, mixing, mp3, storage and callbacks, away from the relay's GIL."""
    from opengme.logs import setup_logging
    from opengme.storage import open_storage
    from opengme.store import AppStore

    setup_logging(settings.log_level, settings.log_format)  # its lines go to the server's stderr, as the server's own
    data_dir = settings.data_dir
    tmp = Path(data_dir) / TMP_FOLDER
    tmp.mkdir(mode=0o700, exist_ok=True)  # people's voices: the server user's only
    db = RecordingDB(Path(data_dir), shared_url(settings), node_id)
    storage = open_storage(Path(data_dir), settings.ptt_retention_days, settings.storage_url, settings.database_url)
    store = AppStore(Path(data_dir), create=False, database_url=settings.database_url)
    sender = CallbackSender(db, store)
    try:
        RecorderWorker(db, storage, tmp).run(conn)
    finally:
        sender.close()
        storage.close()
        store.close()
        db.close()


class RecorderProcess:
    """The server's side of the recorder process.

    A tap appends to a list (no lock, no syscall: it runs on the relay's hot path); the feeder thread
    sends what gathered every FEED_INTERVAL as one message, so the relay's thread never blocks on the
    pipe and never competes for the GIL with the decoding. Control items go through the same list,
    so the process sees them in order with the packets."""

    def __init__(self, settings: Settings, node_id: str = "") -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and a loop
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_recorder_main, args=(child, settings, node_id),
            name="opengme-recorder", daemon=True)
        self._process.start()
        child.close()
        self._batch: deque[tuple[Any, ...]] = deque()  # append and popleft are atomic: no lock
        self.dropped = 0
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="opengme-recorder-feed", daemon=True)
        self._feeder.start()

    def send(self, item: tuple[Any, ...]) -> None:
        self._batch.append(item)

    def tap(self, task_id: int) -> RoomTap:
        """The relay tap of a task's room; past INBOX_LIMIT waiting packets, packets are dropped."""
        batch = self._batch

        def tap(tinyid: int, header: bytes, payload: bytes, now: float) -> None:
            if len(batch) < INBOX_LIMIT:
                batch.append((task_id, tinyid, header, payload, now))
            else:
                self.dropped += 1

        return tap

    def _feed(self) -> None:
        while not self._stop.wait(FEED_INTERVAL):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        batch = [self._batch.popleft() for _ in range(len(self._batch))]
        if batch:
            try:
                self._conn.send(batch)
            except (OSError, ValueError):
                log.error("the recorder process is gone; recording stopped")

    def close(self, timeout: float = 30.0) -> None:
        """Finish every file (the process stores them and sends what it can), then end the process."""
        self.send(("quit",))
        self._stop.set()
        self._feeder.join()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
        self._conn.close()


# --- the loop side: tasks, taps, room events -----------------------------------------------------


RECORDER: web.AppKey[Recorder] = web.AppKey("opengme.recorder")
REAP_INTERVAL = NODE_TTL
"""Seconds between two looks for dead nodes whose recording tasks and callbacks need closing (cluster)."""


def setup(server: Server) -> None:
    """Attach recording (after media and voice messages, whose relay and storage it uses)."""
    recorder = Recorder(server)
    server.web_app[RECORDER] = recorder
    server.on_start.append(recorder.start_cluster)
    server.on_stop.append(recorder.stop)
    link = bus.get(server)
    if link is not None:  # a cluster: the recording actions on this node's rooms and tasks come here
        link.handlers.update({bus.RECORD_START: recorder._bus_start, bus.RECORD_STOP: recorder._bus_stop,
                              bus.RECORD_MODIFY: recorder._bus_modify, bus.RECORD_HANDOVER: recorder._bus_handover})


def get(server: Server) -> Recorder:
    return server.web_app[RECORDER]


class Recorder:
    """The recording actions and the taps of this node's recorded rooms.

    In a cluster (``redis_url``) an action is carried out by the node concerned, over the bus: a start
    by the node that serves the room (this one when the room is not placed yet), a stop or a change by
    the node that runs the task. With ``database_url`` too the tables are shared (:func:`shared_url`):
    a task follows its room (the node where a room's first member enters takes the room's task over
    from the live node that ran it), and the tasks of a dead node are closed by the first node to see
    it dead (at start, then every REAP_INTERVAL), which also takes over its undelivered callbacks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cluster = cluster.get(server)
        settings = server.settings
        self.shared = self.cluster is not None and bool(shared_url(settings))
        self.node_id = self.cluster.node_id if self.cluster is not None and self.shared else ""
        self.db = RecordingDB(settings.data_dir, shared_url(settings), self.node_id)
        if not self.shared:
            self.db.stop_all(time.time())
        self.relay = media_.get(server).relay
        self.signalling = signalling.get(server)
        self._process: RecorderProcess | None = None
        if self.db.pending_callbacks():
            self.process  # noqa: B018 - callbacks a previous run left undelivered go out now
        self.active: dict[tuple[str, str], Task] = {}
        self.stopped = False
        self._reaper: asyncio.Task[None] | None = None
        self.signalling.room_listeners.append(self._on_room_event)

    @property
    def process(self) -> RecorderProcess:
        """The recorder process, started with the first recording (most servers never record)."""
        if self._process is None:
            self._process = RecorderProcess(self.server.settings, self.node_id)
        return self._process

    async def start_cluster(self) -> None:
        """Cluster with shared tables: close dead nodes' tasks (a restarted node is a new node) now, then
        every REAP_INTERVAL."""
        if self.shared:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        self.stopped = True
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self.active.values()):
            self._end(task)
        if self._process is not None:
            await asyncio.to_thread(self._process.close)
        if self.shared:  # this node's tasks end with it; a live node sends what callbacks are left
            try:
                await self.server.run_blocking(self.db.close_node, self.node_id, time.time())
            except self.db.errors as exc:  # then the first node to see this one gone closes them
                log.warning("could not close this node's recording tasks", extra=fields(error=str(exc)))
        self.db.close()

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception as exc:  # Redis or the database away: the next pass tries again
                log.warning("recording: looking for dead nodes failed", extra=fields(error=str(exc)))
            await asyncio.sleep(REAP_INTERVAL)

    async def _alive(self, node_id: str) -> bool:
        assert self.cluster is not None
        return await self.cluster.alive(node_id)

    async def reap(self) -> None:
        """Close the recording tasks of every dead node and take its undelivered callbacks over; stop
        tapping for a task of this node's that another node closed (this node was taken for dead
        while its loop stalled past NODE_TTL) or took over; take over another node's task for a room
        served here (a StartRecord on that node raced with the room's first entry here)."""
        for node_id in sorted(await self.server.run_blocking(self.db.busy_nodes)):
            if not await self._alive(node_id):
                await self._close_node(node_id)
        for other in await self.server.run_blocking(self.db.running_elsewhere):
            if (other.app_id, other.room_id) not in self.active and self._serves(other.app_id, other.room_id):
                await self._take_over(other.app_id, other.room_id)
        for task in list(self.active.values()):
            now = await self.server.run_blocking(self.db.task, task.app_id, task.task_id)
            if (now is None or now.stopped_at is not None or now.node != self.node_id) and \
                    self.active.get((task.app_id, task.room_id)) is task:
                log.warning("recording task ended elsewhere; stopped here too",
                            extra=fields(app_id=task.app_id, room_id=task.room_id, task_id=task.task_id))
                self._end(task)

    async def _close_node(self, node_id: str) -> None:
        tasks, callbacks = await self.server.run_blocking(self.db.close_node, node_id, time.time())
        if tasks or callbacks:
            log.info("recording tasks of a dead node closed", extra=fields(node_id=node_id, tasks=tasks,
                                                                          callbacks=callbacks))
        if callbacks and not self.stopped:
            self.process  # noqa: B018 - its sender delivers them

    @staticmethod
    def _relay_room(app_id: str, room_id: str) -> str:
        return f"{app_id}\0{room_id}"

    def _begin(self, task: Task) -> None:
        """Start tapping the room for ``task`` (loop side)."""
        self.active[(task.app_id, task.room_id)] = task
        rooms = [r for r in self.signalling.registry.rooms(task.app_id) if r.room_id == task.room_id]
        members = {m.tinyid: m.open_id for r in rooms for m in r.members.values()}  # none yet: added as they enter
        self.process.send(("start", task, members, time.monotonic(), time.time()))
        self.relay.set_room_tap(self._relay_room(task.app_id, task.room_id), self.process.tap(task.task_id))

    def _end(self, task: Task) -> None:
        self.relay.set_room_tap(self._relay_room(task.app_id, task.room_id), None)
        self.active.pop((task.app_id, task.room_id), None)
        self.process.send(("stop", task.task_id))

    def _on_room_event(self, event: RoomEvent) -> None:
        if self.stopped:
            return
        m = event.member
        task = self.active.get((m.app_id, m.room_id))
        if event.kind == "enter":
            if task is not None:
                self.process.send(("member", task.task_id, m.tinyid, m.open_id))
            elif not event.others:
                asyncio.get_running_loop().create_task(self._first_member(m.app_id, m.room_id))
        elif task is not None:
            self.process.send(("leave", task.task_id, m.tinyid))
            if task.auto and not event.others:
                self._end(task)
                self.server.workers.submit(self.db.stop_task, task.task_id, time.time())

    async def _first_member(self, app_id: str, room_id: str) -> None:
        """A room formed here: its task moves here from another node (cluster), or full recording starts one."""
        if self.shared and await self._take_over(app_id, room_id):
            return
        _, mode = await self.server.run_blocking(self.db.settings, app_id)
        if not mode or self.stopped or (app_id, room_id) in self.active:
            return
        task = await self.server.run_blocking(self.db.create_task, app_id, room_id, mode, Subscription(), True,
                                              time.time())
        self._begin(task)

    def _serves(self, app_id: str, room_id: str) -> bool:
        return any(r.room_id == room_id for r in self.signalling.registry.rooms(app_id))

    async def _take_over(self, app_id: str, room_id: str) -> bool:
        """The room's running task, run by another node, is this node's now (that node finishes its files
        first); a dead node's is closed instead. Whether the room has a task."""
        task = await self.server.run_blocking(self.db.running, app_id, room_id)
        if task is None or task.node == self.node_id:
            return task is not None
        if not await self._alive(task.node):
            await self._close_node(task.node)
            return False
        assert self.cluster is not None
        link = bus.get(self.server)
        if link is None:
            return True
        try:
            await link.call(task.node, bus.RECORD_HANDOVER, {"app_id": app_id, "task_id": task.task_id})
        except GmeError as exc:
            log.warning("recording task not taken over", extra=fields(app_id=app_id, room_id=room_id,
                                                                      task_id=task.task_id, reason=exc.detail))
            return True
        moved = await self.server.run_blocking(self.db.move_task, task)
        if moved is not None and not self.stopped and (app_id, room_id) not in self.active:
            self._begin(moved)
            log.info("recording task taken over", extra=fields(app_id=app_id, room_id=room_id, task_id=task.task_id,
                                                               from_node=task.node))
        return True

    # --- the actions (GME's StartRecord family), shared by the API 3.0 endpoint and the CLI ------
    # In a cluster each is carried out by the node concerned (the room's or the task's), over the bus.

    async def _owner(self, app_id: str, room_id: str) -> str | None:
        """The other live node that serves the room (cluster), else None: the room is here or unplaced."""
        records = shared_records.get(self.server)
        return None if records is None else await records.owner(app_id, room_id)

    async def _runner(self, task: Task) -> str | None:
        """The other live node that runs ``task`` (cluster, shared tables), else None. A dead one's
        tasks are closed first (so the action finds the task stopped, as after a restart)."""
        if not task.node or task.node == self.node_id or task.stopped_at is not None:
            return None
        if await self._alive(task.node):
            return task.node
        await self._close_node(task.node)
        return None

    async def _call(self, node_id: str, op: str, args: Json) -> Json:
        link = bus.get(self.server)
        assert link is not None  # a node id comes from the cluster, which has a bus
        return await link.call(node_id, op, args)

    async def start(self, app_id: str, room_id: str, mode: int, subscription: Subscription) -> Task:
        _check_mode(mode)
        owner = await self._owner(app_id, room_id)
        if owner is None:
            return await self._start_here(app_id, room_id, mode, subscription)
        answer = await self._call(owner, bus.RECORD_START, {"app_id": app_id, "room_id": room_id, "mode": mode,
                                                          "subscription": subscription.to_json()})
        return Task(int(answer["task_id"]), app_id, room_id, mode, subscription, False, float(answer["started_at"]),
                    None, owner)

    async def _start_here(self, app_id: str, room_id: str, mode: int, subscription: Subscription) -> Task:
        running = self.active.get((app_id, room_id))
        if running is None and self.shared:
            running = await self.server.run_blocking(self.db.running, app_id, room_id)
            if running is not None and await self._runner(running) is None and running.node != self.node_id:
                running = None  # its node died: closed just now
        if running is not None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                           f"room {room_id} is being recorded already (task {running.task_id})")
        task = await self.server.run_blocking(self.db.create_task, app_id, room_id, mode, subscription, False,
                                              time.time())
        self._begin(task)
        return task

    async def _task(self, app_id: str, task_id: int) -> Task:
        task = await self.server.run_blocking(self.db.task, app_id, task_id)
        if task is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"no recording task {task_id} in app {app_id}")
        return task

    def _active(self, task: Task) -> Task:
        running = self.active.get((task.app_id, task.room_id))
        if running is None or running.task_id != task.task_id:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"recording task {task.task_id} is not running")
        return running

    async def stop_task(self, app_id: str, task_id: int) -> None:
        task = await self._task(app_id, task_id)
        runner = await self._runner(task)
        if runner is not None:
            await self._call(runner, bus.RECORD_STOP, {"app_id": app_id, "task_id": task_id})
            return
        self._end(self._active(task))
        await self.server.run_blocking(self.db.stop_task, task_id, time.time())

    async def modify(self, app_id: str, task_id: int, mode: int, subscription: Subscription) -> None:
        _check_mode(mode)
        task = await self._task(app_id, task_id)
        runner = await self._runner(task)
        if runner is not None:
            await self._call(runner, bus.RECORD_MODIFY, {"app_id": app_id, "task_id": task_id, "mode": mode,
                                                       "subscription": subscription.to_json()})
            return
        self._active(task)
        await self.server.run_blocking(self.db.modify_task, task_id, mode, subscription)
        changed = Task(task.task_id, task.app_id, task.room_id, mode, subscription, task.auto, task.started_at, None,
                       task.node)
        self.active[(task.app_id, task.room_id)] = changed
        self.process.send(("modify", task_id, changed))

    async def describe(self, app_id: str, task_id: int) -> tuple[Task, list[RecordFile]]:
        task = await self._task(app_id, task_id)
        return task, await self.server.run_blocking(self.db.files, task_id)

    async def running(self, app_id: str, room_id: str) -> Task | None:
        """The task recording the room: this node's, or (shared tables) any node's."""
        task = self.active.get((app_id, room_id))
        if task is None and self.shared:
            task = await self.server.run_blocking(self.db.running, app_id, room_id)
        return task

    # --- the bus: other nodes' requests for this node's rooms and tasks (never sent on) -------------

    async def _bus_start(self, args: Json) -> Json:
        task = await self._start_here(args["app_id"], args["room_id"], int(args["mode"]),
                                      Subscription.from_json(args["subscription"]))
        return {"task_id": task.task_id, "started_at": task.started_at}

    async def _bus_stop(self, args: Json) -> Json:
        await self.stop_task(args["app_id"], int(args["task_id"]))
        return {}

    async def _bus_modify(self, args: Json) -> Json:
        await self.modify(args["app_id"], int(args["task_id"]), int(args["mode"]),
                          Subscription.from_json(args["subscription"]))
        return {}

    async def _bus_handover(self, args: Json) -> Json:
        """Another node serves the room now: stop tapping it here (finishing the files); the task goes on there."""
        for task in list(self.active.values()):
            if task.app_id == args["app_id"] and task.task_id == int(args["task_id"]):
                self._end(task)
        return {}

    async def download(self, app_id: str, file_name: str) -> bytes:
        found = await self.server.run_blocking(self.db.file, app_id, file_name)
        if found is None or found.file_id is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"no stored recording {file_name} in app {app_id}")
        storage = ptt_.get(self.server).storage
        message = await self.server.run_blocking(storage.get, found.file_id)
        if message is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"recording {file_name} is past its retention")
        return await self.server.run_blocking(storage.read, message)


def _check_mode(mode: int) -> None:
    if mode not in tuple(rec.RecordMode):
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "RecordMode must be 1 (single), 2 (mixed) or 3 (both)")

