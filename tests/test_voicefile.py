"""Voice-message files: the atomic Ogg/Opus writer, reading, and the strict upload parser (fuzzed)."""
from __future__ import annotations

import struct
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opengme.codec import voicefile as vf
from opengme.codec.voicefile import Refusal, VoiceFileError, inspect_voice_file
from opengme.errors import ErrorCode, GmeError
from support.audio import speech as speech_clip
from support.paths import SPEECH_WAV
from support.voice import transcode

LIMIT = 1 << 20


@pytest.fixture(scope="module")
def speech() -> npt.NDArray[np.int16]:
    return speech_clip()


@pytest.fixture(scope="module")
def speech_ogg(tmp_path_factory: pytest.TempPathFactory, speech: npt.NDArray[np.int16]) -> bytes:
    return vf.encode_voice_file(tmp_path_factory.mktemp("v") / "speech.ogg", speech).read_bytes()


def _reference_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@given(st.binary(max_size=300))
def test_ogg_crc_matches_the_bitwise_definition(data: bytes) -> None:
    assert vf.ogg_crc(data) == _reference_crc(data)


def test_writer_makes_a_16k_mono_opus_file_of_the_right_length_and_rate(tmp_path: Path,
                                                                       speech: npt.NDArray[np.int16]) -> None:
    path = vf.encode_voice_file(tmp_path / "m.ogg", speech)
    info = inspect_voice_file(path, LIMIT, 58_000)
    frames = -(-len(speech) // vf.FRAME_SAMPLES)
    assert info.duration_ms == frames * vf.FRAME_MS == vf.voice_file_duration_ms(path)
    assert (info.channels, info.input_sample_rate) == (1, 16_000)
    kbps = info.size * 8 / info.duration_ms
    assert 12 <= kbps <= 26, kbps  # VBR around 16-24 kbps of payload, plus the container
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, container.format.name) == ("opus", "ogg")
    assert [p.name for p in tmp_path.iterdir()] == ["m.ogg"]  # the temporary file is gone


def test_decoded_file_matches_the_recorded_speech(tmp_path: Path, speech: npt.NDArray[np.int16]) -> None:
    decoded = vf.decode_voice_file(vf.encode_voice_file(tmp_path / "m.ogg", speech))
    n = min(len(decoded), len(speech)) // 160 * 160
    env_a = np.abs(speech[:n].astype(float)).reshape(-1, 160).mean(axis=1)
    env_b = np.abs(decoded[:n].astype(float)).reshape(-1, 160).mean(axis=1)
    assert abs(len(decoded) - len(speech)) < vf.FRAME_SAMPLES * 2
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.95


def test_abort_leaves_no_file_and_a_failed_write_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "m.ogg"
    target.write_bytes(b"previous")
    writer = vf.VoiceFileWriter(target)
    writer.write(np.zeros(vf.FRAME_SAMPLES, np.int16))
    assert writer.duration_ms == 20
    with pytest.raises(ValueError, match="320 int16"):
        writer.write(np.zeros(10, np.int16))
    writer.abort()
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.ogg"]
    with pytest.raises(OSError):
        vf.VoiceFileWriter(tmp_path / "missing" / "m.ogg")


def test_files_from_other_opus_encoders_are_accepted(tmp_path: Path) -> None:
    """FFmpeg's libopus at 48 kHz stereo and its native Opus encoder, both through PyAV."""
    for codec, rate, layout in (("libopus", 48_000, "stereo"), ("libopus", 24_000, "mono")):
        path = transcode(SPEECH_WAV, tmp_path / f"{codec}{rate}.ogg", codec, rate, layout)
        info = inspect_voice_file(path.read_bytes(), LIMIT, None)
        assert abs(info.duration_ms - 16_732) <= 30, (codec, rate, info)


def test_reading_errors_are_7010_and_7011(tmp_path: Path) -> None:
    with pytest.raises(GmeError) as missing:
        vf.voice_file_duration_ms(tmp_path / "nope.ogg")
    (tmp_path / "bad.ogg").write_bytes(b"OggS" + bytes(40))
    with pytest.raises(GmeError) as damaged:
        vf.voice_file_duration_ms(tmp_path / "bad.ogg")
    assert (missing.value.code, damaged.value.code) == (ErrorCode.AV_ERR_FILE_CANNOT_ACCESS,
                                                        ErrorCode.AV_ERR_FILE_DAMAGED)


# --- refusals, each with its reason ---------------------------------------------------------------


def _refusal(data: bytes, max_bytes: int = LIMIT, max_ms: int | None = 58_000) -> VoiceFileError:
    with pytest.raises(VoiceFileError) as exc:
        inspect_voice_file(data, max_bytes, max_ms)
    return exc.value


def _reseal(page: bytes) -> bytes:
    """A page with its CRC recomputed (to reach the checks after the CRC)."""
    crc = vf.ogg_crc(page[:22] + b"\0\0\0\0" + page[26:])
    return page[:22] + struct.pack("<I", crc) + page[26:]


def _page_len(data: bytes) -> int:
    return 27 + data[26] + sum(data[27 : 27 + data[26]])


def test_each_refusal_says_why(tmp_path: Path, speech_ogg: bytes, speech: npt.NDArray[np.int16]) -> None:
    assert _refusal(b"").reason is Refusal.EMPTY
    assert _refusal(b"RIFF" + bytes(100)).reason is Refusal.NOT_OGG
    assert _refusal(SPEECH_WAV.read_bytes()).reason is Refusal.NOT_OGG
    assert _refusal(speech_ogg, max_bytes=len(speech_ogg) - 1).reason is Refusal.TOO_BIG
    too_long = _refusal(speech_ogg, max_ms=10_000)
    assert too_long.reason is Refusal.TOO_LONG and "16740 ms" in str(too_long)
    assert _refusal(speech_ogg[:-1]).reason is Refusal.TRUNCATED
    assert _refusal(speech_ogg[:20]).reason is Refusal.TRUNCATED
    flipped = bytearray(speech_ogg)
    flipped[len(flipped) // 2] ^= 0x10
    assert _refusal(bytes(flipped)).reason is Refusal.BAD_CRC
    assert _refusal(speech_ogg + speech_ogg).reason is Refusal.BAD_PAGE  # a second stream after EOS
    assert _refusal(speech_ogg + b"junk").reason in (Refusal.TRUNCATED, Refusal.BAD_PAGE)
    # A huge page size: 255 lacing values of 255 announced, none of the data present.
    huge = _reseal(b"OggS\0\2" + bytes(20) + b"\xff" + b"\xff" * 255)
    assert _refusal(huge).reason is Refusal.TRUNCATED
    # Ogg, but not Opus: FLAC and Vorbis (FFmpeg's Vorbis encoder takes stereo only).
    for codec, rate, layout in (("flac", 16_000, "mono"), ("vorbis", 44_100, "stereo")):
        other = transcode(SPEECH_WAV, tmp_path / f"{codec}.ogg", codec, rate, layout).read_bytes()
        assert other[:4] == b"OggS"
        refusal = _refusal(other)
        assert refusal.reason is Refusal.NOT_OPUS, refusal
    assert "Vorbis" in str(refusal)


def test_header_only_and_wrong_granule_files_are_refused(speech_ogg: bytes) -> None:
    head_len = _page_len(speech_ogg)
    head = speech_ogg[:head_len]
    assert _refusal(_reseal(head[:5] + b"\6" + head[6:])).reason is Refusal.BAD_HEADER  # BOS+EOS, no tags
    second = speech_ogg[head_len:]
    tags_page = second[: _page_len(second)]
    eos_tags = _reseal(tags_page[:5] + b"\4" + tags_page[6:])
    assert _refusal(head + eos_tags).reason is Refusal.EMPTY
    wrong_granule = bytearray(speech_ogg)
    last = speech_ogg.rfind(b"OggS")
    wrong_granule[last + 6 : last + 14] = struct.pack("<q", 10**9)
    page = _reseal(bytes(wrong_granule[last:]))
    assert _refusal(speech_ogg[:last] + page).reason is Refusal.BAD_PAGE


def test_opus_toc_durations() -> None:
    assert vf.opus_packet_samples(bytes([(1 << 3) | 0, 0])) == 960  # SILK NB 20 ms
    assert vf.opus_packet_samples(bytes([(31 << 3) | 1, 0, 0])) == 1920  # CELT 20 ms x2
    assert vf.opus_packet_samples(bytes([(16 << 3) | 3, 4])) == 480  # CELT 2.5 ms x4
    for bad in (b"", bytes([(3 << 3) | 3, 3]), bytes([3, 0]), bytes([1, 0])):
        with pytest.raises(VoiceFileError):
            vf.opus_packet_samples(bad)


# --- fuzzing: only VoiceFileError may escape, whatever the bytes ----------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_typed_error(data: bytes) -> None:
    try:
        inspect_voice_file(data, LIMIT, 58_000)
    except VoiceFileError as exc:
        assert isinstance(exc.reason, Refusal) and str(exc)


@FUZZ
@given(data=st.data())
def test_fuzz_truncations_and_bit_flips(speech_ogg: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(speech_ogg) - 1))
    _only_typed_error(speech_ogg[:cut])
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(speech_ogg) - 1), st.integers(0, 7)), max_size=4))
    mutated = bytearray(speech_ogg)
    for pos, bit in flips:
        mutated[pos] ^= 1 << bit
    _only_typed_error(bytes(mutated))


@cache
def _page_starts(data: bytes) -> list[int]:
    starts = [0]
    while starts[-1] + _page_len(data[starts[-1]:]) < len(data):
        starts.append(starts[-1] + _page_len(data[starts[-1]:]))
    return starts


@FUZZ
@given(data=st.data())
def test_fuzz_resealed_pages_with_random_fields(speech_ogg: bytes, data: st.DataObject) -> None:
    """Mutations past the CRC check: random header fields, segment counts and lacing values."""
    starts = _page_starts(speech_ogg)
    index = data.draw(st.integers(0, len(starts) - 1))
    start = starts[index]
    end = starts[index + 1] if index + 1 < len(starts) else len(speech_ogg)
    page = bytearray(speech_ogg[start:end])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(4, min(len(page) - 1, 27 + 255)))
        page[pos] = data.draw(st.integers(0, 255))
    _only_typed_error(speech_ogg[:start] + _reseal(bytes(page)) + speech_ogg[end:])


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
def test_fuzz_random_bytes(blob: bytes, as_ogg: bool) -> None:
    _only_typed_error((b"OggS\0" + blob) if as_ogg else blob)


@FUZZ
@given(st.integers(0, 255), st.binary(min_size=0, max_size=255), st.binary(max_size=600))
def test_fuzz_pages_claiming_huge_sizes(nseg: int, lacing: bytes, body: bytes) -> None:
    page = b"OggS\0\2" + bytes(20) + bytes([nseg]) + lacing + body
    _only_typed_error(_reseal(page) if len(page) >= 27 else page)


def test_frame_pts_are_consecutive(tmp_path: Path) -> None:
    """Regression guard: 58 s of silence encodes to exactly 58 000 ms and passes the 58 s limit."""
    writer = vf.VoiceFileWriter(tmp_path / "long.ogg")
    for _ in range(58_000 // vf.FRAME_MS):
        writer.write(np.zeros(vf.FRAME_SAMPLES, np.int16))
    info = inspect_voice_file(writer.commit(), LIMIT, 58_000)
    assert info.duration_ms == 58_000
    assert Fraction(info.size * 8, info.duration_ms) < 24  # silence is cheap in VBR
