"""Uplink → Relay → Downlink in memory with the real codec, crypto and relay core, on a simulated clock.

Members talk through the real ``opengme.core.relay.Relay`` (it re-seals each uplink packet with the
listener's key in the server direction), optionally through an ``Impairment``; the listener's
``Downlink`` renders every 20 ms. Outputs are compared with what was said after aligning by
cross-correlation. ``SimRoom`` lives in tests/support/sim_room.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from opengme.codec.opus import profile_for
from opengme.core.downlink import Downlink
from opengme.core.impair import Impairment
from opengme.core.uplink import Uplink
from opengme.events import RoomType, UserUpdateEvent
from opengme.protocol.media import Flags, MediaCrypto, MediaHeader, PacketType
from support.audio import OUT_RATE, align, clip, correlation, frames_of, resample
from support.sim_room import START, TICK, SimRoom


def heard(room: RoomType, out: np.ndarray, said_16k: np.ndarray) -> tuple[float, float]:
    """(aligned correlation, lag in ms) of the listener's output against the 16 kHz original."""
    out16 = resample(out, OUT_RATE, 16_000)
    lag, cut = align(out16, said_16k, max_lag=16 * 300)
    return correlation(cut, said_16k), lag / 16


# --------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("room_type", [RoomType.FLUENCY, RoomType.STANDARD])
def test_speech_arrives_intact_and_promptly(room_type: RoomType) -> None:
    rate = profile_for(room_type).sample_rate
    room = SimRoom(room_type, (1, 2))
    out = room.run({1: clip(4.0, rate=rate)}, listener=2)
    similarity, lag_ms = heard(room_type, out, clip(4.0))
    assert similarity > 0.9
    assert 20 <= lag_ms <= 150  # jitter buffer + codec (+ ANS) delay, nothing more
    stats = room.clients[2].downlink.stats()
    assert stats.loss == 0.0 and stats.members[1].received == stats.expected > 150
    assert room.relay.counters.forwarded == room.clients[1].uplink.counters.sent


def test_two_talkers_are_mixed_and_a_blacklisted_one_is_silenced() -> None:
    a, b = clip(3.0), clip(3.0, offset_s=6.0)
    mixed = SimRoom(RoomType.FLUENCY, (1, 2, 3))
    out = resample(mixed.run({1: a, 2: b}, listener=3), OUT_RATE, 16_000)
    lag, cut = align(out, a.astype(np.int32) + b, max_lag=16 * 300)
    assert correlation(cut, a.astype(np.int32) + b) > 0.85
    assert correlation(cut, a) > 0.4 and correlation(cut, b) > 0.4  # both voices are in the mix
    assert mixed.clients[3].downlink.speaking() == {1, 2}

    blocked = SimRoom(RoomType.FLUENCY, (1, 2, 3))
    listener = blocked.clients[3].downlink
    listener.add_blacklist(2)
    out = resample(blocked.run({1: a, 2: b}, listener=3), OUT_RATE, 16_000)
    cut = out[lag:lag + len(a)]
    assert correlation(cut, a) > 0.9 and abs(correlation(cut, b)) < 0.1
    assert listener.counters.blacklisted > 100 and listener.members() == (1,)
    assert listener.recv_stream_level(2) == 0
    # Other members are unaffected by 3's local blacklist.
    assert blocked.clients[1].downlink.counters.blacklisted == 0

    listener.remove_blacklist(2)
    out = resample(blocked.run({2: b}, listener=3, first_tick=500), OUT_RATE, 16_000)
    assert heard(RoomType.FLUENCY, resample(out, 16_000, OUT_RATE), b)[0] > 0.9


def test_member_and_speaker_volume_and_levels() -> None:
    room = SimRoom(RoomType.STANDARD, (1, 2))
    down = room.clients[2].downlink
    said = clip(2.0, rate=48_000)
    frames = frames_of(said, 960)
    levels, speaker = [], []
    for k, frame in enumerate(frames):
        room.tick(k, {1: frame}, (2,))
        levels.append(down.recv_stream_level(1))
        speaker.append(down.speaker_level())
    assert max(levels) > 50 and max(speaker) > 50
    down.set_volume(1, 200)
    assert down.recv_stream_level(1) == min(200, 2 * round(levels[-1]))
    down.set_volume(1, 0)
    silent = [room.tick(len(frames) + k, {1: f}, (2,))[2] for k, f in enumerate(frames)]
    assert not np.concatenate(silent[10:]).any()
    down.set_volume(1, 100)
    down.set_speaker_volume(0)
    silent = [room.tick(2 * len(frames) + k, {1: f}, (2,))[2] for k, f in enumerate(frames)]
    assert not np.concatenate(silent).any() and down.speaker_level() == 0
    report = down.volumes(START + 100.0)  # first poll starts the interval
    assert report is None and down.volumes(START + 101.0) == {1: pytest.approx(max(levels), abs=3)}


def test_send_disabled_sends_nothing_but_meters_run() -> None:
    crypto = MediaCrypto.for_client(os.urandom(32))
    up = Uplink(RoomType.FLUENCY, 7, crypto)
    up.send_enabled = False
    frames = frames_of(clip(1.0), up.frame_samples)
    levels = []
    for k, frame in enumerate(frames):
        assert up.process(frame, START + k * TICK) is None
        levels.append(up.mic_level)
        assert up.send_level == 0
    assert max(levels) > 40 and up.counters.gated == len(frames) and up.counters.sent == 0
    assert crypto.send_index == 0  # nothing was even sealed
    up.send_enabled = True
    datagram = up.process(frames[20], START + 1.0)
    assert datagram is not None and up.send_level == up.mic_level > 0
    assert MediaHeader.unpack(datagram).flags & Flags.MARKER


def test_mic_volume_scales_the_meter_and_zero_mutes() -> None:
    crypto = MediaCrypto.for_client(os.urandom(32))
    up = Uplink(RoomType.STANDARD, 7, crypto)
    assert not up.noise_suppression  # ANS runs in FLUENCY rooms only
    frame = frames_of(clip(1.0, offset_s=1.0, rate=48_000), up.frame_samples)[10]
    up.process(frame, START)
    unity = up.mic_level
    up.set_mic_volume(200)
    up.process(frame, START + TICK)
    assert up.mic_level == unity + 10  # +6 dB on a 60 dB scale of 0..100
    up.set_mic_volume(0)
    up.process(frame, START + 2 * TICK)
    assert up.mic_level == 0
    with pytest.raises(ValueError):
        up.set_mic_volume(201)


def test_dtx_in_silence_marker_on_each_talkspurt_and_speaking_events() -> None:
    room = SimRoom(RoomType.FLUENCY, (1, 2))
    up, down = room.clients[1].uplink, room.clients[2].downlink
    words, pause = clip(1.5), np.zeros(16_000 * 3, dtype=np.int16)
    sent: list[tuple[int, MediaHeader]] = []
    events: list[tuple[int, int, UserUpdateEvent]] = []
    for k, frame in enumerate(frames_of(np.concatenate((words, pause, words)), 320)):
        now = START + k * TICK
        datagram = up.process(frame, now)
        if datagram is not None:
            sent.append((k, MediaHeader.unpack(datagram)))
            room.send(1, datagram, now)
        room.deliver(now)
        down.render(now)
        events += [(k, t, e) for t, e in down.events(now)]
    # After libopus's ~200 ms hangover, only its comfort-noise updates (one per 400 ms) go out.
    in_pause = [h for k, h in sent if 75 + 15 <= k < 225]
    assert len(in_pause) <= (225 - 90) * TICK / 0.4 + 1
    assert up.counters.dtx_skipped > 100
    gaps = np.diff([k for k, _ in sent])
    assert gaps.max() * TICK <= up.keepalive_s + TICK  # the path never goes quiet for long
    resumed = next(h for k, h in sent if k >= 225 and h.voice)
    assert resumed.flags & Flags.MARKER and sent[0][1].flags & Flags.MARKER
    assert all(h.seq == i for i, (_, h) in enumerate(sent))  # seq counts sent packets only ...
    assert resumed.timestamp - sent[0][1].timestamp >= (225 - 5) * 320  # ... timestamps real time
    assert [(t, e) for _, t, e in events] == [
        (1, UserUpdateEvent.HAS_AUDIO), (1, UserUpdateEvent.NO_AUDIO), (1, UserUpdateEvent.HAS_AUDIO)]
    no_audio_at = events[1][0]
    assert 75 + 100 <= no_audio_at <= 75 + 100 + 10  # 2 s after the last spoken packet


def test_keepalive_sends_dtx_packets_when_the_encoder_stays_silent() -> None:
    up = Uplink(RoomType.FLUENCY, 7, MediaCrypto.for_client(os.urandom(32)), keepalive_s=0.1)
    silence = np.zeros(320, dtype=np.int16)
    headers = [MediaHeader.unpack(d) for k in range(100)
               if (d := up.process(silence, START + k * TICK)) is not None]
    keepalives = [h for h in headers if h.flags & Flags.DTX]
    assert up.counters.keepalives == len(keepalives) >= 10
    assert all(h.level == 127 and not h.voice for h in keepalives)


def test_garbage_forged_replayed_and_reflected_datagrams_are_counted_and_dropped() -> None:
    room = SimRoom(RoomType.FLUENCY, (1, 2))
    up, down = room.clients[1].uplink, room.clients[2].downlink
    frames = frames_of(clip(1.0), 320)
    forwarded: list[bytes] = []
    for k, frame in enumerate(frames[:10]):
        datagram = up.process(frame, START + k * TICK)
        assert datagram is not None
        forwarded += [d for d, _ in room.relay.handle_datagram(datagram, room.clients[1].addr, START)]
    for datagram in forwarded[:5]:
        assert down.receive(datagram, START) is PacketType.DATA
    forged = bytearray(forwarded[5])
    forged[20] ^= 1
    bad = [b"", b"\x00" * 3, os.urandom(60), bytes(forged), forwarded[0], forwarded[4],
           room.clients[2].uplink.process(frames[0], START)]  # a client packet sent back at its sender
    before = down.counters.accepted
    assert [down.receive(d, START) for d in bad] == [None] * len(bad)
    c = down.counters
    assert (c.dropped_malformed, c.dropped_auth, c.dropped_replay) == (4, 1, 2)
    assert c.accepted == before
    assert down.receive(forwarded[5], START) is PacketType.DATA  # the genuine one still gets in
    assert down.stats().members[1].received == 6


def test_room_type_switch_restarts_streams_and_keeps_the_voice() -> None:
    room = SimRoom(RoomType.FLUENCY, (1, 2))
    first = room.run({1: clip(2.0)}, listener=2, tail_s=0.2)
    for client in room.clients.values():
        client.uplink.set_room_type(RoomType.STANDARD)
        client.downlink.set_room_type(RoomType.STANDARD)
    up, down = room.clients[1].uplink, room.clients[2].downlink
    assert (up.sample_rate, up.frame_samples, up.noise_suppression) == (48_000, 960, False)
    room.room_type = RoomType.STANDARD
    second = room.run({1: clip(2.0, offset_s=3.0, rate=48_000)}, listener=2, first_tick=200)
    assert heard(RoomType.FLUENCY, first, clip(2.0))[0] > 0.9
    assert heard(RoomType.STANDARD, second, clip(2.0, offset_s=3.0))[0] > 0.9
    assert down.counters.restarts == 1  # the first STANDARD packet met a FLUENCY stream
    assert down.stats().members[1].expected == down.stats().members[1].received
    with pytest.raises(ValueError):
        up.process(np.zeros(320, dtype=np.int16), START + 10)  # capture must follow the new rate


def test_loopback_mixes_the_local_voice_in() -> None:
    down = Downlink(RoomType.FLUENCY, MediaCrypto.for_client(os.urandom(32)))
    said = clip(2.0)
    down.push_loopback(said[:320], 16_000)  # ignored: loopback is off
    assert not down.render(START).any()
    down.loopback = True
    out = []
    for k, frame in enumerate(frames_of(said, 320)):
        down.push_loopback(frame, 16_000)
        out.append(down.render(START + k * TICK))
    similarity, lag_ms = heard(RoomType.FLUENCY, np.concatenate(out), said)
    assert similarity > 0.95 and lag_ms <= 25  # one frame of queueing + resampler delay


def test_loss_is_measured_per_member_and_over_an_interval() -> None:
    room = SimRoom(RoomType.STANDARD, (1, 2), impairment=Impairment(loss=0.2, jitter_ms=10, seed=3))
    down = room.clients[2].downlink
    frames = frames_of(clip(4.0, rate=48_000), 960)
    for k, frame in enumerate(frames[:100]):
        room.tick(k, {1: frame}, (2,))
    earlier = down.stats()
    for k, frame in enumerate(frames[100:], start=100):
        room.tick(k, {1: frame}, (2,))
    later = down.stats()
    assert 0.12 < later.loss < 0.28 and 0.1 < later.loss_since(earlier) < 0.3
    member = later.members[1]
    assert member.lost == member.expected - member.received > 20
    assert member.jitter.concealed >= member.lost // 2 and later.delay_ms >= 20


# -------------------------------------------------------------------------------- impairment


def test_impairment_is_seeded_lossy_and_reorders() -> None:
    def plan(seed: int) -> list[list[tuple[float, bytes]]]:
        imp = Impairment(loss=0.1, jitter_ms=30, seed=seed, delay_ms=5)
        return [imp.schedule(bytes([k % 256]), k * TICK) for k in range(2000)]

    runs = plan(1)
    assert runs == plan(1) and runs != plan(2)
    delivered = [(k, at) for k, s in enumerate(runs) for at, _ in s]
    assert 0.07 < 1 - len(delivered) / 2000 < 0.13
    delays = [at - k * TICK for k, at in delivered]
    assert min(delays) >= 0.005 and max(delays) <= 0.035 + 1e-9
    arrival_order = [k for k, _ in sorted(delivered, key=lambda x: x[1])]
    assert arrival_order != sorted(arrival_order)  # 30 ms of jitter over 20 ms frames reorders
    assert Impairment().schedule(b"x", 1.0) == [(1.0, b"x")]


def test_impairment_parse() -> None:
    imp = Impairment.parse("loss=0.1, jitter=30,seed=7")
    assert (imp.loss, imp.jitter_ms, imp.delay_ms, imp.seed) == (0.1, 30.0, 0.0, 7)
    for bad in ("loss", "drop=0.1", "loss=2"):
        with pytest.raises(ValueError):
            Impairment.parse(bad)
