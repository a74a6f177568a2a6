"""Every signalling message of docs/protocol.md, defined once: its fields and each field's rule.

The parsers of ``opengme.protocol.signalling``, its builders and the JSON Schema document of
``opengme.protocol.schema`` all read this table, so the three cannot disagree. A rule (``Kind``)
answers two questions about a JSON value: ``check`` (the reason it is refused, or None) and
``schema`` (the same rule as a JSON Schema draft 2020-12 fragment for a browser client).

Readers are tolerant: a field a definition does not name is removed (and reported in ``unknown``
by its dotted path), at the top of a message and inside nested objects alike, so a newer peer's
additions never cost the message. Known fields are checked in full.
"""
from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from opengme.events import RoomType
from opengme.ids import MAX_ID_CHARS, printable_problem

Json = dict[str, Any]
Direction = Literal["request", "reply", "push"]

PROTOCOL_VERSION = 1
"""The major version: additive changes (optional fields, message types, abilities) never bump it."""
MAX_REQUEST_ID = 2**31 - 1
MAX_TINYID = 2**32 - 1  # the media header carries it as a u32
MAX_TOKEN_CHARS = 512
MAX_TEXT_CHARS = 1024
MEDIA_KEY_BYTES = 32  # opengme.protocol.media.KEY_SIZE (AES-256)
MEMBER_EVENTS = ("enter", "exit")
SHARING_EVENTS = ("start", "stop")  # room sharing (issue 16)


# --- value rules --------------------------------------------------------------------------------


class Kind(ABC):
    """The rule of one JSON value."""

    @abstractmethod
    def check(self, value: Any, unknown: list[str]) -> str | None:
        """Why ``value`` is refused, or None. Nested unknown fields are removed from ``value`` in
        place (it is the parser's own copy) and their names appended to ``unknown``."""

    @abstractmethod
    def schema(self) -> Json:
        """The rule as a JSON Schema fragment."""


@dataclass(frozen=True)
class Integer(Kind):
    """A JSON integer (``true`` is not 1) within ``minimum``…``maximum``."""

    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) is not int:
            return self._reason()
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return self._reason()
        return None

    def _reason(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"must be an integer {self.minimum}-{self.maximum}"
        if self.minimum is not None:
            return f"must be an integer of at least {self.minimum}"
        return "must be an integer"

    def schema(self) -> Json:
        return _bounded({"type": "integer"}, self.minimum, self.maximum)


@dataclass(frozen=True)
class Number(Kind):
    """A finite JSON number that fits a double (an integer of 400 digits does not)."""

    minimum: float = -math.inf
    maximum: float = math.inf

    def check(self, value: Any, unknown: list[str]) -> str | None:
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                return "must be a finite number"
        elif kind is not float or not math.isfinite(value):
            return "must be a finite number"
        if not self.minimum <= value <= self.maximum:
            return f"must be a number {self.minimum:g}-{self.maximum:g}"
        return None

    def schema(self) -> Json:
        return _bounded({"type": "number"}, *(b if math.isfinite(b) else None for b in (self.minimum, self.maximum)))


@dataclass(frozen=True)
class Text(Kind):
    min_chars: int = 0
    max_chars: int = MAX_TEXT_CHARS

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) is not str or not self.min_chars <= len(value) <= self.max_chars:
            return f"must be a string of {self.min_chars}-{self.max_chars} characters"
        return None

    def schema(self) -> Json:
        return {"type": "string", "minLength": self.min_chars, "maxLength": self.max_chars}


@dataclass(frozen=True)
class Identifier(Kind):
    """A room id or openid: 1-127 printable characters (``opengme.ids``). The schema's pattern
    refuses control characters; the parsers also refuse the other non-printable ones (Unicode
    categories C and Z except the space), as Python's ``str.isprintable`` does."""

    what: str

    def check(self, value: Any, unknown: list[str]) -> str | None:
        return printable_problem(value, self.what, MAX_ID_CHARS)

    def schema(self) -> Json:
        return {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
                "pattern": "^[^\u0000-\u001f\u007f-\u009f]*$"}


@dataclass(frozen=True)
class Boolean(Kind):
    def check(self, value: Any, unknown: list[str]) -> str | None:
        return None if type(value) is bool else "must be true or false"

    def schema(self) -> Json:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Choice(Kind):
    """One of a few values (integers are compared as integers, never as booleans)."""

    values: tuple[int | str, ...]
    names: tuple[str, ...] = ()

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) in (int, str) and value in self.values:
            return None
        named = f" ({', '.join(self.names)})" if self.names else ""
        return f"must be one of {list(self.values)}{named}"

    def schema(self) -> Json:
        return {"enum": list(self.values)}


_B64 = "[A-Za-z0-9+/]"


def _base64_pattern(size: int | None) -> str:
    """Standard base64 with padding (RFC 4648 §4), of ``size`` bytes when given."""
    if size is None:
        return f"(?:{_B64}{{4}})*(?:{_B64}{{2}}==|{_B64}{{3}}=)?"
    tail = {0: "", 1: f"{_B64}{{2}}==", 2: f"{_B64}{{3}}="}[size % 3]
    return f"(?:{_B64}{{4}}){{{size // 3}}}{tail}"


@dataclass(frozen=True)
class Base64(Kind):
    """Bytes as standard, padded base64; exactly ``size`` bytes when given.

    The schema's pattern is the rule; the parser checks the same rule in linear time (a whole length
    of 4-character groups, then the alphabet with at most two ``=`` at the end, matched possessively),
    since a pattern that backtracks takes milliseconds to refuse a 64 KB frame.
    """

    size: int | None = None
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        linear = _base64_pattern(self.size) if self.size is not None else f"{_B64}*+={{0,2}}"
        object.__setattr__(self, "_pattern", re.compile(linear))

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) is str and len(value) % 4 == 0 and self._pattern.fullmatch(value) is not None:
            return None
        of = f" of {self.size} bytes" if self.size is not None else ""
        return f"must be standard base64{of} (A-Z a-z 0-9 + /, padded with =)"

    def schema(self) -> Json:
        return {"type": "string", "contentEncoding": "base64", "pattern": f"^{_base64_pattern(self.size)}$"}


@dataclass(frozen=True)
class Nullable(Kind):
    kind: Kind

    def check(self, value: Any, unknown: list[str]) -> str | None:
        return None if value is None else self.kind.check(value, unknown)

    def schema(self) -> Json:
        return {"anyOf": [self.kind.schema(), {"type": "null"}]}


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    noun: str

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) is not list:
            return f"must be a list of {self.noun}"
        check = self.item.check
        for index, item in enumerate(value):
            reason = check(item, unknown)
            if reason is not None:
                return f"item {index}: {reason}"
        return None

    def schema(self) -> Json:
        return {"type": "array", "items": self.item.schema()}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str = ""
    required: bool = True

    def label(self, reason: str) -> str:
        """The reason as a sentence about this field (checks of ids name their field already)."""
        return reason if reason.startswith(self.name) else f"{self.name} {reason}"


class Shape:
    """An object with named fields (a message, or a nested object such as a member). Unknown
    fields are removed and reported; known ones are checked in order."""

    def __init__(self, fields: Sequence[Field], known_extra: Iterable[str] = ()) -> None:
        self.fields = tuple(fields)
        self.known = frozenset({f.name for f in self.fields} | set(known_extra))

    def check_fields(self, value: Json, unknown: list[str], path: str) -> str | None:
        """Why the object ``value`` is refused, or None; unknown fields leave ``value`` first."""
        if not self.known.issuperset(value):
            for name in [k for k in value if k not in self.known]:
                del value[name]
                unknown.append(f"{path}{name}")
        for spec in self.fields:
            if spec.name in value:
                reason = spec.kind.check(value[spec.name], unknown)
                if reason is not None:
                    return spec.label(reason)
            elif spec.required:
                return f"missing field {spec.name}"
        return None

    def properties(self) -> Json:
        return {f.name: {**f.kind.schema(), **({"description": f.doc} if f.doc else {})} for f in self.fields}

    def required(self) -> list[str]:
        return [f.name for f in self.fields if f.required]


class Record(Kind, Shape):
    """A nested object, shared by several messages (a named ``$defs`` entry in the schema)."""

    def __init__(self, name: str, doc: str, fields: Sequence[Field]) -> None:
        Shape.__init__(self, fields)
        self.name = name
        self.doc = doc

    def check(self, value: Any, unknown: list[str]) -> str | None:
        if type(value) is not dict:
            return f"must be an object {{{', '.join(self.required())}}}"
        nested: list[str] = []
        reason = self.check_fields(value, nested, "")
        unknown.extend(f"{self.name}.{n}" for n in nested)
        return reason

    def schema(self) -> Json:
        return {"$ref": f"#/$defs/{self.name}"}

    def definition(self) -> Json:
        return {"description": self.doc, "type": "object", "properties": self.properties(),
                "required": self.required()}


class Message(Shape):
    """One message type: its name (the ``type`` field), who sends it, and its fields."""

    def __init__(self, name: str, direction: Direction, doc: str, fields: Sequence[Field]) -> None:
        super().__init__(fields, known_extra=("type",))
        self.name = name
        self.direction = direction
        self.doc = doc

    def build(self, values: Json) -> Json:
        """The message with ``values`` in definition order; an optional field given as None is left
        out. The builders of ``opengme.protocol.signalling`` go through here."""
        assert self.known.issuperset(values), f"{self.name}: no field(s) {set(values) - self.known}"
        message: Json = {"type": self.name}
        for spec in self.fields:
            if spec.required or values.get(spec.name) is not None:
                message[spec.name] = values[spec.name]
        return message


def _bounded(schema: Json, minimum: float | None, maximum: float | None) -> Json:
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


# --- the shared rules -----------------------------------------------------------------------------

REQUEST_ID = Integer(1, MAX_REQUEST_ID)
ROOM_ID = Identifier("room_id")
OPEN_ID = Identifier("open_id")
ROOM_TYPE = Choice(tuple(int(t) for t in RoomType), tuple(t.name for t in RoomType))
ERROR_CODE = Integer(1)  # a code newer than this side's table still reaches the user
FREE_TEXT = Text(0, MAX_TEXT_CHARS)
INVITE_ID = Text(1, 64)
OPERATE_TYPE = Integer(0, 8)  # GME's ITMG_ROOM_MANAGEMENT OperateType (issue 16)
RESUME_TOKEN = Text(1, MAX_TOKEN_CHARS)
TINYID = Integer(1, MAX_TINYID)

MEMBER = Record("member", "A member of a room as the others see it.", (
    Field("tinyid", TINYID, "the member's number in media headers"),
    Field("open_id", OPEN_ID),
))
MEMBERS = ListOf(MEMBER, "members {tinyid, open_id}")
MEDIA = Record("media", "Where to send media and the member's session key (docs/protocol.md \"Media\").", (
    Field("udp_port", Integer(1, 65535), "UDP port of the relay on the server's host"),
    Field("key", Base64(MEDIA_KEY_BYTES), "the member's AES-256 session key, both directions; the session id "
          "derived from it (protocol.media.session_id) names the member in its uplink headers"),
))
ABILITY_LIST = ListOf(Text(0, 64), "strings")
NODE_URL = Text(1, 2048)
NODE_URLS = ListOf(NODE_URL, "URLs")


def _id(doc: str = "chosen by the client, unique per connection; the reply echoes it") -> Field:
    return Field("id", REQUEST_ID, doc)


def _room_fields() -> tuple[Field, ...]:
    """``entered`` and ``switched``."""
    return (
        _id(),
        Field("room_id", ROOM_ID),
        Field("room_type", ROOM_TYPE, "the room's type (may differ from the one asked for)"),
        Field("tinyid", TINYID, "the member's own number"),
        Field("members", MEMBERS, "the others in the room, not the member itself"),
        Field("resume_token", RESUME_TOKEN, "lets the member back in after a dropped connection"),
        Field("muted", Boolean(), "whether the server mutes this member"),
        Field("media", MEDIA, "absent from a server without a media relay", required=False),
    )


# --- the messages -------------------------------------------------------------------------------

MESSAGES: tuple[Message, ...] = (
    # requests (client → server)
    Message("hello", "request", "Opens the session: who the client is, its protocol and the abilities it wants.", (
        _id(),
        Field("protocol", Integer(), "the client's major protocol version"),
        Field("sdk_version", Text(0, 64)),
        Field("app_id", Text(1, 32)),
        Field("open_id", OPEN_ID),
        Field("abilities", ABILITY_LIST, "what the client wants; the server grants what it supports"),
    )),
    Message("enter", "request", "Enter a room (or resume one with a resume token).", (
        _id(),
        Field("room_id", ROOM_ID),
        Field("room_type", ROOM_TYPE),
        Field("auth_buffer", Base64(), "the AuthBuffer's bytes; empty when resuming"),
        Field("resume_token", RESUME_TOKEN, required=False),
    )),
    Message("exit", "request", "Leave the room.", (_id(),)),
    Message("switch", "request", "Leave the room for another one.", (
        _id(),
        Field("room_id", ROOM_ID),
        Field("auth_buffer", Base64(), "the AuthBuffer's bytes for the new room"),
    )),
    Message("change_room_type", "request", "Change the room's audio type for everyone.", (
        _id(), Field("room_type", ROOM_TYPE),
    )),
    Message("ping", "request", "Heartbeat; the reply echoes the client's clock.", (
        _id(), Field("t", Number(), "the client's clock, seconds"),
    )),
    Message("invite", "request", "Invite another user of the app into this room.", (
        _id(), Field("open_id", OPEN_ID, "the invitee"),
    )),
    Message("invite_reply", "request", "Accept or refuse an invitation.", (
        _id(), Field("invite_id", INVITE_ID), Field("accept", Boolean()),
    )),
    # replies (server → client, with the request's id)
    Message("hello_ok", "reply", "The session is open.", (
        _id("the hello's id"),
        Field("protocol", Integer(), "the major version the server speaks on this connection"),
        Field("server_version", Text(0, 64)),
        Field("heartbeat_interval", Number(), "seconds between the client's pings"),
        Field("member_timeout", Number(), "seconds of silence after which a member is dropped"),
        Field("abilities", ABILITY_LIST, "the granted abilities; absent from older servers, meaning [\"audio\"]",
              required=False),
        Field("nodes", NODE_URLS, "a cluster's live nodes (their URLs), where to reconnect when this one is "
              "gone; absent from a single server", required=False),
    )),
    Message("error", "reply", "A request was refused (or a frame could not be read: id null).", (
        Field("id", Nullable(REQUEST_ID), "the request's id, null when it could not be read"),
        Field("code", ERROR_CODE, "a GME error code (docs/errors.md)"),
        Field("message", FREE_TEXT, "what to fix"),
    )),
    Message("entered", "reply", "The client is in the room.", _room_fields()),
    Message("redirect", "reply", "A cluster: another node serves the room; open a connection there and send "
            "the same hello and enter (not admitted here).", (
        _id("the enter's id"),
        Field("url", NODE_URL, "the node's base URL, as node_url"),
        Field("node", Text(1, 64), "the node's id"),
    )),
    Message("switched", "reply", "The client is in the new room.", _room_fields()),
    Message("exited", "reply", "The client left the room.", (_id(),)),
    Message("room_type_changed", "reply", "The room's type was changed.", (_id(), Field("room_type", ROOM_TYPE))),
    Message("pong", "reply", "Answer to a ping.", (_id(), Field("t", Number(), "the ping's t"))),
    Message("invite_sent", "reply", "The invitation went out.", (_id(), Field("invite_id", INVITE_ID))),
    Message("invite_reply_ok", "reply", "The answer to an invitation was taken.", (
        _id(), Field("invite_id", INVITE_ID), Field("room_id", ROOM_ID, "the inviter's room, on acceptance", required=False),
    )),
    # pushes (server → client, no id)
    Message("members", "push", "Members entered or left the room.", (
        Field("event", Choice(MEMBER_EVENTS)), Field("members", MEMBERS),
    )),
    Message("room_type", "push", "Another member changed the room's type.", (
        Field("room_type", ROOM_TYPE), Field("by", OPEN_ID, "who changed it"),
    )),
    Message("disconnect", "push", "The server ends the client's stay; the socket closes next.", (
        Field("code", ERROR_CODE), Field("reason", FREE_TEXT),
    )),
    Message("mute", "push", "The server muted or unmuted the member.", (
        Field("muted", Boolean()), Field("reason", FREE_TEXT),
    )),
    Message("invitation", "push", "Someone invites the client into their room.", (
        Field("invite_id", INVITE_ID), Field("from_open_id", OPEN_ID), Field("room_id", ROOM_ID),
    )),
    Message("invitation_result", "push", "An invitee answered.", (
        Field("invite_id", INVITE_ID), Field("open_id", OPEN_ID), Field("accepted", Boolean()),
    )),
    Message("quality", "push", "The member's uplink as the relay saw it over the last report window.", (
        Field("uplink_loss", Number(0, 1), "1 - received/expected"),
        Field("received", Integer(0)),
        Field("expected", Integer(0)),
    )),
    # --- speech-to-text (issue 13): live captions of the voice-chat mic (docs/protocol.md "Live captions")
    Message("asr_start", "request", "Caption this member's voice-chat mic for the room (start_realtime_asr).", (
        _id(), Field("language", Text(0, 35), "BCP-47 code of the speech; empty = en-US", required=False),
    )),
    Message("asr_stop", "request", "Stop captioning this member's mic.", (_id(),)),
    Message("asr_started", "reply", "Captions of this member's mic are on.", (
        _id(), Field("language", Text(1, 35), "the engine's language tag"),
    )),
    Message("asr_stopped", "reply", "Captions of this member's mic are off.", (_id(),)),
    Message("realtime_asr", "push", "Live captions of a member's mic (SDK event REALTIME_ASR 1093).", (
        Field("sub_type", Choice((0, 1, 2), ("START", "CONTENT", "END"))),
        Field("open_id", OPEN_ID, "the speaker"),
        Field("sentence_id", Integer(0), "numbers the speaker's sentences from 1 (0 with START and END)"),
        Field("text", FREE_TEXT, "the sentence so far (CONTENT), else empty"),
        Field("final", Boolean(), "CONTENT: the sentence is complete and will not change"),
    )),
    # --- room management (issue 16): ITMGRoomManager's calls on another member (core/room_manager.py)
    Message("room_manage", "request", "Operate another member's audio (GME's ITMGRoomManager).", (
        _id(), Field("receiver", OPEN_ID, "the member operated on"),
        Field("operate_type", OPERATE_TYPE, "GME's OperateType: 0 capture … 8 forbid"),
        Field("value", Boolean(), "enable or disable (ignored by the two getters)"),
    )),
    Message("room_manage_result", "request", "The receiver's outcome of an operation, for its sender.", (
        _id(), Field("sender", OPEN_ID, "who asked"), Field("operate_type", OPERATE_TYPE),
        Field("value", Boolean(), "the state after the operation (what the getters read)"),
        Field("result", Integer(0), "0 or the GME error code the receiver's SDK answered"),
    )),
    Message("room_manage_ok", "reply", "The operation or its result was passed on.", (_id(),)),
    Message("room_operate", "push", "A room manager operates this member's audio.", (
        Field("sender", OPEN_ID), Field("operate_type", OPERATE_TYPE), Field("value", Boolean()),
    )),
    # --- room sharing (issue 16): GME's cross-room talk (core/room_sharing.py)
    Message("room_share", "request", "Link yourself with a member of another room (GME's StartRoomSharing).", (
        _id(), Field("room_id", ROOM_ID, "the other room"), Field("open_id", OPEN_ID, "the member to link with"),
        Field("auth_buffer", Base64(), "an AuthBuffer for the other room, signed for your openid"),
    )),
    Message("room_share_stop", "request", "End your room sharing (GME's StopRoomSharing).", (_id(),)),
    Message("room_share_ok", "reply", "Room sharing started or stopped.", (
        _id(), Field("event", Choice(SHARING_EVENTS)),
    )),
    Message("room_sharing", "push", "A member of another room linked with you, or the link ended.", (
        Field("event", Choice(SHARING_EVENTS)), Field("open_id", OPEN_ID, "the other member"),
        Field("room_id", ROOM_ID, "its room"),
    )),
    Message("room_operate_result", "push", "The outcome of an operation this member asked for.", (
        Field("receiver", OPEN_ID), Field("operate_type", OPERATE_TYPE), Field("value", Boolean()),
        Field("result", Integer(0)),
    )),
)

# --- game voice (issue 14) -------------------------------------------------------------------------
# Range and team voice, server audio routes and the positions 3D voice needs (docs/protocol.md
# "Game voice"). The SDK sends `game_state` only on real change and at most GAME_STATE_RATE per second.

GAME_STATE_RATE = 10.0
"""Position updates per second an SDK sends at most (a game calls UpdateSelfPosition every frame)."""
MAX_COORDINATE = 1e9  # world units; any game's world fits
MAX_ROUTE_OPENIDS = 10  # GME: route lists hold at most 10 openids
RANGE_MODES = (0, 1)  # GME's RANGE_AUDIO_MODE_WORLD, RANGE_AUDIO_MODE_TEAM
ROUTE_TYPES = (1, 2, 3, 4)  # GME's send types (NOT_SEND_TO_ANYONE … SEND_WHITE_LIST), receive types alike


@dataclass(frozen=True)
class Vector3(Kind):
    """Three finite numbers ``[x, y, z]`` within ±MAX_COORDINATE."""

    def check(self, value: Any, unknown: list[str]) -> str | None:
        coordinate = Number(-MAX_COORDINATE, MAX_COORDINATE)
        if type(value) is not list or len(value) != 3 or any(coordinate.check(v, unknown) for v in value):
            return f"must be a list of 3 numbers within ±{MAX_COORDINATE:g}"
        return None

    def schema(self) -> Json:
        number = _bounded({"type": "number"}, -MAX_COORDINATE, MAX_COORDINATE)
        return {"type": "array", "items": number, "minItems": 3, "maxItems": 3}


TEAM_ID = Integer(0, 2**32 - 1)
ROUTE_LIST = ListOf(OPEN_ID, f"openids (at most {MAX_ROUTE_OPENIDS})")
POSITION = Record("position", "Where a member is, for 3D voice.", (
    Field("tinyid", TINYID), Field("team", TEAM_ID), Field("position", Vector3(), "world coordinates"),
))

MESSAGES += (
    Message("game_state", "request", "Range/team voice: any of the member's team, mode, range and position "
            "that changed (absent fields keep their value).", (
        _id(),
        Field("team", TEAM_ID, "SetRangeAudioTeamID; 0 is GME's host/broadcast team", required=False),
        Field("mode", Choice(RANGE_MODES, ("WORLD", "TEAM")), "SetRangeAudioMode", required=False),
        Field("range", Number(0, MAX_COORDINATE), "UpdateAudioRecvRange, in world units", required=False),
        Field("position", Vector3(), "UpdateSelfPosition's position", required=False),
        Field("entry", Boolean(), "true on the state sent right after entering: its team is the team at "
              "EnterRoom (GME's TeamID-0 rule), and it resets the audio route", required=False),
    )),
    Message("audio_route", "request", "SetServerAudioRoute: whom this member sends to and receives from.", (
        _id(),
        Field("send_type", Choice(ROUTE_TYPES)),
        Field("send_list", ROUTE_LIST),
        Field("recv_type", Choice(ROUTE_TYPES)),
        Field("recv_list", ROUTE_LIST),
    )),
    Message("game_state_ok", "reply", "The game state was applied.", (
        _id(), Field("team", TEAM_ID, "the member's team now"),
    )),
    Message("audio_route_ok", "reply", "The audio route was applied.", (_id(),)),
    Message("positions", "push", "Positions of members this member hears (for 3D voice), as they change.", (
        Field("members", ListOf(POSITION, "positions {tinyid, team, position}")),
    )),
)

BY_NAME = {m.name: m for m in MESSAGES}
REQUESTS = {m.name: m for m in MESSAGES if m.direction == "request"}
SERVER_MESSAGES = {m.name: m for m in MESSAGES if m.direction != "request"}
RECORDS = (MEMBER, MEDIA, POSITION)
