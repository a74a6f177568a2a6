"""The cluster's action bus: a node asks the node that serves a room to act on it (kick, mute,
dissolve) and waits for the answer, so that the admin API, the API 3.0 and the console work from any
node with the same results and error codes as on the room's own node.

A request is published on the owner's channel ``keys.bus(node_id)``:
``{"op", "args", "reply"}``; the owner runs the handler registered for ``op`` and ``LPUSH``es
``{"ok": result}`` or ``{"code", "detail"}`` to the list ``reply`` (expiring after ``REPLY_TTL``),
which the caller ``BLPOP``s for at most ``CALL_TIMEOUT`` seconds. Each node subscribes to its own
channel at start. Without ``redis_url`` there is no bus (``get`` returns None).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.server import cluster

if TYPE_CHECKING:
    from opengme.server.app import Server
    from opengme.server.cluster import Cluster

log = logging.getLogger("opengme.cluster")

Json = dict[str, Any]
Handler = Callable[[Json], Awaitable[Json]]
CALL_TIMEOUT = 2.0
"""Seconds a node waits for another node's answer to an action."""
REPLY_TTL = 10
"""Seconds an answer waits in Redis for a caller that gave up (then it expires)."""


# --- server-side recording (opengme.server.recording) ----------------------------------------------
# Ops a node serves for the recording actions on its rooms and tasks; they answer as the local action
# does, its GmeError included.

RECORD_START = "record_start"
"""args ``{"app_id", "room_id", "mode", "subscription"}`` (to the room's node): ``{"task_id", "started_at"}``."""
RECORD_STOP = "record_stop"
"""args ``{"app_id", "task_id"}`` (to the task's node): ``{}``."""
RECORD_MODIFY = "record_modify"
"""args ``{"app_id", "task_id", "mode", "subscription"}`` (to the task's node): ``{}``."""
RECORD_HANDOVER = "record_handover"
"""args ``{"app_id", "task_id"}`` (to the task's node, from the node where its room formed): stop tapping
the room, finishing its files; the asking node then takes the task over. ``{}``."""


# --- the messages (pure) ---------------------------------------------------------------------------


def request_text(op: str, args: Json, reply: str) -> str:
    return json.dumps({"op": op, "args": args, "reply": reply})


def parse_request(text: str | bytes) -> tuple[str, Json, str] | None:
    """(op, args, reply key) of a bus request; None for anything else (tolerant: extra fields pass)."""
    try:
        data = json.loads(text)
        op, args, reply = data["op"], data["args"], data["reply"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(op, str) and isinstance(args, dict) and isinstance(reply, str) and reply):
        return None
    return op, args, reply


def answer_text(result: Json | GmeError) -> str:
    if isinstance(result, GmeError):
        return json.dumps({"code": int(result.code), "detail": result.detail})
    return json.dumps({"ok": result})


def parse_answer(text: str | bytes) -> Json:
    """The result an answer carries; its error raised as the GmeError the owner raised."""
    data = json.loads(text)
    if "ok" in data:
        result: Json = data["ok"]
        return result
    try:
        code = ErrorCode(int(data["code"]))
    except (ValueError, KeyError):
        code = ErrorCode.AV_ERR_SERVER_FAILED
    raise GmeError(code, str(data.get("detail", "")))


# --- member-to-member pushes (invitations: opengme.server.invitations) -----------------------------
# Ops a node serves for pushes to a member another node holds; each answers ``{"delivered": bool}``.

PUSH = "push"
"""args ``{"app_id", "open_id", "message"}`` and optionally ``"room_id"``: the push to every connection
of that openid on the node (an ``invitation``: the invitee may be in any room, or none), or with
``room_id`` only to its member in that room (an ``invitation_result``: the inviter, unless it left)."""


# --- the node's end of it --------------------------------------------------------------------------


class Bus:
    """Serves this node's channel with ``handlers`` (by op) and sends requests to other nodes."""

    def __init__(self, link: Cluster) -> None:
        self.cluster = link
        self.handlers: dict[str, Handler] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._pubsub = self.cluster.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.cluster.keys.bus(self.cluster.node_id))
        self._reader = asyncio.create_task(self._read_forever())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._answering:
            await asyncio.gather(*list(self._answering), return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _read_forever(self) -> None:
        failing = False  # one line per Redis outage, not one a second
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: redis-py resubscribes on the next read
                if not failing:
                    log.warning("cluster bus read failed; retrying every second", extra=fields(error=str(exc)))
                failing = True
                await asyncio.sleep(1.0)
                continue
            if failing:
                log.info("cluster bus reading again")
                failing = False
            if message is None or message.get("type") != "message":
                continue
            task = asyncio.create_task(self._answer(message["data"]))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, text: bytes) -> None:
        request = parse_request(text)
        if request is None:
            log.warning("unreadable cluster bus request; ignored")
            return
        op, args, reply = request
        handler = self.handlers.get(op)
        result: Json | GmeError
        if handler is None:
            result = GmeError(ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, f"node {self.cluster.node_id} has no action {op!r}")
        else:
            try:
                result = await handler(args)
            except GmeError as exc:
                result = exc
            except Exception:
                log.exception("cluster bus action failed", extra=fields(op=op))
                result = GmeError(ErrorCode.AV_ERR_SERVER_FAILED, "internal server error")
        try:
            async with self.cluster.redis.pipeline(transaction=True) as pipe:
                await pipe.lpush(reply, answer_text(result)).expire(reply, REPLY_TTL).execute()
        except Exception as exc:
            log.warning("could not answer a cluster bus request", extra=fields(op=op, error=str(exc)))

    async def call(self, node_id: str, op: str, args: Json, timeout: float = CALL_TIMEOUT) -> Json:
        """Run ``op`` on node ``node_id`` and return its result (or raise its GmeError); 10001 when
        the node does not listen, 10004 when it does not answer within ``timeout`` seconds."""
        redis, keys = self.cluster.redis, self.cluster.keys
        reply = keys.reply(secrets.token_hex(12))
        try:
            listeners = await redis.publish(keys.bus(node_id), request_text(op, args, reply))
            if not listeners:
                raise GmeError(ErrorCode.AV_ERR_SERVER_FAILED, f"node {node_id}, which serves the room, does not listen")
            answer = await redis.blpop([reply], timeout=timeout)
        except GmeError:
            raise
        except Exception as exc:
            raise GmeError(ErrorCode.AV_ERR_SERVER_FAILED,
                           f"the cluster's Redis did not answer: {str(exc).rstrip('.')}") from None
        if answer is None:
            raise GmeError(ErrorCode.AV_ERR_SERVER_TIMEOUT,
                           f"node {node_id}, which serves the room, did not answer within {timeout:g} s")
        return parse_answer(answer[1])


BUS: web.AppKey[Bus] = web.AppKey("opengme.bus")


def setup(server: Server) -> None:
    """With ``redis_url``: subscribe to this node's channel at start (handlers are added by the parts)."""
    link = cluster.get(server)
    if link is None:
        return
    bus = Bus(link)
    server.web_app[BUS] = bus
    server.on_start.append(bus.start)
    server.on_stop.append(bus.stop)


def get(server: Server) -> Bus | None:
    return server.web_app.get(BUS)
