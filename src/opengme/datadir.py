"""The data directory: the ``opengme.db`` every part opens, checked before use, and the lock that
keeps a second server off the directory.

Damage never turns into a fresh install. ``opengme.db`` is created only where no file of that name
exists, and it is built under a temporary name and linked into place complete, so OpenGME never
leaves an empty ``opengme.db`` behind, even when it crashes while creating one. An existing
``opengme.db`` that is empty, not a database, truncated or a directory is refused with one line
that names it and what to do: restore it from a backup, or move it aside to start over (the next
``opengme serve`` then creates an empty registry with a ``dev`` app).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import sqlite3
from pathlib import Path

DB_NAME = "opengme.db"
LOCK_NAME = "opengme.lock"
_BUSY_TIMEOUT = 10.0  # seconds SQLite waits for another process's write lock


class DataDirError(Exception):
    """The data directory or its database cannot be used as it is; the message is one line that names
    the file and what to do."""


def _start_over(path: Path) -> str:
    moved = shlex.quote(f"{path}.broken")
    return (f"restore it from a backup, or move it aside (mv {shlex.quote(str(path))} {moved}) to start over "
            "with an empty registry")


def prepare(data_dir: Path, *, create: bool) -> Path:
    """``data_dir`` checked to be a directory (made, with its parents, when ``create``); its database path."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"the data directory {data_dir} is a file, not a directory; point --data-dir "
                           "(or data_dir in opengme.toml) at a directory, or move the file away")
    if create:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create the data directory {data_dir}: {exc.strerror or exc}; "
                               "pick another with --data-dir") from None
    return data_dir / DB_NAME


def connect(data_dir: Path, schema: str) -> sqlite3.Connection:
    """``data_dir/opengme.db`` (WAL, autocommit) with ``schema`` (idempotent DDL) applied, created
    when there is none; :class:`DataDirError` when it exists but cannot be read as a database."""
    path = prepare(data_dir, create=True)
    if not path.exists() and not path.is_symlink():
        _create(path, schema)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataDirError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise DataDirError(f"{path} is a directory where the database should be; {_start_over(path)}")
    if size == 0:
        raise DataDirError(f"{path} is empty (0 bytes), not a registry OpenGME wrote (it never leaves one "
                           f"empty); {_start_over(path)}")
    try:
        db = _open(path, schema)
        db.execute("SELECT name FROM sqlite_master").fetchall()  # reads the header and the schema page
    except sqlite3.Error as exc:
        raise damaged(path, exc) from None
    return db


def damaged(path: Path, exc: sqlite3.Error) -> DataDirError:
    """The one-line refusal for an SQLite error met while opening or checking ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    detail = " ".join(str(exc).split())  # SQLite's findings may span lines: the refusal is one
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return DataDirError(f"{path} stayed locked by another process for {_BUSY_TIMEOUT:g} s; try again")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_IOERR")):
        return DataDirError(f"cannot open {path} ({detail}); check that it is a file this user can read and write")
    return DataDirError(f"{path} is damaged ({detail}); {_start_over(path)}")


def _open(path: Path, schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=_BUSY_TIMEOUT)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def _create(path: Path, schema: str) -> None:
    """A new database at ``path``, complete or not at all: built aside, then linked into place (which
    fails, harmlessly, when another process created one first)."""
    temporary = path.with_name(f".{DB_NAME}.{secrets.token_hex(8)}.new")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for SQLite
        _open(temporary, schema).close()
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except (OSError, sqlite3.Error) as exc:
        raise DataDirError(f"cannot create {path}: {exc}; check the data directory's permissions and free space") \
            from None
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            leftover.unlink(missing_ok=True)


def integrity_problem(db: sqlite3.Connection) -> str | None:
    """SQLite's first finding when it walks the whole file (``quick_check``), or None when sound."""
    cursor = db.execute("PRAGMA quick_check(1)")
    (finding,) = cursor.fetchone() if db.row_factory is None else (cursor.fetchone()["quick_check"],)
    return None if finding == "ok" else str(finding)


class ServerLock:
    """``opengme.lock`` in the data directory, held with ``flock`` for a server's life, so a second
    server on the same directory refuses to start instead of sharing its rooms' database.

    The holder writes its pid into the file for the refusal message. The file stays when the server
    ends: the lock is the ``flock``, which the kernel releases even after a crash, so there is
    nothing stale to clean up.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirError` naming the lock file and the running server's pid."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot open the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirError(f"another OpenGME server{pid} is running on the data directory {self.path.parent} "
                               f"(it holds {self.path}); stop it first, or give this one its own --data-dir") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
