"""Where voice messages are kept: a small interface (:class:`MessageStorage`) and its embedded
default, :class:`DiskStorage`.

Callers see file ids and :class:`Message` records only, never paths, so a later S3 backend can
implement the same interface. The embedded backend keeps the files on disk in the data directory,
content-addressed by sha256 (``messages/ab/abcd….ogg``), and one metadata row per message in the
``voice_messages`` table of ``opengme.db`` (its own connection; the app registry shares the file).

Crash safety: a ``put`` holds SQLite's write lock (``BEGIN IMMEDIATE``) while it writes the file
(temporary file, fsync, rename, fsync of the folder) and THEN inserts the row. A message is visible
only once its row is committed, so a crash at any point leaves at most a file without a row, and
:meth:`DiskStorage.clean_up` (which takes the same lock, so it never races a ``put`` of another
process) removes such orphans together with expired messages and left-over temporary files.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from opengme.codec.voicefile import write_atomically
from opengme.datadir import DataDirError, connect

_SCHEMA = """CREATE TABLE IF NOT EXISTS voice_messages (
    file_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    open_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS voice_messages_owner ON voice_messages (app_id, open_id, created_at);
CREATE INDEX IF NOT EXISTS voice_messages_created ON voice_messages (created_at);
CREATE INDEX IF NOT EXISTS voice_messages_sha256 ON voice_messages (sha256);"""
FOLDER = "messages"
TMP_FOLDER = "tmp"
SUFFIX = ".ogg"
DEFAULT_RETENTION = 90 * 86_400.0  # GME keeps voice messages 90 days
FILE_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Message:
    """One stored voice message's metadata."""

    file_id: str
    app_id: str
    open_id: str
    size: int
    duration_ms: int
    sha256: str
    created_at: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CleanupReport:
    """What one retention pass removed."""

    expired: int  # messages past retention (rows)
    files: int  # files removed: their last message expired, or orphans of a crash
    temporary: int  # left-over temporary files


class MessageGone(LookupError):
    """The message's row exists but its bytes are missing or damaged on the storage."""


class MessageStorage(Protocol):
    """What the server and the CLI need from a voice-message store. OSError means the storage
    itself failed (disk full, unreachable bucket); callers map it to a "try again" error."""

    def put(self, app_id: str, open_id: str, data: bytes, duration_ms: int, now: float | None = None) -> Message:
        """Store ``data`` and return its new message (a fresh file id)."""
        ...

    def get(self, file_id: str, now: float | None = None) -> Message | None:
        """The message, or None when the id is unknown, malformed, deleted or expired."""
        ...

    def read(self, message: Message) -> bytes:
        """The file's bytes, checked against its sha256; MessageGone when they are not there."""
        ...

    def delete(self, file_id: str) -> bool:
        """Remove the message (and its file when no other message shares it); False when unknown."""
        ...

    def list(self, app_id: str, open_id: str | None = None, now: float | None = None) -> list[Message]:
        """The app's live messages (optionally one openid's), oldest first."""
        ...

    def clean_up(self, now: float | None = None) -> CleanupReport:
        """Delete expired messages, then files no message refers to."""
        ...

    def close(self) -> None: ...


class DiskStorage:
    """The embedded backend: files under ``data_dir/messages``, rows in ``data_dir/opengme.db``.
    Safe to share between the threads of one process and between processes (server and CLI)."""

    def __init__(self, data_dir: Path | str, retention: float = DEFAULT_RETENTION) -> None:
        """``retention`` in seconds; 0 keeps messages forever."""
        if retention < 0:
            raise ValueError("retention must not be negative")
        self.retention = retention
        self._root = Path(data_dir) / FOLDER
        self._tmp = self._root / TMP_FOLDER
        self._lock = threading.Lock()
        self._db = connect(Path(data_dir), _SCHEMA)  # DataDirError: one line, never a new db over a damaged one
        self._db.row_factory = sqlite3.Row
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._db.close()
            raise DataDirError(f"cannot use {self._root} for voice messages: {exc.strerror or exc}; "
                               "it must be a directory this user can write") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection, under our lock; a database failure becomes OSError (the interface's)."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise OSError(f"voice-message database: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock (across processes) and ours (threads)."""
        with self._read() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _blob(self, sha256: str) -> Path:
        return self._root / sha256[:2] / f"{sha256}{SUFFIX}"

    def _horizon(self, now: float | None) -> float:
        current = time.time() if now is None else now
        return current - self.retention if self.retention else float("-inf")

    def put(self, app_id: str, open_id: str, data: bytes, duration_ms: int, now: float | None = None) -> Message:
        sha256 = hashlib.sha256(data).hexdigest()
        message = Message(secrets.token_urlsafe(18), app_id, open_id, len(data), duration_ms, sha256,
                          time.time() if now is None else now)
        blob = self._blob(sha256)
        with self._write() as db:
            blob.parent.mkdir(exist_ok=True)
            write_atomically(blob, data, self._tmp)  # the file first …
            db.execute(  # … then the row that makes it visible
                "INSERT INTO voice_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.file_id, app_id, open_id, message.size, duration_ms, sha256, message.created_at),
            )
        return message

    def get(self, file_id: str, now: float | None = None) -> Message | None:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            return None
        with self._read() as db:
            row = db.execute("SELECT * FROM voice_messages WHERE file_id = ? AND created_at >= ?",
                             (file_id, self._horizon(now))).fetchone()
        return Message(**row) if row else None

    def read(self, message: Message) -> bytes:
        try:
            data = self._blob(message.sha256).read_bytes()
        except FileNotFoundError:
            raise MessageGone(f"the file of message {message.file_id} is missing from the storage") from None
        if hashlib.sha256(data).hexdigest() != message.sha256:
            raise MessageGone(f"the file of message {message.file_id} is damaged on the storage")
        return data

    def delete(self, file_id: str) -> bool:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            return False
        with self._write() as db:
            row = db.execute("SELECT sha256 FROM voice_messages WHERE file_id = ?", (file_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM voice_messages WHERE file_id = ?", (file_id,))
            if db.execute("SELECT 1 FROM voice_messages WHERE sha256 = ?", (row["sha256"],)).fetchone() is None:
                self._blob(row["sha256"]).unlink(missing_ok=True)
        return True

    def list(self, app_id: str, open_id: str | None = None, now: float | None = None) -> list[Message]:
        query = "SELECT * FROM voice_messages WHERE app_id = ? AND created_at >= ?"
        args: tuple[object, ...] = (app_id, self._horizon(now))
        if open_id is not None:
            query += " AND open_id = ?"
            args += (open_id,)
        with self._read() as db:
            rows = db.execute(query + " ORDER BY created_at, file_id", args).fetchall()
        return [Message(**r) for r in rows]

    def clean_up(self, now: float | None = None) -> CleanupReport:
        with self._write() as db:
            expired = db.execute("DELETE FROM voice_messages WHERE created_at < ?", (self._horizon(now),)).rowcount
            referenced = {r[0] for r in db.execute("SELECT DISTINCT sha256 FROM voice_messages")}
            files = 0
            for blob in self._blobs():
                if blob.stem not in referenced:
                    blob.unlink(missing_ok=True)
                    files += 1
            temporary = 0
            for tmp in self._tmp.iterdir():  # puts hold the lock we hold: none of these is in use
                tmp.unlink(missing_ok=True)
                temporary += 1
        return CleanupReport(expired, files, temporary)

    def _blobs(self) -> Iterator[Path]:
        for folder in self._root.iterdir():
            if folder.is_dir() and folder.name != TMP_FOLDER:
                yield from (p for p in folder.iterdir()
                            if p.suffix == SUFFIX and _SHA256.fullmatch(p.stem) and p.is_file())


def open_storage(data_dir: Path | str, retention_days: float) -> MessageStorage:
    """The configured backend (today always the embedded one)."""
    return DiskStorage(data_dir, retention_days * 86_400.0)

