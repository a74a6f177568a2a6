"""Real-time Opus codec: real libopus, speech-like test signals, measured delay/quality/loss recovery."""
from __future__ import annotations

import numpy as np
import opuslib_next
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.codec.opus import (
    DTX_MAX_BYTES,
    CodecError,
    CodecProfile,
    OpusDecoder,
    OpusEncoder,
    is_dtx,
    profile_for,
)
from opengme.events import RoomType
from support.audio import frames_of, speech_like


def best_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> int:
    """Lag (samples) by which ``decoded`` trails ``reference``, by cross-correlation."""
    size = reference.size + decoded.size
    spectrum = np.fft.rfft(decoded.astype(float), size) * np.conj(np.fft.rfft(reference.astype(float), size))
    return int(np.argmax(np.fft.irfft(spectrum, size)[:max_lag]))


def aligned(reference: np.ndarray, decoded: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    n = decoded.size - lag
    return reference[:n].astype(float), decoded[lag:lag + n].astype(float)


def voiced_frame_indices(signal: np.ndarray, n: int, rms: float = 2000.0) -> list[int]:
    return [k for k, f in enumerate(frames_of(signal, n)) if np.sqrt(np.mean(f.astype(float) ** 2)) > rms]


ROOM_TYPES = list(RoomType)


# --- profiles -------------------------------------------------------------------------------

def test_profiles_follow_gme_room_types() -> None:
    fluency, standard, high = (profile_for(rt) for rt in ROOM_TYPES)
    assert (fluency.sample_rate, fluency.bitrate, fluency.frame_samples) == (16_000, 30_000, 320)
    assert (standard.sample_rate, standard.bitrate, standard.frame_samples) == (48_000, 64_000, 960)
    assert (high.sample_rate, high.bitrate, high.frame_samples) == (48_000, 64_000, 960)
    assert fluency.application == standard.application == opuslib_next.APPLICATION_VOIP
    assert high.application == opuslib_next.APPLICATION_AUDIO
    assert profile_for(2) is standard
    with pytest.raises(ValueError):
        profile_for(9)


def test_profile_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="44100"):
        CodecProfile(44_100, 64_000, opuslib_next.APPLICATION_AUDIO, opuslib_next.AUTO)
    with pytest.raises(ValueError, match="bitrate"):
        CodecProfile(48_000, 1_000, opuslib_next.APPLICATION_AUDIO, opuslib_next.AUTO)


# --- round trip -----------------------------------------------------------------------------

@pytest.mark.parametrize("room_type", ROOM_TYPES, ids=lambda rt: rt.name)
def test_round_trip_delay_is_the_lookahead_and_quality_is_high(room_type: RoomType) -> None:
    profile = profile_for(room_type)
    x = speech_like(profile.sample_rate)
    encoder, decoder = OpusEncoder(profile), OpusDecoder(profile)
    y = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames_of(x, profile.frame_samples)])
    assert y.dtype == np.int16 and y.size == x.size

    lag = best_lag(x, y, max_lag=2 * encoder.lookahead)
    # 6.5 ms of lookahead at either rate; at 48 kHz the resampling filters shift the peak slightly.
    assert encoder.lookahead == profile.sample_rate * 65 // 10_000
    assert abs(lag - encoder.lookahead) <= profile.sample_rate // 10_000
    ref, out = aligned(x, y, lag)
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert np.corrcoef(ref, out)[0, 1] > 0.95
    assert snr > 10.0


def test_fluency_stream_decodes_at_48k_for_a_48k_mixer() -> None:
    profile = profile_for(RoomType.FLUENCY)
    encoder, decoder = OpusEncoder(profile), OpusDecoder(profile, sample_rate=48_000)
    packets = [encoder.encode(f) for f in frames_of(speech_like(16_000, noise=0.0), profile.frame_samples)]
    y = np.concatenate([decoder.decode(p) for p in packets])
    assert decoder.frame_samples == 960 and y.size == 960 * len(packets)
    x48 = speech_like(48_000, noise=0.0)
    ref, out = aligned(x48, y, best_lag(x48, y, max_lag=800))
    assert np.corrcoef(ref, out)[0, 1] > 0.95


def test_decoder_rejects_a_rate_opus_lacks() -> None:
    with pytest.raises(ValueError, match="44100"):
        OpusDecoder(profile_for(RoomType.STANDARD), sample_rate=44_100)


# --- bitrate --------------------------------------------------------------------------------

def mean_voiced_kbps(profile: CodecProfile, encoder: OpusEncoder) -> float:
    x = speech_like(profile.sample_rate)
    packets = [encoder.encode(f) for f in frames_of(x, profile.frame_samples)]
    voiced = voiced_frame_indices(x, profile.frame_samples)
    return float(np.mean([len(packets[k]) for k in voiced])) * 8 / 20


@pytest.mark.parametrize("room_type", ROOM_TYPES, ids=lambda rt: rt.name)
def test_packet_sizes_match_the_profile_bitrate(room_type: RoomType) -> None:
    profile = profile_for(room_type)
    encoder = OpusEncoder(profile)
    assert encoder.bitrate == profile.bitrate
    assert mean_voiced_kbps(profile, encoder) == pytest.approx(profile.bitrate / 1000, rel=0.25)


def test_set_bitrate_changes_packet_sizes() -> None:
    profile = profile_for(RoomType.STANDARD)
    encoder = OpusEncoder(profile)
    encoder.set_bitrate(16_000)
    assert encoder.bitrate == 16_000
    assert mean_voiced_kbps(profile, encoder) == pytest.approx(16, rel=0.25)
    with pytest.raises(ValueError, match="bitrate"):
        encoder.set_bitrate(2_000_000)


# --- DTX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("room_type", ROOM_TYPES, ids=lambda rt: rt.name)
def test_silence_becomes_tiny_dtx_packets_that_need_not_be_sent(room_type: RoomType) -> None:
    profile = profile_for(room_type)
    n = profile.frame_samples
    encoder, decoder = OpusEncoder(profile), OpusDecoder(profile)
    talk = speech_like(profile.sample_rate, seconds=0.24)  # ends mid-syllable
    for f in frames_of(talk, n):
        packet = encoder.encode(f)
        assert not is_dtx(packet)
        decoder.decode(packet)
    silence = np.zeros(n, np.int16)
    sizes, heard = [], []
    for _ in range(50):  # one second of silence; the receiver gets only the non-DTX packets
        packet = encoder.encode(silence)
        sizes.append(len(packet))
        heard.append(decoder.conceal() if is_dtx(packet) else decoder.decode(packet))
    # libopus: DTX engages once 200 ms have passed without voice, then sends 1-byte packets
    # and one small comfort-noise update every 400 ms.
    first = next(i for i, size in enumerate(sizes) if size <= DTX_MAX_BYTES)
    assert 0 < first <= 10
    assert sizes[first:].count(1) >= 0.9 * len(sizes[first:]) and max(sizes[first:]) < 100
    assert max(np.abs(h).max() for h in heard[15:]) < 30  # concealing the unsent ones stays quiet
    assert decoder.decode(encoder.encode(silence)).shape == (n,)  # a DTX packet also decodes


# --- loss: PLC and FEC ----------------------------------------------------------------------

@pytest.mark.parametrize("room_type", ROOM_TYPES, ids=lambda rt: rt.name)
def test_fec_recovers_lost_frames_closer_to_the_original_than_plc(room_type: RoomType) -> None:
    profile = profile_for(room_type)
    n = profile.frame_samples
    x = speech_like(profile.sample_rate)
    encoder = OpusEncoder(profile)
    packets = [encoder.encode(f) for f in frames_of(x, n)]
    lag = encoder.lookahead
    lost = [k for k in voiced_frame_indices(x, n) if 3 <= k < len(packets) - 1][::4]
    assert len(lost) >= 8

    def error(frame: np.ndarray, k: int) -> float:
        # Decoded frame k carries input samples [k*n - lag, (k+1)*n - lag).
        original = x[k * n - lag:(k + 1) * n - lag].astype(float)
        return float(np.sum((frame.astype(float) - original) ** 2))

    plc_err = fec_err = signal = 0.0
    for k in lost:
        plc, fec = OpusDecoder(profile), OpusDecoder(profile)
        for p in packets[:k]:
            plc.decode(p)
            fec.decode(p)
        plc_err += error(plc.conceal(), k)
        fec_err += error(fec.decode_fec(packets[k + 1]), k)
        signal += float(np.sum(x[k * n - lag:(k + 1) * n - lag].astype(float) ** 2))
        assert fec.decode(packets[k + 1]).shape == (n,)  # the stream carries on after recovery
    assert 10 * np.log10(plc_err / fec_err) > 3.0, "FEC should beat PLC by more than 3 dB"
    assert 10 * np.log10(signal / fec_err) > 3.0, "the FEC frame should resemble the lost one"


def test_without_expected_loss_there_is_no_fec_and_recovery_equals_plc() -> None:
    profile = profile_for(RoomType.FLUENCY)
    n = profile.frame_samples
    x = speech_like(profile.sample_rate)
    encoder = OpusEncoder(profile, packet_loss_perc=0)
    assert encoder.packet_loss_perc == 0
    packets = [encoder.encode(f) for f in frames_of(x, n)]
    k = voiced_frame_indices(x, n)[5]
    plc, fec = OpusDecoder(profile), OpusDecoder(profile)
    for p in packets[:k]:
        plc.decode(p)
        fec.decode(p)
    np.testing.assert_array_equal(plc.conceal(), fec.decode_fec(packets[k + 1]))
    with pytest.raises(ValueError, match="loss"):
        encoder.set_packet_loss_perc(101)


def test_conceal_continues_the_voice_then_fades() -> None:
    profile = profile_for(RoomType.STANDARD)
    x = speech_like(profile.sample_rate)
    encoder, decoder = OpusEncoder(profile), OpusDecoder(profile)
    k = voiced_frame_indices(x, profile.frame_samples)[8]
    for f in frames_of(x, profile.frame_samples)[:k]:
        decoder.decode(encoder.encode(f))
    rms = [float(np.sqrt(np.mean(decoder.conceal().astype(float) ** 2))) for _ in range(10)]
    assert rms[0] > 300  # the first concealed frame is voice-like, not silence
    assert rms[-1] < rms[0] / 4  # a long gap fades out instead of buzzing


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "frame",
    [np.zeros(319, np.int16), np.zeros(960, np.int16), np.zeros(320, np.float32),
     np.zeros((320, 1), np.int16), [0] * 320],
    ids=["short", "48k-frame", "float32", "2-d", "list"],
)
def test_encoder_rejects_a_wrong_frame(frame: object) -> None:
    encoder = OpusEncoder(profile_for(RoomType.FLUENCY))
    with pytest.raises(ValueError, match=r"int16 array of shape \(320,\)"):
        encoder.encode(frame)  # type: ignore[arg-type]


def test_encoder_accepts_a_strided_view() -> None:
    profile = profile_for(RoomType.FLUENCY)
    wide = speech_like(16_000)[: 2 * profile.frame_samples]
    view = wide[::2]
    assert not view.flags.c_contiguous
    assert OpusEncoder(profile).encode(view) == OpusEncoder(profile).encode(view.copy())


def foreign_packet(ms: float) -> bytes:
    """A genuine Opus packet of another duration, made by a plain libopus encoder."""
    other = opuslib_next.Encoder(48_000, 1, "voip")
    samples = int(48 * ms)
    return other.encode(speech_like(48_000)[:samples].tobytes(), samples)


@pytest.mark.parametrize(
    ("packet", "message"),
    [(b"", "invalid"), (b"\x03", "invalid"), (b"\x0b\xff", "invalid"),
     (foreign_packet(10), "holds 10 ms"), (foreign_packet(40), "holds 40 ms")],
    ids=["empty", "code3-no-count", "code3-zero-frames", "10ms", "40ms"],
)
def test_bad_packets_raise_codec_error_and_leave_the_decoder_intact(packet: bytes, message: str) -> None:
    profile = profile_for(RoomType.STANDARD)
    encoder = OpusEncoder(profile)
    packets = [encoder.encode(f) for f in frames_of(speech_like(48_000, seconds=0.2), 960)]
    clean = OpusDecoder(profile)
    expected = [clean.decode(p) for p in packets]
    decoder = OpusDecoder(profile)
    for i, p in enumerate(packets):
        with pytest.raises(CodecError, match=message):
            decoder.decode(packet)
        with pytest.raises(CodecError):
            decoder.decode_fec(packet)
        np.testing.assert_array_equal(decoder.decode(p), expected[i])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_any_bytes_decode_to_a_frame_or_raise_codec_error(data: bytes) -> None:
    decoder = OpusDecoder(profile_for(RoomType.STANDARD))
    try:
        frame = decoder.decode(data)
    except CodecError:
        return
    assert frame.dtype == np.int16 and frame.shape == (960,)


def test_decoder_accepts_memoryview_and_reset_forgets_history() -> None:
    profile = profile_for(RoomType.FLUENCY)
    encoder = OpusEncoder(profile)
    packets = [encoder.encode(f) for f in frames_of(speech_like(16_000, seconds=0.4), 320)]
    fresh = OpusDecoder(profile)
    first = fresh.decode(memoryview(packets[5]))
    reused = OpusDecoder(profile)
    for p in packets[:5]:
        reused.decode(bytearray(p))
    assert not np.array_equal(reused.decode(packets[5]), first)  # history shapes the output
    reused.reset()
    np.testing.assert_array_equal(reused.decode(packets[5]), first)
