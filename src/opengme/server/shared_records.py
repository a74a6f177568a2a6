"""The live records every node of a cluster must agree on, kept in the cluster's Redis (``redis_url``).

- **Removed members.** A kick or a dissolve records (app, openid, room) → when, under
  ``keys.removed`` for ``reconnect_give_up`` seconds, so that an older resume token cannot bring the
  member back through *any* node, nor through this one after a restart. A resume's proof is completed
  with that time on the loop (``Signalling.proof_checks``), before the core decides the entry.
- **Admin nonces.** A signed admin request's nonce is claimed with ``SET NX`` under ``keys.nonce``, so a
  request replayed to another node is refused as it is on the node that saw it first. An API 3.0
  request that changes state (it has no nonce: its signature serves) keeps its first answer there, so a
  replay to any node gets that answer and is not carried out twice.
- **Who is where.** Every node publishes its rooms and their members to the hash ``keys.noderooms``
  (one JSON field per room), expiring after ``NODE_TTL`` and renewed every ``HEARTBEAT`` s: the rooms a
  member entered or left are rewritten within ``PUBLISH_GAP`` s, all of them every ``FULL_EVERY`` beats.
  The admin API, the API 3.0 and the console list the whole cluster by merging the live nodes'
  snapshots with their own rooms.
  ``owner`` finds the live node a room is placed on (``keys.room``), where the actions are sent (``bus``).

Without ``redis_url`` none of this is set up: ``get`` returns None and everything stays in memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.cluster.keys import HEARTBEAT, NODE_TTL
from opengme.core.rooms import Member, Room, RoomEvent
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.server import cluster, signalling

if TYPE_CHECKING:
    from opengme.core.signalling import Credentials, Proof
    from opengme.server.app import Server
    from opengme.server.cluster import Cluster
    from opengme.server.signalling import Signalling

log = logging.getLogger("opengme.cluster")

Json = dict[str, Any]
PUBLISH_GAP = 0.5
"""At least this long between two snapshots of a node's rooms: a burst of entries costs one write."""
FULL_EVERY = 10
"""Heartbeats between full snapshots; in between only the rooms a member entered or left (or a server
mute changed) are rewritten: what else changes (room type, game-voice positions) shows within that
many seconds."""
CHECK_TIMEOUT = 1.0
"""How long a resume waits for the cluster's removal record before deciding on this node's alone."""
ANSWER_WAIT = 2.0
"""How long a replayed API 3.0 request waits for the first one's answer from another node."""
_PENDING = b"pending"


# --- the rooms as every node sees them (pure) ------------------------------------------------------


@dataclass(frozen=True)
class MemberView:
    open_id: str
    tinyid: int
    entered_at: float
    muted: bool
    game: Json = field(default_factory=dict)  # game voice: team, mode, range, position (when used)


@dataclass(frozen=True)
class RoomView:
    """A room as listings show it, on this node or on another one (``node``)."""

    app_id: str
    room_id: str
    room_type: int
    created_at: float
    members: tuple[MemberView, ...]
    node: str = ""

    @staticmethod
    def from_json(data: Json) -> RoomView:
        members = tuple(MemberView(str(o), int(t), float(e), bool(mu), dict(g)) for o, t, e, mu, g in data["members"])
        return RoomView(str(data["app_id"]), str(data["room_id"]), int(data["room_type"]), float(data["created_at"]),
                        members, str(data.get("node", "")))


def room_json(room: Room, describe: Callable[[Member], Json], node: str) -> Json:
    """A room as a node's snapshot holds it (``RoomView.from_json`` reads it): members as
    ``[openid, tinyid, entered_at, muted, game]`` rows, compact at ten thousand members."""
    return {"app_id": room.app_id, "room_id": room.room_id, "room_type": int(room.room_type),
            "created_at": room.created_at, "node": node,
            "members": [[m.open_id, m.tinyid, m.entered_at, room.is_muted(m.open_id), describe(m)]
                        for m in room.members.values()]}


def view_of(room: Room, describe: Callable[[Member], Json], node: str = "") -> RoomView:
    members = tuple(MemberView(m.open_id, m.tinyid, m.entered_at, room.is_muted(m.open_id), describe(m))
                    for m in room.members.values())
    return RoomView(room.app_id, room.room_id, int(room.room_type), room.created_at, members, node)


def rooms_here(sig: Signalling, node: str = "", app_id: str | None = None) -> list[RoomView]:
    """This node's rooms (of one app, or all), as listings show them."""
    return [view_of(room, sig.core.game_voice.describe, node) for room in _rooms(sig, app_id)]


def _rooms(sig: Signalling, app_id: str | None = None) -> list[Room]:
    registry = sig.registry
    if app_id is not None:
        return registry.rooms(app_id)
    return [registry.room(a, r) for a, r in sorted({(m.app_id, m.room_id) for m in registry.members()})]


def room_field(app_id: str, room_id: str) -> str:
    """A room's field in its node's snapshot hash (AppIDs are digits: the first ``/`` splits)."""
    return f"{app_id}/{room_id}"


def parse_rooms(values: Iterable[bytes]) -> dict[bytes, RoomView]:
    """Snapshot fields (JSON) and the rooms they hold; an unreadable one (another version, say) is left out."""
    views = {}
    for value in values:
        try:
            views[value] = RoomView.from_json(json.loads(value))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable room in a node's snapshot in Redis; skipped")
    return views


def merge_rooms(views: Iterable[RoomView]) -> list[RoomView]:
    """One view per (app, room), sorted: the first view given of a room wins (give this node's first),
    and members only another node lists (a room split while it moves) are added after its own."""
    merged: dict[tuple[str, str], RoomView] = {}
    for view in views:
        key = (view.app_id, view.room_id)
        known = merged.get(key)
        if known is None:
            merged[key] = view
            continue
        seen = {m.open_id for m in known.members}
        extra = tuple(m for m in view.members if m.open_id not in seen)
        if extra:
            merged[key] = replace(known, members=known.members + extra)
    return [merged[key] for key in sorted(merged)]


# --- the Redis side --------------------------------------------------------------------------------


class SharedRecords:
    """This node's part of the shared records (see the module doc)."""

    def __init__(self, server: Server, link: Cluster) -> None:
        self.server = server
        self.cluster = link
        self.keys = link.keys
        self.signalling = signalling.get(server)
        self._pending: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._failing = False  # publishing failed last time: log once per outage, not once a second
        self._dirty: set[tuple[str, str]] = set()  # rooms to rewrite in the snapshot (app, room)
        self._read: dict[bytes, RoomView] = {}  # other nodes' snapshot fields as last read, parsed
        self.signalling.core.removal_listeners.append(self.on_removed)
        self.signalling.proof_checks.append(self.check_resume)
        self.signalling.room_listeners.append(self.on_room_event)

    async def start(self) -> None:
        await self.cluster.redis.sadd(self.keys.nodes, self.cluster.node_id)
        self._publisher = asyncio.create_task(self._publish_forever())

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        await self.flush()
        try:
            await self.cluster.redis.delete(self.keys.noderooms(self.cluster.node_id))
        except Exception as exc:  # stopping anyway; the snapshot expires by itself
            log.warning("could not withdraw the room snapshot", extra=fields(error=str(exc)))

    # --- removed members --------------------------------------------------------------------------

    def on_removed(self, member: Member, wall: float) -> None:
        """Core removal listener (kick, dissolve): write the record now, on the loop, without waiting."""
        task = asyncio.get_running_loop().create_task(self._record_removal(member, wall))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_removal(self, member: Member, wall: float) -> None:
        key = self.keys.removed(member.app_id, member.open_id, member.room_id)
        try:
            await self.cluster.redis.set(key, repr(wall), ex=max(1, math.ceil(self.server.settings.reconnect_give_up)))
        except Exception as exc:
            log.warning("could not share a removal; only this node refuses the member's older resume tokens",
                        extra=fields(app_id=member.app_id, room_id=member.room_id, open_id=member.open_id,
                                     error=str(exc)))

    async def flush(self) -> None:
        """Wait until the removals made so far are written (an admin action answers after that)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def check_resume(self, credentials: Credentials, proof: Proof) -> Proof:
        """Signalling proof check: a resume token that holds learns when any node removed the member."""
        c = credentials
        if c.resume_token is None or c.room_id is None or proof.app is None or proof.refused is not None \
                or proof.token_problem is not None:
            return proof
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                raw = await self.cluster.redis.get(self.keys.removed(proof.app.app_id, c.open_id, c.room_id))
            return proof if raw is None else replace(proof, removed_at=float(raw))
        except Exception as exc:  # Redis away or slow (or a record no node wrote): this node's own record decides
            log.warning("could not read the cluster's removal record; deciding on this node's",
                        extra=fields(app_id=c.app_id, room_id=c.room_id, open_id=c.open_id, error=repr(exc)))
            return proof

    # --- admin nonces -----------------------------------------------------------------------------

    async def claim_nonce(self, key_id: str, nonce: str, keep: float) -> bool:
        """Claim a signed request's nonce for the whole cluster; False when a node already saw it."""
        claimed = await self.cluster.redis.set(self.keys.nonce(key_id, nonce), b"1", nx=True, ex=max(1, math.ceil(keep)))
        return bool(claimed)

    async def first_answer(self, key_id: str, nonce: str, keep: float) -> Json | None:
        """API 3.0 (no nonce: its signature is one): None when this node is the first to see the
        request (carry it out, then ``keep_answer`` or ``forget_answer``), else the first answer,
        waiting up to ``ANSWER_WAIT`` s for one another node is still making (TimeoutError after);
        GmeError 10001 when Redis does not answer (the request is refused: it might run twice)."""
        redis, key = self.cluster.redis, self.keys.nonce(key_id, nonce)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_WAIT
        while True:
            try:
                if await redis.set(key, _PENDING, nx=True, ex=max(1, math.ceil(keep))):
                    return None
                raw = await redis.get(key)
            except Exception as exc:
                raise _unreachable(exc) from None
            if raw is not None and raw != _PENDING:
                answer: Json = json.loads(raw)
                return answer
            if loop.time() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.05)

    async def keep_answer(self, key_id: str, nonce: str, answer: Json) -> None:
        await self._answer_record(self.cluster.redis.set(self.keys.nonce(key_id, nonce), json.dumps(answer),
                                                         xx=True, keepttl=True))

    async def forget_answer(self, key_id: str, nonce: str) -> None:
        """The first attempt failed: the same request may be made again (as on a single node)."""
        await self._answer_record(self.cluster.redis.delete(self.keys.nonce(key_id, nonce)))

    @staticmethod
    async def _answer_record(write: Awaitable[object]) -> None:
        """The request was carried out (or failed) already: a lost record only weakens replay refusal."""
        try:
            await write
        except Exception as exc:
            log.warning("could not record an API 3.0 answer for the cluster", extra=fields(error=str(exc)))

    # --- who is where -----------------------------------------------------------------------------

    def on_room_event(self, event: RoomEvent) -> None:
        self.changed(event.member.app_id, event.member.room_id)

    def changed(self, app_id: str, room_id: str) -> None:
        """A room of this node changed (an entry, a departure, a server mute): publish it soon."""
        self._dirty.add((app_id, room_id))
        self._changed.set()

    async def publish(self, full: bool) -> None:
        """Bring this node's snapshot (a hash: one JSON field per room) up to date: every room (then
        encoded on a worker thread), or the rooms that changed since the last time; renew its expiry."""
        node, redis = self.cluster.node_id, self.cluster.redis
        key, ttl = self.keys.noderooms(node), int(NODE_TTL * 1000)
        describe = self.signalling.core.game_voice.describe
        dirty, self._dirty = self._dirty, set()
        async with redis.pipeline(transaction=True) as pipe:
            if full:
                rows = {room_field(r.app_id, r.room_id): room_json(r, describe, node) for r in _rooms(self.signalling)}
                fields_ = await self.server.run_blocking(lambda: {f: json.dumps(row) for f, row in rows.items()})
                pipe.delete(key)
                if fields_:
                    pipe.hset(key, mapping=fields_)
            for app_id, room_id in [] if full else sorted(dirty):
                try:
                    room = self.signalling.registry.room(app_id, room_id)
                except GmeError:  # emptied: gone
                    pipe.hdel(key, room_field(app_id, room_id))
                else:
                    pipe.hset(key, room_field(app_id, room_id), json.dumps(room_json(room, describe, node)))
            pipe.pexpire(key, ttl)
            kept = (await pipe.execute())[-1]
        if not kept and not full and _rooms(self.signalling):  # the snapshot expired (Redis restarted): anew
            await self.publish(True)

    async def _publish_forever(self) -> None:
        beats = 0
        while True:
            self._changed.clear()
            full, beats = beats % FULL_EVERY == 0, beats + 1
            try:
                await self.publish(full)
                if self._failing:
                    log.info("room snapshot published again")
                self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("could not publish this node's rooms; other nodes will not list them",
                                extra=fields(error=str(exc)))
                self._failing = True
                beats = 0  # what changed meanwhile is lost: the next snapshot is a full one
            await asyncio.sleep(PUBLISH_GAP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT - PUBLISH_GAP)

    async def other_rooms(self) -> list[RoomView]:
        """The rooms the other live nodes published (a node's snapshot expires with its heartbeats).
        Only the rooms that changed since the last call are parsed (the console asks twice a second)."""
        redis = self.cluster.redis
        try:
            ids = sorted(i.decode() for i in await redis.smembers(self.keys.nodes) if i.decode() != self.cluster.node_id)
            async with redis.pipeline(transaction=False) as pipe:
                for node in ids:
                    pipe.hvals(self.keys.noderooms(node))
                values = [v for node_values in await pipe.execute() for v in node_values]
        except Exception as exc:
            raise _unreachable(exc) from None
        fresh = [v for v in values if v not in self._read]
        # Many new rooms (a node's first full snapshot) are parsed on a worker thread, a few on the loop.
        parsed = await self.server.run_blocking(parse_rooms, fresh) if len(fresh) > 50 else parse_rooms(fresh)
        self._read = {v: self._read[v] for v in values if v in self._read} | parsed
        return list(self._read.values())

    async def owner(self, app_id: str, room_id: str) -> str | None:
        """The live node other than this one that ``keys.room`` places the room on, else None."""
        redis = self.cluster.redis
        try:
            raw = await redis.get(self.keys.room(app_id, room_id))
            node: str | None = raw.decode() if raw is not None else None
            if node is None or node == self.cluster.node_id or not await self.cluster.alive(node):
                return None
        except Exception as exc:
            raise _unreachable(exc) from None
        return node


def _unreachable(exc: Exception) -> GmeError:
    return GmeError(ErrorCode.AV_ERR_SERVER_FAILED, f"the cluster's Redis did not answer: {str(exc).rstrip('.')}")


SHARED_RECORDS: web.AppKey[SharedRecords] = web.AppKey("opengme.shared_records")


def setup(server: Server) -> None:
    """With ``redis_url``: share removals, nonces and room snapshots (after cluster and signalling)."""
    link = cluster.get(server)
    if link is None:
        return
    records = SharedRecords(server, link)
    server.web_app[SHARED_RECORDS] = records
    server.on_start.append(records.start)
    server.on_stop.append(records.stop)


def get(server: Server) -> SharedRecords | None:
    return server.web_app.get(SHARED_RECORDS)
