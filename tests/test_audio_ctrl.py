"""The audio control API's rules (GME ITMGAudioCtrl): codes, ranges, defaults, devices, room scope.

Against a real server on 127.0.0.1 with memory devices (no sound card needed).
"""
from __future__ import annotations

import logging
import sys
import threading

import numpy as np
import pytest

from opengme.devices import DEVICEID_DEFAULT, MemoryMic, MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import AudioRole, RoomType
from opengme.sdk import Context
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for

APP = "1400000001"


def client_in_room(server: ThreadServer, clients: ClientMaker, open_id: str = "10001",
                   room: str = "ctrl") -> SdkClient:
    c = clients(server.url, server.app, open_id, portaudio=False)
    assert c.ctx.enter_room(room, RoomType.FLUENCY, server.auth(room, open_id)) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    return c


def devices(c: SdkClient) -> tuple[MemoryMic, MemorySpeaker]:
    ctrl = c.ctx.get_audio_ctrl()
    mic, speaker = MemoryMic(), MemorySpeaker()
    assert ctrl.register_mic(mic) == ErrorCode.AV_OK and ctrl.select_mic(mic.id) == ErrorCode.AV_OK
    assert ctrl.register_speaker(speaker) == ErrorCode.AV_OK and ctrl.select_speaker(speaker.id) == ErrorCode.AV_OK
    return mic, speaker


def exit_and_wait(c: SdkClient) -> None:
    assert c.ctx.exit_room() == ErrorCode.AV_OK
    wait_for([c], lambda: not c.ctx.is_room_entered())


def test_before_init_and_outside_a_room() -> None:
    ctx = Context("http://127.0.0.1:9", portaudio=False)
    ctrl = ctx.get_audio_ctrl()
    assert ctrl is ctx.get_audio_ctrl()  # always the same object, as GME
    assert ctrl.enable_mic(True) == ErrorCode.AV_ERR_CONTEXT_NOT_EXIST  # 1101
    assert ctrl.register_mic(MemoryMic("memory:early")) == ErrorCode.AV_OK  # devices need no init
    assert [d.device_id for d in ctrl.get_mic_list()] == [DEVICEID_DEFAULT, "memory:early"]
    assert ctx.init(APP, "10001") == ErrorCode.AV_OK
    try:
        for call in (lambda: ctrl.enable_mic(True), lambda: ctrl.enable_speaker(True),
                     lambda: ctrl.enable_audio_capture_device(True), lambda: ctrl.enable_audio_send(True),
                     lambda: ctrl.enable_audio_play_device(True), lambda: ctrl.enable_audio_recv(True),
                     lambda: ctrl.set_mic_volume(50), lambda: ctrl.set_speaker_volume(50),
                     lambda: ctrl.add_audio_black_list("10002"), lambda: ctrl.enable_loopback(True),
                     lambda: ctrl.track_volume(0.5), lambda: ctrl.set_speaker_volume_by_openid("10002", 50)):
            assert call() == ErrorCode.AV_ERR_ROOM_NOT_EXIST  # 1201
        assert ctrl.get_recv_stream_level("10002") == (ErrorCode.AV_ERR_ROOM_NOT_EXIST, 0)
        assert (ctrl.get_mic_state(), ctrl.get_speaker_state(), ctrl.get_mic_level(), ctrl.get_speaker_level()) == (0,) * 4
        assert ctrl.get_mic_volume() == 101 and ctrl.get_speaker_volume() == 101  # GME: 101 until set
        assert ctrl.set_recv_mix_stream_count(10) == ErrorCode.AV_OK  # a setting, no room needed
        assert ctrl.set_recv_mix_stream_count(0) == ctrl.set_recv_mix_stream_count(21) == ErrorCode.AV_ERR_INVALID_ARGUMENT
        assert ctrl.get_recv_mix_stream_count() == 10
    finally:
        assert ctx.uninit() == ErrorCode.AV_OK


def test_switches_after_entry_and_exit(server: ThreadServer, clients: ClientMaker) -> None:
    c = client_in_room(server, clients)
    ctrl = c.ctx.get_audio_ctrl()
    mic, speaker = devices(c)
    assert (ctrl.get_mic_state(), ctrl.get_speaker_state()) == (0, 0)  # off after entry (GME)
    assert ctrl.enable_audio_capture_device(True) == ErrorCode.AV_OK
    assert mic.is_open and ctrl.is_audio_capture_device_enabled() and not ctrl.is_audio_send_enabled()
    assert ctrl.get_mic_state() == 0  # capturing but not sending
    assert ctrl.enable_audio_send(True) == ErrorCode.AV_OK and ctrl.get_mic_state() == 1
    assert ctrl.enable_mic(False) == ErrorCode.AV_OK and not mic.is_open and ctrl.get_mic_state() == 0
    assert ctrl.enable_speaker(True) == ErrorCode.AV_OK and speaker.is_open and ctrl.get_speaker_state() == 1
    assert ctrl.enable_audio_recv(False) == ErrorCode.AV_OK and ctrl.get_speaker_state() == 0
    assert ctrl.is_audio_play_device_enabled() and not ctrl.is_audio_recv_enabled()
    for bad in (1, "yes", None):
        assert ctrl.enable_mic(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
        assert ctrl.enable_audio_play_device(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK
    assert c.ctx.pause() == ErrorCode.AV_OK and not mic.is_open and not speaker.is_open  # devices closed
    assert ctrl.get_mic_state() == 1  # the switches stay
    assert c.ctx.resume() == ErrorCode.AV_OK and mic.is_open and speaker.is_open
    exit_and_wait(c)
    assert not mic.is_open and not speaker.is_open  # capture devices close on exit (GME)
    assert (ctrl.get_mic_state(), ctrl.get_speaker_state()) == (0, 0)
    assert c.ctx.enter_room("ctrl", RoomType.FLUENCY, server.auth("ctrl", "10001")) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    assert ctrl.get_mic_state() == 0 and not mic.is_open  # off again after the next entry


@pytest.mark.public_surface
def test_volumes_levels_and_member_lookups(server: ThreadServer, clients: ClientMaker) -> None:
    a = client_in_room(server, clients, "10001")
    client_in_room(server, clients, "10002")
    ctrl = a.ctx.get_audio_ctrl()
    wait_for([a], lambda: "10002" in a.ctx.get_room().get_members())
    assert ctrl.get_mic_volume() == 101 and ctrl.get_speaker_volume() == 101
    for good in (0, 100, 200):
        assert ctrl.set_mic_volume(good) == ErrorCode.AV_OK and ctrl.get_mic_volume() == good
        assert ctrl.set_speaker_volume(good) == ErrorCode.AV_OK and ctrl.get_speaker_volume() == good
    for bad in (-1, 201, 50.0, True, "50"):
        assert ctrl.set_mic_volume(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
        assert ctrl.set_speaker_volume(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
        assert ctrl.set_speaker_volume_by_openid("10002", bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert ctrl.get_speaker_volume_by_openid("10002") == (ErrorCode.AV_OK, 100)
    assert ctrl.set_speaker_volume_by_openid("10002", 150) == ErrorCode.AV_OK
    assert ctrl.get_speaker_volume_by_openid("10002") == (ErrorCode.AV_OK, 150)
    assert ctrl.get_speaker_volume_by_openid("") == (ErrorCode.AV_ERR_INVALID_ARGUMENT, 0)
    assert ctrl.get_recv_stream_level("10002") == (ErrorCode.AV_OK, 0)  # a member, silent so far
    assert ctrl.get_recv_stream_level("10999") == (ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST, 0)  # 1401
    assert ctrl.get_recv_stream_level("10001") == (ErrorCode.AV_ERR_ENDPOINT_NOT_EXIST, 0)  # yourself
    assert ctrl.get_recv_stream_level(42) == (ErrorCode.AV_ERR_INVALID_ARGUMENT, 0)  # type: ignore[arg-type]
    assert ctrl.track_volume(0) == ctrl.track_volume(61) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctrl.track_volume(0.5) == ErrorCode.AV_OK and ctrl.stop_track_volume() == ErrorCode.AV_OK
    exit_and_wait(a)
    assert ctrl.get_mic_volume() == 200  # the user's setting outlives the room
    assert ctrl.get_speaker_volume_by_openid("10002") == (ErrorCode.AV_ERR_ROOM_NOT_EXIST, 0)


@pytest.mark.public_surface
def test_audience_role_and_server_mute(server: ThreadServer, clients: ClientMaker) -> None:
    c = clients(server.url, server.app, "10001", portaudio=False)
    assert c.ctx.set_audio_role(AudioRole.AUDIENCE) == ErrorCode.AV_OK  # before entry, as GME
    assert c.ctx.set_audio_role(7) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert c.ctx.enter_room("ctrl", RoomType.FLUENCY, server.auth("ctrl", "10001")) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    ctrl = c.ctx.get_audio_ctrl()
    mic, _ = devices(c)
    assert ctrl.enable_mic(True) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # 1004 for an AUDIENCE member
    assert ctrl.enable_audio_send(True) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctrl.enable_audio_capture_device(True) == ErrorCode.AV_OK and mic.is_open  # meters may run
    assert c.ctx.set_audio_role(AudioRole.ANCHOR) == ErrorCode.AV_OK
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK and ctrl.get_mic_state() == 1
    assert c.ctx.set_audio_role(AudioRole.AUDIENCE) == ErrorCode.AV_OK
    assert ctrl.get_mic_state() == 0 and not ctrl.is_audio_send_enabled()  # an audience stops sending
    assert c.ctx.set_audio_role(AudioRole.ANCHOR) == ErrorCode.AV_OK
    server.admin("/v1/admin/rooms/ctrl/mute", {"open_ids": ["10001"], "muted": True})
    wait_for([c], lambda: c.ctx.get_room().is_server_muted())
    assert ctrl.enable_mic(True) == ErrorCode.AV_ERR_NO_PERMISSION  # 7009
    assert ctrl.enable_mic(False) == ErrorCode.AV_OK  # turning off is always allowed
    server.admin("/v1/admin/rooms/ctrl/mute", {"open_ids": ["10001"], "muted": False})
    wait_for([c], lambda: not c.ctx.get_room().is_server_muted())
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK
    assert c.ctx.set_audio_role(AudioRole.AUDIENCE) == ErrorCode.AV_OK
    exit_and_wait(c)
    assert c.ctx.get_audio_role() is AudioRole.ANCHOR  # reset on exit


@pytest.mark.public_surface
def test_device_listing_selection_and_occupancy(server: ThreadServer, clients: ClientMaker) -> None:
    a = client_in_room(server, clients, "10001")
    b = client_in_room(server, clients, "10002")
    ctrl_a, ctrl_b = a.ctx.get_audio_ctrl(), b.ctx.get_audio_ctrl()
    assert ctrl_a.get_mic_list() == [] and ctrl_a.enable_mic(True) == ErrorCode.AV_ERR_DEVICE_NOT_EXIST  # 1301
    shared = MemoryMic("memory:shared", "Shared mic")
    other = MemoryMic("memory:other", "Other mic")
    for ctrl in (ctrl_a, ctrl_b):
        assert ctrl.register_mic(shared) == ErrorCode.AV_OK
    assert ctrl_a.register_mic(other) == ErrorCode.AV_OK
    assert ctrl_a.register_mic(other) == ErrorCode.AV_ERR_HAS_IN_THE_STATE  # 1003: already listed
    assert ctrl_a.register_mic(MemoryMic("memory:other")) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # 1004: id taken
    assert [(d.device_id, d.name) for d in ctrl_a.get_mic_list()] == [
        ("0", "Default: Shared mic"), ("memory:shared", "Shared mic"), ("memory:other", "Other mic")]
    assert ctrl_a.get_mic_list_count() == 3
    assert ctrl_a.select_mic("memory:nope") == ErrorCode.AV_ERR_DEVICE_NOT_EXIST  # 1301
    assert ctrl_a.enable_audio_capture_device(True) == ErrorCode.AV_OK and shared.is_open  # "0" = first
    assert ctrl_b.enable_audio_capture_device(True) == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED  # 1008
    assert not ctrl_b.is_audio_capture_device_enabled()
    assert ctrl_a.select_mic("memory:other") == ErrorCode.AV_OK  # the open mic moves over
    assert other.is_open and not shared.is_open
    assert ctrl_b.enable_audio_capture_device(True) == ErrorCode.AV_OK and shared.is_open
    assert ctrl_a.select_speaker("memory:none") == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    assert ctrl_a.get_speaker_list() == [] and ctrl_a.enable_speaker(True) == ErrorCode.AV_ERR_DEVICE_NOT_EXIST


@pytest.mark.public_surface
def test_device_test_loops_mic_to_speaker(server: ThreadServer, clients: ClientMaker) -> None:
    c = clients(server.url, server.app, "10001", portaudio=False)
    ctrl = c.ctx.get_audio_ctrl()
    mic, speaker = devices(c)
    assert ctrl.stop_device_test() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST  # 1601
    said = (np.arange(48000) % 200 * 100 - 10000).astype(np.int16)
    mic.push(said)
    assert ctrl.start_device_test() == ErrorCode.AV_OK and mic.is_open and speaker.is_open
    assert ctrl.start_device_test() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED  # 1602
    assert c.ctx.uninit() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_STOPPED  # GME: StopContext during a test
    wait_for([c], lambda: speaker.frames_written >= 50, timeout=3)
    assert np.array_equal(speaker.take_all()[:48000], said)  # a pure loop, sample for sample
    assert ctrl.stop_device_test() == ErrorCode.AV_OK and not mic.is_open and not speaker.is_open
    assert ctrl.stop_device_test() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST
    assert c.ctx.enter_room("ctrl", RoomType.FLUENCY, server.auth("ctrl", "10001")) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    # 1202 AV_ERR_ROOM_NOT_EXITED: the device test is allowed only outside a room (GME).
    assert ctrl.start_device_test() == ErrorCode.AV_ERR_ROOM_NOT_EXITED
    assert not mic.is_open and not speaker.is_open and ctrl.stop_device_test() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST



@pytest.mark.public_surface
def test_portaudio_missing_is_7014_with_the_library_error(server: ThreadServer, clients: ClientMaker,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The headless case: no sounddevice/libportaudio, so no device at all. GME's 7014 (library
    failed to load) says what to fix, where 1301 (no such device) would not."""
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # what `import sounddevice` meets without it
    c = clients(server.url, server.app, "10001")  # portaudio=True, the default
    ctrl = c.ctx.get_audio_ctrl()
    caplog.set_level(logging.WARNING, logger="opengme.sdk")
    assert ctrl.get_mic_list() == [] and ctrl.get_speaker_list() == []
    assert ctrl.select_mic(DEVICEID_DEFAULT) == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert ctrl.select_speaker(DEVICEID_DEFAULT) == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert ctrl.start_device_test() == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert ctrl.stop_device_test() == ErrorCode.AV_ERR_DEVICE_TEST_NOT_EXIST  # the failed start left nothing
    assert c.ctx.enter_room("ctrl", RoomType.FLUENCY, server.auth("ctrl", "10001")) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    assert ctrl.enable_mic(True) == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert ctrl.enable_speaker(True) == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert not ctrl.is_audio_capture_device_enabled() and not ctrl.is_audio_play_device_enabled()
    logged = [r.getMessage() for r in caplog.records if "AV_ERR_LOAD_LIB_FAILED" in r.getMessage()]
    assert len(logged) == 5 and all("libportaudio2" in m and "sounddevice" in m for m in logged), logged
    mic, _ = devices(c)  # a registered device is listed again: an unknown id is 1301 once devices exist
    assert ctrl.select_mic("memory:none") == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK and mic.is_open

@pytest.mark.public_surface
def test_blacklist_rules_and_cleared_on_exit(server: ThreadServer, clients: ClientMaker) -> None:
    c = client_in_room(server, clients)
    ctrl = c.ctx.get_audio_ctrl()
    assert ctrl.add_audio_black_list("10002") == ErrorCode.AV_OK
    assert ctrl.add_audio_black_list("10003") == ErrorCode.AV_OK  # may enter later
    assert ctrl.add_audio_black_list("10002") == ErrorCode.AV_ERR_HAS_IN_THE_STATE  # 1003
    assert ctrl.remove_audio_black_list("10003") == ErrorCode.AV_OK
    assert ctrl.remove_audio_black_list("10003") == ErrorCode.AV_ERR_HAS_IN_THE_STATE
    assert ctrl.add_audio_black_list("") == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert ctrl.get_audio_black_list() == ["10002"]
    exit_and_wait(c)
    assert ctrl.get_audio_black_list() == []
    assert c.ctx.enter_room("ctrl", RoomType.FLUENCY, server.auth("ctrl", "10001")) == ErrorCode.AV_OK
    wait_for([c], lambda: c.ctx.is_room_entered())
    assert ctrl.get_audio_black_list() == []  # cleared on exit (GME)
    assert ctrl.remove_audio_black_list("10002") == ErrorCode.AV_ERR_HAS_IN_THE_STATE


def test_other_threads_get_1007(server: ThreadServer, clients: ClientMaker) -> None:
    c = client_in_room(server, clients)
    ctrl = c.ctx.get_audio_ctrl()
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.extend([
        ctrl.enable_mic(False), ctrl.set_mic_volume(10), ctrl.select_mic("0"), ctrl.start_device_test(),
        ctrl.get_recv_stream_level("10002"), ctrl.get_mic_state(), ctrl.get_mic_list()]))
    worker.start()
    worker.join()
    thread_error = ErrorCode.AV_ERR_NOT_IN_MAIN_THREAD
    assert answers == [thread_error] * 4 + [(thread_error, 0), 0, []]
    assert ctrl.get_mic_volume() == 101  # nothing changed


@pytest.mark.public_surface
def test_aec_agc_ns_switches_check_their_argument_and_reach_the_send_path(server: ThreadServer,
                                                                          clients: ClientMaker) -> None:
    c = client_in_room(server, clients)
    ctrl = c.ctx.get_audio_ctrl()
    for switch in (ctrl.enable_aec, ctrl.enable_agc, ctrl.enable_ns):
        for bad in (1, "on", None):
            assert switch(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert ctrl.enable_ns(False) == ctrl.enable_agc(True) == ctrl.enable_aec(False) == ErrorCode.AV_OK
    uplink = c.ctx._core._engine._session._room.uplink  # type: ignore[attr-defined]
    wait_for([c], lambda: uplink.processing.requested.agc)
    assert not uplink.noise_suppression and not uplink.processing.requested.aec  # FLUENCY's ANS turned off
