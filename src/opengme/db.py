"""The durable tables' database: SQLite's ``opengme.db`` in the data directory (the embedded default)
or PostgreSQL (``database_url = "postgresql://…"``, through psycopg 3), behind one small interface.

Why one interface: the tables several nodes must share (apps, voice messages and their texts, API
keys, the console's operator token) are written once, with ``?`` placeholders and SQL both engines
speak; :class:`Database` turns the placeholders into psycopg's and gives both engines the same
transactions. :data:`MIGRATIONS` is the one ordered list of schema changes; opening a database
applies the ones its ``schema_version`` table has not recorded, under the engine's write lock, so
two nodes starting together migrate once.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from opengme.datadir import DataDirError, connect, damaged, integrity_problem, prepare

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
POSTGRES_SCHEMES = ("postgresql", "postgres")
_LOCK_KEY = 0x6F67_6D65  # pg_advisory_xact_lock key of OpenGME's writers ("ogme")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the tables of the app registry, voice messages and their texts, API keys, the console token.
    (
        """CREATE TABLE IF NOT EXISTS apps (
            app_id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            voice INTEGER NOT NULL DEFAULT 1,
            ptt INTEGER NOT NULL DEFAULT 1,
            stt INTEGER NOT NULL DEFAULT 1,
            arrears INTEGER NOT NULL DEFAULT 0,
            string_openid INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS voice_messages (
            file_id TEXT PRIMARY KEY,
            app_id TEXT NOT NULL,
            open_id TEXT NOT NULL,
            size INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS voice_messages_owner ON voice_messages (app_id, open_id, created_at)",
        "CREATE INDEX IF NOT EXISTS voice_messages_created ON voice_messages (created_at)",
        "CREATE INDEX IF NOT EXISTS voice_messages_sha256 ON voice_messages (sha256)",
        """CREATE TABLE IF NOT EXISTS voice_transcripts (
            file_id TEXT NOT NULL,
            language TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (file_id, language)
        )""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            secret_id TEXT PRIMARY KEY,
            secret_key TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            app_ids TEXT NOT NULL DEFAULT '[]',
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS console_tokens (
            token_hash TEXT PRIMARY KEY,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    ),
    # 2: the switches added after the first release (an older SQLite registry may have them already).
    (
        "ALTER TABLE apps ADD COLUMN IF NOT EXISTS v1_auth INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE apps ADD COLUMN IF NOT EXISTS dev_signing INTEGER NOT NULL DEFAULT 0",
    ),
    # 3: members' finished stays (DescribeUserInAndOutTime) and usage per day (DescribeAppStatistics).
    (
        """CREATE TABLE IF NOT EXISTS inout (
            app_id TEXT NOT NULL, room_id TEXT NOT NULL, open_id TEXT NOT NULL,
            start DOUBLE PRECISION NOT NULL, "end" DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS inout_member ON inout (app_id, room_id, open_id, start)",
        """CREATE TABLE IF NOT EXISTS usage (
            app_id TEXT NOT NULL, day TEXT NOT NULL, metric TEXT NOT NULL, amount DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (app_id, day, metric)
        )""",
    ),
    # 4: server-side recording: tasks, their files, the callback queue, per-app settings.
    (
        """CREATE TABLE IF NOT EXISTS record_tasks (
            task_id INTEGER PRIMARY KEY AUTOINCREMENT, app_id TEXT NOT NULL, room_id TEXT NOT NULL,
            mode INTEGER NOT NULL, subscription TEXT NOT NULL, auto INTEGER NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, stopped_at DOUBLE PRECISION
        )""",
        """CREATE TABLE IF NOT EXISTS record_files (
            task_id INTEGER NOT NULL, app_id TEXT NOT NULL, room_id TEXT NOT NULL, user_id TEXT NOT NULL,
            mode INTEGER NOT NULL, seq INTEGER NOT NULL, file_name TEXT NOT NULL, "begin" DOUBLE PRECISION NOT NULL,
            "end" DOUBLE PRECISION, status INTEGER NOT NULL, file_id TEXT, PRIMARY KEY (task_id, file_name)
        )""",
        "CREATE INDEX IF NOT EXISTS record_files_name ON record_files (app_id, file_name)",
        """CREATE TABLE IF NOT EXISTS record_callbacks (
            id INTEGER PRIMARY KEY AUTOINCREMENT, app_id TEXT NOT NULL, url TEXT NOT NULL, body BLOB NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_at DOUBLE PRECISION NOT NULL, delivered_at DOUBLE PRECISION
        )""",
        "CREATE INDEX IF NOT EXISTS record_callbacks_due ON record_callbacks (delivered_at, id)",
        """CREATE TABLE IF NOT EXISTS record_settings (
            app_id TEXT PRIMARY KEY, callback_url TEXT NOT NULL DEFAULT '', full_mode INTEGER NOT NULL DEFAULT 0
        )""",
    ),
    # 5: recording in a cluster: the node that runs a task, and the node whose sender delivers a callback
    # ('' on a single node).
    (
        "ALTER TABLE record_tasks ADD COLUMN IF NOT EXISTS node_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE record_callbacks ADD COLUMN IF NOT EXISTS node_id TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX IF NOT EXISTS record_tasks_running ON record_tasks (stopped_at, node_id)",
    ),
)
"""The schema, in order; append, never edit a released step (``schema_version`` records how far a
database got). Steps are written in SQLite's SQL, with column names both engines accept (``"end"``
quoted: PostgreSQL reserves it); ``ADD COLUMN IF NOT EXISTS``, which SQLite lacks, is checked
against the table there, and :data:`_POSTGRES_TYPES` are PostgreSQL's names for SQLite's types."""
_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) (.+)", re.S)
_POSTGRES_TYPES = (("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
                   (" BLOB ", " BYTEA "))


class Cursor(Protocol):
    """What callers use of a DB-API cursor (sqlite3's and psycopg's both): rows are read by column name."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Sequence[Any] | None:
        """None for a statement that returns no rows (psycopg refuses to fetch from one)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database:
    """One connection to the durable tables, safe to share between threads (a lock around each call
    and each transaction). ``errors`` and ``integrity_errors`` are the engine's exception types."""

    def __init__(self, engine: str, connection: Any, errors: tuple[type[Exception], ...],
                 integrity_errors: tuple[type[Exception], ...], where: str,
                 reconnect: Callable[[], Any] | None = None) -> None:
        """``reconnect`` makes a new connection when the server closed ours (PostgreSQL restarted,
        a failover): the call that met the closed connection fails, the next one reconnects."""
        self.engine = engine
        self.errors = errors
        self.integrity_errors = integrity_errors
        self.where = where  # the file or the server, for messages (never the password)
        self._connection = connection
        self._reconnect = reconnect
        self._lock = threading.RLock()
        self._depth = 0

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        """Run one statement written with ``?`` placeholders."""
        if self.engine == POSTGRESQL:
            sql = sql.replace("?", "%s")
        with self._lock:
            if self._depth == 0:  # never inside a transaction: a new connection would not be in it
                self._connect_again()
            cursor: Cursor = self._connection.execute(sql, tuple(params))
            return cursor

    def _connect_again(self) -> None:
        if self._reconnect is not None and self._connection.closed:
            self._connection = self._reconnect()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction that holds the engine's write lock, across processes and nodes:
        SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction-scoped advisory lock."""
        with self._lock:
            self._depth += 1
            try:
                if self._depth > 1:  # already inside ours: one transaction
                    yield self
                    return
                self._connect_again()
                self.execute("BEGIN IMMEDIATE" if self.engine == SQLITE else "BEGIN")
                try:
                    if self.engine == POSTGRESQL:
                        self.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
                    yield self
                except BaseException:
                    with contextlib.suppress(*self.errors):  # a lost connection cannot roll back: the server did
                        self.execute("ROLLBACK")
                    raise
                self.execute("COMMIT")
            finally:
                self._depth -= 1

    def columns(self, table: str) -> set[str]:
        """The names of ``table``'s columns (empty when there is no such table)."""
        if self.engine == SQLITE:
            return {row["name"] for row in self.execute(f"PRAGMA table_info({table})").fetchall()}
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                            "AND table_schema = current_schema()", (table,)).fetchall()
        return {row["column_name"] for row in rows}

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def quick_check(self) -> str | None:
        """SQLite's first finding when it walks the whole file, or None when sound (PostgreSQL checks
        its own pages: always None)."""
        if self.engine != SQLITE:
            return None
        with self._lock:
            return integrity_problem(self._connection)

    def migrate(self) -> int:
        """Apply the steps of :data:`MIGRATIONS` this database has not recorded; the version reached."""
        if self.columns("schema_version") and self._version() >= len(MIGRATIONS):  # usual: no write lock
            return len(MIGRATIONS)
        with self.transaction():  # nodes starting together on a new database: one creates, the rest wait
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
            for version in range(self._version() + 1, len(MIGRATIONS) + 1):
                for step in MIGRATIONS[version - 1]:
                    self._apply(step)
                self.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
        return len(MIGRATIONS)

    def _version(self) -> int:
        row = self.execute("SELECT MAX(version) AS version FROM schema_version").fetchone()
        return int(row["version"] or 0)

    def _apply(self, step: str) -> None:
        added = _ADD_COLUMN.fullmatch(step)
        if added is not None and self.engine == SQLITE:
            table, column, definition = added.groups()
            if column in self.columns(table):
                return
            step = f"ALTER TABLE {table} ADD COLUMN {column} {definition}"
        if self.engine == POSTGRESQL:
            for sqlite_type, postgres_type in _POSTGRES_TYPES:
                step = step.replace(sqlite_type, postgres_type)
        self.execute(step)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def is_postgres(database_url: str) -> bool:
    return urlsplit(database_url).scheme in POSTGRES_SCHEMES


def check_url(database_url: str) -> str:
    """``database_url`` when OpenGME can use it ("" = SQLite in the data directory); ValueError saying
    what is wanted otherwise."""
    if database_url and not is_postgres(database_url):
        raise ValueError(f"database_url must be empty (SQLite in the data directory) or a postgresql:// URL, "
                         f"got {redacted_url(database_url)!r}")
    return database_url


def redacted_url(database_url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def open_database(data_dir: Path | str, database_url: str = "", *, create: bool = True) -> Database:
    """The durable tables, migrated: SQLite in ``data_dir`` when ``database_url`` is empty (``create``:
    made when missing), else PostgreSQL. :class:`DataDirError` in one line when either cannot be used."""
    try:
        check_url(database_url)
    except ValueError as exc:
        raise DataDirError(str(exc)) from None
    if database_url:
        return _open_postgres(database_url)
    path = prepare(Path(data_dir), create=create)
    connection = connect(Path(data_dir), "")
    connection.row_factory = _dict_row
    database = Database(SQLITE, connection, (sqlite3.Error,), (sqlite3.IntegrityError,), str(path))
    try:
        database.migrate()
    except sqlite3.Error as exc:
        connection.close()
        raise damaged(path, exc) from None
    return database


def _open_postgres(database_url: str) -> Database:
    import psycopg  # only a cluster node pays for the import
    from psycopg.rows import dict_row

    where = redacted_url(database_url)

    def connect_() -> Any:
        return psycopg.connect(database_url, autocommit=True, row_factory=dict_row, connect_timeout=10)

    try:
        connection = connect_()
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        raise DataDirError(f"cannot connect to the database {where} ({detail}); check database_url and that "
                           "PostgreSQL is running") from None
    database = Database(POSTGRESQL, connection, (psycopg.Error,), (psycopg.IntegrityError,), where, connect_)
    try:
        database.migrate()
    except psycopg.Error as exc:
        connection.close()
        raise DataDirError(f"cannot migrate the database {where}: {' '.join(str(exc).split())}") from None
    return database

