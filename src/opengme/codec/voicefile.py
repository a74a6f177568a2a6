"""Voice-message files: Ogg/Opus, mono 16 kHz, VBR around 20 kbps.

Why this format: Opus at ~20 kbps keeps speech intelligible and natural (a 58 s message is about
150 kB), and Ogg/Opus opens in every browser, phone and desktop player. The container is written by
FFmpeg's Ogg muxer through PyAV (a maintained muxer, no hand-written pages).

Three parts:

* :class:`VoiceFileWriter` encodes 20 ms int16 frames as they are recorded, into a temporary file
  next to the target that is fsynced and renamed on :meth:`~VoiceFileWriter.commit`: a reader never
  sees half a file, and :meth:`~VoiceFileWriter.abort` (a cancelled recording) leaves nothing.
* :func:`voice_file_duration_ms` and :func:`decode_voice_file` read a file (7010 unreadable,
  7011 damaged), decoding through :mod:`opengme.codec.audiofile`.
* :func:`inspect_voice_file` is the upload gate: a small strict parser of its own (Ogg pages with
  their CRC, one logical stream, OpusHead/OpusTags, every audio packet's TOC) that measures the
  duration and raises :class:`VoiceFileError` saying exactly why a file is refused. It never decodes
  audio and never lets any other exception out, whatever the bytes.
"""
from __future__ import annotations

import enum
import hashlib
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from opengme.codec.audiofile import decode_pcm, open_audio_file
from opengme.errors import ErrorCode, GmeError

SAMPLE_RATE: Final = 16_000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
BITRATE: Final = 20_000  # VBR target; speech lands between 16 and 24 kbps
OPUS_RATE: Final = 48_000  # Ogg/Opus granule positions always count 48 kHz samples
MAX_OPUS_PACKET_SAMPLES: Final = 5_760  # 120 ms, RFC 6716 §3.2.5
READ_LIMIT: Final = 64 << 20  # files above this are not voice messages; reading stops there

Frame = npt.NDArray[np.int16]


# --- writing ------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and a rename: all of it or nothing.
    ``tmp_dir`` (same file system) holds the temporary file; default: next to ``path``."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.{threading.get_ident():x}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class VoiceFileWriter:
    """Encodes 16 kHz mono int16 frames (20 ms) into an Ogg/Opus file, atomically.

    OSError from the constructor means the folder is missing or unwritable (the recorder's 4101).
    """

    def __init__(self, path: Path | str, bitrate: int = BITRATE) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{id(self):x}.part")
        self._file = open(self._tmp, "xb")  # noqa: SIM115 - closed by commit/abort
        try:
            self._container = av.open(self._file, mode="w", format="ogg")
            stream = self._container.add_stream("libopus", rate=SAMPLE_RATE)
            stream.layout = "mono"
            stream.bit_rate = bitrate
            stream.codec_context.options = {"application": "voip", "vbr": "on", "frame_duration": str(FRAME_MS)}
        except BaseException:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self._stream = stream
        self._samples = 0
        self._closed = False

    @property
    def duration_ms(self) -> int:
        """Audio written so far."""
        return self._samples * 1000 // SAMPLE_RATE

    def write(self, frame: Frame) -> None:
        """Encode one 20 ms frame (``FRAME_SAMPLES`` int16 samples)."""
        if self._closed:
            raise ValueError("the voice file is already committed or aborted")
        pcm = np.asarray(frame)
        if pcm.dtype != np.int16 or pcm.shape != (FRAME_SAMPLES,):
            raise ValueError(f"a frame is {FRAME_SAMPLES} int16 samples, got {pcm.dtype} {pcm.shape}")
        audio = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        audio.sample_rate = SAMPLE_RATE
        audio.pts = self._samples
        audio.time_base = Fraction(1, SAMPLE_RATE)
        self._samples += FRAME_SAMPLES
        self._container.mux(self._stream.encode(audio))

    def commit(self) -> Path:
        """Finish the file and move it into place (fsync, rename, fsync of the folder)."""
        if self._closed:
            raise ValueError("the voice file is already committed or aborted")
        self._closed = True
        try:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Drop everything written (a cancelled recording): no file appears."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        finally:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


def encode_voice_file(path: Path | str, pcm: npt.NDArray[np.int16], bitrate: int = BITRATE) -> Path:
    """Encode a whole 16 kHz mono recording (padded with silence to whole 20 ms frames)."""
    samples = np.asarray(pcm, dtype=np.int16).reshape(-1)
    samples = np.concatenate([samples, np.zeros(-len(samples) % FRAME_SAMPLES, np.int16)])
    writer = VoiceFileWriter(path, bitrate)
    try:
        for start in range(0, len(samples), FRAME_SAMPLES):
            writer.write(samples[start : start + FRAME_SAMPLES])
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


# --- reading ------------------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(READ_LIMIT + 1)
    except OSError as exc:
        raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS, f"cannot read {path}: {exc.strerror or exc}") from exc


def voice_file_duration_ms(path: Path | str) -> int:
    """The duration of a voice file in ms: 7010 when it cannot be read, 7011 when it is not a sound
    Ogg/Opus file."""
    path = Path(path)
    try:
        return inspect_voice_file(_read_file(path), READ_LIMIT, None).duration_ms
    except VoiceFileError as exc:
        raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED, f"{path}: {exc}") from exc


def decode_voice_file(path: Path | str, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """All of a voice file's audio as mono int16 PCM at ``sample_rate`` (7010/7011 as above)."""
    path = Path(path)
    container = open_audio_file(path)
    try:
        chunks = list(decode_pcm(container, sample_rate, 1, path))
    finally:
        container.close()
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


# --- upload validation --------------------------------------------------------------------------


class Refusal(enum.Enum):
    """Why :func:`inspect_voice_file` refused a file (the server logs and counts these)."""

    EMPTY = "empty"
    TOO_BIG = "too_big"
    TOO_LONG = "too_long"
    NOT_OGG = "not_ogg"
    TRUNCATED = "truncated"
    BAD_PAGE = "bad_page"
    BAD_CRC = "bad_crc"
    NOT_OPUS = "not_opus"
    BAD_HEADER = "bad_header"
    BAD_PACKET = "bad_packet"


class VoiceFileError(ValueError):
    """A file refused as a voice message; ``reason`` says which check failed, the text says why."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class VoiceFileInfo:
    """What the parser learned from an accepted file."""

    duration_ms: int
    size: int
    sha256: str
    channels: int
    input_sample_rate: int
    pre_skip: int
    packets: int
    pages: int
    vendor: str


PAGE_HEADER: Final = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, seq, crc, segments
CAPTURE: Final = b"OggS"
FLAG_CONTINUED, FLAG_BOS, FLAG_EOS = 1, 2, 4
MAX_HEADER_PACKET: Final = 1 << 16  # OpusHead/OpusTags above 64 kB are not from a voice recorder
MAX_AUDIO_PACKET: Final = 1275 * 48 + 2 * 48 + 2  # RFC 6716 §3.2.5: 48 frames of at most 1275 bytes
_FRAME_48K: Final = (480, 960, 1920, 2880)  # SILK configs 0-11: 10, 20, 40, 60 ms


def _bit_reverse_table() -> bytes:
    return bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


_REVERSE: Final = _bit_reverse_table()


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection, zero init and final XOR).

    It is zlib's reflected CRC-32 mirrored: reverse each byte's bits, run the raw reflected CRC
    (undoing zlib's pre- and post-inversion), reverse the 32-bit result. C speed, no table loop.
    """
    raw = zlib.crc32(data.translate(_REVERSE), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def opus_packet_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1); checks the
    framing rules that do not need decoding."""
    if not packet:
        raise VoiceFileError(Refusal.BAD_PACKET, "an Opus packet is empty")
    if len(packet) > MAX_AUDIO_PACKET:
        raise VoiceFileError(Refusal.BAD_PACKET,
                             f"an Opus packet is {len(packet)} bytes; at most {MAX_AUDIO_PACKET} exist")
    toc = packet[0]
    config = toc >> 3
    if config < 12:
        frame = _FRAME_48K[config & 3]
    elif config < 16:
        frame = 480 << (config & 1)
    else:
        frame = 120 << (config & 3)
    code = toc & 3
    body = len(packet) - 1
    if code == 0:
        count = 1
        if body > 1275:
            raise VoiceFileError(Refusal.BAD_PACKET, "a one-frame Opus packet is longer than 1275 bytes")
    elif code == 1:
        count = 2
        if body % 2 or body // 2 > 1275:
            raise VoiceFileError(Refusal.BAD_PACKET, "a two-frame Opus packet (code 1) has an odd or oversized body")
    elif code == 2:
        count = 2
        if body < 1 or (packet[1] >= 252 and body < 2):
            raise VoiceFileError(Refusal.BAD_PACKET, "a two-frame Opus packet (code 2) lacks its frame length")
        first = packet[1] if packet[1] < 252 else packet[1] + 4 * packet[2]
        if first > body - (1 if packet[1] < 252 else 2):
            raise VoiceFileError(Refusal.BAD_PACKET,
                                 "a two-frame Opus packet (code 2) has a frame longer than the packet")
    else:
        if body < 1:
            raise VoiceFileError(Refusal.BAD_PACKET, "a multi-frame Opus packet (code 3) lacks its frame count")
        count = packet[1] & 0x3F
        if count == 0:
            raise VoiceFileError(Refusal.BAD_PACKET, "a multi-frame Opus packet (code 3) has zero frames")
    samples = frame * count
    if samples > MAX_OPUS_PACKET_SAMPLES:
        raise VoiceFileError(Refusal.BAD_PACKET, f"an Opus packet lasts {samples / 48:g} ms; at most 120 ms is allowed")
    return samples


@dataclass
class _Page:
    flags: int
    granule: int
    segments: bytes
    body: bytes


def _pages(data: bytes) -> list[_Page]:
    """Every page of one logical stream, CRC-checked, in sequence, nothing between or after them."""
    pages: list[_Page] = []
    pos = 0
    serial = None
    while pos < len(data):
        if len(data) - pos < PAGE_HEADER.size:
            raise VoiceFileError(Refusal.TRUNCATED, f"the file ends inside a page header at byte {pos}")
        capture, version, flags, granule, page_serial, seq, crc, nseg = PAGE_HEADER.unpack_from(data, pos)
        if capture != CAPTURE:
            if pos == 0:
                raise VoiceFileError(Refusal.NOT_OGG, "not an Ogg file (it does not start with 'OggS')")
            raise VoiceFileError(Refusal.BAD_PAGE, f"no Ogg page starts at byte {pos} (garbage between pages)")
        if version != 0:
            raise VoiceFileError(Refusal.BAD_PAGE, f"Ogg page at byte {pos} has version {version}; only 0 exists")
        if flags & ~7:
            raise VoiceFileError(Refusal.BAD_PAGE, f"Ogg page at byte {pos} has unknown flag bits {flags:#x}")
        table_end = pos + PAGE_HEADER.size + nseg
        if table_end > len(data):
            raise VoiceFileError(Refusal.TRUNCATED, f"the file ends inside the segment table of the page at byte {pos}")
        segments = data[pos + PAGE_HEADER.size : table_end]
        end = table_end + sum(segments)
        if end > len(data):
            raise VoiceFileError(Refusal.TRUNCATED, f"the page at byte {pos} says {sum(segments)} bytes of data; "
                                 f"the file has {len(data) - table_end} left")
        page = data[pos:end]
        if ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) != crc:
            raise VoiceFileError(Refusal.BAD_CRC, f"the page at byte {pos} fails its CRC check (the file is damaged)")
        if serial is None:
            serial = page_serial
        elif page_serial != serial:
            raise VoiceFileError(Refusal.NOT_OPUS, "the Ogg file holds more than one stream; a voice message has one")
        if seq != len(pages):
            raise VoiceFileError(Refusal.BAD_PAGE,
                                 f"page {len(pages)} carries sequence number {seq} (a page is missing)")
        if bool(flags & FLAG_BOS) != (not pages):
            raise VoiceFileError(Refusal.BAD_PAGE, "the beginning-of-stream flag is not on the first page alone")
        if pages and pages[-1].flags & FLAG_EOS:
            raise VoiceFileError(Refusal.BAD_PAGE, "there are pages after the end-of-stream page")
        pages.append(_Page(flags, granule, segments, data[table_end:end]))
        pos = end
    if not pages:
        raise VoiceFileError(Refusal.EMPTY, "the file is empty")
    if not pages[-1].flags & FLAG_EOS:
        raise VoiceFileError(Refusal.TRUNCATED, "the last page is not marked end-of-stream (the file is cut short)")
    return pages


def _packets(pages: list[_Page]) -> list[tuple[bytes, int]]:
    """(packet, index of the page it ends on) for every complete packet."""
    packets: list[tuple[bytes, int]] = []
    partial: list[bytes] = []
    size = 0
    for index, page in enumerate(pages):
        if bool(page.flags & FLAG_CONTINUED) != bool(partial):
            raise VoiceFileError(Refusal.BAD_PAGE,
                                 f"page {index}'s continuation flag does not match the packet before it")
        at = 0
        for lacing in page.segments:
            partial.append(page.body[at : at + lacing])
            at += lacing
            size += lacing
            limit = MAX_HEADER_PACKET if len(packets) < 2 else MAX_AUDIO_PACKET
            if size > limit:
                raise VoiceFileError(Refusal.BAD_PACKET, f"packet {len(packets)} is larger than {limit} bytes")
            if lacing < 255:
                packets.append((b"".join(partial), index))
                partial, size = [], 0
    if partial:
        raise VoiceFileError(Refusal.TRUNCATED, "the last packet is unfinished")
    return packets


def _opus_head(packet: bytes) -> tuple[int, int, int]:
    """(channels, pre-skip, input sample rate) of an OpusHead packet (RFC 7845 §5.1)."""
    if not packet.startswith(b"OpusHead"):
        kind = packet[:8].split(b"\0")[0].decode("ascii", "replace") or "unknown"
        hint = "Vorbis" if packet[1:7] == b"vorbis" else kind
        raise VoiceFileError(Refusal.NOT_OPUS, f"the Ogg stream is not Opus (first packet: {hint!r})")
    if len(packet) < 19:
        raise VoiceFileError(Refusal.BAD_HEADER, "OpusHead is shorter than 19 bytes")
    version, channels, pre_skip, rate, _gain, family = struct.unpack_from("<BBHIhB", packet, 8)
    if version >> 4:
        raise VoiceFileError(Refusal.BAD_HEADER, f"OpusHead version {version} is not 0.x")
    if family != 0 or not 1 <= channels <= 2 or len(packet) != 19:
        raise VoiceFileError(Refusal.BAD_HEADER, f"OpusHead describes {channels} channels with mapping family "
                             f"{family}; a voice message is mono or stereo (family 0)")
    return channels, pre_skip, rate


def _tag_string(packet: bytes, pos: int) -> tuple[bytes, int]:
    """One length-prefixed OpusTags string at ``pos`` and the position after it."""
    if pos + 4 > len(packet):
        raise VoiceFileError(Refusal.BAD_HEADER, "OpusTags ends inside a length field")
    (length,) = struct.unpack_from("<I", packet, pos)
    if length > len(packet) - pos - 4:
        raise VoiceFileError(Refusal.BAD_HEADER, "an OpusTags string is longer than the packet")
    return packet[pos + 4 : pos + 4 + length], pos + 4 + length


def _opus_tags(packet: bytes) -> str:
    """The vendor string of an OpusTags packet (RFC 7845 §5.2), after checking every length in it."""
    if not packet.startswith(b"OpusTags"):
        raise VoiceFileError(Refusal.BAD_HEADER, "the second packet is not OpusTags")
    vendor, pos = _tag_string(packet, 8)
    if pos + 4 > len(packet):
        raise VoiceFileError(Refusal.BAD_HEADER, "OpusTags ends before its comment count")
    (count,) = struct.unpack_from("<I", packet, pos)
    pos += 4
    if count > (len(packet) - pos) // 4:
        raise VoiceFileError(Refusal.BAD_HEADER, f"OpusTags claims {count} comments; the packet cannot hold them")
    for _ in range(count):
        _, pos = _tag_string(packet, pos)
    return vendor.decode("utf-8", "replace")


def inspect_voice_file(data: bytes | bytearray | memoryview | Path | str, max_bytes: int,
                       max_duration_ms: int | None) -> VoiceFileInfo:
    """Parse a candidate voice message and measure it; :class:`VoiceFileError` when it is refused.

    A path is read up to ``max_bytes + 1`` bytes (OSError when it cannot be). ``max_duration_ms``
    None means no duration limit. The duration is the last granule position minus the pre-skip
    (what players show), cross-checked against the packets' TOC durations.
    """
    if isinstance(data, (str, Path)):
        with open(data, "rb") as f:
            data = f.read(max_bytes + 1)
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise VoiceFileError(Refusal.TOO_BIG, f"the file is larger than the limit of {max_bytes} bytes")
    pages = _pages(raw)
    packets = _packets(pages)
    if len(packets) < 2:
        raise VoiceFileError(Refusal.BAD_HEADER, "the stream ends before its OpusHead and OpusTags headers")
    channels, pre_skip, rate = _opus_head(packets[0][0])
    if packets[0][1] != 0 or len(pages[0].segments) != 1 or pages[0].granule != 0:
        raise VoiceFileError(Refusal.BAD_HEADER, "OpusHead must be alone on the first page, with granule position 0")
    vendor = _opus_tags(packets[1][0])
    head_pages = packets[1][1] + 1
    if any(p.granule != 0 for p in pages[1:head_pages]) or (len(packets) > 2 and packets[2][1] < head_pages):
        raise VoiceFileError(Refusal.BAD_HEADER, "OpusTags must end its page, with granule position 0")
    audio = packets[2:]
    if not audio:
        raise VoiceFileError(Refusal.EMPTY, "the file has no audio packets")
    total = 0
    previous = 0
    ends_on: dict[int, int] = {}
    for packet, page in audio:
        total += opus_packet_samples(packet)
        ends_on[page] = total
    for index in range(head_pages, len(pages)):
        granule = pages[index].granule
        if granule == -1 and index not in ends_on:
            continue  # a page on which no packet ends carries no granule position
        last = index == len(pages) - 1
        if granule < previous or (not last and granule != ends_on.get(index)) or granule > total:
            raise VoiceFileError(Refusal.BAD_PAGE, f"page {index} has granule position {granule}, which does not "
                                 "match the audio packets before it")
        previous = granule
    final = pages[-1].granule
    if final < pre_skip or total - final > MAX_OPUS_PACKET_SAMPLES:
        raise VoiceFileError(Refusal.BAD_PAGE,
                             "the final granule position does not match the audio (pre-skip or end trim)")
    duration_ms = (final - pre_skip) * 1000 // OPUS_RATE
    if max_duration_ms is not None and duration_ms > max_duration_ms:
        raise VoiceFileError(Refusal.TOO_LONG, f"the message lasts {duration_ms} ms; the limit is {max_duration_ms} ms")
    return VoiceFileInfo(
        duration_ms=duration_ms,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        channels=channels,
        input_sample_rate=rate,
        pre_skip=pre_skip,
        packets=len(audio),
        pages=len(pages),
        vendor=vendor,
    )
