"""Voice-chat rooms as plain state: members, tinyids, room types, mutes, liveness and invitations.

No sockets, tasks or clocks: every call that depends on time takes ``now``. The server turns the
return values and the recorded ``RoomEvent``s into messages. Rules (GME's room rules, as docs/protocol.md states them):

- A room is keyed by (app_id, room_id); it appears with its first member and vanishes with the last.
  The first member's room type is the room's; only ``change_room_type`` changes it afterwards.
- One openid is in at most one room per app. A second entry with the same openid *takes over*: the
  old member is removed (the server tells it ``disconnect`` 10003) and the new one enters.
- tinyids are assigned here, unique across the registry and never 0.
- A refused call raises ``GmeError`` and changes nothing; the one exception is ``switch``'s 2002,
  returned in its result because the old room has been left by then.
- A server mute belongs to the room: it survives the member's connection dropping and reconnecting
  (GME: "until the user exits or is unmuted") and is cleared by a voluntary exit, a kick or the room
  vanishing.
- Invitations expire after ``invite_ttl`` (``expire_invitations`` drops them) and are cancelled when
  their inviter leaves; every operation on them is O(1) in the number pending.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType

DEFAULT_INVITE_TTL = 60.0

ConnId = int
"""The server's opaque id of a client connection: how a member is reached (through the server's
delivery of messages, wherever that connection lives)."""


@dataclass(eq=False)
class Member:
    """One client in one room, reached through connection ``conn``."""

    app_id: str
    room_id: str
    open_id: str
    tinyid: int
    conn: ConnId
    entered_at: float


@dataclass(eq=False)
class Room:
    app_id: str
    room_id: str
    room_type: RoomType
    created_at: float
    members: dict[str, Member] = field(default_factory=dict)  # by openid, in entry order
    muted: set[str] = field(default_factory=set)  # openids muted by the server

    def others(self, member: Member) -> list[Member]:
        return [m for m in self.members.values() if m is not member]

    def is_muted(self, open_id: str) -> bool:
        return open_id in self.muted


@dataclass(frozen=True)
class RoomEvent:
    """A member entered or left; ``others`` are who was in the room with it at that moment."""

    kind: Literal["enter", "leave"]
    member: Member
    at: float
    others: tuple[Member, ...]


@dataclass(frozen=True)
class Entered:
    member: Member
    room: Room
    displaced: Member | None  # the earlier client with the same openid, now removed


@dataclass(frozen=True)
class Switched:
    """``entered`` is None when the new room refused the member (``error`` 2002, old room left)."""

    left: Member
    entered: Entered | None
    error: GmeError | None


@dataclass
class Invitation:
    invite_id: str
    app_id: str
    room_id: str
    from_open_id: str
    to_open_id: str
    expires_at: float


def pending_invitation(
    invitation: Invitation | None, app_id: str, open_id: str, invite_id: str, accept: bool, now: float
) -> Invitation:
    """The invitation an answer of ``open_id`` may consume: an unknown (None), expired or cancelled one,
    or one addressed to someone else, gives 1802 on acceptance and 1803 on refusal."""
    if invitation is None or invitation.app_id != app_id or invitation.to_open_id != open_id or invitation.expires_at <= now:
        raise invitation_gone(invite_id, open_id, accept)
    return invitation


def invitation_gone(invite_id: str, open_id: str, accept: bool) -> GmeError:
    code = ErrorCode.AV_ERR_ACCEPTT_FAILED if accept else ErrorCode.AV_ERR_REFUSE_FAILED
    return GmeError(code, f"no pending invitation {invite_id!r} for openid {open_id!r} (unknown, expired or cancelled)")


class RoomRegistry:
    """Every room of every app on this server."""

    def __init__(
        self, max_rooms: int = 0, max_members_per_room: int = 0, invite_ttl: float = DEFAULT_INVITE_TTL
    ) -> None:
        self.max_rooms = max_rooms  # 0 = unlimited (over all apps)
        self.max_members_per_room = max_members_per_room  # 0 = unlimited
        self.invite_ttl = invite_ttl
        self._rooms: dict[tuple[str, str], Room] = {}
        self._by_open_id: dict[tuple[str, str], Member] = {}
        self._by_tinyid: dict[int, Member] = {}
        self._next_tinyid = 1
        self._invitations: dict[str, Invitation] = {}  # by invite id, oldest first
        self._sent: dict[tuple[str, str], set[str]] = {}  # (app, inviter openid) -> its pending invite ids
        self._events: list[RoomEvent] = []

    # --- queries --------------------------------------------------------------------------------

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    @property
    def member_count(self) -> int:
        return len(self._by_open_id)

    def members(self) -> list[Member]:
        """Every member of every room (a copy)."""
        return list(self._by_open_id.values())

    def rooms(self, app_id: str) -> list[Room]:
        return [r for (a, _), r in self._rooms.items() if a == app_id]

    def room(self, app_id: str, room_id: str) -> Room:
        room = self._rooms.get((app_id, room_id))
        if room is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST, f"no room {room_id!r} in app {app_id}")
        return room

    def member(self, app_id: str, room_id: str, open_id: str) -> Member:
        member = self.room(app_id, room_id).members.get(open_id)
        if member is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST, f"openid {open_id!r} is not in room {room_id!r}")
        return member

    def find(self, app_id: str, open_id: str) -> Member | None:
        """The openid's member in whichever room of the app it is in."""
        return self._by_open_id.get((app_id, open_id))

    def is_current(self, member: Member) -> bool:
        """False once the member left or was taken over (its connection may still be closing)."""
        return self._by_open_id.get((member.app_id, member.open_id)) is member

    def open_id_of(self, app_id: str, tinyid: int) -> str | None:
        member = self._by_tinyid.get(tinyid)
        return member.open_id if member is not None and member.app_id == app_id else None

    def tinyid_of(self, app_id: str, open_id: str) -> int | None:
        member = self.find(app_id, open_id)
        return member.tinyid if member is not None else None

    def take_events(self) -> list[RoomEvent]:
        """The enter/leave events recorded since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # --- entering and leaving -------------------------------------------------------------------

    def enter(self, app_id: str, room_id: str, open_id: str, room_type: RoomType, conn: ConnId, now: float) -> Entered:
        """Add a member; raises 10005 on a room/member limit (and then nobody is displaced)."""
        displaced = self.find(app_id, open_id)
        self._check_capacity(app_id, room_id, displaced)
        if displaced is not None:
            self._remove(displaced, now, clear_mute=False)
        return self._add(app_id, room_id, open_id, RoomType(room_type), conn, now, displaced)

    def leave(self, member: Member, now: float, *, voluntary: bool) -> bool:
        """Remove a member that is still current; ``voluntary`` (exit, kick) also clears its mute."""
        if not self.is_current(member):
            return False
        self._remove(member, now, clear_mute=voluntary)
        return True

    def switch(self, member: Member, room_id: str, conn: ConnId, now: float) -> Switched:
        """Move to another room: 2001 raised when refused before leaving (same room, not in a room);
        2002 returned when the old room was left and the new one refused."""
        if not self.is_current(member):
            raise GmeError(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, "not in a room")
        if member.room_id == room_id:
            raise GmeError(ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM, f"already in room {room_id!r}")
        room_type = self._rooms[(member.app_id, member.room_id)].room_type
        self._remove(member, now, clear_mute=True)
        try:
            self._check_capacity(member.app_id, room_id, None)
        except GmeError as exc:
            return Switched(member, None, GmeError(ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED, exc.detail))
        entered = self._add(member.app_id, room_id, member.open_id, room_type, conn, now, None)
        return Switched(member, entered, None)

    def dissolve(self, app_id: str, room_id: str, now: float) -> list[Member]:
        """Remove everyone; the recorded leave events have no ``others`` (nobody is left to tell)."""
        room = self.room(app_id, room_id)
        removed = list(room.members.values())
        for member in removed:
            self._remove(member, now, clear_mute=True, tell_others=False)
        return removed

    def _check_capacity(self, app_id: str, room_id: str, leaving: Member | None) -> None:
        room = self._rooms.get((app_id, room_id))
        if room is None:
            freed = leaving is not None and len(self._rooms[(leaving.app_id, leaving.room_id)].members) == 1
            if self.max_rooms and len(self._rooms) - int(freed) >= self.max_rooms:
                raise GmeError(
                    ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                    f"the server's room limit ({self.max_rooms}) is reached",
                )
            return
        staying = len(room.members) - int(leaving is not None and leaving.room_id == room_id)
        if self.max_members_per_room and staying >= self.max_members_per_room:
            raise GmeError(
                ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                f"room {room_id!r} is full ({self.max_members_per_room} members)",
            )

    def _add(
        self, app_id: str, room_id: str, open_id: str, room_type: RoomType, conn: ConnId, now: float,
        displaced: Member | None,
    ) -> Entered:
        room = self._rooms.get((app_id, room_id))
        if room is None:
            room = self._rooms[(app_id, room_id)] = Room(app_id, room_id, room_type, now)
        member = Member(app_id, room_id, open_id, self._new_tinyid(), conn, now)
        others = tuple(room.members.values())
        room.members[open_id] = member
        self._by_open_id[(app_id, open_id)] = member
        self._by_tinyid[member.tinyid] = member
        self._events.append(RoomEvent("enter", member, now, others))
        return Entered(member, room, displaced)

    def _remove(self, member: Member, now: float, *, clear_mute: bool, tell_others: bool = True) -> None:
        key = (member.app_id, member.room_id)
        room = self._rooms[key]
        del room.members[member.open_id]
        del self._by_open_id[(member.app_id, member.open_id)]
        del self._by_tinyid[member.tinyid]
        if clear_mute:
            room.muted.discard(member.open_id)
        if not room.members:
            del self._rooms[key]
        self._cancel_invitations(member)
        others = tuple(room.members.values()) if tell_others else ()
        self._events.append(RoomEvent("leave", member, now, others))

    def _new_tinyid(self) -> int:
        while self._next_tinyid in self._by_tinyid or self._next_tinyid == 0:
            self._next_tinyid = (self._next_tinyid + 1) % 2**32
        tinyid = self._next_tinyid
        self._next_tinyid = (tinyid + 1) % 2**32
        return tinyid

    # --- room type and mutes --------------------------------------------------------------------

    def change_room_type(self, member: Member, room_type: RoomType) -> bool:
        """Change the type of the member's room for everyone; False when it already had that type."""
        room = self._current_room(member)
        if room.room_type == room_type:
            return False
        room.room_type = RoomType(room_type)
        return True

    def set_muted(self, app_id: str, room_id: str, open_id: str, muted: bool) -> Member:
        """Server mute (GME ModifyUserMicStatus); 10009 unknown room, 10010 not a member."""
        member = self.member(app_id, room_id, open_id)
        room = self._rooms[(app_id, room_id)]
        (room.muted.add if muted else room.muted.discard)(open_id)
        return member

    def _current_room(self, member: Member) -> Room:
        if not self.is_current(member):
            raise GmeError(ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM, "not in a room")
        return self._rooms[(member.app_id, member.room_id)]

    # --- invitations ----------------------------------------------------------------------------

    def invite(self, inviter: Member, open_id: str, invitee_online: bool, now: float) -> Invitation:
        """Invite ``open_id`` into the inviter's room: 10006 when the inviter is not in a room,
        1801 when the invitee is not connected or already in that room."""
        invitation = self.new_invitation(inviter, open_id, invitee_online, now)
        self._invitations[invitation.invite_id] = invitation
        self._sent.setdefault((inviter.app_id, inviter.open_id), set()).add(invitation.invite_id)
        return invitation

    def reply_invitation(self, app_id: str, open_id: str, invite_id: str, accept: bool, now: float) -> Invitation:
        """Answer an invitation addressed to ``open_id``; an unknown, expired or cancelled one gives
        1802 on acceptance and 1803 on refusal. Either answer consumes it."""
        invitation = pending_invitation(self._invitations.get(invite_id), app_id, open_id, invite_id, accept, now)
        self._drop_invitation(invitation)
        return invitation

    def new_invitation(self, inviter: Member, open_id: str, invitee_online: bool, now: float) -> Invitation:
        """``invite``'s checks and a fresh invitation, not kept here (a cluster keeps it in Redis)."""
        room = self._current_room(inviter)
        if not invitee_online:
            raise GmeError(ErrorCode.AV_ERR_INVITET_FAILED, f"openid {open_id!r} is not connected")
        if open_id in room.members:
            raise GmeError(ErrorCode.AV_ERR_INVITET_FAILED, f"openid {open_id!r} is already in room {room.room_id!r}")
        return Invitation(
            secrets.token_hex(8), inviter.app_id, inviter.room_id, inviter.open_id, open_id, now + self.invite_ttl
        )

    def expire_invitations(self, now: float) -> int:
        """Forget invitations whose time is over (the server calls it now and then); returns how many."""
        expired = 0
        while self._invitations:  # oldest first (one TTL for all): stop at the first one alive
            invitation = next(iter(self._invitations.values()))
            if invitation.expires_at > now:
                break
            self._drop_invitation(invitation)
            expired += 1
        return expired

    @property
    def invitation_count(self) -> int:
        return len(self._invitations)

    def _cancel_invitations(self, inviter: Member) -> None:
        for invite_id in self._sent.pop((inviter.app_id, inviter.open_id), ()):
            del self._invitations[invite_id]

    def _drop_invitation(self, invitation: Invitation) -> None:
        del self._invitations[invitation.invite_id]
        key = (invitation.app_id, invitation.from_open_id)
        sent = self._sent[key]
        sent.discard(invitation.invite_id)
        if not sent:
            del self._sent[key]
