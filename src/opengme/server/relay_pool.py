"""Relay worker processes beside the signalling process (``opengme serve --workers N``, issue 18).

One process forwards ~60-140 k packets/s on one core; N workers (``opengme.server.relay_worker``)
forward on N cores. The pool presents the same calls as the pure ``Relay`` (``media.RelayPlane``),
so signalling, game voice, captions, recording and the console do not know which mode runs.

- Placement: each room lives on one worker (``core.placement.PlacementTable``, room key
  ``"app\\0room"``); a member's ``entered`` names its room's worker's UDP port.
- Control plane: a *mirror* ``Relay`` in this process receives every control call but never a packet,
  so synchronous questions (``listeners``, ``members``, routes) are answered here; each call is also
  sent to the room's worker over its control pipe (``FrameLink``: batched, never awaited). A room with
  hearing rules (a ``RoutePolicy``, a Python callable) keeps them here: its worker makes no routes
  itself (a deny-all policy) and gets the routes the mirror computed, as ``(speaker, listener, on)``
  pairs, after each change.
- Data plane state comes back in the workers' reports (every ``REPORT_INTERVAL``): counters, each
  member's address/level/voice times (``activity``, ``speakers``), uplink quality. Taps (captions'
  voice taps, recording's room taps) and datagrams for WebSocket-fallback addresses come back as they
  happen and are handed to the tap, or to the connection, here.
- A worker that dies is logged, counted and restarted; its rooms are given up (``PlacementTable.lose``)
  and the host closes its members' signalling connections like a server stop does (1001, no
  ``disconnect``), so SDKs resume, and their new sessions go to a live worker.
- Room sharing links two members' voices across rooms; it is carried when both rooms are on the same
  worker (otherwise each room's voice stays in its room, logged).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Protocol

from opengme.core.placement import PlacementTable
from opengme.core.relay import (
    Addr,
    MemberActivity,
    Relay,
    RelayCounters,
    RoomTap,
    RoutePolicy,
    UplinkQuality,
    VoiceTap,
)
from opengme.logs import fields
from opengme.protocol.media import HEADER_SIZE
from opengme.server.relay_worker import REPORT_INTERVAL, WS, FrameLink, Message

log = logging.getLogger("opengme.media")

START_TIMEOUT = 15.0  # seconds for a worker to bind its socket and say "ready"
STOP_TIMEOUT = 5.0  # seconds for a worker to exit once its pipe closed, before it is killed
RESTART_BACKOFF = 1.0  # seconds between two failed starts of a worker
HANG_TIMEOUT = 10.0  # seconds without a word (it reports every REPORT_INTERVAL) before a worker is killed
_COUNTER_NAMES = tuple(f.name for f in dataclass_fields(RelayCounters))


class PoolHost(Protocol):
    """What the pool needs from the server process's media part."""

    def send_ws(self, datagram: bytes, addr: Addr) -> None:
        """A datagram a worker relayed to a WebSocket-fallback address."""
        ...

    def worker_lost(self, tinyids: list[int]) -> None:
        """These members' worker died: close their signalling connections so that they resume."""
        ...


@dataclass(eq=False)
class _Worker:
    """One running worker process as the pool sees it; ``name`` is its placement target."""

    slot: int
    name: str
    proc: asyncio.subprocess.Process
    link: FrameLink
    port: int
    counters: RelayCounters = field(default_factory=RelayCounters)  # as last reported
    socket_drops: int = 0
    send_errors: int = 0
    cpu_seconds: float = 0.0
    explicit: set[str] = field(default_factory=set)  # rooms told to take their routes from us
    tapped: set[str] = field(default_factory=set)  # rooms whose voice it sends back (recording)
    watcher: asyncio.Task[None] | None = None
    heard: float = field(default_factory=time.monotonic)  # when its last frame arrived


def _add(total: RelayCounters, more: RelayCounters) -> None:
    for name in _COUNTER_NAMES:
        setattr(total, name, getattr(total, name) + getattr(more, name))


class RelayPool:
    """N relay worker processes behind the calls of one ``Relay`` (see the module docstring)."""

    def __init__(self, host: PoolHost, count: int, bind: str, first_port: int = 0, log_level: str = "info",
                 log_format: str = "json") -> None:
        self.host = host
        self.count = count
        self.bind = bind
        self.first_port = first_port  # worker i tries first_port + i (0: any free port)
        self.log_args = ("--log-level", log_level, "--log-format", log_format)
        self.mirror = Relay()  # the control plane's state; never sees a packet
        self.table = PlacementTable()
        self.deaths = 0
        self.restarts = 0
        self._workers: dict[str, _Worker] = {}  # live ones, by name
        self._generation = 0
        self._stopping = False
        self._where: dict[int, _Worker] = {}  # tinyid -> the worker holding its session
        self._session_of: dict[int, int] = {}  # tinyid -> session id
        self._by_session: dict[int, int] = {}  # session id -> tinyid (WebSocket-fallback datagrams)
        self._explicit: set[str] = set()  # rooms with hearing rules (a RoutePolicy)
        self._voice_taps: dict[int, VoiceTap] = {}
        self._room_taps: dict[str, RoomTap] = {}
        self._crossing: dict[int, int] = {}  # room sharing across workers: tinyid -> its linked partner
        self._activity: dict[int, tuple[Addr | None, int, float | None, float | None]] = {}
        self._quality: dict[int, list[int]] = {}  # tinyid -> [received, expected] since the last take
        self._retired = RelayCounters()  # dead workers' last counters, plus the pool's own drops
        self._retired_drops = 0
        self._retired_send_errors = 0
        self._retired_cpu = 0.0
        self._pings = 0
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._watchdog: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        workers = await asyncio.gather(*(self._spawn(slot) for slot in range(self.count)))
        for worker in workers:
            self._adopt(worker)
        self._watchdog = asyncio.create_task(self._watch_for_hangs())

    async def stop(self) -> None:
        """Close every control pipe (the workers exit on that) and wait for the processes."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            worker.link.close()
        await asyncio.gather(*(self._reap(w) for w in workers), return_exceptions=True)
        for worker in workers:
            if worker.watcher is not None:
                worker.watcher.cancel()

    async def settled(self) -> None:
        """Wait until every live worker has applied every control message sent so far (control and
        media travel apart: a test that changes routes then speaks waits for this in between)."""
        loop = asyncio.get_running_loop()
        waits = []
        for worker in self._workers.values():
            self._pings += 1
            self._pongs[self._pings] = loop.create_future()
            waits.append(self._pongs[self._pings])
            worker.link.send(("ping", self._pings))
        await asyncio.gather(*waits)

    @property
    def ports(self) -> list[int]:
        return [w.port for w in self._workers.values()]

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers.values()]

    @property
    def live(self) -> int:
        return len(self._workers)

    async def _spawn(self, slot: int) -> _Worker:
        self._generation += 1
        name = f"w{slot}.{self._generation}"
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "opengme.server.relay_worker", "--fd", str(theirs.fileno()),
                "--host", self.bind, "--port", str(self.first_port + slot if self.first_port else 0), *self.log_args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        link = await FrameLink.over(ours)
        try:
            ready = (await asyncio.wait_for(link.receive(), START_TIMEOUT))[0]
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            link.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise RuntimeError(f"relay worker {slot} did not start") from exc
        return _Worker(slot, name, proc, link, ready[1])

    def _adopt(self, worker: _Worker, event: str = "relay worker started") -> None:
        self._workers[worker.name] = worker
        self.table.add_target(worker.name)
        worker.watcher = asyncio.create_task(self._watch(worker))
        log.info(event, extra=fields(worker=worker.slot, pid=worker.proc.pid, udp_port=worker.port))

    async def _reap(self, worker: _Worker) -> int:
        try:
            return await asyncio.wait_for(worker.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            worker.proc.kill()
            return await worker.proc.wait()

    async def _watch(self, worker: _Worker) -> None:
        """Read the worker's messages until its pipe closes; then, unless stopping, it died."""
        try:
            while True:
                messages = await worker.link.receive()
                worker.heard = time.monotonic()
                for message in messages:
                    try:
                        self._on_message(worker, message)
                    except Exception:  # one bad message must not cost the worker's whole link
                        log.exception("relay worker message failed", extra=fields(worker=worker.slot))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if self._stopping:
            return
        await self._died(worker)

    async def _watch_for_hangs(self) -> None:
        """A worker that stopped answering (stopped, stuck in a loop) is killed: it then dies as any
        other, and is replaced."""
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            now = time.monotonic()
            for worker in list(self._workers.values()):
                if now - worker.heard > HANG_TIMEOUT and worker.proc.returncode is None:
                    log.warning("relay worker not answering, killing it",
                                extra=fields(worker=worker.slot, pid=worker.proc.pid, silent_s=round(now - worker.heard, 1)))
                    worker.heard = now  # once
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()

    async def _died(self, worker: _Worker) -> None:
        """Give up the worker's rooms, have its members resume (on a live worker: at once when one
        is left, else once the replacement is up), log it, and start a replacement."""
        worker.link.close()
        self.deaths += 1
        del self._workers[worker.name]
        rooms = self.table.lose(worker.name)
        _add(self._retired, worker.counters)
        self._retired_drops += worker.socket_drops
        self._retired_send_errors += worker.send_errors
        self._retired_cpu += worker.cpu_seconds
        lost = [tinyid for tinyid, w in self._where.items() if w is worker]
        for tinyid in lost:
            del self._where[tinyid]
        survivors = bool(self._workers)
        if survivors:
            self.host.worker_lost(lost)
        code = await self._reap(worker)
        log.warning("relay worker died", extra=fields(worker=worker.slot, pid=worker.proc.pid, exit_code=code,
                                                      rooms=len(rooms), members=len(lost)))
        await self._restart(worker.slot)
        if not survivors:
            self.host.worker_lost(lost)

    async def _restart(self, slot: int) -> None:
        while not self._stopping:
            try:
                replacement = await self._spawn(slot)
            except (OSError, RuntimeError) as exc:
                log.error("relay worker restart failed", extra=fields(worker=slot, error=str(exc)))
                await asyncio.sleep(RESTART_BACKOFF)
                continue
            if self._stopping:
                replacement.link.close()
                await self._reap(replacement)
                return
            self.restarts += 1
            self._adopt(replacement, "relay worker restarted")
            return

    def _on_message(self, worker: _Worker, message: Message) -> None:
        kind = message[0]
        if kind == "ws":
            self.host.send_ws(message[2], (WS, message[1]))
        elif kind == "vtap":
            voice_tap = self._voice_taps.get(message[1])
            if voice_tap is not None:
                voice_tap(message[2], message[3])
        elif kind == "rtap":
            room_tap = self._room_taps.get(message[1])
            if room_tap is not None:
                room_tap(message[2], message[3], message[4], message[5])
        elif kind == "xpkt":  # a linked speaker's voice, for its partner's room on another worker
            partner = self._crossing.get(message[1], -1)
            there = self._where.get(partner)
            if there is not None:
                room_id = self.mirror.activity(partner).room_id
                there.link.send(("inject", message[1], room_id, message[2], message[3]))
        elif kind == "report":
            self._on_report(worker, message)
        elif kind == "pong":
            pong = self._pongs.pop(message[1], None)
            if pong is not None and not pong.done():
                pong.set_result(None)

    def _on_report(self, worker: _Worker, message: Message) -> None:
        _, counters, worker.socket_drops, worker.send_errors, worker.cpu_seconds, activity, quality = message
        worker.counters = RelayCounters(*counters)
        where = self._where
        for tinyid, addr, level, last_voice, last_packet in activity:
            if where.get(tinyid) is worker:
                self._activity[tinyid] = (addr, level, last_voice, last_packet)
        for tinyid, received, expected in quality:
            if where.get(tinyid) is worker:
                q = self._quality.setdefault(tinyid, [0, 0])
                q[0] += received
                q[1] += expected

    # --- the relay's calls (media.RelayPlane) ---------------------------------------------------

    def add_member(self, room_id: str, tinyid: int, key: bytes) -> int:
        session = self.mirror.add_member(room_id, tinyid, key)  # raises as the relay would
        try:
            worker = self._workers[self.table.place(room_id)]
        except LookupError:  # no live worker (NoTarget), e.g. while the only one restarts
            self.mirror.remove_member(tinyid)
            raise
        self._sync_room(worker, room_id)
        worker.link.send(("add", room_id, tinyid, key))
        self._where[tinyid] = worker
        self._session_of[tinyid] = session
        self._by_session[session] = tinyid
        if room_id in self._explicit:
            self._send_routes(worker, self._row_and_column(tinyid))
        return session

    def remove_member(self, tinyid: int) -> bool:
        if tinyid not in self._session_of:
            return False
        room_id = self.mirror.activity(tinyid).room_id
        self._uncross(tinyid)
        self.mirror.remove_member(tinyid)
        worker = self._where.pop(tinyid, None)
        if worker is not None:
            worker.link.send(("remove", tinyid))
        self._by_session.pop(self._session_of.pop(tinyid), None)
        self._activity.pop(tinyid, None)
        self._voice_taps.pop(tinyid, None)
        self._quality.pop(tinyid, None)
        if not self.mirror.members(room_id):
            self.table.release(room_id)
        return True

    def port_of(self, tinyid: int) -> int:
        """The UDP port of the worker holding ``tinyid``'s session (the ``media`` section names it)."""
        return self._where[tinyid].port

    def set_muted(self, tinyid: int, muted: bool) -> None:
        self.mirror.set_muted(tinyid, muted)
        self._send(tinyid, ("mute", tinyid, muted))

    def link(self, a: int, b: int) -> None:
        """Room sharing. On one worker its relay links the two; across workers each one's voice is
        handed from its worker through this process to the worker of its partner's room (``inject``)."""
        self._uncross(a)
        self._uncross(b)
        self.mirror.link(a, b)
        first, second = self._where.get(a), self._where.get(b)
        if first is None or second is None:
            return
        if first is not second:
            self._crossing[a], self._crossing[b] = b, a
            first.link.send(("xlink", a, True))
            second.link.send(("xlink", b, True))
            return
        first.link.send(("link", a, b))
        self._send_routes(first, self._row_and_column(a) + self._row_and_column(b))

    def unlink(self, tinyid: int) -> int | None:
        self._uncross(tinyid)
        other = self.mirror.unlink(tinyid)
        worker = self._where.get(tinyid)
        if other is not None and worker is not None and self._where.get(other) is worker:
            worker.link.send(("unlink", tinyid))
            self._send_routes(worker, self._row_and_column(tinyid) + self._row_and_column(other))
        return other

    def _uncross(self, tinyid: int) -> None:
        """End a room sharing across workers that ``tinyid`` is part of (both ends stop handing on)."""
        partner = self._crossing.pop(tinyid, None)
        if partner is None:
            return
        self._crossing.pop(partner, None)
        for t in (tinyid, partner):
            worker = self._where.get(t)
            if worker is not None:
                worker.link.send(("xlink", t, False))

    def linked(self, tinyid: int) -> int | None:
        return self.mirror.linked(tinyid)

    def set_route_policy(self, room_id: str, policy: RoutePolicy | None) -> None:
        self.mirror.set_route_policy(room_id, policy)
        (self._explicit.add if policy is not None else self._explicit.discard)(room_id)
        owner = self.table.owner(room_id)
        if owner is None:
            return
        worker = self._workers[owner]
        worker.link.send(("policy", room_id, policy is not None))  # rebuilds (or clears) its tables there
        (worker.explicit.add if policy is not None else worker.explicit.discard)(room_id)
        if policy is not None:
            self._send_routes(worker, [(s, listener, True) for s in self.mirror.members(room_id)
                                       for listener in self.mirror.listeners(s)])

    def update_routes(self, tinyid: int) -> None:
        self.mirror.update_routes(tinyid)
        worker = self._where.get(tinyid)
        if worker is not None and self.mirror.activity(tinyid).room_id in self._explicit:
            worker.link.send(("update", tinyid))  # clears its row and column there; ours follow
            self._send_routes(worker, self._row_and_column(tinyid))

    def set_routes(self, pairs: Iterable[tuple[int, int, bool]]) -> None:
        pairs = list(pairs)
        self.mirror.set_routes(pairs)
        by_worker: dict[_Worker, list[tuple[int, int, bool]]] = {}
        for pair in pairs:
            worker = self._where.get(pair[0])
            if worker is not None:
                by_worker.setdefault(worker, []).append(pair)
        for worker, some in by_worker.items():
            self._send_routes(worker, some)

    def listeners(self, tinyid: int) -> list[int]:
        return self.mirror.listeners(tinyid)

    def members(self, room_id: str) -> list[int]:
        return self.mirror.members(room_id)

    def set_voice_tap(self, tinyid: int, tap: VoiceTap | None) -> None:
        if tinyid not in self._session_of:
            return
        if tap is None:
            self._voice_taps.pop(tinyid, None)
        else:
            self._voice_taps[tinyid] = tap
        self._send(tinyid, ("vtap", tinyid, tap is not None))

    def set_room_tap(self, room_id: str, tap: RoomTap | None) -> None:
        if tap is None:
            self._room_taps.pop(room_id, None)
        else:
            self._room_taps[room_id] = tap
        owner = self.table.owner(room_id)
        if owner is not None:
            self._sync_room(self._workers[owner], room_id)

    # --- the data plane's state, from the workers' reports ----------------------------------------

    @property
    def counters(self) -> RelayCounters:
        total = RelayCounters(*astuple(self._retired))
        for worker in self._workers.values():
            _add(total, worker.counters)
        return total

    def socket_drops(self) -> int:
        return self._retired_drops + sum(w.socket_drops for w in self._workers.values())

    def send_errors(self) -> int:
        return self._retired_send_errors + sum(w.send_errors for w in self._workers.values())

    def cpu_seconds(self) -> float:
        """CPU time the workers used (as of their last reports), dead ones included."""
        return self._retired_cpu + sum(w.cpu_seconds for w in self._workers.values())

    def activity(self, tinyid: int) -> MemberActivity:
        mirrored = self.mirror.activity(tinyid)  # KeyError for no session, as the relay
        reported = self._activity.get(tinyid)
        if reported is None:
            return mirrored
        addr, level, last_voice, last_packet = reported
        return MemberActivity(tinyid, mirrored.room_id, addr, mirrored.muted, level, last_voice, last_packet)

    def speakers(self, room_id: str, now: float, hold: float = 0.5) -> list[int]:
        """As ``Relay.speakers``, with the hold stretched by the report interval (the voice times are
        up to one report old)."""
        hold += REPORT_INTERVAL
        speaking = []
        for tinyid in self.mirror.members(room_id):
            reported = self._activity.get(tinyid)
            if reported is not None and reported[2] is not None and now - reported[2] <= hold:
                speaking.append(tinyid)
        return speaking

    def take_uplink_quality(self) -> list[UplinkQuality]:
        report = [UplinkQuality(tinyid, received, expected) for tinyid, (received, expected) in self._quality.items()]
        self._quality.clear()
        return report

    def ws_datagram(self, conn_id: int, data: bytes) -> None:
        """A WebSocket-fallback datagram goes to the worker holding the session its header names."""
        tinyid = self._by_session.get(int.from_bytes(data[8:12])) if len(data) >= HEADER_SIZE else None
        worker = self._where.get(tinyid) if tinyid is not None else None
        if worker is None:
            self._retired.received += 1
            if len(data) < HEADER_SIZE:
                self._retired.dropped_malformed += 1
            else:
                self._retired.dropped_unknown_member += 1
            return
        worker.link.send(("ws", conn_id, data))

    # --- helpers ---------------------------------------------------------------------------------

    def _send(self, tinyid: int, message: Message) -> None:
        worker = self._where.get(tinyid)
        if worker is not None:
            worker.link.send(message)

    def _send_routes(self, worker: _Worker, pairs: list[tuple[int, int, bool]]) -> None:
        if pairs:
            worker.link.send(("routes", pairs))

    def _sync_room(self, worker: _Worker, room_id: str) -> None:
        """Tell ``worker`` the room's mode (hearing rules kept here or none) and recording tap, where
        they differ from what it was told before."""
        explicit = room_id in self._explicit
        if explicit != (room_id in worker.explicit):
            worker.link.send(("policy", room_id, explicit))
            (worker.explicit.add if explicit else worker.explicit.discard)(room_id)
        tapped = room_id in self._room_taps
        if tapped != (room_id in worker.tapped):
            worker.link.send(("rtap", room_id, tapped))
            (worker.tapped.add if tapped else worker.tapped.discard)(room_id)

    def _row_and_column(self, tinyid: int) -> list[tuple[int, int, bool]]:
        """The mirror's routes from and to ``tinyid`` within its room, as pairs to send."""
        mirror = self.mirror
        pairs = [(tinyid, listener, True) for listener in mirror.listeners(tinyid)]
        for other in mirror.members(mirror.activity(tinyid).room_id):
            if other != tinyid and tinyid in mirror.listeners(other):
                pairs.append((other, tinyid, True))
        return pairs
