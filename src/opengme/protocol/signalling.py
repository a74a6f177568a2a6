"""The signalling protocol of docs/protocol.md, sans I/O: message validation, builders, encoding.

Both the server and the SDK import this module, so a message is described once. Public API:

- ``PROTOCOL_VERSION`` (1), ``SIGNAL_PATH`` (``/v1/signal``), ``DEFAULT_MAX_MESSAGE_BYTES``.
- ``ProtocolError(code, message, id=None, close_code=None)``: a refused message. ``code`` is the
  ErrorCode to reply with, ``id`` the request id when it could be read, ``close_code`` the WebSocket
  close code when the connection must end (1009 oversized frame, 1000 after a protocol mismatch 7015).
- ``parse_client(text, max_bytes) -> dict``: a validated client request (server side).
- ``parse_server(text) -> dict``: a validated reply or push (SDK side). Both are strict: unknown
  types and unknown or missing fields raise ProtocolError.
- ``encode(message) -> str``: compact JSON text of one frame.
- ``encode_auth_buffer(buffer) -> str`` / ``decode_auth_buffer(text) -> bytes``: the base64 form
  carried in ``enter``/``switch`` (a v2 token given as ``str`` is sent as its UTF-8 bytes).
- Builders, one per message type, returning the dict to ``encode``. Requests: ``hello``, ``enter``,
  ``exit_``, ``switch``, ``change_room_type``, ``ping``, ``invite``, ``invite_reply``. Replies:
  ``hello_ok``, ``error``, ``entered``, ``exited``, ``switched``, ``room_type_changed``, ``pong``,
  ``invite_sent``, ``invite_reply_ok``. Pushes: ``members_push``, ``room_type_push``, ``disconnect``,
  ``mute``, ``invitation``, ``invitation_result``, ``quality``. Member lists are given as (tinyid,
  open_id) pairs; ``entered``/``switched`` take the ``media`` section built by ``media_section``.
- ``media_key(section) -> bytes``: the 32-byte session key of a validated ``media`` section.
- ``REQUEST_TYPES`` / ``REPLY_TYPES`` / ``PUSH_TYPES``: the type names.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.ids import MAX_ID_CHARS, printable_problem, room_id_problem

PROTOCOL_VERSION = 1
SIGNAL_PATH = "/v1/signal"
DEFAULT_MAX_MESSAGE_BYTES = 65536
MAX_REQUEST_ID = 2**31 - 1
MAX_TOKEN_CHARS = 512
MAX_TEXT_CHARS = 1024
CLOSE_TOO_BIG = 1009  # WebSocket "message too big"
CLOSE_NORMAL = 1000
MEMBER_EVENTS = ("enter", "exit")
MEDIA_KEY_BYTES = 32  # opengme.protocol.media.KEY_SIZE (AES-256)
ABILITIES = ("audio",)

Json = dict[str, Any]
Check = Callable[[Any], str | None]  # returns the reason a value is refused, or None


class ProtocolError(Exception):
    """A message that must be answered with an ``error`` (and maybe a close) instead of being handled."""

    def __init__(
        self, code: ErrorCode, message: str, id: int | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(code, message)
        self.code = ErrorCode(code)
        self.message = message
        self.id = id
        self.close_code = close_code

    def __str__(self) -> str:
        return f"{self.code.name} ({int(self.code)}): {self.message}"


# --- field checks -------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _request_id(value: Any) -> str | None:
    if not _is_int(value) or not 1 <= value <= MAX_REQUEST_ID:
        return f"id must be an integer 1-{MAX_REQUEST_ID}"
    return None


def _room_type(value: Any) -> str | None:
    if not _is_int(value) or value not in {int(t) for t in RoomType}:
        return f"room_type must be one of {[int(t) for t in RoomType]} ({', '.join(t.name for t in RoomType)})"
    return None


def _auth_buffer(value: Any) -> str | None:
    if not isinstance(value, str):
        return "auth_buffer must be a base64 string"
    try:
        decode_auth_buffer(value)
    except ValueError as exc:
        return str(exc)
    return None


def _number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return None if ok else "must be a finite number"


def _text(what: str, max_chars: int = MAX_TEXT_CHARS, min_chars: int = 0) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
            return f"{what} must be a string of {min_chars}-{max_chars} characters"
        return None

    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _int(value: Any) -> str | None:
    return None if _is_int(value) else "must be an integer"


def _error_code(value: Any) -> str | None:
    if not _is_int(value) or value not in ErrorCode._value2member_map_:
        return "must be a known error code"
    return None


def _tinyid(value: Any) -> str | None:
    return None if _is_int(value) and value > 0 else "tinyid must be a positive integer"


def _abilities(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        return "abilities must be a list of strings"
    return None


def _member_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return "members must be a list"
    for item in value:
        if not isinstance(item, dict) or set(item) != {"tinyid", "open_id"}:
            return "each member must be {tinyid, open_id}"
        reason = _tinyid(item["tinyid"]) or printable_problem(item["open_id"], "open_id", MAX_ID_CHARS)
        if reason:
            return reason
    return None


def _count(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "must be a non-negative integer"


def _fraction(value: Any) -> str | None:
    return _number(value) or (None if 0 <= value <= 1 else "must be between 0 and 1")


def _media_section(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"udp_port", "key"}:
        return "media must be {udp_port, key}"
    port = value["udp_port"]
    if not _is_int(port) or not 1 <= port <= 65535:
        return "media udp_port must be an integer 1-65535"
    try:
        media_key(value)
    except ValueError as exc:
        return str(exc)
    return None


def _member_event(value: Any) -> str | None:
    return None if value in MEMBER_EVENTS else f"event must be one of {list(MEMBER_EVENTS)}"


def _optional_request_id(value: Any) -> str | None:
    return None if value is None else _request_id(value)


def _open_id(value: Any) -> str | None:
    return printable_problem(value, "open_id", MAX_ID_CHARS)


# --- schemas ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True


_ID = Field(_request_id)
_INVITE_ID = Field(_text("invite_id", 64, 1))
_ROOM_FIELDS = {
    "id": _ID,
    "room_id": Field(room_id_problem),
    "room_type": Field(_room_type),
    "tinyid": Field(_tinyid),
    "members": Field(_member_list),
    "resume_token": Field(_text("resume_token", MAX_TOKEN_CHARS, 1)),
    "muted": Field(_bool),
    "media": Field(_media_section, required=False),  # absent from a server without a media relay
}

CLIENT_SCHEMAS: dict[str, dict[str, Field]] = {
    "hello": {
        "id": _ID,
        "protocol": Field(_int),
        "sdk_version": Field(_text("sdk_version", 64)),
        "app_id": Field(_text("app_id", 32, 1)),
        "open_id": Field(_open_id),
        "abilities": Field(_abilities),
    },
    "enter": {
        "id": _ID,
        "room_id": Field(room_id_problem),
        "room_type": Field(_room_type),
        "auth_buffer": Field(_auth_buffer),
        "resume_token": Field(_text("resume_token", MAX_TOKEN_CHARS, 1), required=False),
    },
    "exit": {"id": _ID},
    "switch": {"id": _ID, "room_id": Field(room_id_problem), "auth_buffer": Field(_auth_buffer)},
    "change_room_type": {"id": _ID, "room_type": Field(_room_type)},
    "ping": {"id": _ID, "t": Field(_number)},
    "invite": {"id": _ID, "open_id": Field(_open_id)},
    "invite_reply": {"id": _ID, "invite_id": _INVITE_ID, "accept": Field(_bool)},
}

SERVER_SCHEMAS: dict[str, dict[str, Field]] = {
    "hello_ok": {
        "id": _ID,
        "protocol": Field(_int),
        "server_version": Field(_text("server_version", 64)),
        "heartbeat_interval": Field(_number),
        "member_timeout": Field(_number),
    },
    "error": {"id": Field(_optional_request_id), "code": Field(_error_code), "message": Field(_text("message"))},
    "entered": _ROOM_FIELDS,
    "switched": _ROOM_FIELDS,
    "exited": {"id": _ID},
    "room_type_changed": {"id": _ID, "room_type": Field(_room_type)},
    "pong": {"id": _ID, "t": Field(_number)},
    "invite_sent": {"id": _ID, "invite_id": _INVITE_ID},
    "invite_reply_ok": {"id": _ID, "invite_id": _INVITE_ID, "room_id": Field(room_id_problem, required=False)},
    # pushes
    "members": {"event": Field(_member_event), "members": Field(_member_list)},
    "room_type": {"room_type": Field(_room_type), "by": Field(_open_id)},
    "disconnect": {"code": Field(_error_code), "reason": Field(_text("reason"))},
    "mute": {"muted": Field(_bool), "reason": Field(_text("reason"))},
    "invitation": {"invite_id": _INVITE_ID, "from_open_id": Field(_open_id), "room_id": Field(room_id_problem)},
    "invitation_result": {"invite_id": _INVITE_ID, "open_id": Field(_open_id), "accepted": Field(_bool)},
    "quality": {"uplink_loss": Field(_fraction), "received": Field(_count), "expected": Field(_count)},
}

REQUEST_TYPES = frozenset(CLIENT_SCHEMAS)
PUSH_TYPES = frozenset({"members", "room_type", "disconnect", "mute", "invitation", "invitation_result", "quality"})
REPLY_TYPES = frozenset(SERVER_SCHEMAS) - PUSH_TYPES


# --- parsing ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load(text: str | bytes, max_bytes: int | None) -> Json:
    size = len(text.encode("utf-8")) if isinstance(text, str) else len(text)
    if max_bytes is not None and size > max_bytes:
        raise ProtocolError(
            ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
            f"message of {size} bytes exceeds the limit of {max_bytes} bytes",
            close_code=CLOSE_TOO_BIG,
        )
    try:
        message = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"not valid JSON: {exc}") from None
    except RecursionError:  # a few KB of "[[[[" is enough to exhaust the parser's stack
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "a message must be a JSON object")
    return message


def _validate(message: Json, schema: Mapping[str, Field], id: int | None) -> Json:
    kind = message["type"]
    unknown = sorted(set(message) - set(schema) - {"type"})
    if unknown:
        raise ProtocolError(
            ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{kind}: unknown field(s) {', '.join(unknown)}", id
        )
    for name, spec in schema.items():
        if name not in message:
            if spec.required:
                raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{kind}: missing field {name}", id)
            continue
        reason = spec.check(message[name])
        if reason:
            text = reason if reason.startswith(name) else f"{name} {reason}"
            raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{kind}: {text}", id)
    return message


def _type_of(message: Json, known: Mapping[str, object], id: int | None) -> str:
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "a message needs a string 'type'", id)
    if kind not in known:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, f"unknown message type {kind!r}", id)
    return kind


def parse_client(text: str | bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Json:
    """A validated client request, or ProtocolError with the code and id to answer with.

    ``hello`` is checked for the protocol version before its other fields, so that a client of
    another version gets 7015 rather than a complaint about fields it does not know.
    """
    message = _load(text, max_bytes)
    raw_id = message.get("id")
    id = raw_id if _request_id(raw_id) is None else None
    kind = _type_of(message, CLIENT_SCHEMAS, id)
    if id is None:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{kind}: {_request_id(raw_id)}")
    if kind == "hello":
        protocol = message.get("protocol")
        if _is_int(protocol) and protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE,
                f"the client speaks protocol {protocol}, this server speaks protocol {PROTOCOL_VERSION}: "
                "update the SDK or the server so that they match",
                id,
                close_code=CLOSE_NORMAL,
            )
    _validate(message, CLIENT_SCHEMAS[kind], id)
    if kind == "hello":
        refused = [a for a in message["abilities"] if a not in ABILITIES]
        if refused:
            raise ProtocolError(
                ErrorCode.AV_ERR_SERVER_INVALID_ABILITY,
                f"ability {refused[0]!r} is not available: OpenGME grants {list(ABILITIES)} only",
                id,
            )
    return message


def parse_server(text: str | bytes) -> Json:
    """A validated server reply or push; ProtocolError when the server sent something malformed."""
    message = _load(text, None)
    raw_id = message.get("id")
    kind = _type_of(message, SERVER_SCHEMAS, raw_id if _request_id(raw_id) is None else None)
    return _validate(message, SERVER_SCHEMAS[kind], raw_id if _is_int(raw_id) else None)


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON text of one frame."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_auth_buffer(buffer: bytes | str) -> str:
    """Base64 of the AuthBuffer's bytes (a v2 token given as text is sent as its UTF-8 bytes)."""
    raw = buffer.encode("utf-8") if isinstance(buffer, str) else bytes(buffer)
    return base64.b64encode(raw).decode("ascii")


def decode_auth_buffer(text: str) -> bytes:
    """The AuthBuffer bytes of an ``auth_buffer`` field; ValueError when it is not standard base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("auth_buffer must be standard base64 of the AuthBuffer bytes") from None


def media_key(section: Mapping[str, Any]) -> bytes:
    """The session key of an ``entered``/``switched`` ``media`` section; ValueError when it is not
    standard base64 of 32 bytes."""
    try:
        key = base64.b64decode(str(section["key"]).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("media key must be standard base64") from None
    if len(key) != MEDIA_KEY_BYTES:
        raise ValueError(f"media key must be {MEDIA_KEY_BYTES} bytes, got {len(key)}")
    return key


# --- builders -----------------------------------------------------------------------------------

MemberPairs = Iterable[tuple[int, str]]


def _members(pairs: MemberPairs) -> list[Json]:
    return [{"tinyid": tinyid, "open_id": open_id} for tinyid, open_id in pairs]


# requests (SDK)


def hello(id: int, app_id: str, open_id: str, sdk_version: str, abilities: Iterable[str] = ABILITIES) -> Json:
    return {
        "type": "hello",
        "id": id,
        "protocol": PROTOCOL_VERSION,
        "sdk_version": sdk_version,
        "app_id": app_id,
        "open_id": open_id,
        "abilities": list(abilities),
    }


def enter(id: int, room_id: str, room_type: int, auth_buffer: bytes | str, resume_token: str | None = None) -> Json:
    """``auth_buffer`` is the raw buffer (bytes, or a v2 token as str); b"" when resuming."""
    message: Json = {
        "type": "enter",
        "id": id,
        "room_id": room_id,
        "room_type": int(room_type),
        "auth_buffer": encode_auth_buffer(auth_buffer),
    }
    if resume_token is not None:
        message["resume_token"] = resume_token
    return message


def exit_(id: int) -> Json:
    return {"type": "exit", "id": id}


def switch(id: int, room_id: str, auth_buffer: bytes | str) -> Json:
    return {"type": "switch", "id": id, "room_id": room_id, "auth_buffer": encode_auth_buffer(auth_buffer)}


def change_room_type(id: int, room_type: int) -> Json:
    return {"type": "change_room_type", "id": id, "room_type": int(room_type)}


def ping(id: int, t: float) -> Json:
    return {"type": "ping", "id": id, "t": t}


def invite(id: int, open_id: str) -> Json:
    return {"type": "invite", "id": id, "open_id": open_id}


def invite_reply(id: int, invite_id: str, accept: bool) -> Json:
    return {"type": "invite_reply", "id": id, "invite_id": invite_id, "accept": accept}


# replies (server)


def hello_ok(id: int, server_version: str, heartbeat_interval: float, member_timeout: float) -> Json:
    return {
        "type": "hello_ok",
        "id": id,
        "protocol": PROTOCOL_VERSION,
        "server_version": server_version,
        "heartbeat_interval": heartbeat_interval,
        "member_timeout": member_timeout,
    }


def _clip(text: str) -> str:
    """Keep free text within what ``parse_server`` accepts (a reason may quote client input)."""
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def error(id: int | None, code: ErrorCode, message: str) -> Json:
    return {"type": "error", "id": id, "code": int(code), "message": _clip(message)}


def media_section(udp_port: int, key: bytes) -> Json:
    """The ``media`` field of ``entered``/``switched``: where to send UDP and the member's session key."""
    return {"udp_port": udp_port, "key": base64.b64encode(key).decode("ascii")}


def _room_reply(
    kind: str, id: int, room_id: str, room_type: int, tinyid: int, members: MemberPairs, resume_token: str, muted: bool,
    media: Json | None,
) -> Json:
    message: Json = {
        "type": kind,
        "id": id,
        "room_id": room_id,
        "room_type": int(room_type),
        "tinyid": tinyid,
        "members": _members(members),
        "resume_token": resume_token,
        "muted": muted,
    }
    if media is not None:
        message["media"] = media
    return message


def entered(
    id: int, room_id: str, room_type: int, tinyid: int, members: MemberPairs, resume_token: str, muted: bool,
    media: Json | None = None,
) -> Json:
    """``members``: the others in the room, not the joiner; ``room_type``: the room's."""
    return _room_reply("entered", id, room_id, room_type, tinyid, members, resume_token, muted, media)


def switched(
    id: int, room_id: str, room_type: int, tinyid: int, members: MemberPairs, resume_token: str, muted: bool,
    media: Json | None = None,
) -> Json:
    return _room_reply("switched", id, room_id, room_type, tinyid, members, resume_token, muted, media)


def exited(id: int) -> Json:
    return {"type": "exited", "id": id}


def room_type_changed(id: int, room_type: int) -> Json:
    return {"type": "room_type_changed", "id": id, "room_type": int(room_type)}


def pong(id: int, t: float) -> Json:
    return {"type": "pong", "id": id, "t": t}


def invite_sent(id: int, invite_id: str) -> Json:
    return {"type": "invite_sent", "id": id, "invite_id": invite_id}


def invite_reply_ok(id: int, invite_id: str, room_id: str | None = None) -> Json:
    """``room_id`` is the inviter's room, given on acceptance only."""
    message: Json = {"type": "invite_reply_ok", "id": id, "invite_id": invite_id}
    if room_id is not None:
        message["room_id"] = room_id
    return message


# pushes (server)


def members_push(event: str, members: MemberPairs) -> Json:
    """``event``: "enter" or "exit"."""
    if event not in MEMBER_EVENTS:
        raise ValueError(f"event must be one of {MEMBER_EVENTS}")
    return {"type": "members", "event": event, "members": _members(members)}


def room_type_push(room_type: int, by: str) -> Json:
    return {"type": "room_type", "room_type": int(room_type), "by": by}


def disconnect(code: ErrorCode, reason: str) -> Json:
    return {"type": "disconnect", "code": int(code), "reason": _clip(reason)}


def mute(muted: bool, reason: str) -> Json:
    return {"type": "mute", "muted": muted, "reason": _clip(reason)}


def invitation(invite_id: str, from_open_id: str, room_id: str) -> Json:
    return {"type": "invitation", "invite_id": invite_id, "from_open_id": from_open_id, "room_id": room_id}


def invitation_result(invite_id: str, open_id: str, accepted: bool) -> Json:
    return {"type": "invitation_result", "invite_id": invite_id, "open_id": open_id, "accepted": accepted}


def quality(uplink_loss: float, received: int, expected: int) -> Json:
    """Uplink quality of the last report window, as the relay saw it (docs/protocol.md "Media")."""
    return {"type": "quality", "uplink_loss": round(uplink_loss, 4), "received": received, "expected": expected}
