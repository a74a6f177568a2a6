"""Signing of admin API requests (docs/protocol.md, "Admin HTTP API"), shared by server and CLI.

A request carries ``X-OpenGME-AppId``, ``X-OpenGME-Timestamp`` (unix seconds, an integer),
``X-OpenGME-Nonce`` (16-64 characters of ``A-Z a-z 0-9 . _ ~ -``) and ``X-OpenGME-Signature``:
hex HMAC-SHA256 keyed by the app's permission key over
``METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nhex(SHA256(body))``, where PATH is the request target exactly as
sent: the percent-encoded path plus ``?query`` when there is one (so query parameters are signed too).

Public API: ``sign``, ``signed_headers`` (client side), ``verify_request`` and ``NonceCache``
(server side, pure: the time is passed in), ``AdminAuthError``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping

HEADER_APP_ID = "X-OpenGME-AppId"
HEADER_TIMESTAMP = "X-OpenGME-Timestamp"
HEADER_NONCE = "X-OpenGME-Nonce"
HEADER_SIGNATURE = "X-OpenGME-Signature"
_NONCE = re.compile(r"[A-Za-z0-9._~-]{16,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class AdminAuthError(Exception):
    """A request that is not authentic or not fresh (HTTP 401, code 7006); the message says why."""


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join((method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()))


def sign(key: str, method: str, path: str, timestamp: str, nonce: str, body: bytes = b"") -> str:
    """Hex HMAC-SHA256 of the request, keyed by the app's permission key."""
    text = string_to_sign(method, path, timestamp, nonce, body)
    return hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(
    app_id: str, key: str, method: str, path: str, body: bytes = b"", *, now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers that authenticate one request (a fresh random nonce unless given)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce if nonce is not None else secrets.token_hex(16)
    return {
        HEADER_APP_ID: app_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(key, method, path, timestamp, nonce, body),
    }


class NonceCache:
    """Nonces seen per app, each kept while its request's timestamp could still be accepted."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._purge_at = 1024  # purge expired entries when the cache doubles: amortised O(1)

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, app_id: str, nonce: str, keep_until: float, now: float) -> bool:
        """Record a nonce; False when it was already seen (a replay)."""
        if len(self._seen) >= self._purge_at:
            self._seen = {k: v for k, v in self._seen.items() if v >= now}
            self._purge_at = max(1024, 2 * len(self._seen))
        previous = self._seen.get((app_id, nonce))
        if previous is not None and previous >= now:
            return False
        self._seen[(app_id, nonce)] = keep_until
        return True


def verify_request(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    key_of: Callable[[str], str | None],
    nonces: NonceCache,
    now: float,
    max_skew: float,
) -> str:
    """The authenticated AppID of a request, or AdminAuthError. The nonce is recorded only once the
    signature is good, so unsigned traffic cannot fill the cache or burn a client's nonces."""
    values = {name: headers.get(name) for name in (HEADER_APP_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AdminAuthError(f"missing header(s) {', '.join(missing)}")
    app_id, timestamp, nonce, signature = (str(values[n]) for n in values)
    key = key_of(app_id)
    if key is None:
        raise AdminAuthError(f"unknown AppID {app_id}")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise AdminAuthError(f"{HEADER_TIMESTAMP} must be unix seconds (at most 12 digits)")
    if abs(now - int(timestamp)) > max_skew:
        raise AdminAuthError(
            f"{HEADER_TIMESTAMP} {timestamp} is more than {max_skew:g} s from the server's clock ({int(now)})"
        )
    if not _NONCE.fullmatch(nonce):
        raise AdminAuthError(f"{HEADER_NONCE} must be 16-64 characters of A-Z a-z 0-9 . _ ~ -")
    expected = sign(key, method, path, timestamp, nonce, body)
    if not _SIGNATURE.fullmatch(signature) or not hmac.compare_digest(signature, expected):
        raise AdminAuthError("bad signature: sign METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nhex(SHA256(body)) with the app's key")
    if not nonces.add(app_id, nonce, int(timestamp) + max_skew, now):
        raise AdminAuthError(f"{HEADER_NONCE} was already used (replayed request)")
    return app_id
