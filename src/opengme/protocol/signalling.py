"""The signalling protocol of docs/protocol.md, sans I/O: tolerant parsing, builders, encoding.

Both the server and the SDK import this module; every message is defined once, in
``opengme.protocol.messages``, and the parsers, the builders and the JSON Schema file
(``opengme.protocol.schema``) are derived from that table. Public API:

- ``PROTOCOL_VERSION`` (1, the major version), ``ACCEPTED_PROTOCOLS`` (what this server accepts in
  ``hello``), ``SIGNAL_PATH`` (``/v1/signal``), ``DEFAULT_MAX_MESSAGE_BYTES``, ``ABILITIES`` (what
  OpenGME grants: "audio").
- ``ProtocolError(code, message, id=None, close_code=None)``: a refused message. ``code`` is the
  ErrorCode to reply with, ``id`` the request id when it could be read, ``close_code`` the WebSocket
  close code when the connection must end (1009 oversized frame, 1000 after a protocol mismatch).
- ``parse_client(text, max_bytes, ignored=IGNORED) -> dict``: a validated client request (server
  side). An unknown request type is ProtocolError 10007, a ``hello`` of another major version 10007
  with a close.
- ``parse_server(text, ignored=IGNORED) -> dict``: a validated reply or push (SDK side); an unknown
  type parses to ``{"type": name}`` alone, which the SDK ignores.
  Both are tolerant readers: fields a definition does not name (also inside members and ``media``)
  are left out of the returned dict and counted in ``ignored`` (an ``Ignored``, logged at debug
  level); known fields are checked in full (ProtocolError 10002 when wrong).
- ``grant(requested) -> list``: the abilities a server grants for a ``hello``'s list.
- ``encode(message) -> str``: compact JSON text of one frame.
- ``encode_auth_buffer(buffer) -> str`` / ``decode_auth_buffer(text) -> bytes``: the base64 form
  carried in ``enter``/``switch`` (a v2 token given as ``str`` is sent as its UTF-8 bytes).
- Builders, one per message type, returning the dict to ``encode``. Requests: ``hello``, ``enter``,
  ``exit_``, ``switch``, ``change_room_type``, ``ping``, ``invite``, ``invite_reply``. Replies:
  ``hello_ok``, ``error``, ``entered``, ``exited``, ``switched``, ``room_type_changed``, ``pong``,
  ``invite_sent``, ``invite_reply_ok``, ``redirect`` (a cluster). Pushes: ``members_push``, ``room_type_push``, ``disconnect``,
  ``mute``, ``invitation``, ``invitation_result``, ``quality``. Member lists are given as (tinyid,
  open_id) pairs; ``entered``/``switched`` take the ``media`` section built by ``media_section``.
- ``media_key(section) -> bytes``: the 32-byte session key of a validated ``media`` section.
- ``REQUEST_TYPES`` / ``REPLY_TYPES`` / ``PUSH_TYPES``: the type names.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from opengme.errors import ErrorCode
from opengme.protocol.messages import (
    BY_NAME,
    MEDIA_KEY_BYTES,
    MEMBER_EVENTS,
    REQUEST_ID,
    REQUESTS,
    SERVER_MESSAGES,
    Json,
    Message,
)
from opengme.protocol.messages import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from opengme.protocol.messages import PROTOCOL_VERSION as PROTOCOL_VERSION

SIGNAL_PATH = "/v1/signal"
DEFAULT_MAX_MESSAGE_BYTES = 65536
ACCEPTED_PROTOCOLS = (PROTOCOL_VERSION,)
CLOSE_TOO_BIG = 1009  # WebSocket "message too big"
CLOSE_NORMAL = 1000
MAX_REDIRECTS = 3
"""A cluster's ``redirect``s a client follows in a row for one entry (nodes that disagree would loop)."""
ABILITIES = ("audio",)
"""What OpenGME grants ("video" never: it is audio-only); an older server's ``hello_ok`` without
``abilities`` means exactly this."""

REQUEST_TYPES = frozenset(REQUESTS)
PUSH_TYPES = frozenset(m.name for m in SERVER_MESSAGES.values() if m.direction == "push")
REPLY_TYPES = frozenset(SERVER_MESSAGES) - PUSH_TYPES

log = logging.getLogger("opengme.protocol")


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


class Ignored:
    """What a tolerant reader skipped: unknown fields, keyed ``type.field`` (``entered.member.team``
    for nested ones), and unknown message types. Each is also logged at debug level."""

    def __init__(self) -> None:
        self.fields: Counter[str] = Counter()
        self.types: Counter[str] = Counter()

    def add_fields(self, kind: str, names: list[str]) -> None:
        tally = self.fields
        for name in names:
            tally[f"{kind}.{name}"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ignored unknown field(s) %s of a %r message", ", ".join(names), kind)

    def add_type(self, kind: str) -> None:
        self.types[kind] += 1
        log.debug("ignored a message of unknown type %r", kind)


IGNORED = Ignored()
"""The process-wide tally, used when a caller brings none (the server's)."""


# --- parsing ------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load(text: str | bytes, max_bytes: int | None) -> Json:
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
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
    if type(message) is not dict:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "a message must be a JSON object")
    return message


def _type_of(message: Json, id: int | None) -> str:
    kind = message.get("type")
    if type(kind) is not str:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "a message needs a string 'type'", id)
    return kind


def _validate(message: Json, spec: Message, id: int | None, ignored: Ignored) -> Json:
    """``message`` checked against its definition, its unknown fields removed and counted."""
    unknown: list[str] = []
    reason = spec.check_fields(message, unknown, "")
    if unknown:
        ignored.add_fields(spec.name, unknown)
    if reason is not None:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{spec.name}: {reason}", id)
    return message


def _readable_id(raw_id: Any) -> int | None:
    return raw_id if REQUEST_ID.check(raw_id, []) is None else None


def parse_client(text: str | bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, ignored: Ignored = IGNORED) -> Json:
    """A validated client request, or ProtocolError with the code and id to answer with.

    ``hello`` is checked for the protocol version before its other fields, so that a client of
    another major version learns that rather than a complaint about fields of its version.
    """
    message = _load(text, max_bytes)
    raw_id = message.get("id")
    id = _readable_id(raw_id)
    kind = _type_of(message, id)
    spec = REQUESTS.get(kind)
    if spec is None:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, f"unknown message type {kind!r}", id)
    if id is None:
        raise ProtocolError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"{kind}: id {REQUEST_ID.check(raw_id, [])}")
    if kind == "hello":
        protocol = message.get("protocol")
        if type(protocol) is int and protocol not in ACCEPTED_PROTOCOLS:
            raise ProtocolError(
                ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT,
                f"the client speaks protocol {protocol}, this server accepts protocol "
                f"{' or '.join(map(str, ACCEPTED_PROTOCOLS))}: update the SDK or the server so that they match",
                id,
                close_code=CLOSE_NORMAL,
            )
    return _validate(message, spec, id, ignored)


def parse_server(text: str | bytes, ignored: Ignored = IGNORED) -> Json:
    """A validated server reply or push; ProtocolError when the server sent something malformed.
    A type this side does not know is ``{"type": name}``: a newer server's push, ignored."""
    message = _load(text, None)
    raw_id = message.get("id")
    kind = _type_of(message, _readable_id(raw_id))
    spec = SERVER_MESSAGES.get(kind)
    if spec is None:
        ignored.add_type(kind)
        return {"type": kind}
    return _validate(message, spec, raw_id if type(raw_id) is int else None, ignored)


def grant(requested: Iterable[str]) -> list[str]:
    """The abilities a ``hello`` gets: those asked for that OpenGME supports (unknown ones are no error)."""
    wanted = set(requested)
    return [a for a in ABILITIES if a in wanted]


def _build(kind: str, **values: Any) -> Json:
    return BY_NAME[kind].build(values)


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


# --- builders (each fills its message's definition; `Message.build` orders and checks the names) ---

MemberPairs = Iterable[tuple[int, str]]


def _members(pairs: MemberPairs) -> list[Json]:
    return [{"tinyid": tinyid, "open_id": open_id} for tinyid, open_id in pairs]


# requests (SDK)


def hello(id: int, app_id: str, open_id: str, sdk_version: str, abilities: Iterable[str] = ABILITIES) -> Json:
    return _build("hello", id=id, protocol=PROTOCOL_VERSION, sdk_version=sdk_version, app_id=app_id,
                  open_id=open_id, abilities=list(abilities))


def enter(id: int, room_id: str, room_type: int, auth_buffer: bytes | str, resume_token: str | None = None) -> Json:
    """``auth_buffer`` is the raw buffer (bytes, or a v2 token as str); b"" when resuming."""
    return _build("enter", id=id, room_id=room_id, room_type=int(room_type),
                  auth_buffer=encode_auth_buffer(auth_buffer), resume_token=resume_token)


def exit_(id: int) -> Json:
    return _build("exit", id=id)


def switch(id: int, room_id: str, auth_buffer: bytes | str) -> Json:
    return _build("switch", id=id, room_id=room_id, auth_buffer=encode_auth_buffer(auth_buffer))


def change_room_type(id: int, room_type: int) -> Json:
    return _build("change_room_type", id=id, room_type=int(room_type))


def ping(id: int, t: float) -> Json:
    return _build("ping", id=id, t=t)


def invite(id: int, open_id: str) -> Json:
    return _build("invite", id=id, open_id=open_id)


def invite_reply(id: int, invite_id: str, accept: bool) -> Json:
    return _build("invite_reply", id=id, invite_id=invite_id, accept=accept)


# replies (server)


def hello_ok(id: int, server_version: str, heartbeat_interval: float, member_timeout: float,
             abilities: Iterable[str] = ABILITIES, nodes: Iterable[str] | None = None) -> Json:
    """``abilities``: the granted set (``grant`` of what the hello asked for); ``nodes``: a cluster's
    live node URLs (None on a single server: the field is left out)."""
    return _build("hello_ok", id=id, protocol=PROTOCOL_VERSION, server_version=server_version,
                  heartbeat_interval=heartbeat_interval, member_timeout=member_timeout, abilities=list(abilities),
                  nodes=None if nodes is None else list(nodes))


def redirect(id: int, url: str, node: str) -> Json:
    """The answer to an ``enter`` for a room another live node serves: go to ``url`` (not admitted here)."""
    return _build("redirect", id=id, url=url, node=node)


def _clip(text: str) -> str:
    """Keep free text within what ``parse_server`` accepts (a reason may quote client input)."""
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def error(id: int | None, code: ErrorCode, message: str) -> Json:
    return _build("error", id=id, code=int(code), message=_clip(message))


def media_section(udp_port: int, key: bytes) -> Json:
    """The ``media`` field of ``entered``/``switched``: where to send UDP and the member's session key."""
    return {"udp_port": udp_port, "key": base64.b64encode(key).decode("ascii")}


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


def _room_reply(
    kind: str, id: int, room_id: str, room_type: int, tinyid: int, members: MemberPairs, resume_token: str, muted: bool,
    media: Json | None,
) -> Json:
    return _build(kind, id=id, room_id=room_id, room_type=int(room_type), tinyid=tinyid, members=_members(members),
                  resume_token=resume_token, muted=muted, media=media)


def exited(id: int) -> Json:
    return _build("exited", id=id)


def room_type_changed(id: int, room_type: int) -> Json:
    return _build("room_type_changed", id=id, room_type=int(room_type))


def pong(id: int, t: float) -> Json:
    return _build("pong", id=id, t=t)


def invite_sent(id: int, invite_id: str) -> Json:
    return _build("invite_sent", id=id, invite_id=invite_id)


def invite_reply_ok(id: int, invite_id: str, room_id: str | None = None) -> Json:
    """``room_id`` is the inviter's room, given on acceptance only."""
    return _build("invite_reply_ok", id=id, invite_id=invite_id, room_id=room_id)


# pushes (server)


def members_push(event: str, members: MemberPairs) -> Json:
    """``event``: "enter" or "exit"."""
    if event not in MEMBER_EVENTS:
        raise ValueError(f"event must be one of {MEMBER_EVENTS}")
    return _build("members", event=event, members=_members(members))


def room_type_push(room_type: int, by: str) -> Json:
    return _build("room_type", room_type=int(room_type), by=by)


def disconnect(code: ErrorCode, reason: str) -> Json:
    return _build("disconnect", code=int(code), reason=_clip(reason))


def mute(muted: bool, reason: str) -> Json:
    return _build("mute", muted=muted, reason=_clip(reason))


def invitation(invite_id: str, from_open_id: str, room_id: str) -> Json:
    return _build("invitation", invite_id=invite_id, from_open_id=from_open_id, room_id=room_id)


def invitation_result(invite_id: str, open_id: str, accepted: bool) -> Json:
    return _build("invitation_result", invite_id=invite_id, open_id=open_id, accepted=accepted)


def quality(uplink_loss: float, received: int, expected: int) -> Json:
    """Uplink quality of the last report window, as the relay saw it (docs/protocol.md "Media")."""
    return _build("quality", uplink_loss=round(uplink_loss, 4), received=received, expected=expected)


# --- room management (issue 16)


def room_manage(id: int, receiver: str, operate_type: int, value: bool) -> Json:
    return _build("room_manage", id=id, receiver=receiver, operate_type=int(operate_type), value=value)


def room_manage_result(id: int, sender: str, operate_type: int, value: bool, result: int) -> Json:
    return _build("room_manage_result", id=id, sender=sender, operate_type=int(operate_type), value=value,
                  result=int(result))


def room_manage_ok(id: int) -> Json:
    return _build("room_manage_ok", id=id)


def room_operate(sender: str, operate_type: int, value: bool) -> Json:
    return _build("room_operate", sender=sender, operate_type=int(operate_type), value=value)


def room_operate_result(receiver: str, operate_type: int, value: bool, result: int) -> Json:
    return _build("room_operate_result", receiver=receiver, operate_type=int(operate_type), value=value,
                  result=int(result))


# --- room sharing (issue 16)


def room_share(id: int, room_id: str, open_id: str, auth_buffer: bytes | str) -> Json:
    return _build("room_share", id=id, room_id=room_id, open_id=open_id, auth_buffer=encode_auth_buffer(auth_buffer))


def room_share_stop(id: int) -> Json:
    return _build("room_share_stop", id=id)


def room_share_ok(id: int, event: str) -> Json:
    return _build("room_share_ok", id=id, event=event)


def room_sharing(event: str, open_id: str, room_id: str) -> Json:
    return _build("room_sharing", event=event, open_id=open_id, room_id=room_id)
