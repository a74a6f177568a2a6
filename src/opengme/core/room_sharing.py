"""Room sharing (GME's cross-room talk, ``StartRoomSharing``), the server's rules, pure: which two
members are linked.

A member in room R1 links itself with a member of room R2 by showing an AuthBuffer for R2 (signed
for its own openid, so the app's backend decides who may reach into which room). While linked, each
one's voice also reaches every member of the other's room; the relay carries that out
(``Relay.link``). One link per member: starting another while linked (either side) is 10008.
Stopping, or either member leaving its room, ends the link; the other member is told with a
``room_sharing`` push (ROOM_SHARING_STOP, 24).
"""
from __future__ import annotations

from opengme.core.rooms import Member
from opengme.errors import ErrorCode, GmeError


class RoomSharing:
    """The links between members of two rooms, by (app, openid)."""

    def __init__(self) -> None:
        self._partners: dict[tuple[str, str], Member] = {}

    def partner(self, member: Member) -> Member | None:
        return self._partners.get((member.app_id, member.open_id))

    def start(self, sender: Member, target: Member) -> None:
        """Link ``sender`` with ``target``; GmeError 10002 within one room, 10008 when either is linked."""
        if target.room_id == sender.room_id:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT,
                           "room sharing links two rooms: the target is in your own room")
        for member in (sender, target):
            if self.partner(member) is not None:
                raise GmeError(ErrorCode.AV_ERR_SERVER_REPEATED_OPERATION,
                               f"{member.open_id} already shares a room: stop_room_sharing first")
        self._partners[(sender.app_id, sender.open_id)] = target
        self._partners[(target.app_id, target.open_id)] = sender

    def stop(self, member: Member) -> Member | None:
        """End ``member``'s link; the partner it had (None: it had none)."""
        partner = self._partners.pop((member.app_id, member.open_id), None)
        if partner is not None:
            self._partners.pop((partner.app_id, partner.open_id), None)
        return partner
