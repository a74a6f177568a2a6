"""The client's media session, pure: what the audio thread does with frames and datagrams, without
sockets, threads, locks or clocks (time is passed in), so every rule here runs on a fake clock.

:class:`MediaSession` holds one Context's voice path: the room's pipelines (``Uplink``,
``Downlink``), the route its datagrams take and its failover (:class:`Binding`), KEEPALIVEs and the
RTT their echoes give, speaking events and USER_VOLUMES peaks, and the one settings snapshot it
applies (:class:`~opengme.sdk.audio_settings.AudioSettings`). The engine drives it:

- ``receive(datagram, at, route)`` for every datagram that arrived (UDP or the WebSocket);
- ``tick(now, mic_frames, frames)`` once per 20 ms period with the frames the mic captured, which
  answers the datagrams to send (each with its route, in order), the frames for the speaker and the
  events (:class:`Speaking`, :class:`Volumes`).

Datagram route (docs/protocol.md "Media"): a BIND over UDP up to 3 times 300 ms apart; the first
acknowledgement picks UDP, none picks the signalling WebSocket. ``MediaTransport`` forces either. A
KEEPALIVE goes out every second on the chosen route and its echo gives the RTT. No echo for 3 s marks
the path silent (no RTT, CHANGE_ROOM_QUALITY reads it); in AUTO mode a silent UDP route is bound
again, so media moves to the WebSocket when UDP died after binding, and a BIND probes UDP every 5 s
from the WebSocket to move back when it answers. Packets go up under the session id derived from the
key (``protocol.media.session_id``), not the tinyid. When the relay hears us from a new address (a
NAT rebinding, a UDP probe from the WebSocket) it sends a CHALLENGE there; it is answered at the next
tick on the route it came by, with the same nonce, and the relay's BIND acknowledgement then says the
downlink follows.

Seams for what plays or records locally (inside a room or not):

- mic taps (``add_mic_tap``): ``tap(frame, sample_rate)`` sees every captured frame, before any
  processing, at the capture rate (the room's codec rate; 48 kHz outside a room);
- local players (``add_player``): ``source(frame_samples)`` is asked for one frame per output period
  at 48 kHz (mono or stereo) and mixed into the speaker's output, not sent; a source answers None
  once it has finished, and is dropped;
- the send stage (``set_send_stage``, :data:`~opengme.core.uplink.SendStage`): what is sent;
- the voice stage (``set_voice_stage``, :data:`~opengme.core.downlink.VoiceStage`): each remote voice
  before the mix, stereo output with ``channels=2``.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

import numpy as np

from opengme.codec.opus import FRAME_MS, Frame
from opengme.core import custom_data
from opengme.core.custom_data import CustomDataSender
from opengme.core.downlink import OUTPUT_RATE, Downlink, VoiceStage
from opengme.core.impair import Impairment
from opengme.core.mixer import fit_channels
from opengme.core.uplink import SendStage, Uplink
from opengme.events import RoomType, UserUpdateEvent
from opengme.protocol.media import TYPE_MASK, MediaCrypto, MediaHeader, MediaPacketError, PacketType, session_id
from opengme.sdk.audio_settings import AudioSettings

TICK_S: Final = FRAME_MS / 1000
OUTPUT_SAMPLES: Final = OUTPUT_RATE * FRAME_MS // 1000
BIND_TRIES: Final = 3
BIND_INTERVAL_S: Final = 0.3
KEEPALIVE_S: Final = 1.0
ECHO_TIMEOUT_S: Final = 3.0
"""No echo (a BIND acknowledgement or KEEPALIVE) for this long: the path is silent."""
UDP_RETRY_S: Final = 5.0
"""On the WebSocket in AUTO mode, a BIND probes UDP this often; its acknowledgement moves media back."""
MAX_RTT_S: Final = 10.0
DELAYED_MAX: Final = 1024
"""Datagrams held back by a test impairment; more are dropped."""
LOOPED_MAX: Final = 10
"""Device-test frames waiting for a render; more are dropped (the speaker fell behind)."""
QUALITY_MAX_WEIGHT: Final = 50
QUALITY_INTERVAL_S: Final = 2.0

_DATA: Final = int(PacketType.DATA)
_CHALLENGE: Final = int(PacketType.CHALLENGE)
_CUSTOM: Final = int(PacketType.CUSTOM)
CUSTOM_EVENTS_MAX: Final = 64
"""Custom data received and not yet ticked out; more is dropped (a tick takes them every 20 ms)."""

MicTap = Callable[[Frame, int], None]
"""``tap(frame, sample_rate)``: one captured mic frame, as captured."""
LocalSource = Callable[[int], Frame | None]
"""``source(frame_samples)``: the next output period at 48 kHz (mono or stereo), None once finished."""


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


class QualityReport:
    """When CHANGE_ROOM_QUALITY is due for one media session: every QUALITY_INTERVAL_S, and at once
    when the path goes silent (reported as loss 1.0: the server's last loss report is stale then, it
    reports only members it hears) or answers again."""

    def __init__(self, now: float) -> None:
        self._next = now + QUALITY_INTERVAL_S
        self._silent = False

    def poll(self, now: float, *, silent: bool, uplink_loss: float | None,
             rtt_s: float | None) -> dict[str, float | int] | None:
        """The payload when a report is due at ``now``, else None."""
        if now < self._next and silent == self._silent:
            return None
        self._next = now + QUALITY_INTERVAL_S
        self._silent = silent
        return room_quality(1.0 if silent else uplink_loss, rtt_s)


@dataclass(frozen=True, slots=True)
class Speaking:
    """A remote member started (HAS_AUDIO) or stopped (NO_AUDIO) sending audio."""

    tinyid: int
    event: UserUpdateEvent


@dataclass(frozen=True, slots=True)
class Volumes:
    """USER_VOLUMES: loudest level (0–100) per member over the tracking interval."""

    levels: dict[int, int]


@dataclass(frozen=True, slots=True)
class CustomData:
    """CUSTOMDATA_UPDATE: a member's custom data arrived with its voice."""

    tinyid: int
    data: bytes


MediaEvent = Speaking | Volumes | CustomData


@dataclass(slots=True)
class MediaCounters:
    """What happened to datagrams (diagnostics and tests); the engine counts its socket's share."""

    sent: int = 0
    sent_ws: int = 0
    send_errors: int = 0
    received: int = 0
    received_ws: int = 0
    inbox_dropped: int = 0
    impaired_dropped: int = 0
    binds_sent: int = 0
    challenges_answered: int = 0
    tick_errors: int = 0


@dataclass(slots=True)
class TickResult:
    """What one ``tick`` asks of the engine."""

    datagrams: list[tuple[Route, bytes]] = field(default_factory=list)  # to send, in this order
    speaker: list[Frame] = field(default_factory=list)  # to play, in this order
    events: list[MediaEvent] = field(default_factory=list)


@dataclass(slots=True)
class _RoomLink:
    """One keyed media session (an entry, switch or resume): its pipelines and route, and the
    member-scoped settings as applied to its downlink (by tinyid)."""

    key: bytes
    tinyid: int
    session: int  # the header id of our packets (protocol.media.session_id of the key)
    crypto: MediaCrypto
    uplink: Uplink
    downlink: Downlink
    binding: Binding
    next_keepalive: float
    members: set[int] = field(default_factory=set)
    blacklist: set[int] = field(default_factory=set)
    volumes: dict[int, int] = field(default_factory=dict)
    answers: list[tuple[Route, bytes]] = field(default_factory=list)  # CHALLENGE nonces to echo


class MediaSession:
    """One Context's media, pure (see the module docstring). Not thread-safe: the engine locks."""

    def __init__(self, mode: MediaTransport = MediaTransport.AUTO, *, impairment: Impairment | None = None) -> None:
        self.mode = MediaTransport(mode)
        self.impairment = impairment
        self.counters = MediaCounters()
        self.rtt: float | None = None
        self.silent = False
        """No echo on the room's path for ECHO_TIMEOUT_S."""
        self._room: _RoomLink | None = None
        self._settings = AudioSettings()
        self._members: Mapping[str, int] = {}
        self._uplink_loss: float | None = None  # until the server's first `quality` report
        self._delayed: list[tuple[float, int, bytes, Route]] = []
        self._delay_order = itertools.count()
        self._track_due: float | None = None  # the next USER_VOLUMES; None: one interval from the next tick
        self._track_peaks: dict[int, int] = {}
        self._mic_taps: list[MicTap] = []
        self._players: list[LocalSource] = []
        self._send_stage: SendStage | None = None
        self._voice_stage: VoiceStage | None = None
        self._voice_channels = 1
        self.echo_path = False
        """The speaker can be heard by the mic (both sound cards): turns AEC on by default."""
        self._custom = CustomDataSender()
        self._custom_in: list[MediaEvent] = []
        self._looped: list[Frame] = []  # the device test: mic frames captured, for the next render

    # ------------------------------------------------------------------------ room

    @property
    def key(self) -> bytes | None:
        return self._room.key if self._room is not None else None

    @property
    def route(self) -> Route | None:
        return self._room.binding.route if self._room is not None else None

    @property
    def capture_rate(self) -> int:
        """The mic's rate: the room's codec rate; outside a room (device test, taps) the speaker's."""
        return self._room.uplink.sample_rate if self._room is not None else OUTPUT_RATE

    @property
    def output_channels(self) -> int:
        """Channels of the speaker frames: 2 with a stereo voice stage, else 1."""
        return self._voice_channels

    def start_room(self, key: bytes, tinyid: int, room_type: RoomType, now: float, *, udp: bool = True) -> list[MediaEvent]:
        """A new keyed session (entry, switch, resume): fresh pipelines and route, settings kept.

        ``udp`` False (no UDP socket could be made) binds on the WebSocket. Returns the replaced
        session's last events: its speaking changes, then NO_AUDIO for every member it had speaking
        (a new downlink never heard them, so nothing else would end their HAS_AUDIO).
        """
        ended = self._last_events(now)
        self.stop_room()
        self._members = {}  # a new session knows no members until ``apply`` names them
        crypto = MediaCrypto.for_client(key)
        session = session_id(key)
        uplink = Uplink(RoomType(room_type), session, crypto, switches=self._settings.processing,
                        echo_path=self.echo_path)
        uplink.send_stage = self._send_stage
        if self._uplink_loss is not None:
            uplink.set_packet_loss_perc(self._uplink_loss * 100)
        downlink = Downlink(RoomType(room_type), crypto, max_streams=self._settings.mix_streams,
                            volume_interval_s=TICK_S)
        downlink.set_voice_stage(self._voice_stage, self._voice_channels)
        binding = Binding(self.mode if udp else MediaTransport.WS, now)
        self._room = _RoomLink(key, tinyid, session, crypto, uplink, downlink, binding, next_keepalive=now)
        self._configure(self._room)
        return ended

    def stop_room(self) -> None:
        """Leave: the session's pipelines and what was on its way go (custom data too)."""
        self._room = None
        self._custom.stop()
        self._custom_in.clear()
        self._delayed.clear()
        self._track_peaks.clear()
        self.rtt = None
        self.silent = False

    def set_room_type(self, room_type: RoomType) -> bool:
        """The room changed type: codecs follow. True when it did change (the mic must reopen at the
        new ``capture_rate``)."""
        room = self._room
        if room is None or room.uplink.room_type == room_type:
            return False
        room.uplink.set_room_type(RoomType(room_type))
        room.downlink.set_room_type(RoomType(room_type))
        return True

    def _last_events(self, now: float) -> list[MediaEvent]:
        room = self._room
        if room is None:
            return []
        events: list[MediaEvent] = [Speaking(tinyid, event) for tinyid, event in room.downlink.events(now)]
        return events + [Speaking(tinyid, UserUpdateEvent.NO_AUDIO) for tinyid in sorted(room.downlink.speaking())]

    # ------------------------------------------------------------------------ settings

    @property
    def settings(self) -> AudioSettings:
        return self._settings

    def apply(self, settings: AudioSettings, members: Mapping[str, int]) -> None:
        """Take ``settings`` and the room's other members (openid → tinyid) now: streams of members
        who left are dropped (EXIT, not NO_AUDIO), blacklist and volumes follow by tinyid."""
        if settings.track_volume_s != self._settings.track_volume_s:
            self._track_due = None
            self._track_peaks.clear()
        self._settings = settings
        self._members = dict(members)
        if self._room is not None:
            self._configure(self._room)

    def set_echo_path(self, echo_path: bool) -> None:
        """Whether the speaker can be heard by the mic (both sound-card devices): AEC's default."""
        self.echo_path = echo_path
        if self._room is not None:
            self._room.uplink.set_switches(self._settings.processing, echo_path)

    def set_uplink_loss(self, loss: float) -> None:
        """The server's view of our upstream loss (0–1): FEC spends bits to match."""
        self._uplink_loss = min(max(loss, 0.0), 1.0)
        if self._room is not None:
            self._room.uplink.set_packet_loss_perc(self._uplink_loss * 100)

    def _configure(self, room: _RoomLink) -> None:
        settings, members = self._settings, self._members
        uplink, downlink = room.uplink, room.downlink
        uplink.send_enabled = settings.send
        uplink.set_switches(settings.processing, self.echo_path)
        uplink.set_mic_volume(settings.mic_gain)
        downlink.set_speaker_volume(settings.speaker_gain)
        downlink.set_max_streams(settings.mix_streams)
        downlink.loopback = settings.loopback
        blacklist = {members[o] for o in settings.blacklist if o in members}
        for tinyid in blacklist - room.blacklist:
            downlink.add_blacklist(tinyid)
        for tinyid in room.blacklist - blacklist:
            downlink.remove_blacklist(tinyid)
        room.blacklist = blacklist
        volumes = {members[o]: v for o, v in settings.member_volumes.items() if o in members}
        for tinyid in room.volumes.keys() - volumes.keys():
            downlink.set_volume(tinyid, 100)
        for tinyid, volume in volumes.items():
            downlink.set_volume(tinyid, volume)
        room.volumes = volumes
        current = set(members.values())
        for gone in room.members - current:
            downlink.remove_member(gone)
        room.members = current

    # ------------------------------------------------------------------------ seams

    def add_mic_tap(self, tap: MicTap) -> None:
        self._mic_taps.append(tap)

    def remove_mic_tap(self, tap: MicTap) -> None:
        if tap in self._mic_taps:
            self._mic_taps.remove(tap)

    def add_player(self, source: LocalSource) -> None:
        self._players.append(source)

    def remove_player(self, source: LocalSource) -> None:
        if source in self._players:
            self._players.remove(source)

    def set_send_stage(self, stage: SendStage | None) -> None:
        self._send_stage = stage
        if self._room is not None:
            self._room.uplink.send_stage = stage

    def set_voice_stage(self, stage: VoiceStage | None, channels: int = 1) -> None:
        """The downlink's per-speaker stage; ``channels`` 2 makes the speaker output stereo."""
        if channels not in (1, 2):
            raise ValueError(f"the voice stage outputs 1 or 2 channels, not {channels}")
        self._voice_stage = stage
        self._voice_channels = channels if stage is not None else 1
        if self._room is not None:
            self._room.downlink.set_voice_stage(stage, self._voice_channels)

    def start_custom_data(self, data: bytes, repeat_count: int) -> None:
        """Attach ``data`` to the next voice packets (``core.custom_data``'s pacing)."""
        self._custom.start(data, repeat_count)

    def stop_custom_data(self) -> None:
        self._custom.stop()

    # ------------------------------------------------------------------------ input

    def receive(self, datagram: bytes, at: float, route: Route) -> None:
        """A datagram that arrived at ``at`` on ``route``; never raises for what the network sends."""
        self.counters.received += 1
        if self.impairment is None:
            self._deliver(datagram, at, route)
            return
        for deliver_at, delayed in self.impairment.schedule(datagram, at):
            if len(self._delayed) >= DELAYED_MAX:
                self.counters.impaired_dropped += 1
            else:
                heapq.heappush(self._delayed, (deliver_at, next(self._delay_order), delayed, route))

    def next_release(self) -> float | None:
        """When the next datagram held back by the impairment is due (None: none is)."""
        return self._delayed[0][0] if self._delayed else None

    def release(self, now: float) -> None:
        """Deliver the held-back datagrams due by ``now``."""
        while self._delayed and self._delayed[0][0] <= now:
            at, _, datagram, route = heapq.heappop(self._delayed)
            self._deliver(datagram, at, route)

    def _deliver(self, datagram: bytes, at: float, route: Route) -> None:
        room = self._room
        if room is None or not datagram:
            return
        first = datagram[0] & TYPE_MASK
        if first == _DATA and not self._settings.recv:
            return  # EnableAudioRecv(false): the downstream is not taken
        if first == _CHALLENGE:
            self._challenged(room, datagram, route)
            return
        if first == _CUSTOM:
            self._custom_received(room, datagram)
            return
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

    def _custom_received(self, room: _RoomLink, datagram: bytes) -> None:
        """Custom data reaches members whose speaker is on (GME), as one event per copy."""
        if not (self._settings.recv and self._settings.play) or len(self._custom_in) >= CUSTOM_EVENTS_MAX:
            return
        try:
            header, payload = room.crypto.open(datagram)
            data = custom_data.decode(payload)
        except (MediaPacketError, custom_data.CustomDataError):
            return
        self._custom_in.append(CustomData(header.tinyid, data))

    def _challenged(self, room: _RoomLink, datagram: bytes, route: Route) -> None:
        """The relay asks whether this path is ours: its nonce goes back on the same route at the next
        tick (only the key holder can read it, so the answer proves the path)."""
        try:
            header, nonce = room.crypto.open(datagram)
        except MediaPacketError:
            return
        if header.ptype is PacketType.CHALLENGE and len(room.answers) < 4:
            answer = MediaHeader(PacketType.CHALLENGE, room.session, room_type=room.uplink.room_type)
            room.answers.append((route, room.crypto.seal(answer, nonce)))

    # ------------------------------------------------------------------------ tick

    def tick(self, now: float, mic_frames: Sequence[Frame] = (), frames: int = 1) -> TickResult:
        """One pass at ``now``: :meth:`capture` the mic's frames, then :meth:`render` ``frames``
        output periods (the engine's pacer says how many are due)."""
        result = self.capture(now, mic_frames)
        rendered = self.render(now, frames)
        result.speaker += rendered.speaker
        result.events += rendered.events
        return result

    def capture(self, now: float, mic_frames: Sequence[Frame] = ()) -> TickResult:
        """The send half of a tick: the mic's frames go to the taps and the uplink (datagrams out)."""
        self.release(now)
        result = TickResult()
        room = self._room
        if room is not None:
            self._tick_route(room, now, result.datagrams)
        rate = self.capture_rate
        for frame in mic_frames:
            for tap in self._mic_taps:
                tap(frame, rate)
            if room is not None:
                route = room.binding.route
                if route is None:
                    continue  # not sealed: an index spent now would read as loss at the relay
                datagram = room.uplink.process(frame, now)
                if datagram is not None:
                    result.datagrams.append((route, datagram))
                    custom = self._custom.due(now)
                    if custom is not None:  # custom data rides the voice packet it follows
                        header = MediaHeader(PacketType.CUSTOM, room.session, room_type=room.uplink.room_type)
                        result.datagrams.append((route, room.crypto.seal(header, custom)))
                if self._settings.loopback:  # the processed frame: the voice changer is heard too
                    monitored = room.uplink.last_frame
                    room.downlink.push_loopback(frame if monitored is None else monitored, rate)
            elif self._settings.device_test and len(self._looped) < LOOPED_MAX:
                self._looped.append(fit_channels(frame, self._voice_channels))
        return result

    def start_due(self) -> float | None:
        """While nothing is heard, when the first talkspurt waiting in a jitter buffer may start
        (monotonic s; see ``Downlink.start_due``): the engine may render then, not at its next tick."""
        room = self._room
        return room.downlink.start_due() if room is not None else None

    def render(self, now: float, frames: int = 1) -> TickResult:
        """The playout half of a tick: ``frames`` output periods for the speaker, and the events."""
        self.release(now)
        result = TickResult()
        room = self._room
        if room is not None:
            for _ in range(frames):
                out = room.downlink.render(now)
                mixed = self._play_local(out) if self._players else None
                played = out if mixed is None else mixed
                room.uplink.reference(played, OUTPUT_RATE, self._voice_channels)  # the AEC's far end
                result.speaker.append(played)
            result.events += [Speaking(tinyid, event) for tinyid, event in room.downlink.events(now)]
            result.events += self._custom_in
            self._custom_in = []
            self._tick_volumes(room, now, result.events)
        else:  # the device test's frames, and whatever local players have to say
            looped, self._looped = self._looped, []
            periods = max(frames, len(looped)) if self._players else len(looped)
            for k in range(periods):
                local = self._play_local(looped[k] if k < len(looped) else None)
                if local is not None:
                    result.speaker.append(local)
        return result

    def _play_local(self, base: Frame | None) -> Frame | None:
        """``base`` with every local player's next frame added (saturating); None when there was
        neither. Finished players are dropped."""
        if not self._players:
            return base
        mixed = None if base is None else base.astype(np.int32)
        for source in list(self._players):
            frame = source(OUTPUT_SAMPLES)
            if frame is None:
                self._players.remove(source)
                continue
            played = fit_channels(frame, self._voice_channels).astype(np.int32)
            mixed = played if mixed is None else mixed + played
        return None if mixed is None else np.clip(mixed, -32768, 32767).astype(np.int16)

    def _tick_route(self, room: _RoomLink, now: float, datagrams: list[tuple[Route, bytes]]) -> None:
        self.silent = room.binding.expire(now)
        if self.silent:
            self.rtt = None  # the last echo's RTT says nothing about a path that stopped answering
        if room.answers:
            self.counters.challenges_answered += len(room.answers)
            datagrams += room.answers
            room.answers = []
        bind_on = room.binding.poll(now)
        if bind_on is not None:
            self.counters.binds_sent += 1
            datagrams.append((bind_on, room.crypto.seal_bind(room.session, room_type=room.uplink.room_type)))
        route = room.binding.route
        if route is not None and now >= room.next_keepalive:
            room.next_keepalive = now + KEEPALIVE_S
            header = MediaHeader(PacketType.KEEPALIVE, room.session, timestamp=int(now * 1000) & 0xFFFFFFFF,
                                 room_type=room.uplink.room_type)
            datagrams.append((route, room.crypto.seal(header, b"")))

    def _tick_volumes(self, room: _RoomLink, now: float, events: list[MediaEvent]) -> None:
        report = room.downlink.volumes(now)
        interval = self._settings.track_volume_s
        if interval is None:
            return
        for tinyid, level in (report or {}).items():
            self._track_peaks[tinyid] = max(level, self._track_peaks.get(tinyid, 0))
        if self._track_due is None:
            self._track_due = now + interval
        if now >= self._track_due:
            self._track_due = now + interval
            events.append(Volumes(dict(self._track_peaks)))
            self._track_peaks = dict.fromkeys(self._track_peaks, 0)

    # ------------------------------------------------------------------------ readings

    def mic_level(self) -> int:
        """GetMicLevel of the last captured frame (0 outside a room)."""
        return self._room.uplink.mic_level if self._room is not None else 0

    def send_level(self) -> int:
        return self._room.uplink.send_level if self._room is not None and self._settings.send else 0

    def speaker_level(self) -> int:
        return self._room.downlink.speaker_level() if self._room is not None else 0

    def recv_stream_level(self, tinyid: int) -> int:
        return self._room.downlink.recv_stream_level(tinyid) if self._room is not None else 0
