"""The SDK's media engine: one audio thread per Context moving voice between devices and the relay.

Every 20 ms (a monotonic ticker; ``FramePacer`` keeps the average rate exact when a tick is late) the
thread reads the mic (``Uplink.process`` → datagram → send), and renders one frame
(``Downlink.render`` → speaker). Between ticks it waits in ``select`` on the UDP socket, so each
datagram reaches ``Downlink.receive`` the moment it arrives (honest arrival times for the jitter
buffer) rather than at the next tick.

Datagram route (docs/protocol.md "Media"): a BIND over UDP to the server's host at ``udp_port`` up to
3 times 300 ms apart; the first acknowledgement picks UDP, none picks the signalling WebSocket
(binary frames, carried by :class:`~opengme.sdk.transport.Transport`). ``media_transport`` forces
either. A KEEPALIVE goes out every second on the chosen route and its echo gives the RTT. No echo
for 3 s marks the path silent (no RTT, CHANGE_ROOM_QUALITY reads it); in AUTO mode a silent UDP
route is bound again, so media moves to the WebSocket when UDP died after binding, and a BIND probes
UDP every 5 s from the WebSocket to move back when it answers.

The thread starts with the first media session or open device (a Context that never enters a room
costs no thread) and idles in ``select`` outside a room. Threading: the owner thread (the Context's) changes state only through the methods below, which take
the engine's lock; the audio thread holds it while it ticks. The network thread only appends to a
bounded inbox. Nothing here waits on the network, every queue is bounded, and ``close`` joins the
thread; a failure in one pass of the thread's loop is logged and counted, never the thread's end.
Pure decisions (route choice, the quality weight, option parsing) are plain functions and classes
without a clock, tested directly.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

import numpy as np

from opengme.codec.opus import FRAME_MS
from opengme.core.downlink import OUTPUT_RATE, Downlink
from opengme.core.impair import Impairment
from opengme.core.mixer import DEFAULT_MIX_STREAMS
from opengme.core.uplink import Uplink
from opengme.devices import Frame, FramePacer, MicDevice, SpeakerDevice
from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType, UserUpdateEvent
from opengme.protocol.media import MAX_DATAGRAM, TYPE_MASK, MediaCrypto, MediaHeader, PacketType

SDK_STAMP = "0.1.0"

TICK_S: Final = FRAME_MS / 1000
BIND_TRIES: Final = 3
BIND_INTERVAL_S: Final = 0.3
KEEPALIVE_S: Final = 1.0
ECHO_TIMEOUT_S: Final = 3.0
"""No echo (a BIND acknowledgement or KEEPALIVE) for this long: the path is silent."""
UDP_RETRY_S: Final = 5.0
"""On the WebSocket in AUTO mode, a BIND probes UDP this often; its acknowledgement moves media back."""
PROBE_FOLLOW_S: Final = 0.1
"""A KEEPALIVE on the WebSocket this soon after a probe, so that a probe the relay heard but could not
answer moves its address for us back to the WebSocket at once."""
MAX_RTT_S: Final = 10.0
INBOX_MAX: Final = 256
"""WebSocket datagrams waiting for the audio thread; beyond this, arrivals are dropped and counted."""
DELAYED_MAX: Final = 1024
"""Datagrams held back by a test impairment; more are dropped."""
EVENTS_MAX: Final = 256
"""Engine events waiting for ``poll``; an app that never polls loses the oldest."""
CATCH_UP_TICKS: Final = 5
TAIL_FRAMES: Final = 2
"""Silent frames sent after a finite mic (a file) ends: its last ~27 ms are still inside noise
suppression (one frame) and the encoder's lookahead (6.5 ms) and would otherwise never be heard."""
IMPAIR_ENV: Final = "OPENGME_TEST_IMPAIR"
QUALITY_MAX_WEIGHT: Final = 50

_DATA: Final = int(PacketType.DATA)

log = logging.getLogger("opengme.sdk.media")


class MediaTransport(StrEnum):
    """``Context(media_transport=…)``: how datagrams travel."""

    AUTO = "auto"  # UDP when a BIND is acknowledged, else the WebSocket
    UDP = "udp"  # UDP only (BINDs repeat until acknowledged)
    WS = "ws"  # the WebSocket only


class Route(Enum):
    UDP = "udp"
    WS = "ws"


class Binding:
    """Which route media takes, as docs/protocol.md sets it out (pure: time is passed in).

    ``poll(now)`` says where a BIND is due; ``acknowledged`` records a BIND's answer, ``heard`` any
    echo, and ``expire(now)`` says whether the path went silent. ``route`` is None while binding
    (media is not sent then). On the WebSocket the route is usable at once: frames are ordered, so
    the BIND reaches the relay before any media.
    """

    def __init__(self, mode: MediaTransport, now: float) -> None:
        self.mode = mode
        self.route: Route | None = None
        self.tries = 0
        self._next = now
        self._heard = now  # the last echo; the start counts, so a new path has ECHO_TIMEOUT_S to answer

    def poll(self, now: float) -> Route | None:
        """The route to send a BIND on now (binding, or probing UDP from the WebSocket), or None."""
        if now < self._next:
            return None
        if self.route is None:
            if self.mode is MediaTransport.UDP or (self.mode is MediaTransport.AUTO and self.tries < BIND_TRIES):
                self.tries += 1
                self._next = now + BIND_INTERVAL_S
                return Route.UDP
            self.route = Route.WS
            self._next = now + UDP_RETRY_S
            return Route.WS
        if self.route is Route.WS and self.mode is MediaTransport.AUTO:
            self._next = now + UDP_RETRY_S
            return Route.UDP
        return None

    def acknowledged(self, route: Route) -> None:
        """A BIND was answered on ``route``: UDP is taken whenever the mode allows it."""
        if route is Route.UDP and self.route is not Route.UDP and self.mode is not MediaTransport.WS:
            self.route = Route.UDP

    def heard(self, now: float) -> None:
        """An echo (BIND acknowledgement or KEEPALIVE) arrived at ``now``."""
        self._heard = max(self._heard, now)

    def expire(self, now: float) -> bool:
        """Whether the path is silent (no echo for ECHO_TIMEOUT_S). In AUTO mode a silent UDP route
        is given up: BINDs start again, and the WebSocket follows if they stay unanswered."""
        silent = now - self._heard > ECHO_TIMEOUT_S
        if silent and self.route is Route.UDP and self.mode is MediaTransport.AUTO:
            self.route, self.tries, self._next = None, 0, now
        return silent


def room_quality(uplink_loss: float | None, rtt_s: float | None) -> dict[str, float | int]:
    """CHANGE_ROOM_QUALITY's payload: ``weight`` 1–50 (0 = no data yet, as GME), ``loss``, ``delay`` ms.

    GME publishes the scale, not the formula: 50 for a clean path, below 30 worth a warning. Here each
    1 % of upstream loss costs 2 points and RTT above 100 ms costs 1 point per 20 ms, so 10 % loss or
    500 ms RTT alone read 30 (the warning line).
    """
    if uplink_loss is None and rtt_s is None:
        return {"weight": 0, "loss": 0.0, "delay": 0}
    loss = min(max(uplink_loss or 0.0, 0.0), 1.0)
    delay_ms = round((rtt_s or 0.0) * 1000)
    penalty = 200 * loss + max(0, delay_ms - 100) / 20
    weight = max(1, min(QUALITY_MAX_WEIGHT, round(QUALITY_MAX_WEIGHT - penalty)))
    return {"weight": weight, "loss": round(loss, 4), "delay": delay_ms}


def impairment_from_env(environ: Mapping[str, str] = os.environ) -> Impairment | None:
    """The receive-side test impairment ``OPENGME_TEST_IMPAIR="loss=0.1,jitter_ms=30,seed=1"``."""
    spec = environ.get(IMPAIR_ENV, "").strip()
    if not spec:
        return None
    return Impairment.parse(spec.replace("jitter_ms=", "jitter=").replace("delay_ms=", "delay="))


@dataclass(frozen=True, slots=True)
class Speaking:
    """A remote member started (HAS_AUDIO) or stopped (NO_AUDIO) sending audio."""

    tinyid: int
    event: UserUpdateEvent


@dataclass(frozen=True, slots=True)
class Volumes:
    """USER_VOLUMES: loudest level (0–100) per member over the tracking interval."""

    levels: dict[int, int]


EngineEvent = Speaking | Volumes


@dataclass(slots=True)
class MediaCounters:
    """What the engine did with datagrams (diagnostics and tests)."""

    sent: int = 0
    sent_ws: int = 0
    send_errors: int = 0
    received: int = 0
    received_ws: int = 0
    inbox_dropped: int = 0
    impaired_dropped: int = 0
    binds_sent: int = 0
    tick_errors: int = 0


@dataclass(slots=True)
class _RoomMedia:
    """One keyed media session (an entry, switch or resume): its pipelines, socket and route."""

    key: bytes
    tinyid: int
    crypto: MediaCrypto
    uplink: Uplink
    downlink: Downlink
    binding: Binding
    sock: socket.socket | None
    next_keepalive: float = 0.0
    members: set[int] = field(default_factory=set)


class MediaEngine:
    """The audio thread and datagram transport of one Context (see the module docstring)."""

    def __init__(self, name: str, owner: object, send_ws: Callable[[bytes], None], *,
                 mode: MediaTransport = MediaTransport.AUTO, impairment: Impairment | None = None) -> None:
        self.owner = owner  # holds devices in the occupancy table (1008 for another context)
        self.mode = MediaTransport(mode)
        self.impairment = impairment
        self.counters = MediaCounters()
        self.rtt: float | None = None
        self.silent = False
        """No echo on the session's path for ECHO_TIMEOUT_S (written by the audio thread)."""
        self._send_ws = send_ws
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closing = False
        self._room: _RoomMedia | None = None
        self._mic: MicDevice | None = None
        self._mic_ready_at = 0.0  # the open mic's first frame is complete one period after it opened
        self._mic_tail = 0  # silent frames still owed after a finite mic ended (TAIL_FRAMES)
        self._speaker: SpeakerDevice | None = None
        self._pacer = FramePacer(TICK_S, CATCH_UP_TICKS)
        self._next_tick: float | None = None
        self._inbox: deque[tuple[bytes, float]] = deque()
        self._delayed: list[tuple[float, int, bytes, Route]] = []
        self._delay_order = itertools.count()
        self._events: deque[EngineEvent] = deque(maxlen=EVENTS_MAX)
        # settings, kept across re-keys and applied to every new pipeline
        self.device_test = False
        self._send_enabled = False
        self._recv_enabled = False
        self._loopback = False
        self._mic_volume = 100
        self._speaker_volume = 100
        self._max_streams = DEFAULT_MIX_STREAMS
        self._blacklist: set[int] = set()
        self._volumes: dict[int, int] = {}
        self._track_s: float | None = None
        self._track_due = 0.0
        self._track_peaks: dict[int, int] = {}
        self._uplink_loss: float | None = None  # until the server's first `quality` report

    # ------------------------------------------------------------------------ life cycle (owner)

    def close(self) -> None:
        """Stop the thread, then close devices and sockets (joined: nothing outlives ``uninit``)."""
        with self._lock, self._start_lock:
            self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.is_alive():
            self._thread.join(5.0)
        with self._lock:
            self._stop_room()
            self._close_mic()
            self._close_speaker()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wake(self) -> None:
        """Make the audio thread look at its state now; it starts on the first real work."""
        if self._thread.ident is None and (self._room or self._mic or self._speaker):
            with self._start_lock:  # the network thread wakes it too
                if self._thread.ident is None and not self._closing:
                    self._thread.start()
        with contextlib.suppress(OSError):  # full (the thread is busy and will look anyway) or closed
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------------ room (owner)

    @property
    def key(self) -> bytes | None:
        room = self._room
        return room.key if room is not None else None

    @property
    def route(self) -> Route | None:
        room = self._room
        return room.binding.route if room is not None else None

    def start_room(self, key: bytes, tinyid: int, room_type: RoomType, host: str, udp_port: int,
                   now: float) -> list[EngineEvent]:
        """A new media session (entry, switch, resume): fresh key, pipelines and route; devices stay.

        Returns the last events of the session it replaces (see ``_last_events``), for the caller to
        name with that session's members: they still mean something to those who stayed (a resume).
        """
        crypto = MediaCrypto.for_client(key)
        uplink = Uplink(RoomType(room_type), tinyid, crypto)
        downlink = Downlink(RoomType(room_type), crypto, max_streams=self._max_streams, volume_interval_s=TICK_S)
        sock = None
        if self.mode is not MediaTransport.WS:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                sock.connect((host, udp_port))
            except OSError as exc:
                log.warning("cannot reach the media port %s:%s: %s", host, udp_port, exc)
                sock.close()
                sock = None
        mode = self.mode if sock is not None else MediaTransport.WS
        with self._lock:
            ended = self._last_events(now)
            self._stop_room()
            self._room = _RoomMedia(key, tinyid, crypto, uplink, downlink, Binding(mode, now), sock, now)
            self._configure(self._room)
            self._fit_mic()
        self._wake()
        return ended

    def stop_room(self) -> None:
        """Leave: the session's pipelines and socket go; devices are the caller's to close."""
        with self._lock:
            self._stop_room()

    def _last_events(self, now: float) -> list[EngineEvent]:
        """The session's events not yet taken, then NO_AUDIO for every member its downlink has
        speaking: a new downlink never heard them, so nothing else would end their HAS_AUDIO."""
        events = list(self._events)
        room = self._room
        if room is not None:
            events += [Speaking(tinyid, event) for tinyid, event in room.downlink.events(now)]
            events += [Speaking(tinyid, UserUpdateEvent.NO_AUDIO) for tinyid in sorted(room.downlink.speaking())]
        return events

    def _stop_room(self) -> None:
        """Sockets close only here, under the lock (the audio thread watches them under it too)."""
        room, self._room = self._room, None
        if room is not None and room.sock is not None:
            room.sock.close()
        self._inbox.clear()
        self._delayed.clear()
        self._events.clear()
        self._track_peaks.clear()
        self.rtt = None
        self.silent = False

    def set_room_type(self, room_type: RoomType) -> None:
        """The room changed type: codecs follow, and the mic reopens at the new capture rate."""
        with self._lock:
            room = self._room
            if room is not None and room.uplink.room_type != room_type:
                room.uplink.set_room_type(RoomType(room_type))
                room.downlink.set_room_type(RoomType(room_type))
                self._fit_mic()

    def _configure(self, room: _RoomMedia) -> None:
        room.uplink.send_enabled = self._send_enabled
        room.uplink.set_mic_volume(self._mic_volume)
        if self._uplink_loss is not None:
            room.uplink.set_packet_loss_perc(self._uplink_loss * 100)
        room.downlink.set_speaker_volume(self._speaker_volume)
        room.downlink.loopback = self._loopback
        for tinyid in self._blacklist:
            room.downlink.add_blacklist(tinyid)
        for tinyid, volume in self._volumes.items():
            room.downlink.set_volume(tinyid, volume)

    # ------------------------------------------------------------------------ devices (owner)

    def use_mic(self, device: MicDevice | None) -> ErrorCode:
        """Open ``device`` as the mic (closing another one), or close the mic with None."""
        with self._lock:
            if device is self._mic:
                return ErrorCode.AV_OK
            self._close_mic()
            if device is None:
                return ErrorCode.AV_OK
            code = self._open(device, self._mic_rate())
            if code == ErrorCode.AV_OK:
                self._mic = device
        self._wake()
        return code

    def use_speaker(self, device: SpeakerDevice | None) -> ErrorCode:
        """Open ``device`` as the speaker (always at the downlink's output rate), or close it."""
        with self._lock:
            if device is self._speaker:
                return ErrorCode.AV_OK
            self._close_speaker()
            if device is None:
                return ErrorCode.AV_OK
            code = self._open(device, OUTPUT_RATE)
            if code == ErrorCode.AV_OK:
                self._speaker = device
        self._wake()
        return code

    @property
    def mic(self) -> MicDevice | None:
        return self._mic

    @property
    def speaker(self) -> SpeakerDevice | None:
        return self._speaker

    def _open(self, device: MicDevice | SpeakerDevice, rate: int) -> ErrorCode:
        try:
            device.open(rate, rate * FRAME_MS // 1000, 1, owner=self.owner)
        except GmeError as exc:
            log.info("cannot open %s: %s", device.id, exc)
            return ErrorCode(exc.code)
        if isinstance(device, MicDevice):
            # Not before a whole frame could have been captured: this also leaves EnableMic's
            # EnableAudioSend, which follows the open, the time to land before the first frame
            # (a tick in between gated the clip's first frame away).
            self._mic_ready_at = time.monotonic() + TICK_S
            self._mic_tail = TAIL_FRAMES
        return ErrorCode.AV_OK

    def _mic_rate(self) -> int:
        """Capture at the room's codec rate; outside a room (device test) at the speaker's."""
        return self._room.uplink.sample_rate if self._room is not None else OUTPUT_RATE

    def _fit_mic(self) -> None:
        """Reopen an open mic whose rate no longer matches (room type changed, test → room)."""
        mic = self._mic
        if mic is not None and mic.sample_rate != self._mic_rate():
            mic.close()
            if self._open(mic, self._mic_rate()) != ErrorCode.AV_OK:
                self._mic = None

    def _close_mic(self) -> None:
        if self._mic is not None:
            self._mic.close()
            self._mic = None

    def _close_speaker(self) -> None:
        if self._speaker is not None:
            self._speaker.close()
            self._speaker = None

    # ------------------------------------------------------------------------ settings (owner)

    def set_send(self, enabled: bool) -> None:
        with self._lock:
            self._send_enabled = enabled
            if self._room is not None:
                self._room.uplink.send_enabled = enabled

    def set_recv(self, enabled: bool) -> None:
        with self._lock:
            self._recv_enabled = enabled

    def set_loopback(self, enabled: bool) -> None:
        with self._lock:
            self._loopback = enabled
            if self._room is not None:
                self._room.downlink.loopback = enabled

    def set_mic_volume(self, percent: int) -> None:
        with self._lock:
            self._mic_volume = percent
            if self._room is not None:
                self._room.uplink.set_mic_volume(percent)

    def set_speaker_volume(self, percent: int) -> None:
        with self._lock:
            self._speaker_volume = percent
            if self._room is not None:
                self._room.downlink.set_speaker_volume(percent)

    def set_max_streams(self, count: int) -> None:
        with self._lock:
            self._max_streams = count
            if self._room is not None:
                self._room.downlink.set_max_streams(count)

    def set_uplink_loss(self, loss: float) -> None:
        """The server's view of our upstream loss (0–1): FEC spends bits to match."""
        with self._lock:
            self._uplink_loss = min(max(loss, 0.0), 1.0)
            if self._room is not None:
                self._room.uplink.set_packet_loss_perc(self._uplink_loss * 100)

    def set_members(self, tinyids: Iterable[int]) -> None:
        """The room's other members now: streams of those who left are dropped (EXIT, not NO_AUDIO)."""
        with self._lock:
            room = self._room
            if room is None:
                return
            current = set(tinyids)
            for gone in room.members - current:
                room.downlink.remove_member(gone)
            room.members = current

    def set_blacklist(self, tinyids: Iterable[int]) -> None:
        with self._lock:
            wanted = set(tinyids)
            room = self._room
            if room is not None:
                for tinyid in wanted - self._blacklist:
                    room.downlink.add_blacklist(tinyid)
                for tinyid in self._blacklist - wanted:
                    room.downlink.remove_blacklist(tinyid)
            self._blacklist = wanted

    def set_member_volumes(self, volumes: Mapping[int, int]) -> None:
        with self._lock:
            room = self._room
            if room is not None:
                for tinyid in set(self._volumes) - set(volumes):
                    room.downlink.set_volume(tinyid, 100)
                for tinyid, volume in volumes.items():
                    room.downlink.set_volume(tinyid, volume)
            self._volumes = dict(volumes)

    def track_volume(self, interval_s: float | None, now: float) -> None:
        """USER_VOLUMES every ``interval_s`` seconds; None stops it."""
        with self._lock:
            self._track_s = interval_s
            self._track_due = now + interval_s if interval_s is not None else 0.0
            self._track_peaks.clear()

    # ------------------------------------------------------------------------ readings (owner)

    def mic_level(self) -> int:
        with self._lock:
            return self._room.uplink.mic_level if self._room is not None and self._mic is not None else 0

    def send_level(self) -> int:
        with self._lock:
            room = self._room
            return room.uplink.send_level if room is not None and self._mic is not None and self._send_enabled else 0

    def speaker_level(self) -> int:
        with self._lock:
            return self._room.downlink.speaker_level() if self._room is not None else 0

    def recv_stream_level(self, tinyid: int) -> int:
        with self._lock:
            return self._room.downlink.recv_stream_level(tinyid) if self._room is not None else 0

    def take_events(self) -> list[EngineEvent]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
            return events

    # ------------------------------------------------------------------------ network thread

    def on_ws_datagram(self, datagram: bytes, at: float) -> None:
        """A binary frame from the signalling WebSocket (called on the network thread)."""
        if len(self._inbox) >= INBOX_MAX:
            self.counters.inbox_dropped += 1
            return
        self._inbox.append((datagram, at))
        self._wake()

    # ------------------------------------------------------------------------ audio thread

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        last_error = ""
        try:
            while True:
                try:
                    with self._lock:
                        if self._closing:
                            return
                        self._watch(selector)
                        timeout = self._timeout(time.monotonic())
                    ready = selector.select(timeout)
                    with self._lock:
                        if self._closing:
                            return
                        self._step(ready, time.monotonic())
                except Exception as exc:  # a bug in one pass must not silence the call for good
                    self.counters.tick_errors += 1
                    if repr(exc) != last_error:  # once per distinct failure, not 50 times a second
                        log.exception("media engine pass failed")
                        last_error = repr(exc)
                    time.sleep(TICK_S)  # a failure that repeats at once must not spin a core
        finally:
            selector.close()

    def _watch(self, selector: selectors.BaseSelector) -> None:
        """Point the selector at the session's socket. Under the lock: sockets close only under it,
        so the one registered here is open (a closed one's fd is -1 and cannot be registered)."""
        room = self._room
        sock = room.sock if room is not None else None
        watched = [key.fileobj for key in selector.get_map().values() if key.fileobj is not self._wake_r]
        if watched == ([sock] if sock is not None else []):
            return
        for old in watched:
            selector.unregister(old)  # found by object even once closed
        if sock is not None:
            selector.register(sock, selectors.EVENT_READ)

    def _timeout(self, now: float) -> float | None:
        """Until the next frame period or delayed datagram; None (sleep until woken) when idle."""
        if self._room is None and self._mic is None and self._speaker is None:
            self._next_tick = None
            return None
        if self._next_tick is None:
            self._next_tick = now
            self._pacer.reset(now)
        due = self._next_tick
        if self._delayed:
            due = min(due, self._delayed[0][0])
        return max(0.0, due - now)

    def _step(self, ready: list[tuple[selectors.SelectorKey, int]], now: float) -> None:
        room = self._room
        for key, _ in ready:
            if key.fileobj is self._wake_r:
                try:
                    while self._wake_r.recv(512):
                        pass
                except OSError:
                    pass
            elif room is not None and key.fileobj is room.sock:
                self._read_udp(room, now)
        while self._inbox:
            datagram, at = self._inbox.popleft()
            self.counters.received_ws += 1
            self._arrive(datagram, at, Route.WS)
        while self._delayed and self._delayed[0][0] <= now:
            at, _, datagram, route = heapq.heappop(self._delayed)
            self._deliver(datagram, at, route)
        if self._next_tick is not None and now >= self._next_tick:
            self._tick(now)
            while self._next_tick <= now:
                self._next_tick += TICK_S

    def _read_udp(self, room: _RoomMedia, now: float) -> None:
        assert room.sock is not None
        while True:
            try:
                datagram = room.sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable and the like: the BIND timer decides
                return
            self._arrive(datagram, now, Route.UDP)

    def _arrive(self, datagram: bytes, at: float, route: Route) -> None:
        self.counters.received += 1
        if self.impairment is None:
            self._deliver(datagram, at, route)
            return
        for deliver_at, delayed in self.impairment.schedule(datagram, at):
            if len(self._delayed) >= DELAYED_MAX:
                self.counters.impaired_dropped += 1
            else:
                heapq.heappush(self._delayed, (deliver_at, next(self._delay_order), delayed, route))

    def _deliver(self, datagram: bytes, at: float, route: Route) -> None:
        room = self._room
        if room is None or not datagram:
            return
        if datagram[0] & TYPE_MASK == _DATA and not self._recv_enabled:
            return  # EnableAudioRecv(false): the downstream is not taken
        ptype = room.downlink.receive(datagram, at)
        if ptype is PacketType.BIND:
            room.binding.acknowledged(route)
            room.binding.heard(at)
        elif ptype is PacketType.KEEPALIVE:
            sent_ms = MediaHeader.unpack(datagram).timestamp
            rtt = ((int(at * 1000) - sent_ms) & 0xFFFFFFFF) / 1000
            if rtt < MAX_RTT_S:
                self.rtt = rtt
                room.binding.heard(at)

    def _tick(self, now: float) -> None:
        room = self._room
        if room is not None:
            self._tick_route(room, now)
        frames = self._pacer.due(now)
        for frame in self._read_mic(frames, now):
            if room is not None:
                route = room.binding.route
                if route is None:
                    continue  # not sealed: an index spent now would read as loss at the relay
                datagram = room.uplink.process(frame, now)
                if datagram is not None:
                    self._send_on(room, datagram, route)
                if self._loopback:
                    room.downlink.push_loopback(frame, room.uplink.sample_rate)
            elif self.device_test and self._speaker is not None:
                self._speaker.write_frame(frame)
        if room is None:
            return
        for _ in range(frames):
            out = room.downlink.render(now)
            if self._speaker is not None:
                self._speaker.write_frame(out)
        for tinyid, event in room.downlink.events(now):
            self._events.append(Speaking(tinyid, event))
        self._tick_volumes(room, now)

    def _read_mic(self, due: int, now: float) -> list[Frame]:
        """Frames captured since the last tick: all a clocked device has ready, else ``due`` of them;
        once a finite source has ended, TAIL_FRAMES of silence to flush what the uplink still holds."""
        mic = self._mic
        if mic is None or now < self._mic_ready_at:
            return []
        frames: list[Frame] = []
        try:
            while mic.clocked or len(frames) < due:
                frame = mic.read_frame()
                if frame is None:
                    break
                frames.append(frame)
        except GmeError as exc:  # e.g. a file mic that turns out damaged half way
            log.warning("mic %s failed: %s", mic.id, exc)
            self._close_mic()
            return frames
        while mic.exhausted and self._mic_tail > 0 and len(frames) < due:
            self._mic_tail -= 1
            frames.append(np.zeros(mic.frame_samples, dtype=np.int16))
        return frames

    def _tick_route(self, room: _RoomMedia, now: float) -> None:
        self.silent = room.binding.expire(now)
        if self.silent:
            self.rtt = None  # the last echo's RTT says nothing about a path that stopped answering
        bind_on = room.binding.poll(now)
        if bind_on is not None:
            self.counters.binds_sent += 1
            self._send_on(room, room.crypto.seal_bind(room.tinyid, room_type=room.uplink.room_type), bind_on)
            if bind_on is Route.UDP and room.binding.route is Route.WS:
                room.next_keepalive = min(room.next_keepalive, now + PROBE_FOLLOW_S)
        route = room.binding.route
        if route is not None and now >= room.next_keepalive:
            room.next_keepalive = now + KEEPALIVE_S
            header = MediaHeader(PacketType.KEEPALIVE, room.tinyid, timestamp=int(now * 1000) & 0xFFFFFFFF,
                                 room_type=room.uplink.room_type)
            self._send_on(room, room.crypto.seal(header, b""), route)

    def _tick_volumes(self, room: _RoomMedia, now: float) -> None:
        report = room.downlink.volumes(now)
        if self._track_s is None:
            return
        for tinyid, level in (report or {}).items():
            self._track_peaks[tinyid] = max(level, self._track_peaks.get(tinyid, 0))
        if now >= self._track_due:
            self._track_due = now + self._track_s
            self._events.append(Volumes(dict(self._track_peaks)))
            self._track_peaks = dict.fromkeys(self._track_peaks, 0)

    def _send_on(self, room: _RoomMedia, datagram: bytes, route: Route) -> None:
        if route is Route.WS:
            self.counters.sent_ws += 1
            self._send_ws(datagram)
            return
        assert room.sock is not None
        try:
            room.sock.send(datagram)
            self.counters.sent += 1
        except OSError:  # unreachable or a full buffer: this datagram is lost, as on the wire
            self.counters.send_errors += 1
