"""The SDK's room session: a pure state machine (no sockets, threads or clocks of its own).

``Context`` feeds it API calls and what the network thread saw (``Opened``/``Failed``/``Received``/
``Closed``, each stamped with the time it happened) plus ``tick(now)``; it answers with an
``ErrorCode`` per call, GME events for the delegate (``take_events``) and commands for the network
thread (``take_commands``). Keeping every rule here makes all of GME's error behaviour testable
without a server, and the network thread stays a dumb pipe.

One WebSocket ("connection", numbered ``conn``) per room session, as docs/protocol.md says; a
reconnect or a new entry opens a new one, and anything reported about an older number is stale and
ignored, which removes every race between the caller thread and the network thread.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from opengme import __version__
from opengme.authbuffer import MAX_BUFFER_BYTES
from opengme.errors import ErrorCode, describe
from opengme.events import ChangeRoomTypeSubEvent, EventType, InvitationSubEvent, RoomType, UserUpdateEvent
from opengme.ids import open_id_problem, room_id_problem
from opengme.protocol import signalling
from opengme.protocol import stt as stt_proto
from opengme.protocol.signalling import MAX_REDIRECTS as MAX_REDIRECTS

BACKOFF_FIRST = 0.2  # docs/protocol.md: reconnect backoff 0.2 s doubling to 5 s, jittered
BACKOFF_MAX = 5.0
LIVENESS_FACTOR = 3.0  # a connection silent for this many heartbeat intervals is dead
EXIT_TIMEOUT = 5.0  # an unanswered `exit` is finished locally: leaving never waits on the server
REQUIRED_ABILITY = "audio"  # asked for in every hello; an entry the server does not grant it ends (10011)

Event = tuple[EventType, dict[str, Any]]


# --- what the network thread reports (inputs) -----------------------------------------------------


@dataclass(frozen=True)
class Opened:
    conn: int
    at: float


@dataclass(frozen=True)
class Failed:
    """The connection could not be opened (refused, DNS, HTTP error instead of an upgrade)."""

    conn: int
    reason: str
    at: float


@dataclass(frozen=True)
class Received:
    conn: int
    message: dict[str, Any]
    at: float


@dataclass(frozen=True)
class Closed:
    conn: int
    reason: str
    at: float


Notice = Opened | Failed | Received | Closed


# --- what the network thread must do (outputs) ----------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """Open connection ``conn`` to the server at ``url`` (its base URL; "" = the context's) and send
    ``messages`` at once (hello is pipelined with the request)."""

    conn: int
    messages: tuple[dict[str, Any], ...]
    url: str = ""


@dataclass(frozen=True)
class Send:
    conn: int
    message: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """Start sending `ping` on ``conn`` every ``interval`` seconds."""

    conn: int
    interval: float


@dataclass(frozen=True)
class Close:
    conn: int


Command = Connect | Send | Heartbeat | Close


class Phase(Enum):
    IDLE = "idle"
    ENTERING = "entering"
    IN_ROOM = "in_room"
    SWITCHING = "switching"
    EXITING = "exiting"
    RECONNECTING = "reconnecting"


IN_A_ROOM = (Phase.IN_ROOM, Phase.SWITCHING, Phase.RECONNECTING)  # what IsRoomEntered reports


def error_info(code: int, detail: str = "") -> str:
    """``error_info`` of an event: GME's one-liner for the code, then what exactly happened."""
    if code == ErrorCode.AV_OK:
        return detail
    try:
        head = describe(code)
    except ValueError:  # a server newer than this SDK may send a code it does not know
        head = f"error {code}"
    return f"{head}: {detail}" if detail else head


def result_code(code: int) -> int:
    """GME's enum member when the code is known (prints well, still an int in JSON)."""
    try:
        return ErrorCode(code)
    except ValueError:
        return int(code)


def outcome(code: int, detail: str = "") -> dict[str, Any]:
    return {"result": result_code(code), "error_info": error_info(code, detail)}


# --- argument rules -------------------------------------------------------------------------------


def valid_room_id(value: object) -> bool:
    return room_id_problem(value) is None


def valid_open_id(value: object) -> bool:
    """1-127 printable characters: whether the app takes string openids is the server's to say."""
    return open_id_problem(value, allow_string=True) is None


def valid_room_type(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in RoomType._value2member_map_


def auth_bytes(auth_buffer: object) -> bytes | None:
    """A v1 buffer (bytes) or a v2 token (str or bytes) as bytes; None when unusable."""
    if isinstance(auth_buffer, str):
        data = auth_buffer.encode()
    elif isinstance(auth_buffer, (bytes, bytearray, memoryview)):
        data = bytes(auth_buffer)
    else:
        return None
    return data if 0 < len(data) <= MAX_BUFFER_BYTES else None


# --- state ----------------------------------------------------------------------------------------


@dataclass
class RoomState:
    """What the SDK knows about the room it is in; members include yourself."""

    room_id: str
    room_type: int
    tinyid: int
    resume_token: str
    muted: bool = False
    media: dict[str, Any] | None = None  # `entered.media`: {udp_port, key}; None from a server without media
    server_url: str = ""  # the base URL of the node that admitted us (its host carries the media); "" = the context's
    quality: dict[str, Any] | None = None  # the latest `quality` push (the server's view of our uplink)
    tinyids: dict[str, int] = field(default_factory=dict)  # openid -> tinyid
    open_ids: dict[int, str] = field(default_factory=dict)  # tinyid -> openid

    def add(self, open_id: str, tinyid: int) -> bool:
        """Record a member; True when it is new (an event is due)."""
        old = self.tinyids.get(open_id)
        if old is not None:
            self.open_ids.pop(old, None)
        self.tinyids[open_id] = tinyid
        self.open_ids[tinyid] = open_id
        return old is None

    def remove(self, open_id: str) -> bool:
        tinyid = self.tinyids.pop(open_id, None)
        if tinyid is None:
            return False
        self.open_ids.pop(tinyid, None)
        return True


@dataclass
class Stats:
    """Numbers for GetQualityTips."""

    rtt: float | None = None
    reconnects: int = 0
    server_version: str = ""


@dataclass
class Pending:
    """An unanswered request: what it was and what its outcome needs."""

    kind: str
    room_id: str = ""
    auth: bytes = b""
    invite_id: str = ""
    open_id: str = ""
    room_type: int = 0
    context: Any = None  # what a part that sent the request (``Session.request``) needs of its outcome


class Session:
    """GME's room semantics for one initialised openid. Every method takes ``now`` (monotonic s)."""

    def __init__(
        self,
        app_id: str,
        open_id: str,
        *,
        entry_timeout: float = 30.0,
        reconnect_give_up: float = 3600.0,
        heartbeat_interval: float | None = None,
        rng: random.Random | None = None,
        url: str = "",
    ) -> None:
        self.app_id = app_id
        self.open_id = open_id
        self.entry_timeout = entry_timeout
        self.reconnect_give_up = reconnect_give_up
        self.heartbeat_override = heartbeat_interval
        self.rng = rng or random.Random()
        self.phase = Phase.IDLE
        self.room: RoomState | None = None
        self.stats = Stats()
        self.invitations: dict[str, str] = {}  # received invite_id -> inviter's room id
        self._events: list[Event] = []
        self._commands: list[Command] = []
        self._conn = 0  # current connection number; 0 = none
        self._last_conn = 0
        self._next_id = 1  # never reset: ids stay unique on every connection, pipelined ones included
        self._pending: dict[int, Pending] = {}  # of the current connection
        self._target: Pending | None = None  # the entry or switch in progress
        self._deadline = 0.0  # of the entry, switch, exit or reconnect attempt in progress
        self._heartbeat = 0.0  # the current connection's interval once `hello_ok` came
        self._last_rx = 0.0
        self._give_up_at = 0.0
        self._attempt = 0
        self._retry_at: float | None = None
        # A cluster (docs/protocol.md "Cluster: redirect"): where entries start, the node this session
        # talks to now, the live nodes the last hello_ok named, and the URLs a reconnect goes through.
        self.entry_url = url
        self.url = url
        self.node_urls: list[str] = []
        self._redirects = 0  # in a row, for the entry or reconnect attempt in progress
        self._rotation: list[str] = []
        self._rotation_next = 0
        # Parts of the SDK with messages of their own (room management, room sharing, game voice):
        # their replies and pushes by type, refusals of their requests by the request's kind
        # (SdkCore.start hands them over).
        self.push_handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.refusal_handlers: dict[str, Callable[[Pending, int, str], None]] = {}

    # --- outputs ---

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def take_commands(self) -> list[Command]:
        commands, self._commands = self._commands, []
        return commands

    def _emit(self, event: EventType, data: dict[str, Any]) -> None:
        self._events.append((event, data))

    # --- queries ---

    @property
    def entered(self) -> bool:
        return self.phase in IN_A_ROOM

    @property
    def exiting(self) -> bool:
        return self.phase is Phase.EXITING

    @property
    def busy(self) -> bool:
        """An entry, switch or exit is running: the room cannot be left yet (GME: 1202 on Uninit)."""
        return self.phase is not Phase.IDLE

    # --- API calls ---

    def enter(self, room_id: object, room_type: object, auth_buffer: object, now: float) -> ErrorCode:
        """GME: ITMGContext::EnterRoom."""
        auth = auth_bytes(auth_buffer)
        if not valid_room_id(room_id) or not valid_room_type(room_type) or auth is None:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(room_id, str) and isinstance(room_type, int)
        if self.phase in (Phase.ENTERING, Phase.SWITCHING):
            return ErrorCode.AV_ERR_REPEATED_OPERATION
        if self.phase in IN_A_ROOM:
            assert self.room is not None
            same = self.room.room_id == room_id
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE if same else ErrorCode.AV_ERR_IN_OTHER_ROOM
        if self.phase is Phase.EXITING:  # GME lets a client re-enter without waiting for EXIT_ROOM
            self._finish_exit()
        self._start_entry(Pending("enter", room_id=room_id, auth=auth, room_type=room_type), (), now)
        return ErrorCode.AV_OK

    def exit(self, now: float) -> ErrorCode:
        """GME: ITMGContext::ExitRoom."""
        match self.phase:
            case Phase.IDLE:
                return ErrorCode.AV_ERR_ROOM_NOT_EXIST
            case Phase.EXITING:
                return ErrorCode.AV_ERR_REPEATED_OPERATION
            case Phase.SWITCHING:
                return ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
            case Phase.ENTERING:
                self._fail_entry(ErrorCode.AV_ERR_USER_CANCELED, "exit_room called during the entry")
            case Phase.RECONNECTING:
                self._finish_exit()
            case Phase.IN_ROOM:
                self._request(Pending("exit"), signalling.exit_)
                self.phase = Phase.EXITING
                self._deadline = now + min(self.entry_timeout, EXIT_TIMEOUT)
        return ErrorCode.AV_OK

    def switch(self, room_id: object, auth_buffer: object, now: float) -> ErrorCode:
        """GME: ITMGContext::SwitchRoom."""
        auth = auth_bytes(auth_buffer)
        if not valid_room_id(room_id) or auth is None:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(room_id, str)
        refusal = self._room_refusal()
        if refusal:
            return refusal
        assert self.room is not None
        if self.room.room_id == room_id:  # as enter_room and change_room_type: already there
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._start_switch(room_id, auth, now)
        return ErrorCode.AV_OK

    def change_room_type(self, room_type: object, now: float) -> ErrorCode:
        """GME: ITMGRoom::ChangeRoomType (for everyone in the room)."""
        if not valid_room_type(room_type):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(room_type, int)
        refusal = self._room_refusal()
        if refusal:
            return refusal
        assert self.room is not None
        if self.room.room_type == room_type:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        self._request(Pending("change_room_type", room_type=room_type), signalling.change_room_type, room_type)
        self._room_type_event(ChangeRoomTypeSubEvent.START, room_type)
        return ErrorCode.AV_OK

    def invite(self, open_id: object, now: float) -> ErrorCode:
        """OpenGME's take on GME's demo invitation module: ask ``open_id`` to join this room."""
        if not valid_open_id(open_id):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert isinstance(open_id, str)
        refusal = self._room_refusal()
        if refusal:
            return refusal
        self._request(Pending("invite", open_id=open_id), signalling.invite, open_id)
        return ErrorCode.AV_OK

    def realtime_asr(self, start: bool, language: object = "") -> ErrorCode:
        """Live captions of this member's mic on or off (REALTIME_ASR 1093 to every member of the room;
        a refusal of ``start`` arrives as REALTIME_ASR START with its code)."""
        if not isinstance(language, str) or len(language) > stt_proto.MAX_LANGUAGE:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        refusal = self._room_refusal()
        if refusal:
            return refusal
        if start:
            self._request(Pending("asr_start"), stt_proto.asr_start, language)
        else:
            self._request(Pending("asr_stop"), stt_proto.asr_stop)
        return ErrorCode.AV_OK

    def _asr_event(self, code: int = 0, detail: str = "", **fields: Any) -> None:
        self._emit(EventType.REALTIME_ASR, {**outcome(code, detail), "sub_type": 0, "open_id": self.open_id,
                                            "sentence_id": 0, "text": "", "final": False, **fields})

    def accept_invitation(self, invite_id: object, auth_buffer: object, now: float) -> ErrorCode:
        """Accept: reply, then switch (or enter, outside a room) into the inviter's room."""
        auth = auth_bytes(auth_buffer)
        if not isinstance(invite_id, str) or auth is None:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        if invite_id not in self.invitations:
            return ErrorCode.AV_ERR_ACCEPTT_FAILED
        if self.phase in (Phase.ENTERING, Phase.SWITCHING):
            return ErrorCode.AV_ERR_REPEATED_OPERATION
        if self.phase in (Phase.EXITING, Phase.RECONNECTING):
            return ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
        room_id = self.invitations.pop(invite_id)
        reply = Pending("accept", room_id=room_id, auth=auth, invite_id=invite_id)
        if self.phase is Phase.IN_ROOM:
            self._request(reply, signalling.invite_reply, invite_id, True)
            return ErrorCode.AV_OK
        room_type = self.room.room_type if self.room else RoomType.FLUENCY
        reply_msg = self._message(reply, signalling.invite_reply, invite_id, True)
        self._start_entry(Pending("enter", room_id=room_id, auth=auth, room_type=room_type), (reply_msg,), now)
        return ErrorCode.AV_OK

    def refuse_invitation(self, invite_id: object, now: float) -> ErrorCode:
        """Refuse an invitation; the inviter gets INVITATION sub-event REFUSED."""
        if not isinstance(invite_id, str):
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        if invite_id not in self.invitations:
            return ErrorCode.AV_ERR_REFUSE_FAILED
        if self.phase not in (Phase.IN_ROOM, Phase.SWITCHING):
            return ErrorCode.AV_ERR_ROOM_NOT_EXIST  # no signalling connection to tell the server on
        self.invitations.pop(invite_id)
        self._request(Pending("refuse", invite_id=invite_id), signalling.invite_reply, invite_id, False)
        return ErrorCode.AV_OK

    def request(self, pending: Pending, build: Callable[..., dict[str, Any]], *args: Any) -> ErrorCode:
        """A part's request in the room (its refusal goes to ``refusal_handlers[pending.kind]``)."""
        refusal = self._room_refusal()
        if refusal is not None:
            return refusal
        self._request(pending, build, *args)
        return ErrorCode.AV_OK

    def _room_refusal(self) -> ErrorCode | None:
        """Why a call that needs an established room cannot run now (None = it can)."""
        if self.phase in (Phase.SWITCHING, Phase.RECONNECTING):
            return ErrorCode.AV_ERR_EXCLUSIVE_OPERATION
        if self.phase is not Phase.IN_ROOM:
            return ErrorCode.AV_ERR_ROOM_NOT_EXIST
        return None

    # --- requests and connections ---

    def _message(self, pending: Pending, build: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        """A request built by ``opengme.protocol.signalling`` with the next id, remembered until answered."""
        request_id = self._next_id
        self._next_id += 1
        self._pending[request_id] = pending
        return build(request_id, *args)

    def _request(self, pending: Pending, build: Callable[..., dict[str, Any]], *args: Any) -> None:
        self._commands.append(Send(self._conn, self._message(pending, build, *args)))

    def _open(self, extra: tuple[dict[str, Any], ...], enter: Pending, resume_token: str | None) -> None:
        """A new connection with hello, ``extra`` and the enter request pipelined."""
        self._last_conn += 1
        self._conn = self._last_conn
        self._heartbeat = 0.0
        hello = self._message(Pending("hello"), signalling.hello, self.app_id, self.open_id, __version__)
        enter_msg = self._message(
            enter, signalling.enter, enter.room_id, enter.room_type, enter.auth, resume_token
        )
        self._commands.append(Connect(self._conn, (hello, *extra, enter_msg), self.url))

    def _drop_connection(self) -> None:
        if self._conn:
            self._commands.append(Close(self._conn))
        self._conn = 0
        self._pending = {}
        self._heartbeat = 0.0

    def _start_entry(self, target: Pending, extra: tuple[dict[str, Any], ...], now: float) -> None:
        self.phase = Phase.ENTERING
        self.url = self.entry_url
        self._redirects = 0
        self._target = target
        self._deadline = now + self.entry_timeout
        self._open(extra, target, None)

    def _start_switch(self, room_id: str, auth: bytes, now: float) -> None:
        self.phase = Phase.SWITCHING
        self._redirects = 0
        self._deadline = now + self.entry_timeout
        self._target = Pending("switch", room_id=room_id, auth=auth)
        self._request(self._target, signalling.switch, room_id, auth)

    # --- ends of operations ---

    def _to_idle(self) -> None:
        self._drop_connection()
        self.phase = Phase.IDLE
        self.room = None
        self._target = None
        self._retry_at = None

    def _fail_entry(self, code: int, detail: str) -> None:
        self._to_idle()
        self._emit(EventType.ENTER_ROOM, outcome(code, detail))

    def _finish_exit(self) -> None:
        """Leaving always succeeds locally: a closed socket takes the member out on the server."""
        self._to_idle()
        self._emit(EventType.EXIT_ROOM, outcome(ErrorCode.AV_OK))

    def _room_gone(self, code: int, detail: str) -> None:
        self._to_idle()
        self._emit(EventType.ROOM_DISCONNECT, outcome(code, detail))

    def _connection_lost(self, reason: str, now: float) -> None:
        """The socket dropped without `disconnect`: GME reconnects on its own."""
        match self.phase:
            case Phase.ENTERING:
                self._fail_entry(ErrorCode.AV_ERR_NET_REQUEST_FALLED, reason)
            case Phase.EXITING:
                self._finish_exit()
            case Phase.IN_ROOM | Phase.SWITCHING:
                if self.phase is Phase.SWITCHING:
                    self._emit(EventType.SWITCH_ROOM, outcome(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, reason))
                self._drop_connection()
                self.phase = Phase.RECONNECTING
                self._target = None
                self._attempt = 0
                self._give_up_at = now + self.reconnect_give_up
                self._retry_at = now + self._backoff()
                self._rotation, self._rotation_next = _unique([self.url, self.entry_url, *self.node_urls]), 0
                self._emit(EventType.RECONNECT_START, outcome(ErrorCode.AV_OK, reason))
            case Phase.RECONNECTING:
                self._drop_connection()
                # A round tries every known node at once (a dead node refuses in a moment, and the
                # room may already be elsewhere); the backoff is between rounds.
                mid_round = bool(self._rotation) and self._rotation_next % len(self._rotation) != 0
                self._retry_at = now if mid_round else now + self._backoff()

    def _backoff(self) -> float:
        """0.2 s doubling to 5 s, with ±50 % jitter so many clients do not return in step."""
        delay: float = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**self._attempt)
        self._attempt += 1
        return delay * self.rng.uniform(0.5, 1.5)

    # --- time ---

    def tick(self, now: float) -> None:
        """Timeouts: entry (1005), switch, exit, reconnect attempts and give-up, silent connections."""
        match self.phase:
            case Phase.ENTERING if now >= self._deadline:
                self._fail_entry(ErrorCode.AV_ERR_TIMEOUT, f"no answer within {self.entry_timeout:g} s")
            case Phase.SWITCHING if now >= self._deadline:
                # GME's SwitchRoom failures are 2001 (still in the old room) and 2002; the connection
                # is presumed dead, so the SDK reconnects to the old room.
                self._emit(EventType.SWITCH_ROOM, outcome(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM,
                                                          f"timeout: no answer to the switch within "
                                                          f"{self.entry_timeout:g} s"))
                self.phase = Phase.IN_ROOM
                self._connection_lost("switch unanswered", now)
                return
            case Phase.EXITING if now >= self._deadline:
                self._finish_exit()
            case Phase.RECONNECTING:
                self._tick_reconnect(now)
                return
        if self._conn and self._heartbeat and now - self._last_rx > LIVENESS_FACTOR * self._heartbeat:
            self._connection_lost(f"nothing heard for {now - self._last_rx:.1f} s", now)

    def _tick_reconnect(self, now: float) -> None:
        assert self.room is not None
        if now >= self._give_up_at:
            self._room_gone(ErrorCode.AV_ERR_TIMEOUT, f"reconnecting gave up after {self.reconnect_give_up:g} s")
        elif self._conn and now >= self._deadline:
            self._connection_lost("reconnect attempt unanswered", now)
        elif not self._conn and self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._deadline = now + self.entry_timeout
            self._redirects = 0
            if self._rotation:  # the node we were on, then the entry URL, then the others the cluster named
                self.url = self._rotation[self._rotation_next % len(self._rotation)]
                self._rotation_next += 1
            target = Pending("enter", room_id=self.room.room_id, room_type=self.room.room_type)
            self._open((), target, self.room.resume_token)

    # --- what the network saw ---

    def handle(self, notice: Notice) -> None:
        """Apply one report of the network thread; reports about older connections are ignored."""
        if notice.conn != self._conn or not self._conn:
            return
        match notice:
            case Opened(at=at):
                self._last_rx = at
            case Failed(reason=reason, at=at) | Closed(reason=reason, at=at):
                self._connection_lost(reason, at)
            case Received(message=message, at=at):
                self._last_rx = at
                self._on_message(message, at)

    def _on_message(self, message: dict[str, Any], now: float) -> None:
        """One validated reply or push (``signalling.parse_server`` ran on the network thread)."""
        request_id = message.get("id")
        pending = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        match message["type"]:
            case "error":
                self._on_error(pending, message["code"], message["message"])
            case "hello_ok":
                self._on_hello(message)
            case "entered" | "switched" if self.phase in (Phase.ENTERING, Phase.SWITCHING, Phase.RECONNECTING):
                self._on_entered(message)
            case "redirect" if pending is not None and pending.kind in ("enter", "switch"):
                self._on_redirect(pending, message, now)
            case "exited" if self.phase is Phase.EXITING:
                self._finish_exit()
            case "pong":
                self.stats.rtt = now - message["t"]
            case "room_type_changed" | "room_type":
                self._apply_room_type(message["room_type"])
            case "invite_reply_ok" if pending is not None and pending.kind == "accept" and self.phase is Phase.IN_ROOM:
                self._start_switch(message.get("room_id", pending.room_id), pending.auth, now)
            case "members":
                self._on_members(message)
            case "disconnect":
                self._on_disconnect(message["code"], message["reason"])
            case "mute" if self.room is not None:
                self.room.muted = message["muted"]
            case "quality" if self.room is not None:
                self.room.quality = message
            case "invitation":
                self.invitations[message["invite_id"]] = message["room_id"]
                self._invitation_event(InvitationSubEvent.RECEIVED, message["invite_id"], message["from_open_id"],
                                       room_id=message["room_id"])
            case "invitation_result":
                sub = InvitationSubEvent.ACCEPTED if message["accepted"] else InvitationSubEvent.REFUSED
                self._invitation_event(sub, message["invite_id"], message["open_id"])
            case "realtime_asr" if self.room is not None:
                self._asr_event(**{k: message[k] for k in ("sub_type", "open_id", "sentence_id", "text", "final")})
            case other if other in self.push_handlers and self.room is not None:
                self.push_handlers[other](message)
            # `invite_sent` and the reply to a refusal need no event: the inviter learns through pushes.

    def _invitation_event(self, sub: InvitationSubEvent, invite_id: str, open_id: str, code: int = 0,
                          detail: str = "", **extra: str) -> None:
        self._emit(EventType.INVITATION, {
            **outcome(code, detail), "sub_event_type": sub, "invite_id": invite_id, "open_id": open_id, **extra,
        })

    def _on_hello(self, message: dict[str, Any]) -> None:
        """The server speaks our major version and grants audio (an older one, silent on abilities,
        does), else the entry ends; then heartbeats start."""
        self.stats.server_version = message["server_version"]
        if message["protocol"] != signalling.PROTOCOL_VERSION:
            self._on_error(Pending("hello"), ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT,
                           f"the server speaks protocol {message['protocol']}, this SDK protocol "
                           f"{signalling.PROTOCOL_VERSION}: update the SDK or the server so that they match")
            return
        granted = message.get("abilities", signalling.ABILITIES)
        if REQUIRED_ABILITY not in granted:
            self._on_error(Pending("hello"), ErrorCode.AV_ERR_SERVER_INVALID_ABILITY,
                           f"the server did not grant the {REQUIRED_ABILITY!r} ability (granted: {granted})")
            return
        if "nodes" in message:
            self.node_urls = list(message["nodes"])
        self._heartbeat = self.heartbeat_override or float(message["heartbeat_interval"])
        if self._heartbeat:
            self._commands.append(Heartbeat(self._conn, self._heartbeat))

    def _on_error(self, pending: Pending | None, code: int, detail: str) -> None:
        kind = pending.kind if pending else ""
        if kind in ("hello", "enter") and self.phase is Phase.SWITCHING:  # a switch redirected to another node
            self._switch_lost(code, detail)
        elif kind in ("hello", "enter"):
            if self.phase is Phase.ENTERING:
                self._fail_entry(code, detail)
            elif self.phase is Phase.RECONNECTING:  # refused for good (token expired, kicked, app off)
                self._room_gone(code, detail)
        elif kind == "switch":
            self._emit(EventType.SWITCH_ROOM, outcome(code, detail))
            if code == ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED:
                self._to_idle()
            else:
                self.phase = Phase.IN_ROOM
                self._target = None
        elif kind == "exit":
            self._finish_exit()
        elif kind == "change_room_type" and self.room is not None:
            self._room_type_event(ChangeRoomTypeSubEvent.COMPLETE, self.room.room_type, code, detail)
        elif kind == "asr_start":
            self._asr_event(code, detail)
        elif kind in ("invite", "accept", "refuse"):
            sub = {"invite": InvitationSubEvent.CANCELED, "accept": InvitationSubEvent.ACCEPTED,
                   "refuse": InvitationSubEvent.REFUSED}[kind]
            assert pending is not None
            self._invitation_event(sub, pending.invite_id, pending.open_id, code, detail)
        elif pending is not None and kind in self.refusal_handlers:
            self.refusal_handlers[kind](pending, code, detail)
        # an error with no request of ours to blame (a bug on either side) changes nothing

    def _on_redirect(self, request: Pending, message: dict[str, Any], now: float) -> None:
        """Another node serves the room: the same hello and enter there (the same AuthBuffer, or the
        resume token; a ``switch`` becomes an ``enter`` there, leaving the old room with this
        connection). More than MAX_REDIRECTS in a row fail the entry (a reconnect attempt: it counts
        as a failed attempt and the rotation goes on)."""
        self._redirects += 1
        if self._redirects > MAX_REDIRECTS:
            detail = (f"more than {MAX_REDIRECTS} redirects in a row (last to {message['url']}): the cluster's "
                      f"nodes disagree on where room {request.room_id} is")
            if self.phase is Phase.RECONNECTING:
                self._connection_lost(detail, now)
            elif self.phase is Phase.SWITCHING:
                self._switch_lost(ErrorCode.AV_ERR_SERVER_FAILED, detail)
            else:
                self._fail_entry(ErrorCode.AV_ERR_SERVER_FAILED, detail)
            return
        enter = request
        if request.kind == "switch":
            assert self.room is not None
            enter = self._target = Pending("enter", room_id=request.room_id, auth=request.auth,
                                           room_type=self.room.room_type)
        self._drop_connection()
        self.url = message["url"]
        self._open((), enter, self.room.resume_token if self.phase is Phase.RECONNECTING and self.room else None)

    def _switch_lost(self, code: int, detail: str) -> None:
        """A switch that left the old room (its connection) and was refused in the new one: GME's 2002."""
        self._emit(EventType.SWITCH_ROOM, outcome(ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED,
                                                  error_info(code, detail)))
        self._to_idle()

    def _on_entered(self, message: dict[str, Any]) -> None:
        before, target = self.room, self._target
        room = RoomState(
            room_id=str(message["room_id"]),
            room_type=int(message["room_type"]),
            tinyid=int(message["tinyid"]),
            resume_token=str(message["resume_token"]),
            muted=bool(message.get("muted", False)),
            media=message.get("media"),
            server_url=self.url,
        )
        room.add(self.open_id, room.tinyid)
        for member in message.get("members", ()):
            room.add(str(member["open_id"]), int(member["tinyid"]))
        self.room = room
        phase, self.phase, self._target = self.phase, Phase.IN_ROOM, None
        match phase:
            case Phase.ENTERING:
                assert target is not None
                self._emit(EventType.ENTER_ROOM, outcome(ErrorCode.AV_OK))
                if room.room_type != target.room_type:
                    self._room_type_event(ChangeRoomTypeSubEvent.ENTERROOM, room.room_type)
                # GME's FAQ: USER_UPDATE ENTER also names yourself on your own entry.
                self._user_update(UserUpdateEvent.ENTER, [self.open_id, *self._others(room)])
            case Phase.SWITCHING:
                assert before is not None
                self._emit(EventType.SWITCH_ROOM, outcome(ErrorCode.AV_OK))
                if room.room_type != before.room_type:
                    self._room_type_event(ChangeRoomTypeSubEvent.ENTERROOM, room.room_type)
                self._user_update(UserUpdateEvent.EXIT, self._others(before))
                self._user_update(UserUpdateEvent.ENTER, [self.open_id, *self._others(room)])
            case Phase.RECONNECTING:
                assert before is not None
                self.stats.reconnects += 1
                self._emit(EventType.RECONNECT_SUCCESS, outcome(ErrorCode.AV_OK))
                if room.room_type != before.room_type:
                    self._room_type_event(ChangeRoomTypeSubEvent.COMPLETE, room.room_type)
                gone, came = set(self._others(before)), set(self._others(room))
                self._user_update(UserUpdateEvent.EXIT, [o for o in self._others(before) if o not in came])
                self._user_update(UserUpdateEvent.ENTER, [o for o in self._others(room) if o not in gone])

    def _others(self, room: RoomState) -> list[str]:
        return [o for o in room.tinyids if o != self.open_id]

    def _on_members(self, message: dict[str, Any]) -> None:
        if self.room is None:
            return
        entering = message.get("event") == "enter"
        changed = []
        for member in message.get("members", ()):
            open_id = str(member["open_id"])
            if open_id == self.open_id:
                continue
            if self.room.add(open_id, int(member["tinyid"])) if entering else self.room.remove(open_id):
                changed.append(open_id)
        self._user_update(UserUpdateEvent.ENTER if entering else UserUpdateEvent.EXIT, changed)

    def _user_update(self, event_id: UserUpdateEvent, open_ids: list[str]) -> None:
        if open_ids:
            self._emit(EventType.USER_UPDATE, {"event_id": event_id, "user_list": list(open_ids)})

    def _apply_room_type(self, room_type: int) -> None:
        """The reply to our request and the push to everyone may both come: one COMPLETE event."""
        if self.room is not None and self.room.room_type != room_type:
            self.room.room_type = room_type
            self._room_type_event(ChangeRoomTypeSubEvent.COMPLETE, room_type)

    def _room_type_event(self, sub: ChangeRoomTypeSubEvent, room_type: int, code: int = 0, detail: str = "") -> None:
        self._emit(EventType.CHANGE_ROOM_TYPE, {
            **outcome(code, detail), "sub_event_type": sub, "new_room_type": result_room_type(room_type),
        })

    def _on_disconnect(self, code: int, reason: str) -> None:
        match self.phase:
            case Phase.ENTERING:
                self._fail_entry(code, reason)
            case Phase.EXITING:
                self._finish_exit()
            case _:
                self._room_gone(code, reason)


def _unique(urls: list[str]) -> list[str]:
    """The non-empty URLs, first occurrence kept, in order."""
    return list(dict.fromkeys(u for u in urls if u))


def result_room_type(value: int) -> int:
    try:
        return RoomType(value)
    except ValueError:
        return value
