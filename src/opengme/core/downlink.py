"""The client's receive path: sealed datagrams from the relay in, one mixed 20 ms frame per tick out.

``receive(datagram, now)`` authenticates and replay-checks each datagram with the member's
server-direction key (``MediaCrypto.for_client``), then files DATA packets per *speaker* (the header
tinyid) into that speaker's ``JitterBuffer``, and feeds the header's RFC 6464 level to the speaking
detector and volume tracker, so those need no decoding. Anything that fails is counted and dropped;
``receive`` never raises for what arrives from the network.

``render(now)`` runs once per 20 ms: per speaker, pop the jitter buffer and decode the frame, or
recover a lost one from the next packet's FEC, or conceal it (a packet the decoder refuses is
concealed too); then the voice stage, if one is set (below); then per-member volume, the N-loudest
``Mixer`` and the speaker volume; then the local loopback (``EnableLoopBack``) is added. Every decoder outputs at the downlink's one
``sample_rate`` (libopus resamples internally), so streams of any room type mix directly.

Room types: a speaker's stream follows the room type in its packets' headers (the jitter buffer counts
timestamps at that type's codec rate); a packet of another type restarts that speaker's stream, so a
room-type switch needs no coordination between members. Blacklisted members (``AddAudioBlackList``)
are authenticated and counted but never buffered, decoded or mixed; their speaking state and levels
still update (the blacklist is about what this device plays, not who talks).

Voice stage (the seam 3D voice renders in): ``set_voice_stage(stage, channels)`` hands every period's
decoded frames ``{tinyid: mono frame}`` to ``stage`` before the mixer, all at once so that a renderer
can batch its sources, and mixes what it returns: per speaker a mono frame or, with ``channels=2``, a
``(frame_samples, 2)`` stereo one (mono frames are heard in both ears). Output is then stereo; without
a stage it stays mono and the stage costs nothing.

Pure: no sockets, threads or clocks; ``now`` is seconds on the caller's monotonic clock.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import av
import numpy as np

from opengme.codec.opus import FRAME_MS, OPUS_SAMPLE_RATES, CodecError, Frame, OpusDecoder, profile_for
from opengme.core.jitter import JitterBuffer, JitterStats, PlayoutKind
from opengme.core.levels import (
    SILENCE_DBOV,
    SpeakingDetector,
    VolumeTracker,
    mic_level,
    recv_stream_level,
)
from opengme.core.mixer import DEFAULT_MIX_STREAMS, Mixer, fit_channels
from opengme.events import RoomType, UserUpdateEvent
from opengme.protocol.media import DropReason, MediaCrypto, MediaPacketError, PacketType

OUTPUT_RATE: Final = 48_000
LOOPBACK_MAX_FRAMES: Final = 3
"""Loopback frames queued beyond this are dropped oldest first: in-ear monitoring must stay current."""
MIN_DELAY_MS: Final = 0
"""Least playout delay of a stream on a clean path: none beyond the measured jitter, so a frame plays
at the first render tick after it arrived (issue 11: on loopback this took 10–20 ms off mouth-to-ear,
depending on the phase between the talker's and the listener's ticks). While losses or jitter are
seen the jitter buffer keeps one frame at least (room for Opus in-band FEC, frame k's copy riding in
packet k+1) and adds one frame of headroom on top: under 10 % loss + 30 ms jitter the playout, and
PESQ over seeds 1-10, are what they were with the earlier fixed one-frame floor."""
_SEQ_MOD: Final = 1 << 16

VoiceStage = Callable[[dict[int, Frame]], Mapping[int, Frame]]
"""Per-speaker processing before the mix: this period's decoded frames by tinyid in, frames to mix out."""


@dataclass(slots=True)
class DownlinkCounters:
    """Datagrams seen by :meth:`Downlink.receive` and why any were dropped."""

    received: int = 0
    accepted: int = 0
    dropped_malformed: int = 0
    dropped_auth: int = 0
    dropped_replay: int = 0
    blacklisted: int = 0  # authenticated DATA from a blacklisted member, not played
    restarts: int = 0  # speaker streams restarted by a room-type change


@dataclass(frozen=True, slots=True)
class MemberStats:
    """One speaker's stream: media-level loss from its sequence numbers, plus the jitter buffer's view."""

    expected: int  # packets the sender numbered since the stream started
    received: int
    jitter: JitterStats

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


@dataclass(frozen=True, slots=True)
class DownlinkStats:
    """Snapshot for CHANGE_ROOM_QUALITY and diagnostics; counts are cumulative, see ``loss_since``."""

    members: dict[int, MemberStats]
    expected: int
    received: int
    delay_ms: float  # mean playout delay of the speakers' jitter buffers (0 with none)

    @property
    def loss(self) -> float:
        """Fraction of packets lost since the streams started (0.0 with no packets)."""
        return max(0, self.expected - self.received) / self.expected if self.expected else 0.0

    def loss_since(self, earlier: DownlinkStats) -> float:
        """Loss fraction over the interval between ``earlier`` and this snapshot (e.g. the last 2 s)."""
        expected = self.expected - earlier.expected
        received = self.received - earlier.received
        return max(0, expected - received) / expected if expected > 0 else 0.0


@dataclass(slots=True)
class _Stream:
    """One speaker's receive state."""

    room_type: RoomType
    jitter: JitterBuffer
    decoder: OpusDecoder
    first_seq: int | None = None
    top_seq: int = 0
    received: int = 0
    expected_before: int = 0  # packets expected by earlier incarnations of the stream (restarts)
    received_before: int = 0

    def note_seq(self, seq: int) -> None:
        """Track the highest extended sequence number (RFC 3550 A.1 style) for the loss count."""
        if self.first_seq is None:
            self.first_seq = self.top_seq = seq
        else:
            delta = (seq - self.top_seq) % _SEQ_MOD
            if delta < _SEQ_MOD // 2:
                self.top_seq += delta
        self.received += 1

    @property
    def expected(self) -> int:
        return 0 if self.first_seq is None else self.top_seq - self.first_seq + 1

    @property
    def total_expected(self) -> int:
        return self.expected_before + self.expected

    @property
    def total_received(self) -> int:
        return self.received_before + self.received


@dataclass(slots=True)
class _Loopback:
    """Locally pushed frames waiting for the next render, resampled to the output rate if needed."""

    frames: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=LOOPBACK_MAX_FRAMES))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    resampler: av.AudioResampler | None = None
    rate: int = 0


class Downlink:
    """One member's receive pipeline (see the module docstring). Not thread-safe."""

    def __init__(self, room_type: RoomType, crypto: MediaCrypto, *, max_streams: int = DEFAULT_MIX_STREAMS,
                 sample_rate: int = OUTPUT_RATE, min_delay_ms: float = MIN_DELAY_MS,
                 volume_interval_s: float = 0.5) -> None:
        if sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError(f"Opus cannot decode at {sample_rate} Hz")
        self._crypto = crypto
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self.min_delay_ms = min_delay_ms
        self._mixer: Mixer[int] = Mixer(max_streams, self.frame_samples)
        self._room_type = RoomType(room_type)
        self._streams: dict[int, _Stream] = {}
        self._levels: dict[int, int] = {}  # tinyid -> last header level (-dBov) while its stream plays
        self._blacklist: set[int] = set()
        self._detector: SpeakingDetector[int] = SpeakingDetector()
        self._tracker: VolumeTracker[int] = VolumeTracker(volume_interval_s)
        self._pending_events: list[tuple[int, UserUpdateEvent]] = []
        self._loopback: _Loopback | None = None
        self._voice_stage: VoiceStage | None = None
        self._speaker_level = 0
        self._retired = (0, 0)  # (expected, received) of streams dropped, so totals never shrink
        self.counters = DownlinkCounters()

    # ------------------------------------------------------------------------------- settings

    @property
    def room_type(self) -> RoomType:
        return self._room_type

    def set_room_type(self, room_type: RoomType) -> None:
        """The room switched type: restart every speaker's stream at the new codec clock now rather
        than on each speaker's first new packet (buffered old-type audio is dropped)."""
        self._room_type = RoomType(room_type)
        for tinyid, stream in list(self._streams.items()):
            if stream.room_type is not self._room_type:
                self._restart(tinyid, self._room_type)

    @property
    def max_streams(self) -> int:
        return self._mixer.max_streams

    def set_max_streams(self, n: int) -> None:
        """``SetRecvMixStreamCount`` (1..20)."""
        self._mixer.set_max_streams(n)

    @property
    def channels(self) -> int:
        """Channels of the rendered frames: 1, or what the voice stage was set with."""
        return self._mixer.channels

    def set_voice_stage(self, stage: VoiceStage | None, channels: int = 1) -> None:
        """Process each speaker's decoded frame before the mix (see the module docstring); None removes
        the stage and brings the output back to mono."""
        self._mixer.set_channels(channels if stage is not None else 1)
        self._voice_stage = stage

    def set_volume(self, tinyid: int, percent: int) -> None:
        """``SetSpeakerVolumeByOpenID`` (0..200 %)."""
        self._mixer.set_volume(tinyid, percent)

    def volume(self, tinyid: int) -> int:
        return self._mixer.volume(tinyid)

    @property
    def speaker_volume(self) -> int:
        return self._mixer.speaker_volume

    def set_speaker_volume(self, percent: int) -> None:
        """``SetSpeakerVolume`` (0..200 %), applied to the whole mix including loopback."""
        self._mixer.speaker_volume = percent

    def add_blacklist(self, tinyid: int) -> None:
        """``AddAudioBlackList``: stop playing this member on this device (its stream is dropped)."""
        self._blacklist.add(tinyid)
        self._retire(tinyid)

    def remove_blacklist(self, tinyid: int) -> None:
        """``RemoveAudioBlackList``: the member is heard again from its next packet."""
        self._blacklist.discard(tinyid)

    @property
    def blacklist(self) -> frozenset[int]:
        return frozenset(self._blacklist)

    def remove_member(self, tinyid: int) -> None:
        """Forget a member that left the room (GME reports EXIT, not NO_AUDIO, for it)."""
        self._retire(tinyid)
        self._levels.pop(tinyid, None)
        self._mixer.remove(tinyid)
        self._detector.remove(tinyid)
        self._tracker.remove(tinyid)

    def _retire(self, tinyid: int) -> None:
        stream = self._streams.pop(tinyid, None)
        if stream is not None:
            expected, received = self._retired
            self._retired = (expected + stream.total_expected, received + stream.total_received)

    @property
    def loopback(self) -> bool:
        return self._loopback is not None

    @loopback.setter
    def loopback(self, enabled: bool) -> None:
        """``EnableLoopBack``: mix frames given to :meth:`push_loopback` into the output."""
        if enabled and self._loopback is None:
            self._loopback = _Loopback()
        elif not enabled:
            self._loopback = None

    # ---------------------------------------------------------------------------------- input

    def receive(self, datagram: bytes, now: float) -> PacketType | None:
        """Take one datagram from the relay; returns its type if authentic (DATA is played here;
        BIND/KEEPALIVE acknowledgements are the caller's business), None if dropped."""
        counters = self.counters
        counters.received += 1
        try:
            header, payload = self._crypto.open(datagram)
        except MediaPacketError as exc:
            if exc.reason is DropReason.AUTH:
                counters.dropped_auth += 1
            elif exc.reason is DropReason.REPLAY:
                counters.dropped_replay += 1
            else:
                counters.dropped_malformed += 1
            return None
        counters.accepted += 1
        if header.ptype is not PacketType.DATA:
            return header.ptype
        tinyid = header.tinyid
        if (event := self._detector.on_packet(tinyid, header.level, now)) is not None:
            self._pending_events.append((tinyid, event))
        self._tracker.on_packet(tinyid, header.level)
        if tinyid in self._blacklist:
            counters.blacklisted += 1
            return header.ptype
        stream = self._streams.get(tinyid)
        if stream is None or stream.room_type is not header.room_type:
            stream = self._restart(tinyid, header.room_type)
        stream.note_seq(header.seq)
        stream.jitter.push(header.seq, header.timestamp, payload, now, header.level)
        self._levels[tinyid] = header.level
        return header.ptype

    def _restart(self, tinyid: int, room_type: RoomType) -> _Stream:
        """A fresh stream for ``tinyid`` at ``room_type``'s codec clock, keeping its loss counts."""
        old = self._streams.get(tinyid)
        profile = profile_for(room_type)
        stream = _Stream(room_type, JitterBuffer(sample_rate=profile.sample_rate, min_delay_ms=self.min_delay_ms),
                         OpusDecoder(profile, sample_rate=self.sample_rate))
        if old is not None:
            self.counters.restarts += 1
            stream.expected_before = old.total_expected
            stream.received_before = old.total_received
        self._streams[tinyid] = stream
        return stream

    def push_loopback(self, frame: Frame, sample_rate: int) -> None:
        """Queue one locally captured frame for in-ear monitoring; ignored while loopback is off.
        Frames at another rate than the output's are resampled (streaming, so no edge clicks)."""
        lb = self._loopback
        if lb is None:
            return
        if sample_rate != self.sample_rate:
            if lb.resampler is None or lb.rate != sample_rate:
                lb.resampler = av.AudioResampler(format="s16", layout="mono", rate=self.sample_rate)
                lb.rate = sample_rate
            src = av.AudioFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.int16).reshape(1, -1),
                                             format="s16", layout="mono")
            src.sample_rate = sample_rate
            parts = [lb.pending, *(out.to_ndarray().reshape(-1) for out in lb.resampler.resample(src))]
            frame = np.concatenate(parts)
        else:
            frame = np.concatenate((lb.pending, frame))
        n = self.frame_samples
        whole = len(frame) // n
        for i in range(whole):
            lb.frames.append(frame[i * n:(i + 1) * n])
        lb.pending = frame[whole * n:]

    # --------------------------------------------------------------------------------- output

    def render(self, now: float) -> Frame:
        """The next 20 ms of output at ``sample_rate``, ``channels`` wide (call once per frame period)."""
        frames: dict[int, np.ndarray] = {}
        for tinyid, stream in self._streams.items():
            frame = self._play(stream, now)
            if frame is None:
                self._levels[tinyid] = SILENCE_DBOV
            else:
                frames[tinyid] = frame
        if self._voice_stage is not None and frames:
            frames = dict(self._voice_stage(frames))
        out = self._mixer.mix(frames)
        lb = self._loopback
        if lb is not None and lb.frames:
            own = fit_channels(lb.frames.popleft(), self._mixer.channels).astype(np.int32)
            out = np.clip(out + own * self._mixer.speaker_volume // 100, -32768, 32767).astype(np.int16)
        self._speaker_level = mic_level(out)
        return out

    def start_due(self) -> float | None:
        """When nothing is heard (no speaker inside a talkspurt, no own voice looped back): the time
        (s) the first waiting talkspurt may start (``JitterBuffer.start_due``), else None. A caller
        that renders then rather than at its next frame period saves the wait for its tick."""
        if self._loopback is not None and self._loopback.frames:
            return None
        due: float | None = None
        for stream in self._streams.values():
            if stream.jitter.playing:
                return None
            start = stream.jitter.start_due()
            if start is not None and (due is None or start < due):
                due = start
        return due

    @staticmethod
    def _play(stream: _Stream, now: float) -> Frame | None:
        """This period's frame of one speaker: decoded, FEC-recovered or concealed; None when idle."""
        item = stream.jitter.pop(now)
        if item.kind is PlayoutKind.EMPTY:
            return None
        decoder = stream.decoder
        try:
            if item.payload is None:
                return decoder.conceal()
            if item.kind is PlayoutKind.FRAME:
                return decoder.decode(item.payload)
            return decoder.decode_fec(item.payload)  # LOST with the next packet: in-band FEC
        except CodecError:
            return decoder.conceal()

    # ------------------------------------------------------------------------ meters & events

    def events(self, now: float) -> list[tuple[int, UserUpdateEvent]]:
        """Speaking changes since the last call: HAS_AUDIO as packets came in, NO_AUDIO after 2 s quiet."""
        out, self._pending_events = self._pending_events, []
        out += [(tinyid, UserUpdateEvent.NO_AUDIO) for tinyid in self._detector.poll(now)]
        return out

    def volumes(self, now: float) -> dict[int, int] | None:
        """USER_VOLUMES report (tinyid -> 0..100) once per ``volume_interval_s``, else None."""
        return self._tracker.poll(now)

    def speaking(self) -> frozenset[int]:
        return self._detector.speaking()

    def recv_stream_level(self, tinyid: int) -> int:
        """``GetRecvStreamLevel`` (0..200): header level × member volume; 0 when idle or blacklisted."""
        if tinyid in self._blacklist:
            return 0
        return recv_stream_level(self._levels.get(tinyid, SILENCE_DBOV), self._mixer.volume(tinyid))

    def speaker_level(self) -> int:
        """``GetSpeakerLevel`` (0..100) of the last rendered frame."""
        return self._speaker_level

    def stats(self) -> DownlinkStats:
        members = {
            tinyid: MemberStats(s.total_expected, s.total_received, s.jitter.stats)
            for tinyid, s in self._streams.items()
        }
        delays = [m.jitter.delay_ms for m in members.values()]
        retired_expected, retired_received = self._retired
        return DownlinkStats(
            members=members,
            expected=retired_expected + sum(m.expected for m in members.values()),
            received=retired_received + sum(m.received for m in members.values()),
            delay_ms=sum(delays) / len(delays) if delays else 0.0,
        )

    def members(self) -> tuple[int, ...]:
        """Speakers with a live stream (heard and not blacklisted or removed)."""
        return tuple(self._streams)
