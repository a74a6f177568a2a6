"""The SDK's media engine: one audio thread per Context, the I/O shell around a pure media session.

Every decision (route and failover, keepalives, pipelines, events, settings) is the
:class:`~opengme.sdk.media_session.MediaSession`'s; the engine owns what it cannot: the thread, the
selector, the room's UDP socket, the WebSocket send hook, the devices, the clock and the lock.

Every 20 ms (a monotonic ticker; ``FramePacer`` keeps the average rate exact when a tick is late) the
thread reads the mic, hands its frames to ``MediaSession.capture`` and sends the datagrams on their
routes. The playout runs on its own 20 ms periods (``RenderClock``): ``MediaSession.render``'s frames
go to the speaker and its events into a bounded queue for ``poll``; while nothing is heard, a
talkspurt that may start between two periods is rendered then, not at the next one (issue 11). Between ticks
it waits in ``select`` on the UDP socket, so each datagram reaches ``MediaSession.receive`` the moment
it arrives (honest arrival times for the jitter buffer) rather than at the next tick.

The thread starts with the first media session or open device (a Context that never enters a room
costs no thread) and idles in ``select`` when there is nothing to do. Threading: the owner thread
(the Context's) changes state only through the methods below, which take the engine's lock; the audio
thread holds it while it ticks. The network thread only appends to a bounded inbox. Nothing here
waits on the network, every queue is bounded, and ``close`` joins the thread; a failure in one pass
of the thread's loop is logged and counted, never the thread's end.
"""
from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

import numpy as np

from opengme.codec.opus import FRAME_MS
from opengme.core.downlink import OUTPUT_RATE, VoiceStage
from opengme.core.impair import Impairment
from opengme.core.uplink import SendStage
from opengme.devices import Frame, FramePacer, MicDevice, SpeakerDevice
from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType
from opengme.protocol.media import MAX_DATAGRAM
from opengme.sdk.audio_settings import AudioSettings
from opengme.sdk.media_session import (
    TICK_S,
    LocalSource,
    MediaCounters,
    MediaEvent,
    MediaSession,
    MediaTransport,
    MicTap,
    Route,
)
from opengme.sdk.render_clock import RenderClock

INBOX_MAX: Final = 256
"""WebSocket datagrams waiting for the audio thread; beyond this, arrivals are dropped and counted."""
EVENTS_MAX: Final = 256
"""Engine events waiting for ``poll``; an app that never polls loses the oldest."""
CATCH_UP_TICKS: Final = 5
TAIL_FRAMES: Final = 2
"""Silent frames sent after a finite mic (a file) ends: its last ~27 ms are still inside noise
suppression (one frame) and the encoder's lookahead (6.5 ms) and would otherwise never be heard."""
IMPAIR_ENV: Final = "OPENGME_TEST_IMPAIR"

log = logging.getLogger("opengme.sdk.media")


def impairment_from_env(environ: Mapping[str, str] = os.environ) -> Impairment | None:
    """The receive-side test impairment ``OPENGME_TEST_IMPAIR="loss=0.1,jitter_ms=30,seed=1"``."""
    spec = environ.get(IMPAIR_ENV, "").strip()
    if not spec:
        return None
    return Impairment.parse(spec.replace("jitter_ms=", "jitter=").replace("delay_ms=", "delay="))


class MediaEngine:
    """The audio thread and datagram transport of one Context (see the module docstring)."""

    def __init__(self, name: str, owner: object, send_ws: Callable[[bytes], None], *,
                 mode: MediaTransport = MediaTransport.AUTO, impairment: Impairment | None = None) -> None:
        self.owner = owner  # holds devices in the occupancy table (1008 for another context)
        self._session = MediaSession(mode, impairment=impairment)
        self._send_ws = send_ws
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closing = False
        self._sock: socket.socket | None = None  # the room's UDP socket
        self._mic: MicDevice | None = None
        self._mic_ready_at = 0.0  # the open mic's first frame is complete one period after it opened
        self._mic_tail = 0  # silent frames still owed after a finite mic ended (TAIL_FRAMES)
        self._speaker: SpeakerDevice | None = None
        self._pacer = FramePacer(TICK_S, CATCH_UP_TICKS)
        self._next_tick: float | None = None
        self._render_clock = RenderClock(TICK_S, CATCH_UP_TICKS)  # the playout's own periods
        self._inbox: deque[tuple[bytes, float]] = deque()
        self._events: deque[MediaEvent] = deque(maxlen=EVENTS_MAX)

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
        if self._thread.ident is None and (self._session.key or self._mic or self._speaker):
            with self._start_lock:  # the network thread wakes it too
                if self._thread.ident is None and not self._closing:
                    self._thread.start()
        with contextlib.suppress(OSError):  # full (the thread is busy and will look anyway) or closed
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------------ readings (any thread)

    @property
    def mode(self) -> MediaTransport:
        return self._session.mode

    @property
    def impairment(self) -> Impairment | None:
        return self._session.impairment

    @property
    def counters(self) -> MediaCounters:
        return self._session.counters

    @property
    def key(self) -> bytes | None:
        return self._session.key

    @property
    def route(self) -> Route | None:
        return self._session.route

    @property
    def rtt(self) -> float | None:
        return self._session.rtt

    @property
    def silent(self) -> bool:
        """No echo on the room's path for ECHO_TIMEOUT_S (written by the audio thread)."""
        return self._session.silent

    @property
    def mic(self) -> MicDevice | None:
        return self._mic

    @property
    def speaker(self) -> SpeakerDevice | None:
        return self._speaker

    # ------------------------------------------------------------------------ room (owner)

    def start_room(self, key: bytes, tinyid: int, room_type: RoomType, host: str, udp_port: int,
                   now: float) -> list[MediaEvent]:
        """A new media session (entry, switch, resume): fresh key, pipelines and route; devices stay.

        Returns the events of the session it replaces not yet taken, then its last ones (see
        ``MediaSession.start_room``), for the caller to name with that session's members: they still
        mean something to those who stayed (a resume).
        """
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
        with self._lock:
            ended = [*self._events, *self._session.start_room(key, tinyid, room_type, now, udp=sock is not None)]
            self._close_socket()
            self._sock = sock
            self._clear_queues()
            self._fit_mic()
        self._wake()
        return ended

    def stop_room(self) -> None:
        """Leave: the session's pipelines and socket go; devices are the caller's to close."""
        with self._lock:
            self._stop_room()

    def _stop_room(self) -> None:
        self._session.stop_room()
        self._close_socket()
        self._clear_queues()

    def _close_socket(self) -> None:
        """Sockets close only here, under the lock (the audio thread watches them under it too)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _clear_queues(self) -> None:
        self._inbox.clear()
        self._events.clear()

    def set_room_type(self, room_type: RoomType) -> None:
        """The room changed type: codecs follow, and the mic reopens at the new capture rate."""
        with self._lock:
            if self._session.set_room_type(room_type):
                self._fit_mic()

    def apply(self, settings: AudioSettings, members: Mapping[str, int]) -> None:
        """The Context's audio settings and the room's other members (openid → tinyid) now."""
        with self._lock:
            self._session.apply(settings, members)

    def set_uplink_loss(self, loss: float) -> None:
        """The server's view of our upstream loss (0–1): FEC spends bits to match."""
        with self._lock:
            self._session.set_uplink_loss(loss)

    # ------------------------------------------------------------------------ seams (owner)

    def add_mic_tap(self, tap: MicTap) -> None:
        """``tap(frame, rate)`` sees every captured mic frame (open the mic to capture)."""
        with self._lock:
            self._session.add_mic_tap(tap)

    def remove_mic_tap(self, tap: MicTap) -> None:
        with self._lock:
            self._session.remove_mic_tap(tap)

    def add_player(self, source: LocalSource) -> None:
        """Mix ``source`` into what the speaker plays (open the speaker to hear it)."""
        with self._lock:
            self._session.add_player(source)

    def remove_player(self, source: LocalSource) -> None:
        with self._lock:
            self._session.remove_player(source)

    def set_send_stage(self, stage: SendStage | None) -> None:
        with self._lock:
            self._session.set_send_stage(stage)

    def set_voice_stage(self, stage: VoiceStage | None, channels: int = 1) -> ErrorCode:
        """The per-speaker stage; an open speaker reopens when the channel count changes."""
        with self._lock:
            self._session.set_voice_stage(stage, channels)
            return self._fit_speaker()

    def set_custom_data(self, data: bytes | None, repeat_count: int = 1) -> None:
        """Custom data on the next voice packets (None stops it); see ``core.custom_data``."""
        with self._lock:
            if data is None:
                self._session.stop_custom_data()
            else:
                self._session.start_custom_data(data, repeat_count)

    # ------------------------------------------------------------------------ devices (owner)

    def use_mic(self, device: MicDevice | None) -> ErrorCode:
        """Open ``device`` as the mic (closing another one), or close the mic with None."""
        with self._lock:
            if device is self._mic:
                return ErrorCode.AV_OK
            self._close_mic()
            if device is None:
                return ErrorCode.AV_OK
            code = self._open(device, self._session.capture_rate)
            if code == ErrorCode.AV_OK:
                self._mic = device
            self._fit_echo_path()
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
            code = self._open(device, OUTPUT_RATE, self._session.output_channels)
            if code == ErrorCode.AV_OK:
                self._speaker = device
            self._fit_echo_path()
        self._wake()
        return code

    def _open(self, device: MicDevice | SpeakerDevice, rate: int, channels: int = 1) -> ErrorCode:
        try:
            device.open(rate, rate * FRAME_MS // 1000, channels, owner=self.owner)
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

    def _fit_echo_path(self) -> None:
        """AEC's default follows the devices: on when a sound-card speaker can reach a sound-card mic."""
        mic, speaker = self._mic, self._speaker
        self._session.set_echo_path(mic is not None and speaker is not None and mic.acoustic and speaker.acoustic)

    def _fit_mic(self) -> None:
        """Reopen an open mic whose rate no longer matches (room type changed, test → room)."""
        mic = self._mic
        if mic is not None and mic.sample_rate != self._session.capture_rate:
            mic.close()
            if self._open(mic, self._session.capture_rate) != ErrorCode.AV_OK:
                self._mic = None

    def _fit_speaker(self) -> ErrorCode:
        """Reopen an open speaker whose channel count no longer matches the output's."""
        speaker = self._speaker
        channels = self._session.output_channels
        if speaker is None or speaker.channels == channels:
            return ErrorCode.AV_OK
        speaker.close()
        code = self._open(speaker, OUTPUT_RATE, channels)
        if code != ErrorCode.AV_OK:
            self._speaker = None
        return code

    def _close_mic(self) -> None:
        if self._mic is not None:
            self._mic.close()
            self._mic = None

    def _close_speaker(self) -> None:
        if self._speaker is not None:
            self._speaker.close()
            self._speaker = None

    # ------------------------------------------------------------------------ meters (owner)

    def mic_level(self) -> int:
        with self._lock:
            return self._session.mic_level() if self._mic is not None else 0

    def send_level(self) -> int:
        with self._lock:
            return self._session.send_level() if self._mic is not None else 0

    def speaker_level(self) -> int:
        with self._lock:
            return self._session.speaker_level()

    def recv_stream_level(self, tinyid: int) -> int:
        with self._lock:
            return self._session.recv_stream_level(tinyid)

    @property
    def queued_events(self) -> int:
        """Events waiting for ``take_events`` (at most EVENTS_MAX: the oldest go first)."""
        return len(self._events)

    def take_events(self) -> list[MediaEvent]:
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
        """Point the selector at the room's socket. Under the lock: sockets close only under it,
        so the one registered here is open (a closed one's fd is -1 and cannot be registered)."""
        sock = self._sock
        watched = [key.fileobj for key in selector.get_map().values() if key.fileobj is not self._wake_r]
        if watched == ([sock] if sock is not None else []):
            return
        for old in watched:
            selector.unregister(old)  # found by object even once closed
        if sock is not None:
            selector.register(sock, selectors.EVENT_READ)

    def _timeout(self, now: float) -> float | None:
        """Until the next frame period, render or held-back datagram; None (sleep until woken) when idle."""
        clock = self._render_clock
        if self._session.key is None and self._mic is None and self._speaker is None:
            self._next_tick = None
            clock.stop()
            return None
        if self._next_tick is None or clock.next is None:
            self._next_tick = now
            self._pacer.reset(now)
            clock.start(now)
        self._align_render()
        assert clock.next is not None
        due = min(self._next_tick, clock.next)
        release = self._session.next_release()
        if release is not None:
            due = min(due, release)
        return max(0.0, due - now)

    def _step(self, ready: list[tuple[selectors.SelectorKey, int]], now: float) -> None:
        for key, _ in ready:
            if key.fileobj is self._wake_r:
                try:
                    while self._wake_r.recv(512):
                        pass
                except OSError:
                    pass
            elif key.fileobj is self._sock:
                self._read_udp(self._sock, now)
        while self._inbox:
            datagram, at = self._inbox.popleft()
            self.counters.received_ws += 1
            self._session.receive(datagram, at, Route.WS)
        self._session.release(now)
        if self._next_tick is not None and now >= self._next_tick:
            self._tick(now)
            while self._next_tick <= now:
                self._next_tick += TICK_S
        self._align_render()  # what just arrived may start a talkspurt before the next period
        frames = self._render_clock.take(now)
        if frames:
            self._render(now, frames)

    def _align_render(self) -> None:
        """While nothing is heard, the next render may move to a waiting talkspurt's start (see
        ``sdk.render_clock``). Not with a sound card's speaker: its own clock sets when a frame is
        heard, and writing earlier would only lengthen its queue."""
        speaker = self._speaker
        if speaker is None or not speaker.clocked:
            self._render_clock.align(self._session.start_due())

    def _read_udp(self, sock: socket.socket, now: float) -> None:
        while True:
            try:
                datagram = sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable and the like: the BIND timer decides
                return
            self._session.receive(datagram, now, Route.UDP)

    def _tick(self, now: float) -> None:
        """The send half: the mic's frames out (the playout runs on its own periods, ``_render``)."""
        due = self._pacer.due(now)
        result = self._session.capture(now, self._read_mic(due, now))
        for route, datagram in result.datagrams:
            self._send(route, datagram)

    def _render(self, now: float, frames: int) -> None:
        result = self._session.render(now, frames)
        speaker = self._speaker
        if speaker is not None:
            for frame in result.speaker:
                speaker.write_frame(frame)
        self._events.extend(result.events)

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

    def _send(self, route: Route, datagram: bytes) -> None:
        if route is Route.WS:
            self.counters.sent_ws += 1
            self._send_ws(datagram)
            return
        if self._sock is None:  # no UDP socket: the session binds on the WebSocket then
            self.counters.send_errors += 1
            return
        try:
            self._sock.send(datagram)
            self.counters.sent += 1
        except OSError:  # unreachable or a full buffer: this datagram is lost, as on the wire
            self.counters.send_errors += 1
