"""Who may use the web console (``/console``): the operator token, sign-in sessions, CSRF and Origin
rules. Plain state and pure checks (no sockets); ``opengme.server.console`` wires them to HTTP.

- **Operator token.** One secret per data directory, shown once (by ``opengme serve`` on the first
  start and by ``opengme console-token``, which replaces it) and stored only as its SHA-256 in the
  ``console_tokens`` table of ``opengme.db``. 32 random bytes need no slow hash: nobody guesses them,
  and a stolen database gives the hash of a value that cannot be searched for.
- **Sessions.** Signing in with the token gives a random session id (cookie ``opengme_console``,
  HttpOnly, SameSite=Strict, Path=/console) and a CSRF token of its own. Sessions live in the
  server's memory for ``SESSION_SECONDS`` (a restart signs everyone out) and end on sign-out;
  replacing the operator token ends every session at the next request (the session remembers the
  token hash it was opened with).
- **CSRF.** Every change (POST) carries the session's CSRF token in ``X-CSRF-Token``; compared in
  constant time. SameSite=Strict already keeps other sites' requests cookie-less; the token covers
  browsers and proxies that do not honour it.
- **Origin.** Every POST and the live WebSocket must carry an ``Origin`` equal to the server's own
  (scheme://host the request came to, or the origin of the ``public_url`` setting); a missing or
  foreign one is refused before anything else.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from opengme.db import open_database

TOKEN_BYTES = 32
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 64
"""Sessions kept at once; signing in beyond it forgets the oldest (an operator console has few users)."""
COOKIE = "opengme_console"
CSRF_HEADER = "X-CSRF-Token"
def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class OperatorTokens:
    """The ``console_tokens`` table: the hash of the one operator token."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self._lock = threading.Lock()
        self._db = open_database(Path(data_dir), database_url)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def current(self) -> str | None:
        """The stored token hash, or None before any token was issued."""
        with self._lock:
            row = self._db.execute("SELECT token_hash FROM console_tokens ORDER BY created_at DESC LIMIT 1").fetchone()
        return None if row is None else str(row["token_hash"])

    def issue(self, now: float) -> str:
        """A new token replacing the old one (whose sessions then end); returned once, stored hashed."""
        token = self._store(now, replace=True)
        assert token is not None
        return token

    def _store(self, now: float, *, replace: bool) -> str | None:
        """A new token, in one transaction under the write lock: nodes starting together on a shared
        database issue one first token between them (the others get None), never one each."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock, self._db.transaction() as db:
            if replace:
                db.execute("DELETE FROM console_tokens")
            elif db.execute("SELECT 1 FROM console_tokens LIMIT 1").fetchone() is not None:
                return None
            db.execute("INSERT INTO console_tokens VALUES (?, ?)", (token_hash(token), now))
        return token

    def issue_if_none(self, now: float) -> str | None:
        """A first token when there is none yet (``opengme serve``'s first start), else None."""
        return self._store(now, replace=False)

    def matches(self, token: str) -> str | None:
        """The hash when ``token`` is the operator token (constant-time compare), else None."""
        stored = self.current()
        if stored is None:
            return None
        offered = token_hash(token)
        return stored if hmac.compare_digest(offered, stored) else None


@dataclass
class Session:
    session_id: str
    csrf: str
    token_hash: str
    expires: float


class Sessions:
    """Signed-in operators, by session id (pure: the time is passed in)."""

    def __init__(self, lifetime: float = SESSION_SECONDS, capacity: int = MAX_SESSIONS) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, token_hash: str, now: float) -> Session:
        self._expire(now)
        while len(self._sessions) >= self.capacity:
            del self._sessions[next(iter(self._sessions))]  # the oldest (dicts keep insertion order)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), token_hash, now + self.lifetime)
        self._sessions[session.session_id] = session
        return session

    def find(self, session_id: str | None, current_hash: str | None, now: float) -> Session | None:
        """The live session of this cookie value, opened with the token that is still current."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= now or session.token_hash != current_hash:
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for sid in [s for s, session in self._sessions.items() if session.expires <= now]:
            del self._sessions[sid]


def csrf_ok(session: Session, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode("utf-8", "surrogatepass"),
                                                       session.csrf.encode())


def same_origin(origin: str | None, scheme: str, host: str, public_url: str = "") -> bool:
    """Whether a request's ``Origin`` header names this server: as the request reached it, or as the
    ``public_url`` setting names it (behind a TLS-terminating proxy the two differ in scheme)."""
    if origin is None:
        return False
    origin = origin.lower()
    if origin == f"{scheme}://{host}".lower():
        return True
    parts = urlsplit(public_url)
    return bool(parts.scheme and parts.netloc) and origin == f"{parts.scheme}://{parts.netloc}".lower()
