"""GME's identifier rules (AppID, permission key, openid, room id), in one leaf module.

Every layer checks ids: the SDK before a call is queued, the AuthBuffer code when it signs, the
protocol when a message arrives, the app registry when an app is created. They all import this
module, which imports nothing of OpenGME's, so none of them needs another's machinery for it.

``*_problem`` functions return the reason a value is refused (a sentence that says what to fix), or
None when it is fine; ``validate_app_id`` and ``validate_key`` raise ``IdError`` and return the
canonical form.
"""
from __future__ import annotations

from typing import Any, Final

MAX_ID_CHARS: Final = 127
"""GME's longest room id and (string) openid."""
KEY_LENGTH: Final = 16
"""A GME permission key: 16 printable ASCII characters, used directly as the TEA key."""
MAX_APP_ID: Final = 0xFFFFFFFF
"""The v1 AuthBuffer carries the AppID as a u32."""
MIN_NUMERIC_OPEN_ID: Final = 10000
MAX_NUMERIC_OPEN_ID: Final = 2**64 - 1


class IdError(ValueError):
    """An identifier that breaks GME's rules; the message says what to fix."""


def printable_problem(value: Any, what: str, max_chars: int, min_chars: int = 1) -> str | None:
    """Why ``value`` is not a string of ``min_chars``–``max_chars`` printable characters, or None."""
    if not isinstance(value, str):
        return f"{what} must be a string"
    if not min_chars <= len(value) <= max_chars:
        return f"{what} must be {min_chars}-{max_chars} characters, got {len(value)}"
    if not value.isprintable():
        return f"{what} must contain printable characters only"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} must be valid Unicode text (no lone surrogates)"
    return None


def room_id_problem(room_id: Any) -> str | None:
    """GME room ids: strings of 1-127 printable characters (the charset is otherwise free)."""
    return printable_problem(room_id, "room_id", MAX_ID_CHARS)


def open_id_problem(open_id: Any, allow_string: bool) -> str | None:
    """GME's openid rule: a canonical integer string > 10000 that fits a u64, or with the app's
    string-openid switch on, any 1-127 printable characters."""
    if allow_string:
        return printable_problem(open_id, "openid", MAX_ID_CHARS)
    if not isinstance(open_id, str) or not open_id.isascii() or not open_id.isdigit():
        return (f"openid must be an integer string greater than {MIN_NUMERIC_OPEN_ID} "
                f"(string openids are off for this app), got {open_id!r}")
    if len(open_id) > 20:
        return f"openid must fit 64 bits, got {len(open_id)} digits"
    if open_id != str(int(open_id)):
        return f"openid {open_id!r} has leading zeros; send it as {str(int(open_id))!r}"
    if not MIN_NUMERIC_OPEN_ID < int(open_id) <= MAX_NUMERIC_OPEN_ID:
        return (f"openid must be greater than {MIN_NUMERIC_OPEN_ID} and fit 64 bits, got {open_id} "
                "(add 10000 to low account numbers)")
    return None


def validate_app_id(app_id: Any) -> str:
    """AppIDs are numeric strings that fit a u32, as GME's AuthBuffer requires; the canonical form."""
    if not isinstance(app_id, str) or not app_id.isascii() or not app_id.isdigit() or len(app_id) > 32:
        raise IdError(f"AppID must be a numeric string such as 1400123456, got {app_id!r}")
    if int(app_id) == 0 or int(app_id) > MAX_APP_ID:
        raise IdError(f"AppID must be between 1 and {MAX_APP_ID}, got {app_id}")
    return str(int(app_id))


def validate_key(key: Any) -> str:
    """Permission keys are 16 printable ASCII characters, used directly as the TEA key."""
    if not isinstance(key, str) or len(key) != KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise IdError(f"a permission key must be {KEY_LENGTH} printable ASCII characters")
    return key
