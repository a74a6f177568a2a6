"""Room management (GME's ``ITMGRoomManager``), the server's rules, pure: who may operate whose audio,
and which results may travel back.

GME does not say who may control whom. OpenGME's rule: the **AuthBuffer's privilege map** decides.
A member whose entry AuthBuffer has bit ``PRIVILEGE_ROOM_MANAGER`` (0x100) set may operate every
other member of its room; one without it gets ``error`` 10003 (AV_ERR_SERVER_NO_PERMISSION) and its
SDK reports ROOM_MANAGEMENT_OPERATOR (6000) with that ``Result``. GME's default privilege map,
``0xFFFFFFFF`` (what ``gen_auth_buffer`` and GME's own signing samples use), has every bit, so by
default every member may manage, as with GME; an app that wants managers signs its players'
AuthBuffers with a map without that bit (for example ``0xFF``, AVSDK's classic bits; ``opengme
authbuffer gen --auth-bits 0xFF``) and its managers' with it. GME's v1 format carries only the full
map (it has no MAC, so decoding insists on it): such an app signs v2 buffers and may turn v1 off
(``opengme app set APPID --v1-auth off``). The privilege is the entry's: a resume (no AuthBuffer) keeps it, a switch takes
the new AuthBuffer's, leaving the room forgets it.

A receiver's result is passed back only for an operation the server forwarded to it and not yet
answered (at most MAX_OUTSTANDING per manager), so a member cannot send results nobody asked for.
"""
from __future__ import annotations

from collections import Counter
from enum import IntEnum
from typing import Final

from opengme.core.rooms import Member, RoomRegistry
from opengme.errors import ErrorCode, GmeError

PRIVILEGE_ROOM_MANAGER: Final = 0x100
MAX_OUTSTANDING: Final = 64
PRUNE_AT: Final = 10_000
"""Privileges kept for members that left without exiting (they may resume) are pruned past this."""


class OperateType(IntEnum):
    """GME's ``ITMG_ROOM_MANAGEMENT_*`` OperateType values (event 6000)."""

    CAPTURE = 0
    PLAY = 1
    SEND = 2
    RECV = 3
    MIC = 4
    SPEAKER = 5
    GET_MIC_STATE = 6
    GET_SPEAKER_STATE = 7
    FORBID = 8


Key = tuple[str, str, str, str, int]  # app, room, sender, receiver, operate type


class RoomManagement:
    """The privileges of the members in rooms and the operations awaiting their results."""

    def __init__(self) -> None:
        self._managers: set[tuple[str, str, str]] = set()  # (app, room, openid)
        self._outstanding: Counter[Key] = Counter()
        self._per_sender: Counter[tuple[str, str, str]] = Counter()

    def entered(self, registry: RoomRegistry, member: Member, auth_bits: int | None) -> None:
        """Record the privilege of an entry (None: a resume, which keeps what the member had)."""
        if len(self._managers) > PRUNE_AT:  # members that dropped and never came back
            self._managers = {k for k in self._managers if registry.find(k[0], k[2]) is not None}
        if auth_bits is None:
            return
        key = (member.app_id, member.room_id, member.open_id)
        if auth_bits & PRIVILEGE_ROOM_MANAGER:
            self._managers.add(key)
        else:
            self._managers.discard(key)

    def left(self, member: Member) -> None:
        """The member left for good: its privilege and its pending operations go."""
        self._managers.discard((member.app_id, member.room_id, member.open_id))
        for key in [k for k in self._outstanding if k[:3] == (member.app_id, member.room_id, member.open_id)]:
            self._per_sender[key[:3]] -= self._outstanding.pop(key)

    def operate(self, registry: RoomRegistry, sender: Member, receiver_id: str, operate_type: int) -> Member:
        """The member to forward ``operate_type`` to; GmeError 10003 without the privilege, 10010
        when the receiver is not in the sender's room (or is the sender), 10005 over MAX_OUTSTANDING."""
        if (sender.app_id, sender.room_id, sender.open_id) not in self._managers:
            raise GmeError(ErrorCode.AV_ERR_SERVER_NO_PERMISSION,
                           "room management needs the room-manager privilege (AuthBuffer privilege bit 0x100)")
        if receiver_id == sender.open_id:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST, "a room manager operates other members")
        receiver = registry.member(sender.app_id, sender.room_id, receiver_id)
        by = (sender.app_id, sender.room_id, sender.open_id)
        if self._per_sender[by] >= MAX_OUTSTANDING:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED,
                           f"{MAX_OUTSTANDING} operations await their results; wait for them")
        self._outstanding[(*by, receiver_id, int(operate_type))] += 1
        self._per_sender[by] += 1
        return receiver

    def answered(self, registry: RoomRegistry, receiver: Member, sender_id: str, operate_type: int) -> Member | None:
        """The sender to pass a result to, when it asked for this operation and is still in the room."""
        key = (receiver.app_id, receiver.room_id, sender_id, receiver.open_id, int(operate_type))
        if not self._outstanding[key]:
            return None
        self._outstanding[key] -= 1
        self._per_sender[key[:3]] -= 1
        if not self._outstanding[key]:
            del self._outstanding[key]
        sender = registry.find(receiver.app_id, sender_id)
        return sender if sender is not None and sender.room_id == receiver.room_id else None
