"""The app registry: GME's console, kept in the durable tables (:mod:`opengme.db`: SQLite in the
data directory, or the cluster's PostgreSQL).

Every read goes to the database, so a change made by ``opengme app set`` from another process
is seen by the server's next request without a restart.
"""
from __future__ import annotations

import secrets
import sqlite3
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opengme.datadir import DB_NAME as DB_NAME  # the registry's file; other parts share it
from opengme.datadir import damaged, prepare
from opengme.db import open_database
from opengme.ids import KEY_LENGTH, IdError, validate_app_id, validate_key

KEY_ALPHABET = string.ascii_letters + string.digits
SWITCHES = ("voice", "ptt", "stt", "arrears", "string_openid", "v1_auth", "dev_signing")


@dataclass(frozen=True)
class App:
    """One GME application: its AppID, permission key and console switches."""

    app_id: str
    key: str
    name: str
    voice: bool
    ptt: bool
    stt: bool
    arrears: bool
    string_openid: bool
    created_at: float
    updated_at: float
    v1_auth: bool = True  # accept GME's v1 AuthBuffers (malleable: see opengme.authbuffer)
    dev_signing: bool = False  # the /demo page may sign AuthBuffers for anyone (development only)

    def public_dict(self) -> dict[str, object]:
        """Fields safe to print or log: everything but the key."""
        return {
            "app_id": self.app_id,
            "name": self.name,
            "voice": self.voice,
            "ptt": self.ptt,
            "stt": self.stt,
            "arrears": self.arrears,
            "string_openid": self.string_openid,
            "v1_auth": self.v1_auth,
            "dev_signing": self.dev_signing,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class AppStoreError(ValueError):
    """A registry request that cannot be carried out; the message says what to fix."""


class RegistryNotFound(AppStoreError):
    """A reader looked for a registry where there is none (so nothing was created there)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no app registry at {path}")
        self.path = path


def new_key() -> str:
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


class AppStore:
    """SQLite-backed apps; safe to share between threads of one process.

    The server creates the data directory and the registry on its first start (``create=True``);
    commands that only use apps pass ``create=False`` and get ``RegistryNotFound`` instead of an
    empty registry in the wrong place.
    """

    def __init__(self, data_dir: Path | str, *, create: bool = True, database_url: str = "") -> None:
        """Open (or, with ``create``, make) the registry; :class:`DataDirError` in one line when the data
        directory or ``opengme.db`` is damaged (or ``database_url``'s server cannot be used), never a new
        registry over an unreadable one."""
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.path = prepare(self.data_dir, create=create)
        if not database_url and not create and not self.path.exists():
            raise RegistryNotFound(self.path)
        self._lock = threading.Lock()
        self._db = open_database(self.data_dir, database_url)
        try:
            self._db.execute("SELECT * FROM apps").fetchall()  # every registry page is readable
        except self._db.errors as exc:
            self._db.close()
            raise self._damaged(exc) from None

    def _damaged(self, exc: Exception) -> Exception:
        return damaged(self.path, exc) if isinstance(exc, sqlite3.Error) else exc

    def check(self) -> None:
        """Walk the whole database file (seconds for gigabytes; the server does it once at start):
        :class:`DataDirError` when SQLite finds damage that opening did not reach. PostgreSQL checks
        its own pages."""
        try:
            with self._lock:
                problem = self._db.quick_check()
        except sqlite3.Error as exc:
            raise damaged(self.path, exc) from None
        if problem is not None:
            raise damaged(self.path, sqlite3.DatabaseError(problem))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str, app_id: str | None = None, key: str | None = None) -> App:
        """Create an app; ``app_id``/``key`` import an existing GME app so its signing backend keeps working."""
        created = self._create(name, app_id, key, only_if_empty=False)
        assert created is not None  # only a first app may be skipped
        return created

    def create_first(self, name: str) -> App | None:
        """Create ``name`` when the registry has no app yet (a first start), else None: one check and
        insert under the database's write lock, so nodes starting together make one app."""
        return self._create(name, None, None, only_if_empty=True)

    def _create(self, name: str, app_id: str | None, key: str | None, *, only_if_empty: bool) -> App | None:
        if not name or not name.strip():
            raise AppStoreError("an app needs a non-empty name")
        try:
            key = validate_key(key) if key is not None else new_key()
            app_id = validate_app_id(app_id) if app_id is not None else None
        except IdError as exc:
            raise AppStoreError(str(exc)) from None
        now = time.time()
        with self._lock, self._db.transaction() as db:
            if only_if_empty and db.execute("SELECT 1 FROM apps LIMIT 1").fetchone() is not None:
                return None
            if app_id is None:
                app_id = self._free_app_id()
            try:
                db.execute(
                    "INSERT INTO apps (app_id, key, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (app_id, key, name.strip(), now, now),
                )
            except self._db.integrity_errors:
                raise AppStoreError(f"an app with AppID {app_id} already exists") from None
        return self.require(app_id)

    def _free_app_id(self) -> str:
        while True:  # GME AppIDs look like 1400xxxxxx
            candidate = str(1_400_000_000 + secrets.randbelow(1_000_000))
            if self._db.execute("SELECT 1 FROM apps WHERE app_id = ?", (candidate,)).fetchone() is None:
                return candidate

    def get(self, app_id: str) -> App | None:
        try:
            app_id = validate_app_id(app_id)
        except IdError:
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM apps WHERE app_id = ?", (app_id,)).fetchone()
        return _row_to_app(row) if row else None

    def require(self, app_id: str) -> App:
        app = self.get(app_id)
        if app is None:
            raise AppStoreError(f"no app with AppID {app_id}; see `opengme app list`")
        return app

    def list(self) -> list[App]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM apps ORDER BY created_at, app_id").fetchall()
        return [_row_to_app(r) for r in rows]

    def set(self, app_id: str, **switches: bool) -> App:
        """Change console switches (voice, ptt, stt, arrears, string_openid, v1_auth, dev_signing)."""
        unknown = set(switches) - set(SWITCHES)
        if unknown:
            raise AppStoreError(f"unknown switch(es): {', '.join(sorted(unknown))}")
        app = self.require(app_id)
        if switches:
            cols = ", ".join(f"{k} = ?" for k in switches)
            with self._lock:
                self._db.execute(
                    f"UPDATE apps SET {cols}, updated_at = ? WHERE app_id = ?",
                    (*(int(bool(v)) for v in switches.values()), time.time(), app.app_id),
                )
        return self.require(app.app_id)

    def rotate_key(self, app_id: str) -> App:
        app = self.require(app_id)
        with self._lock:
            self._db.execute(
                "UPDATE apps SET key = ?, updated_at = ? WHERE app_id = ?", (new_key(), time.time(), app.app_id)
            )
        return self.require(app.app_id)


def _row_to_app(row: dict[str, Any]) -> App:
    return App(
        app_id=row["app_id"],
        key=row["key"],
        name=row["name"],
        voice=bool(row["voice"]),
        ptt=bool(row["ptt"]),
        stt=bool(row["stt"]),
        arrears=bool(row["arrears"]),
        string_openid=bool(row["string_openid"]),
        v1_auth=bool(row["v1_auth"]),
        dev_signing=bool(row["dev_signing"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
