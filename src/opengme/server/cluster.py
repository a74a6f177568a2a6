"""This node's link to its cluster (``redis_url``): one Redis client, the key names, the node's id and
the URL other nodes send clients to. The parts that share live state through Redis (node registry
and room placement, shared records, the bus) take it from here with :func:`get`; without
``redis_url`` there is none and every part keeps its state in this process, as before.
"""
from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.cluster import ClusterError
from opengme.cluster.keys import Keys, split_url
from opengme.logs import fields

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.cluster")

CLUSTER: web.AppKey[Cluster] = web.AppKey("opengme.cluster")


class Cluster:
    """The node's identity in the cluster and its Redis connection (``redis.asyncio``)."""

    def __init__(self, server: Server) -> None:
        import redis.asyncio

        self.server = server
        url, prefix = split_url(server.settings.redis_url)
        self.keys = Keys(prefix)
        self.node_id = secrets.token_hex(6)  # a restarted node is a new node
        self.redis: Any = redis.asyncio.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    @property
    def node_url(self) -> str:
        """How clients reach this node: ``node_url``, else the address it listens on."""
        return self.server.settings.node_url.rstrip("/") or self.server.base_url

    async def alive(self, node_id: str) -> bool:
        """Whether ``node_id`` is this node or one whose registration has not expired."""
        return node_id == self.node_id or bool(await self.redis.exists(self.keys.node(node_id)))

    async def start(self) -> None:
        import redis

        try:
            await self.redis.ping()
        except (redis.RedisError, OSError) as exc:
            raise ClusterError(f"cannot reach Redis at redis_url {split_url(self.server.settings.redis_url)[0]}: "
                               f"{str(exc).rstrip('.')}; start it or fix redis_url") from None
        log.info("joined cluster", extra=fields(node_id=self.node_id, node_url=self.node_url, prefix=self.keys.prefix))

    async def stop(self) -> None:
        await self.redis.aclose()


def setup(server: Server) -> None:
    if not server.settings.redis_url:
        return
    cluster = Cluster(server)
    server.web_app[CLUSTER] = cluster
    server.on_start.append(cluster.start)  # set up first: started before the parts that use it,
    server.on_stop.append(cluster.stop)  # and stopped after them (stop hooks run in reverse)


def get(server: Server) -> Cluster | None:
    """The node's cluster link, or None on a single node."""
    return server.web_app.get(CLUSTER)
