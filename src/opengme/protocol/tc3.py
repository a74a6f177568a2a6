"""Tencent Cloud API 3.0 request signing (TC3-HMAC-SHA256), as GME's server API and every Tencent Cloud
SDK use it: pure functions, the time passed in, shared by the server's ``POST /`` endpoint and tests.

A request carries ``Authorization: TC3-HMAC-SHA256 Credential=SecretId/DATE/gme/tc3_request,
SignedHeaders=content-type;host, Signature=HEX`` and ``X-TC-Timestamp``. The signature is
HMAC-SHA256 over ``TC3-HMAC-SHA256\\nTIMESTAMP\\nDATE/gme/tc3_request\\nhex(SHA256(canonical request))``
with a key derived from ``"TC3" + SecretKey`` through DATE, the service and ``tc3_request``. The
canonical request is ``METHOD\\nPATH\\nQUERY\\nheaders\\nsigned header names\\nhex(SHA256(body))``.

Public API: ``sign``, ``authorization`` (client side), ``parse_authorization``, ``check_credentials``
and ``check_signature`` (server side), ``Tc3Error`` with Tencent Cloud's common error codes.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "gme"
MAX_SKEW = 300.0
"""Seconds a timestamp may differ from the server's clock, as Tencent Cloud allows (five minutes)."""
REQUIRED_SIGNED_HEADERS = ("content-type", "host")

_CREDENTIAL = re.compile(r"(?P<id>[A-Za-z0-9]{1,128})/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z0-9]{1,32})/tc3_request")
_SIGNED_HEADERS = re.compile(r"[a-z0-9-]{1,64}(;[a-z0-9-]{1,64}){0,19}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Tc3Error(Exception):
    """A refused request: Tencent Cloud's common error ``code`` and a message that says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Authorization:
    """The parts of an ``Authorization`` header."""

    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str) -> Authorization:
    """The header's parts, or ``AuthFailure.InvalidAuthorization`` naming what is malformed."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Tc3Error("AuthFailure.InvalidAuthorization", f"Authorization must start with {ALGORITHM}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name] = value.strip()
    credential = _CREDENTIAL.fullmatch(parts.get("Credential", ""))
    if credential is None:
        raise Tc3Error("AuthFailure.InvalidAuthorization", "Credential must be SecretId/YYYY-MM-DD/gme/tc3_request")
    signed = parts.get("SignedHeaders", "")
    if not _SIGNED_HEADERS.fullmatch(signed):
        raise Tc3Error("AuthFailure.InvalidAuthorization",
                       "SignedHeaders must be lower-case header names joined by ';' (e.g. content-type;host)")
    names = tuple(signed.split(";"))
    missing = [h for h in REQUIRED_SIGNED_HEADERS if h not in names]
    if missing:
        raise Tc3Error("AuthFailure.InvalidAuthorization", f"SignedHeaders must include {', '.join(missing)}")
    signature = parts.get("Signature", "")
    if not _SIGNATURE.fullmatch(signature):
        raise Tc3Error("AuthFailure.InvalidAuthorization", "Signature must be 64 lower-case hex digits")
    return Authorization(credential["id"], credential["date"], credential["service"], names, signature)


def utc_date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str],
                      signed_headers: tuple[str, ...], body: bytes) -> str:
    """The text whose hash is signed; header values are trimmed and lower-cased, as the spec says."""
    lines = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers)
    return "\n".join((method.upper(), path, query, lines, ";".join(signed_headers), hashlib.sha256(body).hexdigest()))


def sign(secret_key: str, timestamp: int, service: str, canonical: str) -> str:
    """Hex TC3-HMAC-SHA256 signature of a canonical request."""
    date = utc_date(timestamp)
    scope = f"{date}/{service}/tc3_request"
    text = "\n".join((ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()))
    key = hmac.new(f"TC3{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    key = hmac.new(key, service.encode(), hashlib.sha256).digest()
    key = hmac.new(key, b"tc3_request", hashlib.sha256).digest()
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, timestamp: int, host: str, body: bytes,
                  content_type: str = "application/json") -> str:
    """The ``Authorization`` header of a ``POST /`` request, as the SDKs write it (for tests and tools)."""
    headers = {"content-type": content_type, "host": host}
    canonical = canonical_request("POST", "/", "", headers, REQUIRED_SIGNED_HEADERS, body)
    signature = sign(secret_key, timestamp, SERVICE, canonical)
    return (f"{ALGORITHM} Credential={secret_id}/{utc_date(timestamp)}/{SERVICE}/tc3_request, "
            f"SignedHeaders={';'.join(REQUIRED_SIGNED_HEADERS)}, Signature={signature}")


def check_credentials(auth: Authorization, timestamp_header: str, secret_key: str | None, now: float,
                      max_skew: float = MAX_SKEW) -> int:
    """The request's timestamp, once the SecretId is known (``secret_key`` not None), the timestamp
    within the window and the credential scope right; else :class:`Tc3Error`. Needs no body."""
    if secret_key is None:
        raise Tc3Error("AuthFailure.SecretIdNotFound",
                       f"SecretId {auth.secret_id} is unknown or disabled; see `opengme apikey list`")
    if not _TIMESTAMP.fullmatch(timestamp_header):
        raise Tc3Error("MissingParameter" if not timestamp_header else "InvalidParameter",
                       "X-TC-Timestamp must be unix seconds")
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > max_skew:
        raise Tc3Error("AuthFailure.SignatureExpire",
                       f"X-TC-Timestamp {timestamp} is more than {max_skew:g} s from the server's clock ({int(now)})")
    if auth.service != SERVICE or auth.date != utc_date(timestamp):
        raise Tc3Error("AuthFailure.SignatureFailure",
                       f"the credential scope must be {utc_date(timestamp)}/{SERVICE}/tc3_request")
    return timestamp


def check_signature(auth: Authorization, timestamp: int, secret_key: str, method: str, path: str, query: str,
                    headers: Mapping[str, str], body: bytes) -> None:
    """:class:`Tc3Error` unless the signature matches (compared in constant time); ``headers`` maps
    lower-case names to values."""
    expected = sign(secret_key, timestamp, auth.service,
                    canonical_request(method, path, query, headers, auth.signed_headers, body))
    if not hmac.compare_digest(expected, auth.signature):
        raise Tc3Error("AuthFailure.SignatureFailure",
                       "the signature does not match: check the SecretKey and that the body is sent as signed")
