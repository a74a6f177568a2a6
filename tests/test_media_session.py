"""The pure media session: route choice and failover, quality reports, settings by openid, and the
seams the next features plug into (mic taps, local players, the send stage, the per-speaker voice
stage with stereo output). Members run around the real relay core with the real codec and crypto
on a fake clock, so seconds of failover take milliseconds."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest

from opengme.core.relay import Addr, Relay
from opengme.devices import Frame
from opengme.events import RoomType, UserUpdateEvent
from opengme.sdk.audio_settings import AudioSettings
from opengme.sdk.media import impairment_from_env
from opengme.sdk.media_session import (
    BIND_INTERVAL_S,
    BIND_TRIES,
    ECHO_TIMEOUT_S,
    KEEPALIVE_S,
    OUTPUT_SAMPLES,
    QUALITY_INTERVAL_S,
    TICK_S,
    UDP_RETRY_S,
    Binding,
    MediaEvent,
    MediaSession,
    MediaTransport,
    QualityReport,
    Route,
    Speaking,
    Volumes,
    room_quality,
)

RATE = 48_000  # STANDARD rooms capture and play at 48 kHz
A, B, C = 101, 102, 103


def tone(freq: float, rate: int = RATE, amplitude: float = 8000) -> Iterator[Frame]:
    """An endless tone in 20 ms frames, phase-continuous across frames."""
    n = rate // 50
    k = 0
    while True:
        t = np.arange(k * n, (k + 1) * n) / rate
        yield (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        k += 1


def band(samples: np.ndarray, freq: float, rate: int = RATE) -> float:
    """RMS amplitude of ``samples`` within ±20 Hz of ``freq``."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) / len(samples)
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(np.sqrt(2 * np.sum(spectrum[np.abs(freqs - freq) < 20] ** 2)))


class Net:
    """MediaSessions around the real relay core on a fake clock. Datagrams travel at once, over UDP
    (each member at its own address) or the signalling WebSocket (``("ws", tinyid)``, the form
    server.media gives the relay); ``udp_down`` cuts members' UDP both ways; ``ports`` are the members'
    UDP ports as the relay sees them (a NAT can change one), and datagrams to any other port are lost."""

    def __init__(self, *tinyids: int, room_type: RoomType = RoomType.STANDARD) -> None:
        self.relay = Relay()
        self.now = 100.0
        self.sessions: dict[int, MediaSession] = {}
        self.heard: dict[int, list[Frame]] = {t: [] for t in tinyids}
        self.events: dict[int, list[MediaEvent]] = {t: [] for t in tinyids}
        self.sent: Counter[tuple[int, Route]] = Counter()
        self.udp_down: set[int] = set()
        self.watchers: list[Callable[[], None]] = []  # called after every tick
        self.ports = {tinyid: 40_000 + tinyid for tinyid in tinyids}
        self.strays: list[tuple[bytes, Addr]] = []  # sent to an address no member has
        for tinyid in tinyids:
            key = os.urandom(32)
            self.relay.add_member("room", tinyid, key)
            self.sessions[tinyid] = session = MediaSession(MediaTransport.AUTO)
            session.start_room(key, tinyid, room_type, self.now)

    def tick(self, talk: Mapping[int, Iterator[Frame]] | None = None) -> None:
        """One 20 ms period: every member ticks (talkers with their next frame), then the clock moves."""
        for tinyid, session in self.sessions.items():
            mic = [next(talk[tinyid])] if talk and tinyid in talk else []
            result = session.tick(self.now, mic)
            for route, datagram in result.datagrams:
                self.sent[tinyid, route] += 1
                self._send(tinyid, route, datagram)
            self.heard[tinyid] += result.speaker
            self.events[tinyid] += result.events
        self.now += TICK_S
        for watch in self.watchers:
            watch()

    def run(self, seconds: float, talk: Mapping[int, Iterator[Frame]] | None = None,
            until: Callable[[], bool] | None = None) -> float:
        """Tick for ``seconds`` of fake time, or until ``until`` holds (asserted to come in time);
        returns the fake time spent."""
        start = self.now
        while self.now - start < seconds - 1e-9:
            self.tick(talk)
            if until is not None and until():
                return self.now - start
        assert until is None, f"not reached within {seconds} s"
        return self.now - start

    def last(self, tinyid: int, seconds: float) -> np.ndarray:
        """What ``tinyid`` heard in the last ``seconds``."""
        return np.concatenate(self.heard[tinyid])[-round(seconds * RATE):]

    def _send(self, sender: int, route: Route, datagram: bytes) -> None:
        if route is Route.UDP and sender in self.udp_down:
            return
        addr = ("127.0.0.1", self.ports[sender]) if route is Route.UDP else ("ws", sender)
        self.deliver(self.relay.handle_datagram(datagram, addr, self.now))

    def deliver(self, out: list[tuple[bytes, Addr]]) -> None:
        """The relay's datagrams to whoever has their address now."""
        by_port = {port: tinyid for tinyid, port in self.ports.items()}
        for datagram, to in out:
            via = Route.WS if to[0] == "ws" else Route.UDP
            listener = to[1] if via is Route.WS else by_port.get(to[1])
            if listener is None:
                self.strays.append((datagram, to))
            elif not (via is Route.UDP and listener in self.udp_down):
                self.sessions[listener].receive(datagram, self.now, via)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


# --- route choice (pure) ---------------------------------------------------------------------------


def test_a_nat_rebinding_is_challenged_answered_and_heard_again_within_a_round_trip() -> None:
    """A's NAT gives it a new port mid-talk: its voice goes on reaching B at once (authentic), the
    relay challenges the new port, A answers at its next tick and B's voice follows it there."""
    net = Net(A, B)
    a, b = net.sessions[A], net.sessions[B]
    a.apply(AudioSettings(send=True, recv=True), {"b": B})
    b.apply(AudioSettings(send=True, recv=True), {"a": A})
    voices = {A: tone(440), B: tone(660)}
    net.run(1.0, voices, until=lambda: a.route is Route.UDP and b.route is Route.UDP)
    net.run(0.6, voices)
    assert band(net.last(A, 0.4), 660) > 500 and band(net.last(B, 0.4), 440) > 500

    net.ports[A] = 50_000  # the NAT rebinds: the old port is gone
    lost = len(net.strays)
    back = net.run(1.0, voices, until=lambda: net.relay.activity(A).addr == ("127.0.0.1", 50_000))
    assert back <= 3 * TICK_S and a.counters.challenges_answered == 1
    assert net.relay.counters.challenges == 1 and net.relay.counters.rebinds == 1
    assert len(net.strays) - lost <= 3  # B's voice lost on the way to the dead port meanwhile
    net.run(0.6, voices)
    assert band(net.last(A, 0.4), 660) > 500 and band(net.last(B, 0.4), 440) > 500
    assert a.route is Route.UDP and not a.silent


def test_a_captured_packet_sent_from_another_socket_cannot_take_the_downlink() -> None:
    """An on-path attacker sends a copy of A's fresh KEEPALIVE from its own socket before A's own:
    the relay challenges the attacker's address, which cannot answer, and A keeps hearing B."""
    net = Net(A, B)
    a, b = net.sessions[A], net.sessions[B]
    a.apply(AudioSettings(recv=True), {"b": B})
    b.apply(AudioSettings(send=True), {"a": A})
    voices = {B: tone(660)}
    net.run(1.0, voices, until=lambda: a.route is Route.UDP and b.route is Route.UDP)
    theirs = ("127.0.0.1", 6666)
    captured = [d for route, d in a.tick(net.now + KEEPALIVE_S).datagrams if route is Route.UDP]
    assert captured
    for datagram in captured:
        net.deliver(net.relay.handle_datagram(datagram, theirs, net.now))
    assert [to for _, to in net.strays] == [theirs] * len(captured)  # challenges it cannot read
    net.run(1.0, voices)
    assert net.relay.activity(A).addr == ("127.0.0.1", net.ports[A]) and net.relay.counters.rebinds == 0
    assert band(net.last(A, 0.4), 660) > 500 and not a.silent


def test_binding_auto_udp_and_ws_modes() -> None:
    auto = Binding(MediaTransport.AUTO, 0.0)
    assert [auto.poll(t) for t in (0.0, 0.1, 0.3, 0.6, 0.8)] == [Route.UDP, None, Route.UDP, Route.UDP, None]
    assert auto.poll(0.9) is Route.WS and auto.route is Route.WS and auto.poll(2.0) is None
    acked = Binding(MediaTransport.AUTO, 0.0)
    assert acked.poll(0.0) is Route.UDP
    acked.acknowledged(Route.UDP)
    assert acked.route is Route.UDP and acked.poll(5.0) is None
    udp_only = Binding(MediaTransport.UDP, 0.0)
    assert all(udp_only.poll(i * 0.31) is Route.UDP for i in range(10)) and udp_only.route is None
    ws_only = Binding(MediaTransport.WS, 0.0)
    assert ws_only.poll(0.0) is Route.WS and ws_only.route is Route.WS
    ws_only.acknowledged(Route.UDP)  # a late UDP echo does not move an established route
    assert ws_only.route is Route.WS


def test_binding_gives_up_a_silent_udp_route_and_probes_back_from_the_websocket() -> None:
    b = Binding(MediaTransport.AUTO, 0.0)
    assert b.poll(0.0) is Route.UDP
    b.acknowledged(Route.UDP)
    b.heard(0.01)
    assert b.route is Route.UDP and not b.expire(0.01 + ECHO_TIMEOUT_S - 0.01)
    lost = 0.01 + ECHO_TIMEOUT_S + 0.01
    assert b.expire(lost) and b.route is None  # silent: bind again
    assert [b.poll(lost + t) for t in (0.0, 0.3, 0.6, 0.9)] == [Route.UDP, Route.UDP, Route.UDP, Route.WS]
    ws_at = lost + 0.9
    assert b.route is Route.WS and b.expire(ws_at + 1)  # still no echo: the quality report says so
    assert b.route is Route.WS  # the WebSocket is not given up for silence
    assert b.poll(ws_at + UDP_RETRY_S - 0.1) is None and b.poll(ws_at + UDP_RETRY_S) is Route.UDP  # a probe
    b.acknowledged(Route.UDP)  # UDP answers again: back to it
    b.heard(ws_at + UDP_RETRY_S + 0.01)
    assert b.route is Route.UDP and not b.expire(ws_at + UDP_RETRY_S + 0.02)


def test_forced_modes_report_silence_but_keep_their_route() -> None:
    udp = Binding(MediaTransport.UDP, 0.0)
    assert udp.poll(0.0) is Route.UDP
    udp.acknowledged(Route.UDP)
    assert udp.expire(ECHO_TIMEOUT_S + 1) and udp.route is Route.UDP and udp.poll(ECHO_TIMEOUT_S + 1) is None
    ws = Binding(MediaTransport.WS, 0.0)
    assert ws.poll(0.0) is Route.WS
    assert ws.expire(ECHO_TIMEOUT_S + 1) and ws.route is Route.WS
    assert ws.poll(UDP_RETRY_S * 3) is None  # no UDP probes when the WebSocket is forced


def test_room_quality_weight() -> None:
    assert room_quality(None, None) == {"weight": 0, "loss": 0.0, "delay": 0}  # no data yet (GME)
    assert room_quality(0.0, 0.02) == {"weight": 50, "loss": 0.0, "delay": 20}
    assert room_quality(0.10, 0.02)["weight"] == 30  # GME's warning line
    assert room_quality(0.0, 0.5)["weight"] == 30
    assert room_quality(1.0, 3.0)["weight"] == 1  # never below 1 once there is data
    assert room_quality(-0.5, None)["loss"] == 0.0


def test_quality_report_every_two_seconds_and_at_once_on_silence() -> None:
    report = QualityReport(0.0)
    assert report.poll(1.0, silent=False, uplink_loss=0.0, rtt_s=0.02) is None
    assert report.poll(QUALITY_INTERVAL_S, silent=False, uplink_loss=0.0, rtt_s=0.02) == room_quality(0.0, 0.02)
    assert report.poll(2.5, silent=True, uplink_loss=0.0, rtt_s=None) == room_quality(1.0, None)  # at once
    assert report.poll(2.6, silent=True, uplink_loss=0.0, rtt_s=None) is None
    assert report.poll(2.7, silent=False, uplink_loss=0.0, rtt_s=0.02) == room_quality(0.0, 0.02)  # answers


def test_impairment_option_from_the_environment() -> None:
    assert impairment_from_env({}) is None
    parsed = impairment_from_env({"OPENGME_TEST_IMPAIR": "loss=0.1,jitter_ms=30,seed=1"})
    assert parsed is not None and (parsed.loss, parsed.jitter_ms, parsed.seed) == (0.1, 30.0, 1)
    with pytest.raises(ValueError):
        impairment_from_env({"OPENGME_TEST_IMPAIR": "bogus=1"})


# --- failover on a fake clock ----------------------------------------------------------------------


def test_udp_dying_after_binding_moves_media_to_the_websocket_and_back() -> None:
    """UDP dies after binding: the path goes silent (quality reads loss 1.0 at once), BINDs go
    unanswered and media moves to the WebSocket, where B still hears A; when UDP answers again a
    probe moves A back. Fourteen seconds of it on a fake clock."""
    net = Net(A, B)
    a, b = net.sessions[A], net.sessions[B]
    a.apply(AudioSettings(send=True), {"b": B})
    b.apply(AudioSettings(recv=True), {"a": A})
    voice = {A: tone(440)}
    reports: list[dict[str, float | int]] = []
    quality = QualityReport(net.now)

    def watch() -> None:
        report = quality.poll(net.now, silent=a.silent, uplink_loss=0.0, rtt_s=a.rtt)
        if report is not None:
            reports.append(report)

    net.watchers.append(watch)
    net.run(1.0, voice, until=lambda: a.route is Route.UDP and a.rtt is not None)
    net.run(0.6, voice)
    assert rms(net.last(B, 0.5)) > 1000 and net.sent[A, Route.WS] == 0

    net.udp_down.add(A)  # from now on nothing goes or comes back over A's UDP
    seen = len(reports)
    noticed = net.run(ECHO_TIMEOUT_S + 1.5, until=lambda: any(q["weight"] < 50 for q in reports[seen:]))
    assert ECHO_TIMEOUT_S - KEEPALIVE_S - TICK_S < noticed <= ECHO_TIMEOUT_S + 2 * TICK_S  # last echo < 1 s before
    low = next(q for q in reports[seen:] if q["weight"] < 50)
    assert low["loss"] == 1.0 and low["delay"] == 0 and a.rtt is None and a.silent
    moved = net.run(2.0, until=lambda: a.route is Route.WS)  # re-BINDs unanswered → WebSocket
    assert BIND_TRIES * BIND_INTERVAL_S <= moved <= BIND_TRIES * (BIND_INTERVAL_S + TICK_S) + TICK_S  # on the tick grid
    sent_ws = net.sent[A, Route.WS]
    net.run(0.8, voice)
    assert net.sent[A, Route.WS] > sent_ws + 20  # A's voice now travels on the WebSocket ...
    assert rms(net.last(B, 0.5)) > 1000  # ... and B still hears it
    assert b.route is Route.UDP  # B's own path is untouched

    net.udp_down.discard(A)  # UDP answers again: the next probe moves A back
    seen = len(reports)
    net.run(UDP_RETRY_S + 1.5, until=lambda: a.route is Route.UDP)
    net.run(QUALITY_INTERVAL_S + TICK_S, until=lambda: any(q["weight"] > 30 for q in reports[seen:]))
    sent_udp = net.sent[A, Route.UDP]
    net.run(0.6, voice)
    assert net.sent[A, Route.UDP] > sent_udp + 20 and rms(net.last(B, 0.5)) > 1000


def test_a_forced_websocket_never_touches_udp() -> None:
    session = MediaSession(MediaTransport.WS)
    session.start_room(os.urandom(32), A, RoomType.FLUENCY, 0.0)
    sent = [route for k in range(300) for route, _ in session.tick(k * TICK_S).datagrams]
    assert set(sent) == {Route.WS} and session.route is Route.WS and session.counters.binds_sent == 1


# --- settings by openid ----------------------------------------------------------------------------


def test_settings_name_members_by_openid_and_follow_the_member_list() -> None:
    net = Net(A, B, C)
    for talker in (A, C):
        net.sessions[talker].apply(AudioSettings(send=True), {})
    listener = net.sessions[B]
    voices = {A: tone(440), C: tone(1000)}
    members = {"a": A, "c": C}
    listener.apply(AudioSettings(recv=True, blacklist=frozenset({"a"})), members)
    net.run(1.0, voices)
    heard = net.last(B, 0.5)
    assert band(heard, 1000) > 1000 and band(heard, 440) < 100  # "a" is blacklisted
    listener.apply(AudioSettings(recv=True).with_member_volume("c", 0), members)
    net.run(0.6, voices)
    heard = net.last(B, 0.3)
    assert band(heard, 440) > 1000 and band(heard, 1000) < 100  # "c" turned down to 0
    assert Speaking(A, UserUpdateEvent.HAS_AUDIO) in net.events[B]
    net.events[B].clear()
    listener.apply(listener.settings, {"c": C})  # "a" left: its stream goes, and no NO_AUDIO for it
    net.run(3.0, {C: voices[C]})
    assert listener.recv_stream_level(A) == 0 and net.events[B] == []


# --- seams -----------------------------------------------------------------------------------------


def test_mic_taps_see_every_captured_frame_in_a_room_or_not() -> None:
    session = MediaSession()
    seen: list[tuple[int, int]] = []

    def tap(frame: Frame, rate: int) -> None:
        seen.append((len(frame), rate))

    session.add_mic_tap(tap)
    session.tick(0.0, [np.zeros(960, dtype=np.int16)] * 2)  # no room: the speaker's rate
    session.start_room(os.urandom(32), A, RoomType.FLUENCY, 0.02)
    assert session.route is None  # still binding: nothing is sent, the tap sees it all the same
    session.tick(0.04, [np.zeros(320, dtype=np.int16)] * 3)
    session.remove_mic_tap(tap)
    session.tick(0.06, [np.zeros(320, dtype=np.int16)])
    assert seen == [(960, 48_000)] * 2 + [(320, 16_000)] * 3


class Player:
    """A local source that plays ``frames`` then finishes."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = list(frames)
        self.asked = 0

    def __call__(self, frame_samples: int) -> Frame | None:
        self.asked += 1
        assert frame_samples == OUTPUT_SAMPLES
        return self.frames.pop(0) if self.frames else None


def test_a_local_player_plays_without_a_room_and_is_dropped_when_done() -> None:
    session = MediaSession()
    said = list(zip(range(3), tone(440), strict=False))
    player = Player([f for _, f in said])
    session.add_player(player)
    out = session.tick(0.0, (), frames=2).speaker + session.tick(0.04).speaker
    assert np.array_equal(np.concatenate(out), np.concatenate([f for _, f in said]))
    assert session.tick(0.06).speaker == [] and player.asked == 4  # finished: asked once more, then dropped
    assert session.tick(0.08).speaker == [] and player.asked == 4


def test_a_local_player_is_mixed_into_what_the_room_plays_and_not_sent() -> None:
    net = Net(A, B)
    net.sessions[A].apply(AudioSettings(send=True), {})
    net.sessions[B].apply(AudioSettings(recv=True), {})
    music = tone(1000, amplitude=4000)
    net.sessions[B].add_player(lambda n: next(music))
    net.run(1.0, {A: tone(440)})
    heard = net.last(B, 0.5)
    assert band(heard, 440) > 1000 and band(heard, 1000) > 1000
    assert band(net.last(A, 0.5), 1000) < 100  # B's local player is B's alone


def test_the_send_stage_decides_what_is_sent() -> None:
    net = Net(A, B)
    a = net.sessions[A]
    a.apply(AudioSettings(send=False), {})
    net.sessions[B].apply(AudioSettings(recv=True), {})
    changer = tone(1000)
    staged: list[int] = []

    def stage(frame: Frame, rate: int) -> Frame:
        staged.append(rate)
        return next(changer)  # a "voice changer" that replaces the voice with a tone

    net.run(0.1, until=lambda: a.route is Route.UDP)
    a.set_send_stage(stage)
    sent = net.sent[A, Route.UDP]
    net.run(0.2, {A: tone(440)})
    assert staged == [RATE] * 10  # the stage runs while send is off (its timeline goes on) ...
    assert net.sent[A, Route.UDP] <= sent + 1  # ... and nothing is sent but a KEEPALIVE
    a.apply(AudioSettings(send=True), {})
    net.run(1.0, {A: tone(440, amplitude=500)})
    heard = net.last(B, 0.5)
    assert band(heard, 1000) > 1000 and band(heard, 440) < 100
    assert a.send_level() > a.mic_level()  # the send meter reads what is sent, the mic meter the mic
    a.set_send_stage(None)
    net.run(0.6, {A: tone(440)})
    assert band(net.last(B, 0.3), 440) > 1000


def test_a_stereo_voice_stage_renders_each_speaker_before_the_mix() -> None:
    net = Net(A, B, C)
    for talker in (A, C):
        net.sessions[talker].apply(AudioSettings(send=True), {})
    listener = net.sessions[B]
    listener.apply(AudioSettings(recv=True, loopback=True), {"a": A, "c": C})
    rendered: list[set[int]] = []

    def pan(frames: dict[int, Frame]) -> dict[int, Frame]:
        """A to the left ear, C to the right: a stand-in for the 3D renderer."""
        rendered.append(set(frames))
        out = {}
        for tinyid, frame in frames.items():
            stereo = np.zeros((len(frame), 2), dtype=np.int16)
            stereo[:, 0 if tinyid == A else 1] = frame
            out[tinyid] = stereo
        return out

    assert listener.output_channels == 1
    listener.set_voice_stage(pan, channels=2)
    assert listener.output_channels == 2
    net.run(1.0, {A: tone(440), C: tone(1000), B: tone(2000, amplitude=2000)})
    frame = net.heard[B][-1]
    assert frame.shape == (OUTPUT_SAMPLES, 2) and frame.dtype == np.int16
    heard = np.concatenate(net.heard[B][-25:])
    left, right = heard[:, 0], heard[:, 1]
    assert band(left, 440) > 1000 and band(left, 1000) < 100
    assert band(right, 1000) > 1000 and band(right, 440) < 100
    assert band(left, 2000) > 300 and band(right, 2000) > 300  # B's own (mono) loopback: both ears
    assert {A, C} in rendered and all(s <= {A, C} for s in rendered)
    listener.set_voice_stage(None)
    net.run(0.1, {A: tone(440), C: tone(1000)})
    assert listener.output_channels == 1 and net.heard[B][-1].shape == (OUTPUT_SAMPLES,)


def test_volume_tracking_reports_peaks_once_per_interval() -> None:
    net = Net(A, B)
    net.sessions[A].apply(AudioSettings(send=True), {})
    net.sessions[B].apply(AudioSettings(recv=True, track_volume_s=0.5), {"a": A})
    net.run(0.6, {A: tone(440)})
    net.run(1.0)
    volumes = [e for e in net.events[B] if isinstance(e, Volumes)]
    assert len(volumes) == 3 and volumes[0].levels[A] > 30  # every 0.5 s over 1.5 s
    assert volumes[-1].levels == {A: 0}  # A stopped talking: its peak falls to 0
    net.run(2.1)
    assert [e for e in net.events[B] if isinstance(e, Speaking)] == [
        Speaking(A, UserUpdateEvent.HAS_AUDIO), Speaking(A, UserUpdateEvent.NO_AUDIO)]
