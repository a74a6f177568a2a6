"""The SDK's media path when things go wrong around it: sessions replaced in a tight loop, a failing
pass of the audio thread, a reconnect while a member falls quiet, events racing across polls, devices
that will not open. Real engines, the real relay core on 127.0.0.1 UDP, and a real server for the SDK
cases. (UDP dying after binding is the media session's business: test_media_session.py, fake clock.)
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from opengme.core.relay import Relay
from opengme.devices import Frame, MemoryMic, MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType, UserUpdateEvent
from opengme.protocol.media import MAX_DATAGRAM
from opengme.sdk.audio_settings import AudioSettings
from opengme.sdk.media import MediaEngine
from opengme.sdk.media_session import Route
from opengme.sdk.session import Close
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, engine, wait_for

RATE = 48_000  # STANDARD rooms capture and play at 48 kHz


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


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


# --- 1: the audio thread outlives sockets closed under it ------------------------------------------


def speak_through(media: MediaEngine, udp_relay: UdpRelay, tinyid: int, mic: MemoryMic) -> None:
    """A session the relay knows: the engine binds over UDP and its voice reaches the relay."""
    key = os.urandom(32)
    with udp_relay.lock:
        udp_relay.relay.add_member("r", tinyid, key)
    media.start_room(key, tinyid, RoomType.STANDARD, "127.0.0.1", udp_relay.port, time.monotonic())
    mic.push(tone(2.0))
    assert media.use_mic(mic) == ErrorCode.AV_OK
    media.apply(AudioSettings(send=True), {})

    def voice_arrived() -> bool:
        with udp_relay.lock:
            return udp_relay.relay.activity(tinyid).last_voice is not None

    wait_for([], voice_arrived, timeout=3.0)
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
    session, transport = a.ctx._core.session, a.ctx._core.transport
    assert session is not None and transport is not None
    transport.submit([Close(session._conn)])  # A's signalling socket closes under it
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
    wait_for([a, b], lambda: bool(a.events.of(EventType.SWITCH_ROOM)) and "10002" in a.events.users(UserUpdateEvent.EXIT))
    # the old media session's last events are named in the same poll as the switch: any NO_AUDIO
    # for 10002 would be here already
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
    wait_for([b], lambda: engine(a).queued_events > 0)  # A does not poll: its engine has HAS_AUDIO 10002 waiting
    assert ctrl_a.set_speaker_volume_by_openid("10002", 100) == ErrorCode.AV_OK  # a call gathers it
    assert a.ctx._core.transport is not None
    notices = a.ctx._core.transport.notices
    waiting = notices.qsize()
    assert b.ctx.exit_room() == ErrorCode.AV_OK
    wait_for([b], lambda: not b.ctx.is_room_entered() and notices.qsize() > waiting)  # B's EXIT reached A
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
