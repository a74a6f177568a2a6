"""The SDK's media path when things go wrong around it: sessions replaced in a tight loop, UDP dying
after binding, a reconnect while a member falls quiet, events racing across polls, devices that will
not open. Real engines, the real relay core on 127.0.0.1 UDP, and a real server for the SDK cases.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from opengme.core.impair import Impairment
from opengme.core.relay import Relay
from opengme.devices import Frame, MemoryMic, MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType, UserUpdateEvent
from opengme.protocol.media import MAX_DATAGRAM
from opengme.sdk.media import ECHO_TIMEOUT_S, UDP_RETRY_S, Binding, MediaEngine, MediaTransport, Route
from opengme.sdk.session import Close
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, pump, wait_for

RATE = 48_000  # STANDARD rooms capture and play at 48 kHz


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


class UdpRelay:
    """The relay core behind a UDP socket on 127.0.0.1, served by a thread (the server minus signalling)."""

    def __init__(self) -> None:
        self.relay = Relay()
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            with self.lock:
                out = self.relay.handle_datagram(data, addr, time.monotonic())
            for datagram, to in out:
                self.sock.sendto(datagram, to)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def udp_relay() -> Iterator[UdpRelay]:
    relay = UdpRelay()
    yield relay
    relay.close()


def join(server: ThreadServer, clients: ClientMaker, open_ids: list[str], room: str = "voice",
         **options: object) -> list[SdkClient]:
    made = [clients(server.url, server.app, o, portaudio=False, **options) for o in open_ids]
    for c in made:
        assert c.ctx.enter_room(room, RoomType.STANDARD, server.auth(room, c.open_id)) == ErrorCode.AV_OK
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    return made


def together(made: list[SdkClient]) -> None:
    """Wait until each of ``made`` sees all of them in its room."""
    wait_for(made, lambda: all(len(c.ctx.get_room().get_members()) == len(made) for c in made))


def talk(client: SdkClient, seconds: float) -> MemoryMic:
    """The client says a tone of ``seconds``, then nothing (the mic stays on with nothing to read)."""
    mic = MemoryMic()
    mic.push(tone(seconds))
    ctrl = client.ctx.get_audio_ctrl()
    assert ctrl.register_mic(mic) == ErrorCode.AV_OK and ctrl.select_mic(mic.id) == ErrorCode.AV_OK
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK
    return mic


def speaking(client: SdkClient, open_id: str) -> list[UserUpdateEvent]:
    """HAS_AUDIO / NO_AUDIO about ``open_id``, in the order the delegate got them."""
    kinds = (UserUpdateEvent.HAS_AUDIO, UserUpdateEvent.NO_AUDIO)
    return [d["event_id"] for d in client.events.of(EventType.USER_UPDATE)
            if d["event_id"] in kinds and open_id in d["user_list"]]


def engine(client: SdkClient) -> MediaEngine:
    assert client.ctx._engine is not None
    return client.ctx._engine


# --- 1: the audio thread outlives sockets closed under it ------------------------------------------


def speak_through(media: MediaEngine, udp_relay: UdpRelay, tinyid: int, mic: MemoryMic) -> None:
    """A session the relay knows: the engine binds over UDP and its voice reaches the relay."""
    key = os.urandom(32)
    with udp_relay.lock:
        udp_relay.relay.add_member("r", tinyid, key)
    media.start_room(key, tinyid, RoomType.STANDARD, "127.0.0.1", udp_relay.port, time.monotonic())
    mic.push(tone(2.0))
    assert media.use_mic(mic) == ErrorCode.AV_OK
    media.set_send(True)
    deadline = time.monotonic() + 3.0
    while True:
        with udp_relay.lock:
            if udp_relay.relay.activity(tinyid).last_voice is not None:
                break
        assert time.monotonic() < deadline, "no voice reached the relay"
        time.sleep(0.02)
    assert media.route is Route.UDP


def test_the_audio_thread_survives_sessions_replaced_in_a_tight_loop(udp_relay: UdpRelay) -> None:
    """start_room/stop_room close the session's socket while the audio thread watches it. Before
    the fix the thread registered a socket closed in between (fd -1 or EBADF) and died, here within
    ~50-1,100 rounds: ``sleep(0)`` hands the GIL over so the thread runs between the two calls."""
    media = MediaEngine("opengme-sdk-media-test", object(), lambda datagram: None)
    try:
        deadline = time.monotonic() + 2.0
        rounds = 0
        while rounds < 5000 and time.monotonic() < deadline:
            media.start_room(os.urandom(32), 7, RoomType.FLUENCY, "127.0.0.1", udp_relay.port, time.monotonic())
            time.sleep(0)
            media.stop_room()
            rounds += 1
            assert media.alive and media.counters.tick_errors == 0, f"after {rounds} rounds"
        speak_through(media, udp_relay, 7, MemoryMic())  # and it still carries voice
    finally:
        media.close()
    assert not media.alive


class FaultyMic(MemoryMic):
    """A device driver with a bug: its first reads raise something no one expects."""

    def __init__(self, faults: int) -> None:
        super().__init__()
        self.faults = faults

    def read_frame(self) -> Frame | None:
        if self.faults:
            self.faults -= 1
            raise RuntimeError("driver bug")
        return super().read_frame()


def test_a_failing_pass_is_logged_once_and_the_thread_carries_on(
        udp_relay: UdpRelay, caplog: pytest.LogCaptureFixture) -> None:
    media = MediaEngine("opengme-sdk-media-test", object(), lambda datagram: None)
    try:
        speak_through(media, udp_relay, 9, FaultyMic(faults=10))
        assert media.alive and media.counters.tick_errors == 10
        assert [r.getMessage() for r in caplog.records if r.name == "opengme.sdk.media"] == ["media engine pass failed"]
    finally:
        media.close()


# --- 2: UDP that dies after binding ----------------------------------------------------------------


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


@pytest.mark.slow
def test_udp_dying_after_binding_lowers_the_quality_and_moves_media_to_the_websocket(
        server: ThreadServer, clients: ClientMaker) -> None:
    impairment = Impairment()  # drops nothing until the test says so
    a = join(server, clients, ["10001"], impairment=impairment)[0]
    b = join(server, clients, ["10002"])[0]
    clients_ab = [a, b]
    together(clients_ab)
    heard = MemorySpeaker()
    ctrl_b = b.ctx.get_audio_ctrl()
    assert ctrl_b.register_speaker(heard) == ErrorCode.AV_OK and ctrl_b.select_speaker(heard.id) == ErrorCode.AV_OK
    assert ctrl_b.enable_speaker(True) == ErrorCode.AV_OK
    talk(a, 20.0)
    wait_for(clients_ab, lambda: engine(a).route is Route.UDP and engine(a).rtt is not None)
    pump(clients_ab, 0.6)
    assert rms(heard.take_all()[-RATE // 2:]) > 1000

    def quality_since(count: int) -> list[dict[str, float]]:
        return a.events.of(EventType.CHANGE_ROOM_QUALITY)[count:]

    seen = len(a.events.of(EventType.CHANGE_ROOM_QUALITY))
    died = time.monotonic()
    impairment.loss = 1.0  # from now on nothing comes back to A: no echo, no voice
    wait_for(clients_ab, lambda: any(q["weight"] < 50 for q in quality_since(seen)), timeout=ECHO_TIMEOUT_S + 1.5)
    noticed = time.monotonic() - died
    low = next(q for q in quality_since(seen) if q["weight"] < 50)
    assert low["loss"] == 1.0 and low["delay"] == 0 and engine(a).rtt is None
    wait_for(clients_ab, lambda: engine(a).route is Route.WS, timeout=2.0)  # re-BIND unanswered → WebSocket
    sent_ws = engine(a).counters.sent_ws
    heard.take_all()
    pump(clients_ab, 0.8)
    assert engine(a).counters.sent_ws > sent_ws + 20  # A's voice now travels on the WebSocket ...
    assert rms(heard.take_all()[-RATE // 2:]) > 1000  # ... and B still hears it
    seen = len(a.events.of(EventType.CHANGE_ROOM_QUALITY))
    impairment.loss = 0.0  # UDP answers again: the next probe moves A back
    wait_for(clients_ab, lambda: engine(a).route is Route.UDP, timeout=UDP_RETRY_S + 1.5)
    wait_for(clients_ab, lambda: any(q["weight"] > 30 for q in quality_since(seen)), timeout=2.0)
    assert noticed < ECHO_TIMEOUT_S + 1.0, noticed


# --- 3: speaking state across a reconnect and a switch ---------------------------------------------


def test_a_reconnect_ends_the_speaking_of_a_member_who_went_quiet_meanwhile(
        server: ThreadServer, clients: ClientMaker) -> None:
    a = join(server, clients, ["10001"], heartbeat_interval=0.2)[0]  # a dead socket is noticed in 0.6 s
    b = join(server, clients, ["10002"])[0]
    together([a, b])
    assert a.ctx.get_audio_ctrl().enable_audio_recv(True) == ErrorCode.AV_OK
    mic = talk(b, 0.5)
    wait_for([a, b], lambda: speaking(a, "10002") == [UserUpdateEvent.HAS_AUDIO])
    wait_for([a, b], lambda: mic.buffered_samples == 0)  # B has said all it had: quiet from here
    quiet = time.monotonic()
    session = a.ctx._session
    assert session is not None and a.ctx._transport is not None
    a.ctx._transport.submit([Close(session._conn)])  # A's signalling socket closes under it
    wait_for([a, b], lambda: bool(a.events.of(EventType.RECONNECT_SUCCESS)), timeout=5.0)
    # resumed before B's 2 s of quiet ran out: only the old media session had B speaking
    assert time.monotonic() - quiet < 1.9
    wait_for([a, b], lambda: speaking(a, "10002") == [UserUpdateEvent.HAS_AUDIO, UserUpdateEvent.NO_AUDIO],
             timeout=1.0)


def test_after_a_switch_the_old_rooms_speakers_get_exit_only(server: ThreadServer, clients: ClientMaker) -> None:
    a, b = join(server, clients, ["10001", "10002"], room="r1")
    together([a, b])
    assert a.ctx.get_audio_ctrl().enable_audio_recv(True) == ErrorCode.AV_OK
    talk(b, 0.3)
    wait_for([a, b], lambda: speaking(a, "10002") == [UserUpdateEvent.HAS_AUDIO])
    assert a.ctx.switch_room("r2", server.auth("r2", "10001")) == ErrorCode.AV_OK
    wait_for([a, b], lambda: bool(a.events.of(EventType.SWITCH_ROOM)))
    pump([a, b], 0.3)
    updates = [(d["event_id"], d["user_list"]) for d in a.events.of(EventType.USER_UPDATE)]
    exit_at = updates.index((UserUpdateEvent.EXIT, ["10002"]))
    assert all("10002" not in users for _, users in updates[exit_at + 1:])  # no NO_AUDIO after the EXIT


# --- 4: one event order across calls and polls -----------------------------------------------------


def test_audio_events_gathered_in_a_call_come_before_the_next_polls_room_events(
        server: ThreadServer, clients: ClientMaker) -> None:
    a, b = join(server, clients, ["10001", "10002"])
    ctrl_a = a.ctx.get_audio_ctrl()
    together([a, b])
    assert ctrl_a.enable_audio_recv(True) == ErrorCode.AV_OK
    talk(b, 1.0)
    pump([b], 0.5)  # A does not poll: its engine has HAS_AUDIO 10002 waiting
    assert ctrl_a.set_speaker_volume_by_openid("10002", 100) == ErrorCode.AV_OK  # a call gathers it
    assert b.ctx.exit_room() == ErrorCode.AV_OK
    wait_for([b], lambda: not b.ctx.is_room_entered())
    time.sleep(0.3)  # the server's `members` push (B left) reaches A's network thread
    wait_for([a], lambda: "10002" in a.events.users(UserUpdateEvent.EXIT))
    updates = [(d["event_id"], d["user_list"]) for d in a.events.of(EventType.USER_UPDATE)]
    assert updates.index((UserUpdateEvent.HAS_AUDIO, ["10002"])) < updates.index((UserUpdateEvent.EXIT, ["10002"]))


# --- 6: selecting a device that will not open ------------------------------------------------------


def test_a_device_that_will_not_open_on_select_turns_its_switch_off(
        server: ThreadServer, clients: ClientMaker) -> None:
    a, b = join(server, clients, ["10001", "10002"])
    ctrl_a, ctrl_b = a.ctx.get_audio_ctrl(), b.ctx.get_audio_ctrl()
    mine, taken = MemoryMic("memory:mine"), MemoryMic("memory:taken")
    ear, busy = MemorySpeaker("memory:ear"), MemorySpeaker("memory:busy")
    for ctrl in (ctrl_a, ctrl_b):
        assert ctrl.register_mic(taken) == ErrorCode.AV_OK and ctrl.register_speaker(busy) == ErrorCode.AV_OK
    assert ctrl_b.select_mic(taken.id) == ErrorCode.AV_OK and ctrl_b.enable_audio_capture_device(True) == ErrorCode.AV_OK
    assert ctrl_b.select_speaker(busy.id) == ErrorCode.AV_OK and ctrl_b.enable_audio_play_device(True) == ErrorCode.AV_OK
    assert ctrl_a.register_mic(mine) == ErrorCode.AV_OK and ctrl_a.select_mic(mine.id) == ErrorCode.AV_OK
    assert ctrl_a.register_speaker(ear) == ErrorCode.AV_OK and ctrl_a.select_speaker(ear.id) == ErrorCode.AV_OK
    assert ctrl_a.enable_audio_capture_device(True) == ErrorCode.AV_OK
    assert ctrl_a.enable_audio_play_device(True) == ErrorCode.AV_OK
    assert ctrl_a.register_mic(MemorySpeaker("memory:odd")) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]

    assert ctrl_a.select_mic(taken.id) == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED  # 1008: B holds it
    assert not ctrl_a.is_audio_capture_device_enabled() and not mine.is_open and engine(a).mic is None
    assert ctrl_a.is_audio_play_device_enabled()  # the other kind is untouched
    assert ctrl_a.select_speaker(busy.id) == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
    assert not ctrl_a.is_audio_play_device_enabled() and not ear.is_open and engine(a).speaker is None
    assert ctrl_a.select_mic(mine.id) == ErrorCode.AV_OK and not mine.is_open  # selecting alone opens nothing
