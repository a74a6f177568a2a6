"""API credentials for the Tencent Cloud API 3.0 endpoint: SecretId/SecretKey pairs in the data
directory's ``opengme.db`` (table ``api_keys``), made by ``opengme apikey create``.

The SecretKey is shown once, when it is made, and never logged. It is stored as it is (a TC3
signature is checked by computing it, which needs the key), so the database file is kept readable by
its owner only (0600) once it holds one. A key may be limited to some AppIDs; an empty list means
every app of this server.
"""
from __future__ import annotations

import json
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opengme.datadir import DB_NAME
from opengme.db import SQLITE, open_database

SECRET_ID_PREFIX = "AKID"  # Tencent Cloud SecretIds start so: SDKs and tools recognise the shape
SECRET_ID_CHARS = 32
SECRET_KEY_CHARS = 32
MAX_NOTE_CHARS = 200
_ALPHABET = string.ascii_letters + string.digits
class ApiKeyError(ValueError):
    """A request about API keys that cannot be carried out; the message says what to fix."""


@dataclass(frozen=True)
class ApiKey:
    secret_id: str
    secret_key: str
    note: str
    app_ids: tuple[str, ...]
    enabled: bool
    created_at: float

    def allows(self, app_id: str) -> bool:
        """Whether this key may act on ``app_id`` (an unlimited key may act on every app)."""
        return not self.app_ids or app_id in self.app_ids

    def public_dict(self) -> dict[str, object]:
        """Everything but the SecretKey: safe to print or log."""
        return {"secret_id": self.secret_id, "note": self.note, "app_ids": list(self.app_ids),
                "enabled": self.enabled, "created_at": self.created_at}


class ApiKeyStore:
    """The ``api_keys`` table; safe to share between the threads of one process."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self.path = Path(data_dir) / DB_NAME
        self._lock = threading.Lock()
        self._db = open_database(Path(data_dir), database_url)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, note: str = "", app_ids: tuple[str, ...] = ()) -> ApiKey:
        if len(note) > MAX_NOTE_CHARS:
            raise ApiKeyError(f"the note must be at most {MAX_NOTE_CHARS} characters")
        secret_id = SECRET_ID_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_ID_CHARS))
        secret_key = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_KEY_CHARS))
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (secret_id, secret_key, note, app_ids, created_at) VALUES (?, ?, ?, ?, ?)",
                (secret_id, secret_key, note, json.dumps(sorted(set(app_ids))), time.time()),
            )
        self._keep_private()
        return self.require(secret_id)

    def _keep_private(self) -> None:
        """The database now holds a secret: owner-only permissions on it and its WAL files (a
        PostgreSQL server keeps its files to itself)."""
        if self._db.engine != SQLITE:
            return
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.path}{suffix}")
            if path.exists():
                os.chmod(path, 0o600)

    def get(self, secret_id: str) -> ApiKey | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE secret_id = ?", (secret_id,)).fetchone()
        return _row_to_key(row) if row else None

    def require(self, secret_id: str) -> ApiKey:
        key = self.get(secret_id)
        if key is None:
            raise ApiKeyError(f"no API key with SecretId {secret_id}; see `opengme apikey list`")
        return key

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at, secret_id").fetchall()
        return [_row_to_key(r) for r in rows]

    def set_enabled(self, secret_id: str, enabled: bool) -> ApiKey:
        self.require(secret_id)
        with self._lock:
            self._db.execute("UPDATE api_keys SET enabled = ? WHERE secret_id = ?", (int(enabled), secret_id))
        return self.require(secret_id)

    def delete(self, secret_id: str) -> None:
        self.require(secret_id)
        with self._lock:
            self._db.execute("DELETE FROM api_keys WHERE secret_id = ?", (secret_id,))


def _row_to_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(secret_id=row["secret_id"], secret_key=row["secret_key"], note=row["note"],
                  app_ids=tuple(json.loads(row["app_ids"])), enabled=bool(row["enabled"]),
                  created_at=row["created_at"])
