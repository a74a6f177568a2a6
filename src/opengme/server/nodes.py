"""Several ``opengme serve`` nodes as one service (issue 18): the node registry and room placement in
Redis, and the ``redirect`` of an entry to the node that serves the room. A no-op without ``redis_url``.

- Registry: every ``HEARTBEAT`` s the node writes its hash ``node:<id>`` {url, udp_port, rooms,
  members, started}, expiring after ``NODE_TTL`` s, adds its id to ``nodes`` and reads the others'
  hashes back (its ``ClusterView``). A hash that expired is a dead node. A graceful stop deletes the
  hash and the room keys this node owns.
- Placement: ``room:<app>:<room>`` names the node serving the room. An entry asks :meth:`Nodes.route`:
  one Lua script keeps a live owner, or (no owner, or a dead one) places the room on the least-loaded
  live node (:func:`opengme.core.placement.choose` over the view's member counts) — atomically, so
  nodes that race agree. A room placed on another node that no member reaches expires after
  ``PLACED_TTL``; once its first member is in, the key lasts until the room empties here
  (compare-and-delete: only while it still names this node).
- The decisions without Redis are :class:`ClusterView`'s (pure, tested directly); :class:`Nodes` is
  the thin asyncio/Redis adapter.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opengme.cluster.keys import HEARTBEAT, NODE_TTL
from opengme.core.placement import choose
from opengme.core.rooms import RoomEvent
from opengme.errors import GmeError
from opengme.logs import fields

if TYPE_CHECKING:
    from opengme.server.app import Server
    from opengme.server.cluster import Cluster

log = logging.getLogger("opengme.cluster")

PLACED_TTL = 10.0
"""Seconds a room placed on another node stays placed there before its first member arrives."""

# KEYS[1] room key; ARGV: node key prefix, this node's id, the candidate, ms to keep a placement on
# another node. Returns the owner: a live one kept (made lasting when it is this node), else the candidate.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and redis.call('EXISTS', ARGV[1] .. owner) == 1 then
  if owner == ARGV[2] then redis.call('PERSIST', KEYS[1]) end
  return owner
end
if ARGV[3] == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return ARGV[3]
"""
# KEYS[1] room key; ARGV[1] this node's id: delete only while the key still names this node.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class NodeInfo:
    """One live node as its heartbeat described it."""

    node_id: str
    url: str
    udp_port: int = 0
    rooms: int = 0
    members: int = 0
    started: float = 0.0

    @classmethod
    def from_hash(cls, node_id: str, raw: Mapping[Any, Any]) -> NodeInfo | None:
        """From a ``node:<id>`` hash as redis-py reads it (bytes); None when it expired or is not one."""
        values = {_text(k): _text(v) for k, v in raw.items()}
        if not values.get("url"):
            return None
        try:
            return cls(node_id, values["url"], int(values.get("udp_port", 0)), int(values.get("rooms", 0)),
                       int(values.get("members", 0)), float(values.get("started", 0.0)))
        except ValueError:
            return None

    def as_hash(self) -> dict[str, str]:
        return {"url": self.url, "udp_port": str(self.udp_port), "rooms": str(self.rooms),
                "members": str(self.members), "started": repr(self.started)}


@dataclass(frozen=True)
class Redirect:
    """The room is served elsewhere: send the client to ``url``."""

    node: str
    url: str


@dataclass
class ClusterView:
    """This node's view of the live nodes (refreshed each heartbeat) and the placement decisions
    made from it. Pure: no Redis, no clock."""

    me: str
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    placed: dict[str, float] = field(default_factory=dict)  # members placed since the last refresh

    def update(self, nodes: Mapping[str, NodeInfo]) -> None:
        self.nodes = dict(nodes)
        self.placed = {}

    def candidate(self) -> str:
        """Where a new room goes: the least-loaded live node (this node even before its first
        heartbeat is read back), this node when it ties with the least loaded (no redirect needed;
        the Redis claim makes racing nodes agree anyway). Each placement counts as a member until the
        next refresh, so a burst of new rooms between two heartbeats spreads instead of all going to
        one node."""
        loads = {node_id: float(info.members) for node_id, info in self.nodes.items()}
        loads.setdefault(self.me, 0.0)
        for node_id, extra in self.placed.items():
            if node_id in loads:
                loads[node_id] += extra
        chosen = choose(loads)
        if loads[self.me] <= loads[chosen]:
            chosen = self.me
        self.placed[chosen] = self.placed.get(chosen, 0.0) + 1.0
        return chosen

    def decide(self, owner: str, url: str | None = None) -> Redirect | None:
        """After the claim: None when this node serves the room, else where to send the client
        (``url`` when the owner's is not in the view yet)."""
        if owner == self.me:
            return None
        info = self.nodes.get(owner)
        target = info.url if info is not None else url
        if not target:
            raise LookupError(f"node {owner} has no URL")
        return Redirect(owner, target)

    def urls(self) -> list[str]:
        """The live nodes' URLs (this one's included), for ``hello_ok``."""
        return sorted({info.url for info in self.nodes.values()})


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nodes:
    """The registry heartbeat, placement and release of rooms in Redis for one node."""

    def __init__(self, server: Server, cluster: Cluster) -> None:
        self.server = server
        self.cluster = cluster
        self.keys = cluster.keys
        self.view = ClusterView(cluster.node_id)
        self.started = time.time()
        self.owned: set[tuple[str, str]] = set()  # rooms whose key names this node for good
        self._claim = cluster.redis.register_script(_CLAIM)
        self._release = cluster.redis.register_script(_RELEASE)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._beat: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the signalling (set up after this part) and register before the node says it listens."""
        from opengme.server import signalling

        self.signalling = signalling.get(self.server)
        self.signalling.router = self.route
        self.signalling.core.node_urls = self.view.urls
        self.signalling.room_listeners.append(self.on_room_event)
        await self.heartbeat()  # registered (and its view read) before the node says it listens
        self._beat = asyncio.create_task(self._beat_forever())

    async def stop(self) -> None:
        """Leave the cluster: the hash and the room keys naming this node go (members reconnect elsewhere)."""
        if self._beat is not None:
            self._beat.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        import redis

        try:
            for app_id, room_id in sorted(self.owned):
                await self._release(keys=[self.keys.room(app_id, room_id)], args=[self.view.me])
            await self.cluster.redis.delete(self.keys.node(self.view.me))
            await self.cluster.redis.srem(self.keys.nodes, self.view.me)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not leave the cluster cleanly", extra=fields(error=str(exc)))
        log.info("left cluster", extra=fields(node_id=self.view.me))

    async def _beat_forever(self) -> None:
        import redis

        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self.heartbeat()
            except (redis.RedisError, OSError) as exc:
                log.warning("cluster heartbeat failed", extra=fields(error=str(exc)))
            except Exception:  # the heartbeat must outlive any bug in one pass
                log.exception("cluster heartbeat failed")

    def info(self) -> NodeInfo:
        from opengme.server import media

        relay = self.server.web_app.get(media.MEDIA)
        registry = self.signalling.registry
        return NodeInfo(self.view.me, self.cluster.node_url, relay.udp_port if relay is not None else 0,
                        registry.room_count, registry.member_count, self.started)

    async def heartbeat(self) -> None:
        """Write this node's hash (expiring after NODE_TTL), then read every live node's back."""
        r, keys, me = self.cluster.redis, self.keys, self.view.me
        async with r.pipeline(transaction=True) as pipe:
            pipe.exists(keys.node(me))
            pipe.hset(keys.node(me), mapping=self.info().as_hash())
            pipe.pexpire(keys.node(me), int(NODE_TTL * 1000))
            pipe.sadd(keys.nodes, me)
            pipe.smembers(keys.nodes)
            known, *_, members = await pipe.execute()
            ids = sorted(_text(i) for i in members)
        if not known and self.owned:
            await self._reclaim()
        async with r.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(keys.node(node_id))
            hashes = await pipe.execute()
        live: dict[str, NodeInfo] = {}
        for node_id, raw in zip(ids, hashes, strict=True):
            info = NodeInfo.from_hash(node_id, raw)
            if info is not None:
                live[node_id] = info
        dead = [node_id for node_id in ids if node_id not in live]
        if dead:
            await r.srem(keys.nodes, *dead)
        self.view.update(live)

    async def _reclaim(self) -> None:
        """Our hash was gone (Redis restarted or lost its data, or this node stalled past NODE_TTL):
        name this node again for the rooms it serves, unless another node took one meanwhile."""
        async with self.cluster.redis.pipeline(transaction=False) as pipe:
            for app_id, room_id in sorted(self.owned):
                pipe.set(self.keys.room(app_id, room_id), self.view.me, nx=True)
            taken = [room for room, done in zip(sorted(self.owned), await pipe.execute(), strict=True) if not done]
        log.warning("cluster registration was lost; rooms claimed again",
                    extra=fields(rooms=len(self.owned), taken_by_others=len(taken)))

    # --- placement ----------------------------------------------------------------------------------

    def _lock(self, app_id: str, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault((app_id, room_id), asyncio.Lock())

    def _unlock(self, app_id: str, room_id: str, lock: asyncio.Lock) -> None:
        if not lock.locked() and not lock._waiters:
            self._locks.pop((app_id, room_id), None)

    async def route(self, app_id: str, room_id: str) -> Redirect | None:
        """Where an entry into the room goes: None = here (the room is now placed on this node),
        else the live node that serves it. Redis unreachable: here (one node's room beats no room)."""
        import redis

        lock = self._lock(app_id, room_id)
        try:
            async with lock:
                owner = _text(await self._claim(keys=[self.keys.room(app_id, room_id)],
                                                args=[self.keys.node(""), self.view.me, self.view.candidate(),
                                                      int(PLACED_TTL * 1000)]))
                if owner == self.view.me:
                    self.owned.add((app_id, room_id))
                    # the entry is decided right after this returns, before any other callback runs
                    asyncio.get_running_loop().call_soon(self._settle, app_id, room_id)
                    return None
                url = None if owner in self.view.nodes else await self.cluster.redis.hget(self.keys.node(owner), "url")
                return self.view.decide(owner, _text(url) if url else None)
        except (redis.RedisError, OSError, LookupError) as exc:
            log.warning("room placement failed, serving the room here",
                        extra=fields(app_id=app_id, room_id=room_id, error=str(exc)))
            return None
        finally:
            self._unlock(app_id, room_id, lock)

    def on_room_event(self, event: RoomEvent) -> None:
        """A room emptied here: release its key (unless a member came back meanwhile). Every entry
        (``enter``, ``switch``) was placed by ``route`` before it was admitted."""
        if event.kind == "leave" and not event.others:
            self._spawn(self._release_room(event.member.app_id, event.member.room_id))

    def _has_room(self, app_id: str, room_id: str) -> bool:
        try:
            self.signalling.registry.room(app_id, room_id)
        except GmeError:
            return False
        return True

    def _settle(self, app_id: str, room_id: str) -> None:
        """After an entry placed here was decided: a refused one (room limit, say) left no room to
        serve, so the key goes again."""
        if not self._has_room(app_id, room_id):
            self._spawn(self._release_room(app_id, room_id))

    async def _release_room(self, app_id: str, room_id: str) -> None:
        import redis

        lock = self._lock(app_id, room_id)
        try:
            async with lock:
                if self._has_room(app_id, room_id):
                    return
                self.owned.discard((app_id, room_id))
                await self._release(keys=[self.keys.room(app_id, room_id)], args=[self.view.me])
        except (redis.RedisError, OSError) as exc:
            log.warning("could not release a room's placement", extra=fields(app_id=app_id, room_id=room_id,
                                                                              error=str(exc)))
        finally:
            self._unlock(app_id, room_id, lock)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def setup(server: Server) -> None:
    """With ``redis_url``: register the node and route entries through the room placement."""
    from opengme.server import cluster

    link = cluster.get(server)
    if link is None:
        return
    nodes = Nodes(server, link)
    server.on_start.append(nodes.start)
    server.on_stop.append(nodes.stop)
