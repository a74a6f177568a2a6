"""The client's send path for one member: captured frame in, sealed media datagram (or nothing) out.

Per 20 ms frame, in this order (GME's send chain):

1. **3A** — echo cancellation, gain control, noise suppression and a high-pass filter
   (``core.apm``: the WebRTC audio processing module; per-room defaults there, ANS on for FLUENCY
   only as in GME §3.3). The far-end reference for the echo canceller comes in through
   :meth:`Uplink.reference`.
2. **Mic volume** (``SetMicVolume``, 0–200 %), applied with saturation.
3. **Meters** — the mic level (``GetMicLevel``) is taken here, before send gating, so a user with
   send disabled still sees the mic meter move; the send-stream level is the same figure while the
   frame is actually being sent and 0 otherwise.
4. **Send stage** (the seam a voice changer or an accompaniment plugs into): when set, each frame
   passes through it, sent or not, so the stage keeps its own timeline; what it returns is what is
   sent, and what the send-stream level and the header level measure.
5. **Send gate** (``EnableAudioSend``): when off, nothing is encoded or produced.
6. **Opus** with in-band FEC and DTX. A DTX packet (``is_dtx``) is not sent, except one per
   ``keepalive_s`` of unbroken silence, so the relay's view of the member and the NAT binding stay
   fresh even if the encoder itself goes quiet for long. The first packet after frames that were
   not sent carries MARKER (RTP's "first packet of a talkspurt").
7. **Header + AEAD**: sequence (counts *sent* packets, so the receiver tells loss from DTX), media
   timestamp (counts *captured* frames, so a DTX gap shows as a timestamp jump), the member's
   session id (``protocol.media.session_id``: the relay names the speaker by tinyid downstream), the RFC 6464 level and voice bit, room type and codec; sealed with the member's key.

Pure: no sockets, threads or clocks; ``now`` (seconds, any monotonic origin) is passed in and is
used only for keep-alive timing and to keep the media clock in step after capture pauses.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from opengme.codec.opus import (
    DEFAULT_PACKET_LOSS_PERC,
    FRAME_MS,
    Frame,
    OpusEncoder,
    is_dtx,
    profile_for,
)
from opengme.core.apm import CaptureProcessor, Processing, Switches
from opengme.core.levels import SILENCE_DBOV, audio_level, check_volume, level_from_audio_level
from opengme.events import RoomType
from opengme.protocol.media import Codec, Flags, MediaCrypto, MediaHeader, PacketType

DEFAULT_KEEPALIVE_S: Final = 1.0
MIN_FEC_LOSS_PERC: Final = 5
"""Floor of the loss figure given to the encoder: at 0 libopus stops producing FEC altogether, and a
loss burst arrives well before any receiver report could turn it back on."""
VOICE_DBOV: Final = 45
"""Header voice bit: set for a sent, non-DTX frame at least this loud (the speaking detector's default
threshold, so the relay's and the receivers' notion of "speaking" agree)."""
CAPTURE_GAP_S: Final = 0.1
"""A pause between frames longer than this (capture stopped, app suspended) advances the media clock by
the time that passed, so receivers do not read the pause as network delay."""
_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32

SendStage = Callable[[Frame, int], Frame]
"""``stage(frame, sample_rate) -> frame``: the captured frame after noise suppression and mic volume
in, the frame to send out (same rate and length, mono int16)."""


@dataclass(slots=True)
class UplinkCounters:
    """What happened to the frames handed to :meth:`Uplink.process`."""

    frames: int = 0  # frames processed (meters updated)
    gated: int = 0  # frames not encoded because send was disabled
    sent: int = 0  # datagrams produced
    dtx_skipped: int = 0  # DTX packets not sent
    keepalives: int = 0  # DTX packets sent to keep the path fresh
    bytes: int = 0  # datagram bytes produced


class Uplink:
    """One member's send pipeline (see the module docstring). Not thread-safe."""

    def __init__(self, room_type: RoomType, session_id: int, crypto: MediaCrypto, *,
                 noise_suppression: bool | None = None, switches: Switches | None = None,
                 echo_path: bool = False, keepalive_s: float = DEFAULT_KEEPALIVE_S) -> None:
        if not 0 <= session_id <= 0xFFFFFFFF:
            raise ValueError(f"session id {session_id} is not a u32")
        if keepalive_s <= 0:
            raise ValueError("keepalive_s must be positive")
        self.session_id = session_id
        self.keepalive_s = keepalive_s
        self.counters = UplinkCounters()
        self._crypto = crypto
        self._switches = Switches(ns=noise_suppression) if switches is None else switches
        self._echo_path = echo_path
        self._loss_perc = DEFAULT_PACKET_LOSS_PERC
        self._mic_volume = 100
        self._send_enabled = True
        self._mic_level = 0
        self._send_level = 0
        self._seq = 0
        self._timestamp = 0
        self._last_now: float | None = None
        self._last_sent: float | None = None
        self._talking = False  # the previous frame was sent: no MARKER on the next one
        self.send_stage: SendStage | None = None
        self.last_frame: Frame | None = None
        self.set_room_type(room_type)

    # ------------------------------------------------------------------------------- settings

    @property
    def room_type(self) -> RoomType:
        return self._room_type

    @property
    def sample_rate(self) -> int:
        """Capture rate the frames must have (the room type's codec rate)."""
        return self._profile.sample_rate

    @property
    def frame_samples(self) -> int:
        return self._profile.frame_samples

    @property
    def noise_suppression(self) -> bool:
        return self._processor.active.ns

    @property
    def processing(self) -> CaptureProcessor:
        """The capture chain (its ``engine`` and ``active`` functions say what really runs)."""
        return self._processor

    def set_switches(self, switches: Switches, echo_path: bool | None = None) -> None:
        """The AEC/AGC/ANS choices (None fields: the room type's default) and whether the speaker
        can be heard by the mic (AEC's default); the chain is rebuilt only on change."""
        echo = self._echo_path if echo_path is None else echo_path
        if switches != self._switches or echo != self._echo_path:
            self._switches, self._echo_path = switches, echo
            self._build_processor()

    def reference(self, frame: Frame, sample_rate: int, channels: int = 1) -> None:
        """What the speaker is about to play: the echo canceller's far-end reference."""
        self._processor.reference(frame, sample_rate, channels)

    def _build_processor(self) -> None:
        wanted: Processing = self._switches.resolve(self._room_type, self._echo_path)
        self._processor = CaptureProcessor(self._profile.sample_rate, self._profile.frame_samples, wanted)

    def set_room_type(self, room_type: RoomType) -> None:
        """Switch codec profile (and the 3A defaults) to ``room_type``'s; the next
        packet starts a talkspurt. The capture must deliver frames at the new ``sample_rate``."""
        self._room_type = RoomType(room_type)
        self._profile = profile_for(self._room_type)
        self._encoder = OpusEncoder(self._profile, packet_loss_perc=self._loss_perc)
        self._build_processor()
        self._talking = False

    @property
    def mic_volume(self) -> int:
        return self._mic_volume

    def set_mic_volume(self, percent: int) -> None:
        """``SetMicVolume``: 0 mutes, 100 is unity, 200 doubles (with saturation)."""
        self._mic_volume = check_volume(percent)

    @property
    def send_enabled(self) -> bool:
        return self._send_enabled

    @send_enabled.setter
    def send_enabled(self, enabled: bool) -> None:
        """``EnableAudioSend``: meters keep running while off; nothing is encoded or sent."""
        self._send_enabled = bool(enabled)
        if not enabled:
            self._send_level = 0

    @property
    def packet_loss_perc(self) -> int:
        return self._loss_perc

    def set_packet_loss_perc(self, percent: float) -> None:
        """Tell the encoder the loss receivers report (0–100 %), so FEC spends bits to match.
        Kept at least ``MIN_FEC_LOSS_PERC`` so FEC never switches off."""
        if not 0 <= percent <= 100:
            raise ValueError(f"packet loss {percent} % outside 0..100")
        self._loss_perc = max(MIN_FEC_LOSS_PERC, round(percent))
        self._encoder.set_packet_loss_perc(self._loss_perc)

    # --------------------------------------------------------------------------------- meters

    @property
    def mic_level(self) -> int:
        """``GetMicLevel`` (0–100) of the last processed frame, whether sent or not."""
        return self._mic_level

    @property
    def send_level(self) -> int:
        """``GetSendStreamLevel`` (0–100): the mic level while sending, 0 while send is disabled."""
        return self._send_level

    # ---------------------------------------------------------------------------------- frame

    def process(self, frame: Frame, now: float) -> bytes | None:
        """One captured 20 ms frame → the datagram to send, or None (gated or DTX)."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.int16 or frame.shape != (self.frame_samples,):
            raise ValueError(f"expected an int16 frame of {self.frame_samples} samples "
                             f"({FRAME_MS} ms at {self.sample_rate} Hz)")
        self._advance_clock(now)
        self.counters.frames += 1
        frame = self._processor.process(frame)
        if self._mic_volume != 100:
            scaled = np.rint(frame * (self._mic_volume / 100.0))
            frame = np.clip(scaled, -32768, 32767).astype(np.int16)
        dbov = audio_level(frame)
        self._mic_level = level_from_audio_level(dbov)
        stage = self.send_stage
        if stage is not None:
            frame = self._staged(stage, frame)
            dbov = audio_level(frame)
        self.last_frame = frame  # what others hear (in-ear monitoring plays this)
        if not self._send_enabled:
            self.counters.gated += 1
            self._talking = False
            return None
        self._send_level = self._mic_level if stage is None else level_from_audio_level(dbov)
        packet = self._encoder.encode(frame)
        flags = Flags.NONE
        if is_dtx(packet):
            if self._last_sent is not None and now - self._last_sent < self.keepalive_s:
                self.counters.dtx_skipped += 1
                self._talking = False
                return None
            self.counters.keepalives += 1
            flags |= Flags.DTX
            dbov = SILENCE_DBOV
        elif self._loss_perc > 0:
            flags |= Flags.FEC
        if not self._talking:
            flags |= Flags.MARKER
        header = MediaHeader(
            PacketType.DATA, self.session_id, seq=self._seq, timestamp=self._timestamp, level=dbov,
            voice=not flags & Flags.DTX and dbov <= VOICE_DBOV, flags=flags,
            room_type=self._room_type, codec=Codec.OPUS,
        )
        datagram = self._crypto.seal(header, packet)
        self._seq = (self._seq + 1) % _SEQ_MOD
        self._talking = not flags & Flags.DTX
        self._last_sent = now
        self.counters.sent += 1
        self.counters.bytes += len(datagram)
        return datagram

    def _staged(self, stage: SendStage, frame: Frame) -> Frame:
        out = stage(frame, self.sample_rate)
        if not isinstance(out, np.ndarray) or out.dtype != np.int16 or out.shape != frame.shape:
            raise ValueError(f"the send stage must return an int16 frame of {self.frame_samples} samples")
        return out

    def _advance_clock(self, now: float) -> None:
        """Media timestamp of this frame: one frame on from the last, or the real elapsed time after
        a capture pause (see CAPTURE_GAP_S)."""
        last, self._last_now = self._last_now, now
        if last is None:
            return
        frames = 1
        if now - last > CAPTURE_GAP_S:
            frames = max(1, round((now - last) * 1000 / FRAME_MS))
            self._talking = False
        self._timestamp = (self._timestamp + frames * self._profile.frame_samples) % _TS_MOD
