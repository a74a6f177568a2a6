"""Resume tokens (docs/protocol.md "Reconnect"): stateless, so they survive a server restart.

A token is ``EXPIRY.HEXMAC``: HMAC-SHA256 keyed by the app's permission key over (app, openid, room,
expiry). Rotating the key voids every outstanding token. Whether the server removed the member after
the token was issued is the signalling core's business (it keeps the eviction records).
"""
from __future__ import annotations

import hashlib
import hmac

MAX_EXPIRY_DIGITS = 12


def _resume_mac(key: str, app_id: str, open_id: str, room_id: str, expires: int) -> str:
    text = "\n".join(("opengme-resume-v1", app_id, open_id, room_id, str(expires)))
    return hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest()


def make_resume_token(key: str, app_id: str, open_id: str, room_id: str, expires: int) -> str:
    """``EXPIRY.HEXMAC``: HMAC-SHA256 keyed by the app's permission key over (app, openid, room, expiry)."""
    return f"{expires}.{_resume_mac(key, app_id, open_id, room_id, expires)}"


def resume_token_expiry(token: str) -> int | None:
    """The expiry a token claims (unix seconds), or None when it is malformed; says nothing of its MAC."""
    expiry, _, mac = token.partition(".")
    if not (token.isascii() and expiry.isdigit() and len(expiry) <= MAX_EXPIRY_DIGITS) or not mac:
        return None  # (a non-ASCII MAC would make hmac.compare_digest raise)
    return int(expiry)


def resume_token_problem(token: str, key: str, app_id: str, open_id: str, room_id: str, now: float) -> str | None:
    """Why ``token`` does not let this openid back into this room, or None when it does."""
    expiry = resume_token_expiry(token)
    if expiry is None:
        return "resume token is malformed"
    if not hmac.compare_digest(token.partition(".")[2], _resume_mac(key, app_id, open_id, room_id, expiry)):
        return "resume token does not match this app, openid and room (or the key was rotated)"
    if now >= expiry:
        return "resume token expired: the reconnect window is over, enter with a new AuthBuffer"
    return None
