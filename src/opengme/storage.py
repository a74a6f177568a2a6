"""Where voice messages are kept: a small interface (:class:`MessageStorage`), its embedded default
:class:`DiskStorage` and, for clusters, ``opengme.storage_s3``.

Callers see file ids and :class:`Message` records only, never paths. The embedded backend keeps the
files on disk in the data directory, content-addressed by sha256 (``messages/ab/abcd….ogg``), and
one metadata row per message in the ``voice_messages`` table of the durable tables
(:mod:`opengme.db`: ``opengme.db``, or the cluster's PostgreSQL).

Crash safety: a ``put`` holds the database's write lock (``BEGIN IMMEDIATE``) while it writes the file
(temporary file, fsync, rename, fsync of the folder) and THEN inserts the row. A message is visible
only once its row is committed, so a crash at any point leaves at most a file without a row, and
:meth:`DiskStorage.clean_up` (which takes the same lock, so it never races a ``put`` of another
process) removes such orphans together with expired messages and left-over temporary files.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from opengme.codec.voicefile import write_atomically
from opengme.datadir import DataDirError
from opengme.db import Database, open_database

FOLDER = "messages"
TMP_FOLDER = "tmp"
SUFFIX = ".ogg"
DEFAULT_RETENTION = 90 * 86_400.0  # GME keeps voice messages 90 days
FILE_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def new_file_id() -> str:
    """A fresh random file id that does not start with "-" (the CLI would take it for an option)."""
    while (file_id := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return file_id


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


class RowStorage:
    """What every backend shares: the ``voice_messages`` rows in the durable tables (:mod:`opengme.db`),
    written only once the bytes are stored, so a message is never visible half-stored. A backend
    says where the bytes go (``_save``, ``_load``, ``_forget``, ``_sweep``). Safe to share between the
    threads of one process and between processes and nodes (server, CLI, recorder)."""

    locked_puts = True
    """Whether a put writes its bytes under the database's write lock (a backend whose orphan sweep
    could otherwise race a put); the S3 backend sweeps only old objects and uploads unlocked."""

    def __init__(self, data_dir: Path | str, retention: float, database_url: str) -> None:
        """``retention`` in seconds; 0 keeps messages forever."""
        if retention < 0:
            raise ValueError("retention must not be negative")
        self.retention = retention
        self._db = open_database(Path(data_dir), database_url)  # DataDirError: one line

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _read(self) -> Iterator[Database]:
        """The database; its failure becomes OSError (the interface's)."""
        try:
            yield self._db
        except self._db.errors as exc:
            raise OSError(f"voice-message database: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[Database]:
        """One write transaction holding the database's write lock (across processes and nodes)."""
        with self._read() as db, db.transaction():
            yield db

    def _horizon(self, now: float | None) -> float:
        current = time.time() if now is None else now
        return current - self.retention if self.retention else float("-inf")

    def put(self, app_id: str, open_id: str, data: bytes, duration_ms: int, now: float | None = None) -> Message:
        sha256 = hashlib.sha256(data).hexdigest()
        message = Message(new_file_id(), app_id, open_id, len(data), duration_ms, sha256,
                          time.time() if now is None else now)
        with self._write() if self.locked_puts else self._read() as db:
            self._save(message, data)  # the bytes first …
            db.execute(  # … then the row that makes them visible
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
        data = self._load(message)
        if data is None:
            raise MessageGone(f"the file of message {message.file_id} is missing from the storage")
        if hashlib.sha256(data).hexdigest() != message.sha256:
            raise MessageGone(f"the file of message {message.file_id} is damaged on the storage")
        return data

    def delete(self, file_id: str) -> bool:
        if not isinstance(file_id, str) or not FILE_ID.fullmatch(file_id):
            return False
        with self._write() as db:
            row = db.execute("SELECT * FROM voice_messages WHERE file_id = ?", (file_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM voice_messages WHERE file_id = ?", (file_id,))
            self._forget(db, Message(**row))
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
        horizon = self._horizon(now)
        with self._write() as db:
            expired = {r["file_id"] for r in db.execute("SELECT file_id FROM voice_messages WHERE created_at < ?",
                                                        (horizon,)).fetchall()}
            db.execute("DELETE FROM voice_messages WHERE created_at < ?", (horizon,))
            files, temporary = self._sweep(db, time.time() if now is None else now, expired)
        return CleanupReport(len(expired), files, temporary)

    def _save(self, message: Message, data: bytes) -> None:
        raise NotImplementedError

    def _load(self, message: Message) -> bytes | None:
        """The stored bytes, or None when there are none."""
        raise NotImplementedError

    def _forget(self, db: Database, message: Message) -> None:
        """Remove the bytes of ``message``, whose row ``db``'s transaction just deleted."""
        raise NotImplementedError

    def _sweep(self, db: Database, now: float, expired: set[str]) -> tuple[int, int]:
        """Remove bytes no row refers to (under the write lock; ``expired``: the file ids whose rows
        this pass deleted); (files, temporary files) removed."""
        raise NotImplementedError


class DiskStorage(RowStorage):
    """The embedded backend: files under ``data_dir/messages``, content-addressed (two messages with
    the same bytes share a file), rows in the durable tables."""

    def __init__(self, data_dir: Path | str, retention: float = DEFAULT_RETENTION, database_url: str = "") -> None:
        """``retention`` in seconds; 0 keeps messages forever."""
        super().__init__(data_dir, retention, database_url)
        self._root = Path(data_dir) / FOLDER
        self._tmp = self._root / TMP_FOLDER
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._db.close()
            raise DataDirError(f"cannot use {self._root} for voice messages: {exc.strerror or exc}; "
                               "it must be a directory this user can write") from None

    def _blob(self, sha256: str) -> Path:
        return self._root / sha256[:2] / f"{sha256}{SUFFIX}"

    def _save(self, message: Message, data: bytes) -> None:
        blob = self._blob(message.sha256)
        blob.parent.mkdir(exist_ok=True)
        write_atomically(blob, data, self._tmp)

    def _load(self, message: Message) -> bytes | None:
        try:
            return self._blob(message.sha256).read_bytes()
        except FileNotFoundError:
            return None

    def _forget(self, db: Database, message: Message) -> None:
        if db.execute("SELECT 1 FROM voice_messages WHERE sha256 = ?", (message.sha256,)).fetchone() is None:
            self._blob(message.sha256).unlink(missing_ok=True)

    def _sweep(self, db: Database, now: float, expired: set[str]) -> tuple[int, int]:
        referenced = {r["sha256"] for r in db.execute("SELECT DISTINCT sha256 FROM voice_messages").fetchall()}
        files = 0
        for blob in self._blobs():
            if blob.stem not in referenced:
                blob.unlink(missing_ok=True)
                files += 1
        temporary = 0
        for tmp in self._tmp.iterdir():  # puts hold the lock we hold: none of these is in use
            tmp.unlink(missing_ok=True)
            temporary += 1
        return files, temporary

    def _blobs(self) -> Iterator[Path]:
        for folder in self._root.iterdir():
            if folder.is_dir() and folder.name != TMP_FOLDER:
                yield from (p for p in folder.iterdir()
                            if p.suffix == SUFFIX and _SHA256.fullmatch(p.stem) and p.is_file())


def open_storage(data_dir: Path | str, retention_days: float, storage_url: str = "",
                 database_url: str = "") -> MessageStorage:
    """The configured backend: the data directory's ``messages`` folder when ``storage_url`` is empty,
    else S3 (:mod:`opengme.storage_s3`); the rows in the configured database."""
    retention = retention_days * 86_400.0
    if storage_url:
        from opengme.storage_s3 import S3Storage  # boto3 is imported only where it is used

        return S3Storage(data_dir, storage_url, retention, database_url)
    return DiskStorage(data_dir, retention, database_url)
