"""The server's admin action layer: one implementation of each room and app action, which the signed
admin API (``/v1/admin``, and the CLI through it), the Tencent Cloud API 3.0 endpoint (``POST /``)
and the web console call. Callers authenticate and translate names; the logic lives here.

In a cluster (``redis_url``) listings show every live node's rooms and an action on a room another
node serves is carried out there, over the bus (``opengme.server.bus``), with the same results.

It also owns the records the actions read: the members' finished stays (``inout`` table, for GME's
DescribeUserInAndOutTime) and usage per day (``usage`` table, DescribeAppStatistics). Both are
written on their own worker thread, so a slow disk never stalls the event loop that carries the relay.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from opengme.core.rooms import Room, RoomEvent
from opengme.core.signalling import DISSOLVED, KICKED
from opengme.db import open_database
from opengme.errors import ErrorCode, GmeError
from opengme.ids import room_id_problem
from opengme.logs import fields
from opengme.server import bus, shared_records, signalling
from opengme.server.shared_records import RoomView, merge_rooms, rooms_here
from opengme.server.usage import USAGE, Usage, UsageLog
from opengme.store import App, AppStoreError

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.admin")

Json = dict[str, Any]

APP_NORMAL, APP_CLOSED, APP_ARREARS = 0, 1, 2
"""GME's AppStatus values (DescribeApplicationList): normal, closed, stopped for arrears."""
SERVICES = ("voice", "ptt", "stt")
"""The switches GME's ModifyAppStatus turns on or off together ("open"/"close")."""


class InOutLog:
    """Finished stays of members in rooms: (app, room, openid, start, end), one row per stay.

    Every database call runs on one worker thread, in submission order, so a query sees every
    departure recorded before it."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opengme-inout")
        self._db = self._worker.submit(open_database, Path(data_dir), database_url).result()

    def _add(self, row: tuple[str, str, str, float, float]) -> None:
        try:
            self._db.execute("INSERT INTO inout VALUES (?, ?, ?, ?, ?)", row)
        except self._db.errors:
            log.exception("could not record a stay", extra=fields(app_id=row[0], room_id=row[1], open_id=row[2]))

    def _stays(self, app_id: str, room_id: str, open_id: str) -> list[tuple[float, float]]:
        rows = self._db.execute(
            'SELECT start, "end" FROM inout WHERE app_id = ? AND room_id = ? AND open_id = ? ORDER BY start',
            (app_id, room_id, open_id),
        ).fetchall()
        return [(row["start"], row["end"]) for row in rows]

    async def stays(self, app_id: str, room_id: str, open_id: str) -> list[tuple[float, float]]:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._stays, app_id, room_id, open_id)

    def _minutes(self, since: float) -> dict[str, float]:
        rows = self._db.execute(
            'SELECT app_id, SUM("end" - CASE WHEN start > ? THEN start ELSE ? END) / 60.0 AS minutes FROM inout '
            'WHERE "end" > ? GROUP BY app_id', (since, since, since)).fetchall()
        return {str(row["app_id"]): float(row["minutes"] or 0.0) for row in rows}

    async def minutes(self, since: float) -> dict[str, float]:
        """Minutes of finished stays per app since ``since`` (the part of each stay after it)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._minutes, since)

    def on_room_event(self, event: RoomEvent) -> None:
        """Room listener: a member's stay is queued for writing when it ends."""
        if event.kind == "leave":
            m = event.member
            self._worker.submit(self._add, (m.app_id, m.room_id, m.open_id, m.entered_at, event.at))

    def close(self) -> None:
        """Write what is queued, then close."""
        self._worker.submit(self._db.close)
        self._worker.shutdown(wait=True)


def check_room_id(room_id: str) -> str:
    """``room_id`` when it is a valid GME room ID, else 10002 (GmeError) saying what is wrong."""
    reason = room_id_problem(room_id)
    if reason:
        raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, reason)
    return room_id


def app_status(app: App) -> int:
    """GME's AppStatus of an app: arrears first, then closed when every service is off."""
    if app.arrears:
        return APP_ARREARS
    return APP_CLOSED if not any(getattr(app, s) for s in SERVICES) else APP_NORMAL


class AdminActions:
    """Room and app actions for one server; the signing app (``app_id``) scopes every room action."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.signalling = signalling.get(server)
        self.inout = InOutLog(server.settings.data_dir, server.settings.database_url)
        self.usage = UsageLog(server.settings.data_dir, server.settings.database_url)
        self.signalling.room_listeners.append(self.inout.on_room_event)
        self.signalling.room_listeners.append(self.usage.on_room_event)

    def close(self) -> None:
        self.inout.close()
        self.usage.close()

    # --- rooms ----------------------------------------------------------------------------------
    # A cluster (redis_url): listings merge every live node's rooms (shared_records), and an action on
    # a room another node serves is carried out there (bus), with the same results and error codes.

    async def all_live_rooms(self) -> list[RoomView]:
        """Every room of every app, on this node and (cluster) on the other live nodes."""
        records = shared_records.get(self.server)
        others = await records.other_rooms() if records is not None else []
        return merge_rooms(rooms_here(self.signalling) + others)

    async def live_rooms(self, app_id: str) -> list[RoomView]:
        """The app's rooms, on this node and (cluster) on the other live nodes."""
        records = shared_records.get(self.server)
        others = await records.other_rooms() if records is not None else []
        return merge_rooms(rooms_here(self.signalling, app_id=app_id) + [v for v in others if v.app_id == app_id])

    def room(self, app_id: str, room_id: str) -> Room:
        """The room on this node, or 10009 when it does not exist (now)."""
        return self.signalling.registry.room(app_id, check_room_id(room_id))

    async def live_room(self, app_id: str, room_id: str) -> RoomView:
        """The room, or 10009 when it does not exist (now) on any node."""
        check_room_id(room_id)
        found = [v for v in await self.live_rooms(app_id) if v.room_id == room_id]
        if found:
            return found[0]
        raise GmeError(ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST, f"no room {room_id!r} in app {app_id}")

    async def _elsewhere(self, app_id: str, room_id: str) -> str | None:
        """The other live node that serves the room, when it is not here (cluster only)."""
        records = shared_records.get(self.server)
        if records is None:
            return None
        try:
            self.signalling.registry.room(app_id, room_id)
        except GmeError:
            return await records.owner(app_id, room_id)
        return None

    async def _settled(self) -> None:
        """The removals just made are recorded for the whole cluster (before the action answers)."""
        records = shared_records.get(self.server)
        if records is not None:
            await records.flush()

    async def _remote(self, app_id: str, room_id: str, op: str, args: Json) -> Json | None:
        """``op`` carried out by the node that serves the room, when that is another one; else None."""
        owner = await self._elsewhere(app_id, check_room_id(room_id))
        link = bus.get(self.server)
        if owner is None or link is None:
            return None
        return await link.call(owner, op, {"app_id": app_id, "room_id": room_id, **args})

    async def kick(self, app_id: str, room_id: str, open_ids: list[str],
                   reason: str = KICKED) -> list[tuple[str, ErrorCode]]:
        """Remove members (GME DeleteRoomMember, type 2): 10009 for an unknown room, else a code per openid."""
        remote = await self._remote(app_id, room_id, "kick", {"open_ids": open_ids, "reason": reason})
        return _outcomes(remote) if remote is not None else await self._kick_here(app_id, room_id, open_ids, reason)

    async def _kick_here(self, app_id: str, room_id: str, open_ids: list[str],
                         reason: str) -> list[tuple[str, ErrorCode]]:
        self.room(app_id, room_id)
        outcomes = [(o, _outcome(partial(self.signalling.kick, app_id, room_id, o, reason))) for o in open_ids]
        await self._settled()
        return outcomes

    async def dissolve(self, app_id: str, room_id: str, reason: str = DISSOLVED) -> int:
        """Remove everyone (GME DeleteRoomMember, type 1); how many were removed, 10009 for an unknown room."""
        remote = await self._remote(app_id, room_id, "dissolve", {"reason": reason})
        return int(remote["removed"]) if remote is not None else await self._dissolve_here(app_id, room_id, reason)

    async def _dissolve_here(self, app_id: str, room_id: str, reason: str) -> int:
        removed = self.signalling.dissolve(app_id, check_room_id(room_id), reason)
        await self._settled()
        return removed

    async def set_muted(self, app_id: str, room_id: str, changes: list[tuple[str, bool]],
                        reason: str = "") -> list[tuple[str, ErrorCode]]:
        """Server mute/unmute (GME ModifyUserMicStatus): 10009 for an unknown room, else a code per openid."""
        remote = await self._remote(app_id, room_id, "mute", {"changes": changes, "reason": reason})
        return _outcomes(remote) if remote is not None else self._mute_here(app_id, room_id, changes, reason)

    def _mute_here(self, app_id: str, room_id: str, changes: list[tuple[str, bool]],
                   reason: str) -> list[tuple[str, ErrorCode]]:
        self.room(app_id, room_id)
        set_muted = partial(self.signalling.set_muted, app_id, room_id, reason=reason)
        outcomes = [(o, _outcome(partial(set_muted, o, muted=m))) for o, m in changes]
        records = shared_records.get(self.server)
        if records is not None:
            records.changed(app_id, room_id)  # the other nodes' listings show the mute within a second
        return outcomes

    # --- the bus: other nodes' requests for this node's rooms (never sent on: the room is here or not)

    async def _bus_kick(self, args: Json) -> Json:
        outcomes = await self._kick_here(args["app_id"], args["room_id"], list(args["open_ids"]), args["reason"])
        return {"results": [[o, int(c)] for o, c in outcomes]}

    async def _bus_mute(self, args: Json) -> Json:
        changes = [(str(o), bool(m)) for o, m in args["changes"]]
        outcomes = self._mute_here(args["app_id"], args["room_id"], changes, args["reason"])
        return {"results": [[o, int(c)] for o, c in outcomes]}

    async def _bus_dissolve(self, args: Json) -> Json:
        return {"removed": await self._dissolve_here(args["app_id"], args["room_id"], args["reason"])}

    async def in_out(self, app_id: str, room_id: str, open_id: str) -> tuple[list[tuple[float, float | None]], float]:
        """A member's stays in a room (the current one, on any node, has no end) and their total seconds."""
        stays: list[tuple[float, float | None]] = list(await self.inout.stays(app_id, room_id, open_id))
        now = time.time()
        current = self.signalling.registry.find(app_id, open_id)
        if current is not None and current.room_id == room_id:
            stays.append((current.entered_at, None))
        elif shared_records.get(self.server) is not None:
            here = [m for v in await self.live_rooms(app_id) if v.room_id == room_id for m in v.members if m.open_id == open_id]
            stays += [(m.entered_at, None) for m in here[:1]]
        return stays, sum((now if end is None else end) - start for start, end in stays)

    # --- apps -----------------------------------------------------------------------------------

    async def _store(self, call: Callable[[], App]) -> App:
        try:
            return await self.server.run_blocking(call)
        except AppStoreError as exc:
            raise GmeError(ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, str(exc)) from None

    async def create_app(self, name: str) -> App:
        store = self.server.store
        return await self._store(lambda: store.create(name))

    async def app(self, app_id: str) -> App:
        store = self.server.store
        return await self._store(lambda: store.require(app_id))

    async def apps(self) -> list[App]:
        return await self.server.run_blocking(self.server.store.list)

    async def set_app_open(self, app_id: str, open_: bool) -> App:
        """GME ModifyAppStatus: "open" turns voice chat, voice messages and speech-to-text on, "close" off."""
        store = self.server.store
        return await self._store(lambda: store.set(app_id, **dict.fromkeys(SERVICES, open_)))

    async def statistics(self, app_id: str, first: str, last: str) -> dict[str, dict[Usage, float]]:
        """Usage per day from ``first`` to ``last`` (YYYY-MM-DD, UTC+8 days), days without usage left out."""
        return await self.usage.days(app_id, first, last)


def _outcomes(remote: Json) -> list[tuple[str, ErrorCode]]:
    """The per-openid codes of another node's answer."""
    return [(str(o), _code(c)) for o, c in remote["results"]]


def _code(value: object) -> ErrorCode:
    try:
        return ErrorCode(int(str(value)))
    except ValueError:
        return ErrorCode.AV_ERR_SERVER_FAILED


def _outcome(action: Callable[[], object]) -> ErrorCode:
    """One openid's result in a batch: 0, or the GmeError's code (10010 not in the room)."""
    try:
        action()
    except GmeError as exc:
        return exc.code
    return ErrorCode.AV_OK


ACTIONS: web.AppKey[AdminActions] = web.AppKey("opengme.actions")


def setup(server: Server) -> None:
    """Attach the action layer (before the admin API and the API 3.0 endpoint, which use it)."""
    actions = AdminActions(server)
    server.web_app[ACTIONS] = actions
    server.web_app[USAGE] = actions.usage
    link = bus.get(server)
    if link is not None:  # a cluster: other nodes send the actions on this node's rooms here
        link.handlers.update(kick=actions._bus_kick, mute=actions._bus_mute, dissolve=actions._bus_dissolve)

    async def stop() -> None:
        actions.close()

    # First in the list, so last to run on stop: signalling's stop still records the final departures.
    server.on_stop.insert(0, stop)


def get(server: Server) -> AdminActions:
    return server.web_app[ACTIONS]
