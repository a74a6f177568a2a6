"""The voice-message HTTP API (docs/protocol.md, "Voice messages"): paths, headers, the signed
download link, the error body and which GME code each refusal carries, per direction.

Pure functions and constants shared by the server (``opengme.server.ptt``) and the SDK's ``Ptt``.

- ``POST /v1/ptt/files`` uploads one Ogg/Opus file (the body), authorised by the uploader's
  room-less AuthBuffer in ``X-GME-AuthBuffer`` (base64 of its bytes, as in signalling) for the app
  and openid in ``X-GME-AppId``/``X-GME-OpenId``. The reply's ``file_id`` is the file's URL.
- ``GET <file_id>`` downloads it, authorised by the same three headers (any openid of the app) or by
  a link signature in the query (``openid``, ``expires``, ``sig``) so any HTTP client can fetch it.
- ``POST <file_id>/link`` (headers) returns a fresh signed link.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

from opengme.errors import ErrorCode
from opengme.protocol.signalling import encode_auth_buffer

FILES_PATH: Final = "/v1/ptt/files"
LINK_SUFFIX: Final = "/link"
HEADER_APP_ID: Final = "X-GME-AppId"
HEADER_OPEN_ID: Final = "X-GME-OpenId"
HEADER_AUTH_BUFFER: Final = "X-GME-AuthBuffer"
HEADER_SHA256: Final = "X-GME-Sha256"
HEADER_DURATION: Final = "X-GME-Duration-Ms"
CONTENT_TYPE: Final = "audio/ogg"
QUERY_OPEN_ID, QUERY_EXPIRES, QUERY_SIG = "openid", "expires", "sig"
_LINK_CONTEXT: Final = "opengme-ptt-link-v1"
_MAX_EXPIRY_DIGITS: Final = 12


@dataclass(frozen=True)
class Direction:
    """The GME codes one direction reports for the refusals they share."""

    unset: ErrorCode  # no AuthBuffer (nothing applied with apply_ptt_auth_buffer)
    signature: ErrorCode  # AuthBuffer refused: wrong key, expired, another openid or app
    storage: ErrorCode  # the server's storage failed (try again later)


UPLOAD: Final = Direction(ErrorCode.QAVPTTERROR_UPLOAD_APPINFO_UNSET, ErrorCode.QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL,
                          ErrorCode.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL)
DOWNLOAD: Final = Direction(ErrorCode.QAVPTTERROR_DOWNLOAD_APPINFO_UNSET,
                            ErrorCode.QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL,
                            ErrorCode.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL)
FILE_REFUSED: Final = ErrorCode.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR  # too big, too long, not Ogg/Opus
NOT_FOUND: Final = ErrorCode.QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR  # unknown, deleted, expired
LINK_REFUSED: Final = ErrorCode.QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL  # bad or expired link signature


def auth_headers(app_id: str, open_id: str, auth_buffer: bytes | str) -> dict[str, str]:
    """The three headers that authorise a request with a room-less AuthBuffer (v1 bytes or v2 token).
    The openid is percent-encoded UTF-8 (string openids need not be ASCII; numeric ones are unchanged)."""
    return {HEADER_APP_ID: app_id, HEADER_OPEN_ID: quote(open_id, safe=""),
            HEADER_AUTH_BUFFER: encode_auth_buffer(auth_buffer)}


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    """The JSON body of every refusal."""
    return {"code": int(code), "message": message}


def file_url(base_url: str, file_id: str) -> str:
    """The file id apps share: the file's URL on the server."""
    return f"{base_url.rstrip('/')}{FILES_PATH}/{file_id}"


def _link_mac(key: str, app_id: str, open_id: str, file_id: str, expires: int) -> str:
    text = "\n".join((_LINK_CONTEXT, app_id, open_id, file_id, str(expires)))
    return hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_link(url: str, key: str, app_id: str, open_id: str, file_id: str, expires: int) -> str:
    """``url`` with a signature letting anyone holding it download ``file_id`` until ``expires``
    (HMAC-SHA256 keyed by the app key over app, openid, file id and expiry)."""
    query = urlencode({QUERY_OPEN_ID: open_id, QUERY_EXPIRES: expires,
                       QUERY_SIG: _link_mac(key, app_id, open_id, file_id, expires)})
    return f"{url}?{query}"


def link_problem(query: dict[str, str], key: str, app_id: str, file_id: str, now: float) -> str | None:
    """Why a signed link does not open ``file_id`` of ``app_id`` now, or None when it does."""
    open_id, expires, sig = (query.get(k, "") for k in (QUERY_OPEN_ID, QUERY_EXPIRES, QUERY_SIG))
    if not open_id or not sig or not (expires.isascii() and expires.isdigit() and len(expires) <= _MAX_EXPIRY_DIGITS):
        return "the link needs openid, expires (unix seconds) and sig query parameters"
    if not hmac.compare_digest(sig, _link_mac(key, app_id, open_id, file_id, int(expires))):
        return "the link signature does not match this file (edited link, or the app key was rotated)"
    if now >= int(expires):
        return "the link expired; ask for a new one with the AuthBuffer (POST <file_id>/link)"
    return None
