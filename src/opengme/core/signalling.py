"""The signalling core: every decision of ``/v1/signal`` (docs/protocol.md) as plain code.

The asyncio shell (``opengme.server.signalling``) owns the sockets, tasks and clocks and feeds this
core its inputs:

- ``connected(conn, now)``: a new client connection;
- ``begin(conn, message, now)``: a parsed request arrived. Returns the ``Credentials`` it needs proven
  before it can be decided (``hello``, ``enter``, ``switch``), or None. ``prove(credentials, app_of)``
  proves them: a plain function, but a slow and blocking one (it reads the app registry and verifies
  the AuthBuffer), so the shell runs it in a worker thread;
- ``receive(conn, message, now, proof)``: decide the request;
- ``refuse(conn, error, now)``: a frame that was not a valid request; ``disconnected(conn, now)``;
- ``tick(now)``: heartbeat loss, connections that never said hello, expired invitations;
- ``kick``, ``dissolve``, ``set_muted``: admin actions; ``shutdown(now)``: the server stops.

Each returns an ``Output``: ``Send``/``Close`` actions addressed by connection id, for the shell to
carry out in order through its ``Delivery``, and the call's ``RoomEvent``s (members entering and
leaving) for the room listeners. ``now`` is an ``Instant``: the wall clock for what outlives the
process or is shown to people (entry times, resume tokens, invitations), the monotonic clock for
liveness. No sockets, tasks or clocks here.

Ordering: the shell hands one connection's messages over one at a time, in order (begin, prove,
receive), so a ``ping`` sent after an ``enter`` is answered after it. Other connections go on while a
proof is being made, so ``receive`` re-checks everything that may have changed meanwhile (a kick, a
takeover, a room filling up) and decides in one synchronous step: a message's effects on the registry
are atomic.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opengme import __version__
from opengme.authbuffer import verify_auth_buffer
from opengme.config import Settings
from opengme.core.captions import CaptionSink
from opengme.core.game_voice import GameVoice, RouteSink
from opengme.core.placement import NoTarget
from opengme.core.ratelimit import BucketTable, TokenBucket
from opengme.core.room_manager import RoomManagement
from opengme.core.room_sharing import RoomSharing
from opengme.core.rooms import ConnId, Member, RoomEvent, RoomRegistry
from opengme.errors import ErrorCode, GmeError, describe
from opengme.events import RoomType
from opengme.ids import open_id_problem
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.protocol import stt as stt_proto
from opengme.protocol.resume import make_resume_token, resume_token_expiry, resume_token_problem

if TYPE_CHECKING:
    from opengme.store import App

log = logging.getLogger("opengme.signalling")

Json = dict[str, Any]

CLOSE_GOING_AWAY = 1001  # WebSocket close code of a server shutdown: SDKs resume, as after a network drop
# Heartbeat loss: a private-use WebSocket close code and no `disconnect`, so that the SDK resumes (GME
# drops the connection after 90 s and its client keeps reconnecting; the room is lost only on giving up).
CLOSE_HEARTBEAT_LOST = 4000
KICKED = "removed from the room by the server (kick)"
TAKEN_OVER = "the same openid entered elsewhere (this connection was replaced by the newer one)"
DISSOLVED = "removed from the room by the server (the room was dissolved)"
REMOVED = "the server removed this member from the room after the resume token was issued"
RATE_LIMITED = "rate limit"  # the start of every rate-limit refusal (10005)
STRIKES_RATE, STRIKES_BURST = 1.0, 30.0  # rate-limited requests a connection may go on sending before it is dropped
_ENTRIES = frozenset({"enter", "switch"})
ENTRY_BURST = 10.0  # entries a connection may make back to back (a game retrying its AuthBuffer, say)


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both of the server's clocks."""

    wall: float  # time.time(): entry times, resume tokens, invitations, eviction records
    mono: float  # time.monotonic(): liveness, immune to wall-clock steps


@dataclass(frozen=True, slots=True)
class Send:
    """Queue ``message`` on connection ``conn``."""

    conn: ConnId
    message: Json


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``conn`` with WebSocket code ``code`` once the frames queued before are sent."""

    conn: ConnId
    code: int = proto.CLOSE_NORMAL


Action = Send | Close


@dataclass
class Output:
    """What one input to the core caused: actions to carry out in order, then room events to announce."""

    actions: list[Action] = field(default_factory=list)
    events: list[RoomEvent] = field(default_factory=list)


class Delivery(Protocol):
    """Where the core's actions go: the shell's own connections, or (several nodes) another node's."""

    def send(self, conn: ConnId, message: Json) -> None: ...

    def close(self, conn: ConnId, code: int) -> None: ...


class MediaSessions(Protocol):
    """What the core needs from the media relay; departures reach the relay as room events."""

    def open_session(self, member: Member, muted: bool) -> Json:
        """Start the member's media session with a fresh key; returns the reply's ``media`` section."""
        ...

    def set_muted(self, member: Member, muted: bool) -> None: ...

    def share(self, member: Member, partner: Member | None) -> None:
        """Room sharing: link the two members' media (None: end the member's link)."""
        ...


# --- proving who a client is (off the event loop) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request asks to have proven: the app and its openid rule (``hello``); for an entry
    (``room_id`` set) also the AuthBuffer or resume token, checked at wall-clock time ``at``."""

    app_id: str
    open_id: str
    at: float
    room_id: str | None = None
    auth_buffer: str = ""  # base64, as sent
    resume_token: str | None = None


@dataclass(frozen=True, slots=True)
class Proof:
    """What ``prove`` found. ``refused``: the app is unknown or the openid breaks its rule (7006), or
    the lookup failed (10001). For an entry: ``token_problem`` (None when the token sent holds) and the
    AuthBuffer's verdict ``auth_error``, when it was checked (``auth_checked``)."""

    app: App | None
    refused: GmeError | None = None
    token_problem: str | None = None
    auth_checked: bool = False
    auth_error: GmeError | None = None
    auth_bits: int | None = None  # the AuthBuffer's privilege map, when one was checked and holds
    removed_at: float | None = None  # a resume: when the cluster recorded the member's removal (any node)


def prove(credentials: Credentials, app_of: Callable[[str], App | None]) -> Proof:
    """Read the app as the console has it now and check the client's proof of identity. Blocking
    (``app_of`` reads SQLite) and CPU-heavy (TEA in pure Python): the shell runs it in a worker thread.
    Never raises. A resume (token, empty AuthBuffer) is decided by the token alone; whether the server
    removed the member since is checked when the entry is decided, on the loop."""
    c = credentials
    try:
        app = app_of(c.app_id) if c.app_id.isascii() else None  # AppIDs are digits; never look up junk
        if app is None:
            return Proof(None, GmeError(ErrorCode.AV_ERR_AUTH_FIALD, f"unknown AppID {c.app_id}"))
        reason = open_id_problem(c.open_id, app.string_openid)
        if reason:
            return Proof(app, GmeError(ErrorCode.AV_ERR_AUTH_FIALD, reason))
        if c.room_id is None:
            return Proof(app)
        token_problem = None
        if c.resume_token is not None:
            token_problem = resume_token_problem(c.resume_token, app.key, app.app_id, c.open_id, c.room_id, c.at)
        buffer = proto.decode_auth_buffer(c.auth_buffer)
        if c.resume_token is not None and not buffer:
            return Proof(app, token_problem=token_problem)
        try:
            claims = verify_auth_buffer(buffer, app.key, app_id=app.app_id, open_id=c.open_id, room_id=c.room_id,
                                        now=c.at, allow_v1=app.v1_auth)
        except GmeError as exc:
            return Proof(app, token_problem=token_problem, auth_checked=True, auth_error=exc)
        return Proof(app, token_problem=token_problem, auth_checked=True, auth_bits=claims.auth_bits)
    except Exception:
        log.exception("admission check failed", extra=fields(app_id=c.app_id))
        return Proof(None, GmeError(ErrorCode.AV_ERR_SERVER_FAILED, "internal server error"))


def _removal(what: str, reason: str) -> str:
    """The ``disconnect`` detail of a removal: GME's 10003 says "no permission", so the detail says
    what happened, then the operator's reason when one was given."""
    return what if reason in ("", what) else f"{what}: {reason}"


def _log_departure(member: Member, reason: str) -> None:
    """One info line per departure: exit, kick, dissolve, takeover, switch, heartbeat lost, connection
    closed, rate limit, server stopping."""
    log.info("left", extra=fields(app_id=member.app_id, room_id=member.room_id, open_id=member.open_id,
                                  tinyid=member.tinyid, conn=member.conn, reason=reason))


# --- the core --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Peer:
    """One client connection as the core sees it."""

    id: ConnId
    opened_at: float  # monotonic
    last_seen: float  # monotonic: the last request or refused frame
    app_id: str | None = None  # set by hello
    open_id: str | None = None
    member: Member | None = None  # while in a room (unless taken over: see SignallingCore._current)
    has_entered: bool = False  # binary frames (media) are refused before the first room entry
    closing: bool = False  # the core closed it: further input from it is ignored
    address: str = ""  # the peer's IP address, for the per-address limits ("" when unknown)
    buckets: dict[str, TokenBucket] = field(default_factory=dict)  # rate limits by request type
    strikes: TokenBucket | None = None  # rate-limited requests it may still send before it is dropped
    refusal: GmeError | None = None  # begin's rate-limit verdict on the request receive is to decide


Handler = Callable[[Peer, Json, Instant, Proof | None], None]
_PROVEN = frozenset({"hello", "enter", "switch", "room_share"})  # room_share proves an AuthBuffer for its room


class SignallingCore:
    """The rooms of a server and the clients connected to it, as decisions (see the module doc)."""

    def __init__(self, settings: Settings, media: MediaSessions | None = None) -> None:
        self.settings = settings
        self.registry = RoomRegistry(settings.max_rooms, settings.max_members_per_room)
        self.media = media
        self._peers: dict[ConnId, Peer] = {}
        # (app, openid) -> the connections that proved that openid (an entry with an AuthBuffer or a
        # resume token; a bare hello proves nothing): where its invitations go.
        self._clients: dict[tuple[str, str], set[ConnId]] = defaultdict(set)
        # (app, openid, room) -> when the server removed it (kick, dissolve): older resume tokens
        # must not bring a removed member straight back (in memory: a restart forgets it).
        self._evicted: dict[tuple[str, str, str], float] = {}
        # Told of each removal (member, wall time): a cluster records it where every node can see it.
        self.removal_listeners: list[Callable[[Member, float], None]] = []
        self._out: list[Action] = []
        entries = settings.max_ip_entry_rate / 60
        self._address_entries = BucketTable(entries, max(1.0, 10 * entries))
        # A proven member's buckets ((app, openid, type); strikes by (app, openid)) outlive its
        # connection, so reconnecting does not refill them; an unproven one's are its connection's.
        self._member_buckets = BucketTable(0.0, 1.0)
        self._member_strikes = BucketTable(STRIKES_RATE, STRIKES_BURST)
        self.game_voice = GameVoice(self.registry, self._send,
                                    lambda: self.media if isinstance(self.media, RouteSink) else None)
        self._handlers: dict[str, Handler] = {
            "hello": self._hello,
            "enter": self._enter,
            "exit": self._exit,
            "switch": self._switch,
            "change_room_type": self._change_room_type,
            "ping": self._ping,
            "invite": self._invite,
            "invite_reply": self._invite_reply,
            "asr_start": self._asr_start,
            "asr_stop": self._asr_stop,
            "room_manage": self._room_manage,
            "room_manage_result": self._room_manage_result,
            "room_share": self._room_share,
            "room_share_stop": self._room_share_stop,
            # game voice (issue 14): the logic is opengme.core.game_voice's
            "game_state": lambda peer, msg, now, proof: self.game_voice.game_state(self._member(peer), msg),
            "audio_route": lambda peer, msg, now, proof: self.game_voice.audio_route(self._member(peer), msg),
        }
        self.captions: CaptionSink | None = None  # the server's live captions (opengme.server.captions)
        self.room_management = RoomManagement()
        self.room_sharing = RoomSharing()
        self.node_urls: Callable[[], list[str]] | None = None  # a cluster's live nodes, for ``hello_ok``
        assert set(self._handlers) == proto.REQUEST_TYPES

    # --- inputs from connections ------------------------------------------------------------------

    def connected(self, conn: ConnId, now: Instant, address: str = "") -> None:
        """A new connection from IP ``address`` (the per-address entry limit counts by it)."""
        self._peers[conn] = Peer(conn, now.mono, now.mono, address=address,
                                 strikes=TokenBucket(STRIKES_RATE, STRIKES_BURST, now.mono))

    def carries_media(self, conn: ConnId) -> bool:
        """Whether this connection's binary frames are media datagrams (after its first room entry)."""
        peer = self._peers.get(conn)
        return peer is not None and peer.has_entered and not peer.closing

    def begin(self, conn: ConnId, message: Json, now: Instant) -> Credentials | None:
        """A request arrived (the connection is alive): the credentials to ``prove`` before ``receive``
        decides it, or None when there are none, or when it fails a check that comes first."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return None
        peer.last_seen = now.mono
        kind = message["type"]
        peer.refusal = self._rate_limit(peer, kind, now.mono)
        if kind not in _PROVEN or peer.refusal is not None:
            return None
        try:
            self._precheck(peer, kind)
        except GmeError:
            return None  # receive answers it, without a proof
        if kind == "hello":
            return Credentials(message["app_id"], message["open_id"], now.wall)
        app_id, open_id = self._identity(peer)
        return Credentials(app_id, open_id, now.wall, message["room_id"], message["auth_buffer"],
                           message.get("resume_token"))

    def receive(self, conn: ConnId, message: Json, now: Instant, proof: Proof | None = None) -> Output:
        """Decide a request (with the proof of its ``begin`` credentials, if it had any)."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return Output()
        peer.last_seen = now.mono
        kind = message["type"]
        if peer.refusal is not None:
            refusal, peer.refusal = peer.refusal, None
            self._refuse_limited(peer, message["id"], refusal, now)
            return self._take()
        try:
            self._precheck(peer, kind)
            self._handlers[kind](peer, message, now, proof)
        except GmeError as exc:
            if kind in _ENTRIES:  # once per refused entry; never the AuthBuffer, token or key
                log.info("entry refused", extra=fields(code=int(exc.code), detail=exc.detail, app_id=peer.app_id,
                                                       open_id=peer.open_id, room_id=message["room_id"],
                                                       address=peer.address, conn=peer.id))
            self._reply_error(peer.id, message["id"], exc.code, exc.detail or describe(exc.code))
        except Exception:
            log.exception("signalling handler failed", extra=fields(type=kind, app_id=peer.app_id))
            self._reply_error(peer.id, message["id"], ErrorCode.AV_ERR_SERVER_FAILED, "internal server error")
        return self._take()

    def admissible(self, conn: ConnId, message: Json, proof: Proof | None) -> bool:
        """Whether ``receive`` would let this ``enter`` or ``switch`` in as far as the client's identity
        and the app go (its proof holds, no rate limit or order error), without deciding anything: a
        cluster's shell asks before sending a proven client to the node that serves the room."""
        peer = self._peers.get(conn)
        kind = message["type"]
        if peer is None or peer.closing or peer.refusal is not None or proof is None or kind not in _ENTRIES:
            return False
        try:
            self._precheck(peer, kind)
            self._authorise(peer, message["room_id"], message.get("resume_token") if kind == "enter" else None, proof)
        except GmeError:
            return False
        return True

    def refuse(self, conn: ConnId, error: proto.ProtocolError, now: Instant) -> Output:
        """A frame that is not a valid request: the error reply, and a close when the error asks for one."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return Output()
        peer.last_seen = now.mono
        limited = self._rate_limit(peer, "invalid", now.mono)
        if limited is not None:
            self._refuse_limited(peer, error.id, limited, now)
            return self._take()
        self._reply_error(conn, error.id, error.code, error.message)
        if error.close_code is not None:
            self._close(conn, error.close_code)
        return self._take()

    def disconnected(self, conn: ConnId, now: Instant) -> Output:
        """The socket is gone: the member (if still current) leaves without clearing its mute."""
        peer = self._peers.pop(conn, None)
        if peer is None:
            return Output()
        peer.closing = True
        if peer.app_id is not None and peer.open_id is not None:
            peers = self._clients.get((peer.app_id, peer.open_id))
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self._clients[(peer.app_id, peer.open_id)]
        if peer.member is not None:
            self._leave(peer.member, now, "connection closed", voluntary=False)
            peer.member = None
        return self._take()

    # --- time and lifecycle -----------------------------------------------------------------------

    def tick(self, now: Instant) -> Output:
        """Close the connection of a member silent for ``member_timeout`` without ``disconnect`` (it
        leaves the room; its SDK resumes with the resume token, as GME's reconnects); drop connections
        with no room silent as long, and connections that did not complete ``hello`` within
        ``entry_timeout`` of opening (traffic does not extend that), with ``disconnect`` 10004; forget
        expired invitations. Liveness follows ``now.mono``: a wall-clock step neither drops nor keeps
        anyone."""
        entry_timeout, timeout = self.settings.entry_timeout, self.settings.member_timeout
        for peer in list(self._peers.values()):
            if peer.closing:
                continue
            if peer.open_id is None:
                if now.mono - peer.opened_at >= entry_timeout:
                    self._drop(peer.id, ErrorCode.AV_ERR_SERVER_TIMEOUT, f"no hello within {entry_timeout:g} s")
                continue
            if now.mono - peer.last_seen < timeout:
                continue
            member = self._current(peer)
            if member is not None:
                self._leave(member, now, "heartbeat lost", voluntary=False)
                peer.member = None
                self._close(peer.id, CLOSE_HEARTBEAT_LOST)
            else:
                self._drop(peer.id, ErrorCode.AV_ERR_SERVER_TIMEOUT, f"no message for {timeout:g} s")
        self.registry.expire_invitations(now.wall)
        return self._take()

    def shutdown(self, now: Instant) -> Output:
        """Record everyone's departure and close every connection *without* ``disconnect`` (1001 going
        away), so that SDKs reconnect and resume once the server is back."""
        for member in self.registry.members():
            self._leave(member, now, "server stopping", voluntary=False)
        for peer in self._peers.values():
            peer.member = None
            self._close(peer.id, CLOSE_GOING_AWAY)
        return self._take()

    # --- admin actions ----------------------------------------------------------------------------

    def kick(self, app_id: str, room_id: str, open_id: str, reason: str, now: Instant) -> Output:
        """Remove a member (``disconnect`` 10003 with ``reason``); 10009 unknown room, 10010 not in it."""
        member = self.registry.member(app_id, room_id, open_id)
        self._leave(member, now, "kick", voluntary=True)
        self._evict(member, now.wall)
        self._drop(member.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, _removal(KICKED, reason))
        return self._take()

    def dissolve(self, app_id: str, room_id: str, reason: str, now: Instant) -> Output:
        """Remove everyone (each gets ``disconnect`` 10003); one leave event per member removed."""
        removed = self.registry.dissolve(app_id, room_id, now.wall)
        for member in removed:
            _log_departure(member, "dissolve")
            self._end_sharing(member)
            self._evict(member, now.wall)
            self._drop(member.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, _removal(DISSOLVED, reason))
        log.info("dissolved", extra=fields(app_id=app_id, room_id=room_id, removed=len(removed)))
        return self._take()

    def set_muted(self, app_id: str, room_id: str, open_id: str, muted: bool, reason: str = "") -> Output:
        """Server mute (GME ModifyUserMicStatus): the member is told with a ``mute`` push."""
        member = self.registry.set_muted(app_id, room_id, open_id, muted)
        if self.media is not None:
            self.media.set_muted(member, muted)
        text = reason or ("muted by the server" if muted else "unmuted by the server")
        self._send(member.conn, proto.mute(muted, text))
        return self._take()

    # --- requests ---------------------------------------------------------------------------------

    def _precheck(self, peer: Peer, kind: str) -> None:
        """The checks that come before proving who the client is (GME's order); ``begin`` runs them
        too, so a request that fails one never costs a proof."""
        if kind == "hello":
            if peer.open_id is not None:
                raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION, "hello was already sent on this connection")
        elif peer.open_id is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, f"send hello before {kind}")
        elif kind == "enter" and self._current(peer) is not None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION, "already in a room on this connection; exit or switch")
        elif kind in ("switch", "room_share"):
            self._member(peer)

    def _hello(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        app = self._proven_app(proof)
        peer.app_id, peer.open_id = app.app_id, msg["open_id"]
        self._send(peer.id, proto.hello_ok(msg["id"], __version__, self.settings.heartbeat_interval,
                                           self.settings.member_timeout, proto.grant(msg["abilities"]),
                                           self.node_urls() if self.node_urls is not None else None))

    def _enter(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        app = self._authorise(peer, msg["room_id"], msg.get("resume_token"), proof)
        app_id, open_id = self._identity(peer)
        entered = self.registry.enter(app_id, msg["room_id"], open_id, RoomType(msg["room_type"]), peer.id, now.wall)
        if entered.displaced is not None:
            _log_departure(entered.displaced, "takeover")
            self._drop(entered.displaced.conn, ErrorCode.AV_ERR_SERVER_NO_PERMISSION, TAKEN_OVER)
        peer.member = entered.member
        self.room_management.entered(self.registry, entered.member, self._auth_bits(msg, proof))
        reply = self._admitted_reply(peer, proto.entered, msg["id"], app, entered.member, now)
        peer.has_entered = True
        self._clients[(app_id, open_id)].add(peer.id)  # the openid is proven: invitations reach it
        self._send(peer.id, reply)
        log.info("entered", extra=fields(app_id=app_id, room_id=msg["room_id"], open_id=open_id, conn=peer.id,
                                         tinyid=entered.member.tinyid, resumed="resume_token" in msg))

    def _exit(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        self._leave(member, now, "exit", voluntary=True)
        peer.member = None
        self._send(peer.id, proto.exited(msg["id"]))

    def _switch(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        try:
            app = self._authorise(peer, msg["room_id"], None, proof)
        except GmeError as exc:
            raise GmeError(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, f"{exc.code.name} ({int(exc.code)}): {exc.detail}") from None
        result = self.registry.switch(member, msg["room_id"], peer.id, now.wall)
        _log_departure(member, "switch")
        self._end_sharing(member)
        self.room_management.left(member)
        if result.entered is None:
            peer.member = None
            assert result.error is not None
            raise result.error
        peer.member = result.entered.member
        self.room_management.entered(self.registry, result.entered.member, self._auth_bits(msg, proof))
        self._send(peer.id, self._admitted_reply(peer, proto.switched, msg["id"], app, result.entered.member, now))

    def _change_room_type(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        room_type = RoomType(msg["room_type"])
        changed = self.registry.change_room_type(member, room_type)
        self._send(peer.id, proto.room_type_changed(msg["id"], room_type))
        if changed:
            push = proto.room_type_push(room_type, member.open_id)
            for other in self.registry.room(member.app_id, member.room_id).others(member):
                self._send(other.conn, push)

    def _ping(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        self._send(peer.id, proto.pong(msg["id"], msg["t"]))

    def _invite(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        inviter = self._member(peer)
        invitees = self._clients.get((inviter.app_id, msg["open_id"]), set())
        invitation = self.registry.invite(inviter, msg["open_id"], bool(invitees), now.wall)
        push = proto.invitation(invitation.invite_id, inviter.open_id, inviter.room_id)
        for invitee in invitees:
            self._send(invitee, push)
        self._send(peer.id, proto.invite_sent(msg["id"], invitation.invite_id))

    def _invite_reply(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        app_id, open_id = self._identity(peer)
        invitation = self.registry.reply_invitation(app_id, open_id, msg["invite_id"], msg["accept"], now.wall)
        self._send(peer.id, proto.invite_reply_ok(msg["id"], invitation.invite_id,
                                                  invitation.room_id if msg["accept"] else None))
        inviter = self.registry.find(app_id, invitation.from_open_id)
        if inviter is not None and inviter.room_id == invitation.room_id:
            self._send(inviter.conn, proto.invitation_result(invitation.invite_id, open_id, msg["accept"]))

    def _asr_start(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        if self.captions is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, "this server has no live captions")
        self.captions.start(member, msg["id"], msg.get("language", ""))  # it answers, after its checks

    def _asr_stop(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        if self.captions is not None:
            self.captions.stop(member)
        self._send(peer.id, stt_proto.asr_stopped(msg["id"]))

    # --- invitations decided by a cluster's shell (opengme.server.invitations) ----------------------
    # With ``redis_url`` the records live in Redis and the two members may be on different nodes, so the
    # shell decides ``invite``/``invite_reply`` itself (it awaits Redis and the bus) through these hooks.

    def screen(self, conn: ConnId, message: Json, now: Instant) -> tuple[str, str, Member | None] | Output:
        """``receive``'s checks before a handler (rate limit, hello first) for a request the shell
        decides: the requester's (app, openid, current member), else the refusal to carry out."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return Output()
        peer.last_seen = now.mono
        if peer.refusal is not None:
            refusal, peer.refusal = peer.refusal, None
            self._refuse_limited(peer, message["id"], refusal, now)
            return self._take()
        try:
            self._precheck(peer, message["type"])
        except GmeError as exc:
            self._reply_error(peer.id, message["id"], exc.code, exc.detail or describe(exc.code))
            return self._take()
        app_id, open_id = self._identity(peer)
        return app_id, open_id, self._current(peer)

    def answer(self, conn: ConnId, id: int, reply: Json | GmeError) -> Output:
        """The shell's answer to a request it decided: its reply, or its error."""
        if isinstance(reply, GmeError):
            self._reply_error(conn, id, reply.code, reply.detail or describe(reply.code))
        else:
            self._send(conn, reply)
        return self._take()

    def online(self, app_id: str, open_id: str) -> bool:
        """Whether a connection here proved that openid (where its invitations go)."""
        return bool(self._clients.get((app_id, open_id)))

    def push(self, app_id: str, open_id: str, message: Json, room_id: str | None = None) -> tuple[bool, Output]:
        """Hand a push to the openid's proven connections here (``room_id``: only to its member in that
        room); whether anyone took it."""
        if room_id is None:
            conns = list(self._clients.get((app_id, open_id), ()))
        else:
            member = self.registry.find(app_id, open_id)
            conns = [member.conn] if member is not None and member.room_id == room_id else []
        for conn in conns:
            self._send(conn, message)
        return bool(conns), self._take()

    # --- room management (issue 16; the rules are core/room_manager.py's) ---------------------------

    def _room_manage(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        sender = self._member(peer)
        receiver = self.room_management.operate(self.registry, sender, msg["receiver"], msg["operate_type"])
        self._send(peer.id, proto.room_manage_ok(msg["id"]))
        self._send(receiver.conn, proto.room_operate(sender.open_id, msg["operate_type"], msg["value"]))

    def _room_manage_result(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        receiver = self._member(peer)
        self._send(peer.id, proto.room_manage_ok(msg["id"]))
        sender = self.room_management.answered(self.registry, receiver, msg["sender"], msg["operate_type"])
        if sender is not None:
            self._send(sender.conn, proto.room_operate_result(receiver.open_id, msg["operate_type"], msg["value"],
                                                              msg["result"]))

    # --- room sharing (issue 16; the rules are core/room_sharing.py's) -----------------------------

    def _room_share(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        sender = self._member(peer)
        self._authorise(peer, msg["room_id"], None, proof)  # an AuthBuffer for the other room: 7006, 7005, 7012
        target = self.registry.member(sender.app_id, msg["room_id"], msg["open_id"])  # 10009 / 10010
        self.room_sharing.start(sender, target)
        if self.media is not None:
            self.media.share(sender, target)
        self._send(peer.id, proto.room_share_ok(msg["id"], "start"))
        self._send(target.conn, proto.room_sharing("start", sender.open_id, sender.room_id))

    def _room_share_stop(self, peer: Peer, msg: Json, now: Instant, proof: Proof | None) -> None:
        member = self._member(peer)
        if self.room_sharing.partner(member) is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION, "not sharing a room")
        self._end_sharing(member)
        self._send(peer.id, proto.room_share_ok(msg["id"], "stop"))

    def _end_sharing(self, member: Member) -> None:
        """The member's link ends (stop or departure): the relay unlinks, the partner is told."""
        partner = self.room_sharing.stop(member)
        if partner is None:
            return
        if self.media is not None:
            self.media.share(member, None)
        if self.registry.is_current(partner):
            self._send(partner.conn, proto.room_sharing("stop", member.open_id, member.room_id))

    @staticmethod
    def _auth_bits(msg: Json, proof: Proof | None) -> int | None:
        """The privilege map the entry was admitted with; None for a resume by token alone."""
        return proof.auth_bits if proof is not None and msg.get("auth_buffer") else None

    # --- rate limits ------------------------------------------------------------------------------

    def _rate_limit(self, peer: Peer, kind: str, mono: float) -> GmeError | None:
        """The 10005 refusal when ``kind`` is over its rate for this client (its connection, or once it
        proved its openid by an entry, that openid; for an entry also its address), else None and a
        token is spent. Token buckets, O(1): every request type has
        ``max_request_rate`` (burst: 2 s worth); entries have ``max_entry_rate`` per
        connection (burst: 10 s worth, at least ENTRY_BURST) and ``max_ip_entry_rate`` from one address."""
        s = self.settings
        entry = kind in _ENTRIES
        rate = s.max_entry_rate / 60 if entry else s.max_request_rate
        if rate <= 0:
            return None
        burst = max(ENTRY_BURST, 10 * rate) if entry else 2 * rate
        if peer.has_entered:
            bucket = self._member_buckets.bucket((peer.app_id, peer.open_id, kind), mono, rate, burst)
        else:
            found = peer.buckets.get(kind)
            bucket = found if found is not None else peer.buckets.setdefault(kind, TokenBucket(rate, burst, mono))
        per = "minute" if entry else "second"
        limit = s.max_entry_rate if entry else s.max_request_rate
        if not bucket.take(mono):
            return GmeError(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                            f"{RATE_LIMITED}: at most {limit:g} {kind} per {per} per client; "
                            f"retry in {bucket.wait(mono):.1f} s")
        if entry and peer.address and self._address_entries.rate > 0:
            shared = self._address_entries.bucket(peer.address, mono)
            if not shared.take(mono):
                return GmeError(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                                f"{RATE_LIMITED}: at most {s.max_ip_entry_rate} entries per "
                                f"minute from one address; retry in {shared.wait(mono):.1f} s")
        return None

    def _refuse_limited(self, peer: Peer, id: int | None, refusal: GmeError, now: Instant) -> None:
        """Answer a rate-limited request (10005, the connection stays); a connection that goes on
        sending regardless is dropped (``disconnect`` 10005), as Mumble's autoban does."""
        strikes = self._member_strikes.bucket((peer.app_id, peer.open_id), now.mono) if peer.has_entered else peer.strikes
        assert strikes is not None
        if strikes.take(now.mono):
            self._reply_error(peer.id, id, refusal.code, refusal.detail)
            return
        log.warning("dropping a client that ignores rate limits",
                    extra=fields(conn=peer.id, app_id=peer.app_id, open_id=peer.open_id, address=peer.address))
        member = self._current(peer)
        if member is not None:
            self._leave(member, now, "rate limit", voluntary=False)
        self._drop(peer.id, ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                   f"{RATE_LIMITED}: too many requests over the rate limit; reconnect later")

    # --- helpers ----------------------------------------------------------------------------------

    def _leave(self, member: Member, now: Instant, reason: str, *, voluntary: bool) -> None:
        """The member leaves its room (if still current), logged with ``reason``; leaving for good
        (exit, kick) also ends its room-manager privilege (a dropped member may resume with it)."""
        if self.registry.leave(member, now.wall, voluntary=voluntary):
            _log_departure(member, reason)
            self._end_sharing(member)
            if voluntary:
                self.room_management.left(member)

    @staticmethod
    def _proven_app(proof: Proof | None) -> App:
        """The app of a proof that did not refuse the client (its 7006 is raised here, on the loop)."""
        if proof is None:
            raise RuntimeError("this request is decided with the proof of its credentials (begin, prove)")
        if proof.refused is not None:
            raise proof.refused
        assert proof.app is not None
        return proof.app

    def _authorise(self, peer: Peer, room_id: str, resume_token: str | None, proof: Proof | None) -> App:
        """Per-entry app checks, in GME's order: 7006 (app, openid, AuthBuffer or resume token),
        7005 arrears, 7012 voice service off. A resume token that holds lets the member in without an
        AuthBuffer unless the server removed it since the token was issued: then 10003, what happened
        (the `disconnect` that said so may never have arrived)."""
        app = self._proven_app(proof)
        assert proof is not None
        _, open_id = self._identity(peer)
        token_holds = (resume_token is not None and proof.token_problem is None
                       and not self._evicted_after(app.app_id, open_id, room_id, resume_token, proof.removed_at))
        if not token_holds:
            if not proof.auth_checked:  # a resume with no AuthBuffer to fall back on
                if proof.token_problem is not None:
                    raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, proof.token_problem)
                raise GmeError(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, REMOVED)
            if proof.auth_error is not None:
                raise proof.auth_error
        if app.arrears:
            raise GmeError(ErrorCode.AV_ERR_CHARGE_OVERDUE, f"app {app.app_id} is in arrears")
        if not app.voice:
            raise GmeError(ErrorCode.AV_ERR_SERVICE_NOT_OPENED, f"voice chat is turned off for app {app.app_id}")
        return app

    def _evict(self, member: Member, now: float) -> None:
        horizon = now - self.settings.reconnect_give_up
        self._evicted = {k: t for k, t in self._evicted.items() if t > horizon}
        self._evicted[(member.app_id, member.open_id, member.room_id)] = now
        for listener in self.removal_listeners:
            listener(member, now)

    def _evicted_after(self, app_id: str, open_id: str, room_id: str, resume_token: str,
                       shared: float | None = None) -> bool:
        """Whether the server (this node, or ``shared``: any node of the cluster) removed this member
        after ``resume_token`` (already verified) was issued."""
        times = [t for t in (self._evicted.get((app_id, open_id, room_id)), shared) if t is not None]
        expiry = resume_token_expiry(resume_token)
        if not times or expiry is None:
            return False
        return max(times) >= expiry - self.settings.reconnect_give_up

    def _admitted_reply(self, peer: Peer, build: Callable[..., Json], id: int, app: App, member: Member,
                        now: Instant) -> Json:
        """The reply to an admission, with its media session; when no relay can take the room (every
        relay process is restarting) the member leaves again and the entry is refused with 10005."""
        try:
            return self._room_reply(build, id, app, member, now)
        except NoTarget as exc:
            self._leave(member, now, "no media relay", voluntary=True)
            peer.member = None
            raise GmeError(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                           f"{exc} (its relay processes are restarting); enter again in a moment") from None

    def _room_reply(self, build: Callable[..., Json], id: int, app: App, member: Member, now: Instant) -> Json:
        room = self.registry.room(member.app_id, member.room_id)
        expires = int(now.wall + self.settings.reconnect_give_up)
        muted = room.is_muted(member.open_id)
        return build(
            id,
            room.room_id,
            room.room_type,
            member.tinyid,
            [(m.tinyid, m.open_id) for m in room.others(member)],
            make_resume_token(app.key, app.app_id, member.open_id, room.room_id, expires),
            muted,
            self.media.open_session(member, muted) if self.media is not None else None,
        )

    @staticmethod
    def _identity(peer: Peer) -> tuple[str, str]:
        assert peer.app_id is not None and peer.open_id is not None
        return peer.app_id, peer.open_id

    def _current(self, peer: Peer) -> Member | None:
        """The connection's member, unless it has left, been kicked or been taken over."""
        member = peer.member
        return member if member is not None and self.registry.is_current(member) else None

    def _member(self, peer: Peer) -> Member:
        member = self._current(peer)
        if member is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM, "not in a room")
        return member

    def _send(self, conn: ConnId, message: Json) -> None:
        peer = self._peers.get(conn)
        if peer is None or not peer.closing:  # a connection the core does not know may live elsewhere
            self._out.append(Send(conn, message))

    def _close(self, conn: ConnId, code: int) -> None:
        peer = self._peers.get(conn)
        if peer is not None:
            if peer.closing:
                return
            peer.closing = True
        self._out.append(Close(conn, code))

    def _drop(self, conn: ConnId, code: ErrorCode, reason: str) -> None:
        """Tell a client it is out (``disconnect``), then close its connection."""
        peer = self._peers.get(conn)
        if peer is not None:
            peer.member = None
        self._send(conn, proto.disconnect(code, reason))
        self._close(conn, proto.CLOSE_NORMAL)

    def _reply_error(self, conn: ConnId, id: int | None, code: ErrorCode, message: str) -> None:
        self._send(conn, proto.error(id, code, message))

    def _take(self) -> Output:
        """The actions queued since the last call, followed by the ``members`` pushes of the registry's
        enter/leave events, and those events."""
        events = self.registry.take_events()
        self.game_voice.on_events(events)
        for event in events:
            push = proto.members_push("enter" if event.kind == "enter" else "exit",
                                      [(event.member.tinyid, event.member.open_id)])
            for other in event.others:
                self._send(other.conn, push)
        actions, self._out = self._out, []
        return Output(actions, events)
