"""Invitations across a cluster's nodes (``redis_url``): GME's ``invite``/``invite_reply`` when the
inviter and the invitee may be connected to different nodes.

- **The record** lives in Redis under ``keys.invitation(app_id, invite_id)`` (JSON), expiring with the
  invitation (``invite_ttl``), so the answer is taken by whichever node the invitee is on and a restart
  of the node that issued it forgets nothing. An answer consumes it (``DEL``: of two answers racing, one wins).
- **The invitee** is found on this node first (a connection that proved its openid, as on one node),
  else in the other live nodes' room snapshots (``shared_records``: openid → room → node), and its node
  is asked over the bus (``bus.PUSH``) to hand it the ``invitation`` push. No per-member key
  is written on each entry for this: the snapshots are there already, at the cost of seeing a member
  who has just entered another node after at most ``PUBLISH_GAP`` + one heartbeat.
- **The inviter** gets ``invitation_result`` from the node that serves its room now (``keys.room``;
  ``bus.PUSH`` with the room), if it is still in that room; if it left, the invitation counts as cancelled
  (1802 on acceptance, 1803 on refusal), as on one node.

The error codes are the single node's (``opengme.core.rooms``). An accepted invitation's room is on
another node: the SDK's ``switch`` is redirected there and becomes an ``enter`` (docs/protocol.md).
Without ``redis_url`` none of this is set up and invitations stay in the node's memory.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from opengme.cluster.keys import invitation as invitation_key
from opengme.core.rooms import Invitation, Member, invitation_gone, pending_invitation
from opengme.core.signalling import Instant, Output
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.protocol import signalling as proto
from opengme.server import bus, cluster, shared_records, signalling

if TYPE_CHECKING:
    from opengme.server.app import Server
    from opengme.server.bus import Bus
    from opengme.server.cluster import Cluster
    from opengme.server.shared_records import SharedRecords
    from opengme.server.signalling import Signalling

log = logging.getLogger("opengme.cluster")

Json = dict[str, Any]


# --- the record (pure) -----------------------------------------------------------------------------


def record_text(invitation: Invitation) -> str:
    i = invitation
    return json.dumps({"invite_id": i.invite_id, "app_id": i.app_id, "room_id": i.room_id,
                       "from_open_id": i.from_open_id, "to_open_id": i.to_open_id, "expires_at": i.expires_at})


def parse_record(text: str | bytes | None) -> Invitation | None:
    """The invitation a record holds; None when there is none or it is unreadable (another version)."""
    if text is None:
        return None
    try:
        d = json.loads(text)
        return Invitation(str(d["invite_id"]), str(d["app_id"]), str(d["room_id"]), str(d["from_open_id"]),
                          str(d["to_open_id"]), float(d["expires_at"]))
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable invitation record in Redis; taken as unknown")
        return None


def _joined(*outputs: Output) -> Output:
    return Output([a for o in outputs for a in o.actions], [e for o in outputs for e in o.events])


# --- the node's end of it --------------------------------------------------------------------------


class ClusterInvitations:
    """Decides ``invite`` and ``invite_reply`` with the records in Redis and pushes over the bus."""

    def __init__(self, link: Cluster, sig: Signalling, records: SharedRecords, node_bus: Bus) -> None:
        self.cluster = link
        self.signalling = sig
        self.records = records
        self.bus = node_bus
        node_bus.handlers[bus.PUSH] = self._push

    async def handle(self, conn: int, message: Json, now: Instant) -> Output:
        core = self.signalling.core
        screened = core.screen(conn, message, now)
        if isinstance(screened, Output):
            return screened
        app_id, open_id, member = screened
        try:
            if message["type"] == "invite":
                return await self._invite(conn, message, member, now)
            return await self._reply(conn, message, app_id, open_id, now)
        except GmeError as exc:
            return core.answer(conn, message["id"], exc)
        except Exception as exc:  # Redis gone: one clear error, not a traceback
            log.warning("invitation failed", extra=fields(type=message["type"], app_id=app_id, error=str(exc)))
            return core.answer(conn, message["id"], GmeError(
                ErrorCode.AV_ERR_SERVER_FAILED, f"the cluster's Redis did not answer: {str(exc).rstrip('.')}"))

    async def _invite(self, conn: int, message: Json, inviter: Member | None, now: Instant) -> Output:
        core = self.signalling.core
        if inviter is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM, "not in a room")
        app_id, target = inviter.app_id, message["open_id"]
        here = core.online(app_id, target)
        node = None if here else await self._node_of(app_id, target)
        invitation = core.registry.new_invitation(inviter, target, here or node is not None, now.wall)
        key = invitation_key(self.cluster.keys, app_id, invitation.invite_id)
        ttl_ms = max(1, int(core.registry.invite_ttl * 1000))
        await self.cluster.redis.set(key, record_text(invitation), px=ttl_ms)
        push = proto.invitation(invitation.invite_id, inviter.open_id, inviter.room_id)
        delivered, pushed = await self._deliver(node, app_id, target, push)
        if not delivered:  # gone meanwhile
            await self.cluster.redis.delete(key)
            raise GmeError(ErrorCode.AV_ERR_INVITET_FAILED, f"openid {target!r} is not connected")
        log.info("invited", extra=fields(app_id=app_id, room_id=inviter.room_id, open_id=inviter.open_id,
                                         invitee=target, node=node or self.cluster.node_id))
        return _joined(pushed, core.answer(conn, message["id"], proto.invite_sent(message["id"], invitation.invite_id)))

    async def _reply(self, conn: int, message: Json, app_id: str, open_id: str, now: Instant) -> Output:
        core, redis = self.signalling.core, self.cluster.redis
        invite_id, accept = message["invite_id"], message["accept"]
        key = invitation_key(self.cluster.keys, app_id, invite_id)
        invitation = pending_invitation(parse_record(await redis.get(key)), app_id, open_id, invite_id, accept, now.wall)
        if not await redis.delete(key):  # another answer took it first
            raise invitation_gone(invite_id, open_id, accept)
        result = proto.invitation_result(invite_id, open_id, accept)
        owner = await self.records.owner(app_id, invitation.room_id)  # None: served here (or nowhere)
        delivered, pushed = await self._deliver(owner, app_id, invitation.from_open_id, result, invitation.room_id)
        if not delivered:  # the inviter left the room: cancelled, as on one node
            raise invitation_gone(invite_id, open_id, accept)
        reply = proto.invite_reply_ok(message["id"], invite_id, invitation.room_id if accept else None)
        return _joined(pushed, core.answer(conn, message["id"], reply))

    async def _node_of(self, app_id: str, open_id: str) -> str | None:
        """The live node another of whose rooms holds the openid, by the room snapshots."""
        for view in await self.records.other_rooms():
            if view.app_id == app_id and any(m.open_id == open_id for m in view.members):
                return view.node
        return None

    async def _deliver(self, node: str | None, app_id: str, open_id: str, message: Json,
                       room_id: str | None = None) -> tuple[bool, Output]:
        """A push to the openid (``room_id``: its member in that room) here when ``node`` is None, else
        through that node's bus; whether it was taken, and what is to be sent from here."""
        if node is None:
            return self.signalling.core.push(app_id, open_id, message, room_id)
        args: Json = {"app_id": app_id, "open_id": open_id, "message": message}
        if room_id is not None:
            args["room_id"] = room_id
        answer = await self.bus.call(node, bus.PUSH, args)
        return bool(answer.get("delivered")), Output()

    async def _push(self, args: Json) -> Json:
        room_id = args.get("room_id")
        delivered, output = self.signalling.core.push(str(args["app_id"]), str(args["open_id"]), dict(args["message"]),
                                                      None if room_id is None else str(room_id))
        self.signalling._apply(output)
        return {"delivered": delivered}


def setup(server: Server) -> None:
    """With ``redis_url``: take over ``invite``/``invite_reply`` (after cluster, signalling, shared
    records and the bus)."""
    link, node_bus, records = cluster.get(server), bus.get(server), shared_records.get(server)
    if link is None or node_bus is None or records is None:
        return
    sig = signalling.get(server)
    sig.invitations = ClusterInvitations(link, sig, records, node_bus).handle
