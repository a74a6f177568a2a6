"""Real-time Opus voice codec: one 20 ms mono frame in, one packet out, and back.

Voice packets travel over UDP, so the codec is set up for loss: in-band FEC (each packet also
carries a coarse copy of the previous frame), packet-loss concealment (PLC) when nothing
arrived, and DTX (silence costs next to nothing on the wire).

The libopus shipped inside ``opuslib_next`` does the work. Its state handling and CTLs are used
as published; the per-frame calls (``opus_encode``, ``opus_decode``, the packet parser) are bound
here a second time through ``libopus[name]``, which yields function objects of our own, so the hot
path can hand numpy buffers straight to C without copying through Python lists, and so PLC can
pass the NULL packet that opuslib_next's ``decode`` cannot express.

Encoders and decoders are plain objects: no threads, no clocks, not thread-safe. Use one encoder
per outgoing stream and one decoder per incoming stream (decoder state is per speaker).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import opuslib_next
from opuslib_next.api import ctl as _ctl
from opuslib_next.api import decoder as _dec
from opuslib_next.api import encoder as _enc
from opuslib_next.api import info as _info
from opuslib_next.api import libopus

from opengme.events import RoomType

Frame = npt.NDArray[np.int16]
"""One frame of mono PCM, shape ``(samples,)``."""

Packet = bytes | bytearray | memoryview

FRAME_MS: Final = 20
OPUS_SAMPLE_RATES: Final = frozenset({8000, 12000, 16000, 24000, 48000})
MAX_PACKET_BYTES: Final = 1275
"""Largest single Opus frame (RFC 6716 §3.4, R2); a 20 ms one-frame packet never exceeds it."""
DTX_MAX_BYTES: Final = 2
"""libopus contract (opus.h): an encoded packet of 2 bytes or less need not be transmitted."""
DEFAULT_PACKET_LOSS_PERC: Final = 10
"""Expected loss told to the encoder: FEC data is only produced when this is above 0."""
MIN_BITRATE: Final = 6_000
MAX_BITRATE: Final = 510_000


class CodecError(ValueError):
    """A packet that cannot be decoded: empty, corrupt, or not exactly one 20 ms frame.

    The single exception the decoder raises for bad input, so a receive loop can drop the packet
    with one ``except`` and carry on. ``code`` is the libopus error number, or 0 when the packet
    parsed but has the wrong duration.
    """

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def _check_bitrate(bitrate: int) -> None:
    if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
        raise ValueError(f"bitrate {bitrate} bit/s outside {MIN_BITRATE}..{MAX_BITRATE}")


@dataclass(frozen=True, slots=True)
class CodecProfile:
    """Codec settings of one GME room type.

    ``application`` is VOIP for the speech rooms (FLUENCY, STANDARD): libopus then tunes for
    intelligibility (speech high-pass, SILK/hybrid modes that carry FEC). HIGHQUALITY is GME's
    "media volume / A2DP" type, used for music and streaming as much as talk, so it takes AUDIO,
    which favours fidelity of any signal over speech tuning, and lets the encoder classify the
    signal itself instead of assuming voice.
    """

    sample_rate: int
    bitrate: int
    application: int
    signal: int
    channels: int = 1
    frame_ms: int = FRAME_MS

    def __post_init__(self) -> None:
        if self.sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError(f"Opus cannot run at {self.sample_rate} Hz")
        _check_bitrate(self.bitrate)

    @property
    def frame_samples(self) -> int:
        """Samples per channel in one frame."""
        return self.sample_rate * self.frame_ms // 1000


FLUENCY: Final = CodecProfile(16_000, 30_000, opuslib_next.APPLICATION_VOIP, opuslib_next.SIGNAL_VOICE)
STANDARD: Final = CodecProfile(48_000, 64_000, opuslib_next.APPLICATION_VOIP, opuslib_next.SIGNAL_VOICE)
HIGHQUALITY: Final = CodecProfile(48_000, 64_000, opuslib_next.APPLICATION_AUDIO, opuslib_next.AUTO)

_PROFILES: Final[dict[RoomType, CodecProfile]] = {
    RoomType.FLUENCY: FLUENCY,
    RoomType.STANDARD: STANDARD,
    RoomType.HIGHQUALITY: HIGHQUALITY,
}


def profile_for(room_type: RoomType | int) -> CodecProfile:
    """The codec profile of a room type (GME §3.3: bitrate and sample rate per type)."""
    return _PROFILES[RoomType(room_type)]


def is_dtx(packet: Packet) -> bool:
    """True for a DTX packet: the encoder judged the frame silent and it need not be sent.

    libopus emits these as 1-byte packets (just the TOC byte) and documents "2 bytes or less" as
    the rule. During a long silence it still sends a normal comfort-noise packet every 400 ms.
    Skipping DTX packets is safe: the receiver's ``conceal()`` produces comfort noise for the gap.
    """
    return len(packet) <= DTX_MAX_BYTES


def _bind(name: str, restype: type, *argtypes: type) -> Any:
    """A private function object for ``name``: setting its argtypes leaves opuslib_next's alone."""
    func = libopus[name]
    func.argtypes = argtypes
    func.restype = restype
    return func


_opus_encode = _bind(
    "opus_encode", ctypes.c_int32,
    _enc.EncoderPointer, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32,
)
_opus_decode = _bind(
    "opus_decode", ctypes.c_int,
    _dec.DecoderPointer, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
)
_opus_packet_get_nb_samples = _bind(
    "opus_packet_get_nb_samples", ctypes.c_int, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32,
)


def _strerror(code: int) -> str:
    message = _info.strerror(code)
    return message.decode() if isinstance(message, bytes) else str(message)


class OpusEncoder:
    """Encodes 20 ms mono int16 frames of one outgoing stream, with FEC and DTX on."""

    _state = None

    def __init__(self, profile: CodecProfile, *, packet_loss_perc: int = DEFAULT_PACKET_LOSS_PERC) -> None:
        self.profile = profile
        self._frame_samples = profile.frame_samples
        self._state = _enc.create_state(profile.sample_rate, profile.channels, profile.application)
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._set(_ctl.set_signal, profile.signal)
        self._set(_ctl.set_inband_fec, 1)
        self._set(_ctl.set_dtx, 1)
        self.set_bitrate(profile.bitrate)
        self.set_packet_loss_perc(packet_loss_perc)

    def __del__(self) -> None:
        if self._state is not None:
            _enc.destroy(self._state)

    def _set(self, request: object, value: int) -> None:
        _enc.encoder_ctl(self._state, request, value)

    def _get(self, request: object) -> int:
        return int(_enc.encoder_ctl(self._state, request))

    def set_bitrate(self, bitrate: int) -> None:
        """Target bitrate in bit/s (VBR: single packets vary, the average follows it)."""
        _check_bitrate(bitrate)
        self._set(_ctl.set_bitrate, bitrate)

    @property
    def bitrate(self) -> int:
        return self._get(_ctl.get_bitrate)

    def set_packet_loss_perc(self, percent: int) -> None:
        """Expected uplink loss, 0–100. Above 0 the encoder adds in-band FEC, spending more bits
        on it as the figure grows; feed it the loss the receiver reports."""
        if not 0 <= percent <= 100:
            raise ValueError(f"packet loss {percent} % outside 0..100")
        self._set(_ctl.set_packet_loss_perc, percent)

    @property
    def packet_loss_perc(self) -> int:
        return self._get(_ctl.get_packet_loss_perc)

    @property
    def lookahead(self) -> int:
        """Codec delay in samples at the profile rate: decoded audio lags the input by this much."""
        return self._get(_ctl.get_lookahead)

    def encode(self, frame: Frame) -> bytes:
        """One 20 ms frame → one Opus packet (``is_dtx`` tells whether it must be sent)."""
        pcm = np.ascontiguousarray(self._checked(frame))
        size = _opus_encode(self._state, pcm.ctypes.data, self._frame_samples, self._out, MAX_PACKET_BYTES)
        if size < 0:
            raise CodecError(f"opus_encode failed: {_strerror(size)}", size)
        return ctypes.string_at(self._out, size)

    def _checked(self, frame: Frame) -> Frame:
        if not isinstance(frame, np.ndarray):
            got = type(frame).__name__
        elif frame.dtype != np.int16 or frame.shape != (self._frame_samples,):
            got = f"{frame.dtype} array of shape {frame.shape}"
        else:
            return frame
        raise ValueError(
            f"expected an int16 array of shape ({self._frame_samples},) "
            f"({self.profile.frame_ms} ms at {self.profile.sample_rate} Hz), got {got}"
        )


class OpusDecoder:
    """Decodes the packets of one incoming stream to 20 ms int16 frames; conceals losses.

    ``sample_rate`` defaults to the profile's; any Opus rate may be asked for instead, and libopus
    resamples internally (e.g. a mixer running at 48 kHz can decode a FLUENCY stream directly).
    """

    _state = None

    def __init__(self, profile: CodecProfile, *, sample_rate: int | None = None) -> None:
        self.profile = profile
        self.sample_rate = profile.sample_rate if sample_rate is None else sample_rate
        if self.sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError(f"Opus cannot decode at {self.sample_rate} Hz")
        self.frame_samples = self.sample_rate * profile.frame_ms // 1000
        self._state = _dec.create_state(self.sample_rate, profile.channels)

    def __del__(self) -> None:
        if self._state is not None:
            _dec.destroy(self._state)

    def reset(self) -> None:
        """Forget the stream's history, e.g. when its speaker starts a new stream."""
        _dec.decoder_ctl(self._state, _ctl.reset_state)

    def decode(self, packet: Packet) -> Frame:
        """The frame carried by ``packet``. Raises CodecError for a bad packet, leaving the
        decoder state untouched (the packet is checked before it is decoded)."""
        return self._run(self._checked(packet), fec=False)

    def conceal(self) -> Frame:
        """A stand-in for a lost frame (PLC: extrapolation of the recent signal, fading out)."""
        return self._run(None, fec=False)

    def decode_fec(self, next_packet: Packet) -> Frame:
        """Recover the lost frame just before ``next_packet`` from the FEC copy it carries.

        Falls back to concealment when ``next_packet`` holds no FEC data (e.g. CELT-only mode or
        the encoder expected no loss). ``next_packet`` must still be passed to ``decode`` after.
        """
        return self._run(self._checked(next_packet), fec=True)

    def _checked(self, packet: Packet) -> bytes:
        data = packet if isinstance(packet, bytes) else bytes(packet)
        samples = _opus_packet_get_nb_samples(data, len(data), self.sample_rate)
        if samples < 0:
            raise CodecError(f"invalid Opus packet ({len(data)} bytes): {_strerror(samples)}", samples)
        if samples != self.frame_samples:
            held_ms = samples * 1000 / self.sample_rate
            raise CodecError(f"packet holds {held_ms:g} ms of audio, expected {self.profile.frame_ms} ms")
        return data

    def _run(self, data: bytes | None, *, fec: bool) -> Frame:
        pcm = np.empty(self.frame_samples, dtype=np.int16)
        size = 0 if data is None else len(data)
        decoded = _opus_decode(self._state, data, size, pcm.ctypes.data, self.frame_samples, int(fec))
        if decoded < 0:
            raise CodecError(f"opus_decode failed: {_strerror(decoded)}", decoded)
        return pcm
