"""Game voice end to end: four SDK players and a real server on 127.0.0.1, judged by who actually
receives whose audio through the media path (each listener's per-speaker receive level, which only
moves when the relay forwards that speaker's packets to it).

Covers the hearing truth table (teammates anywhere, other teams only both in WORLD mode and within
the listener's range), mode changes, team changes, movement in and out of range, server audio routes
with their 1091 events, the FLUENCY rule, and 3D voice rendered in the downlink (stereo, the ear on
the speaker's side louder).
"""
from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from support.audio import OUT_RATE, speech_like, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for

FORWARD, RIGHT, UP = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
HEARD_WINDOW = 0.8  # s: a speaker counts as received when its level moved within this long
Matrix = dict[str, set[str]]  # listener -> the speakers it receives



def players(server: ThreadServer, clients: ClientMaker, tmp_path: Path, teams: dict[str, int],
            room_type: int = RoomType.FLUENCY) -> tuple[list[SdkClient], list[MemorySpeaker]]:
    """Players that set their team before entering (GME's order), talk (a looping speech-like
    signal) and listen (a memory speaker)."""
    voice = write_wav(tmp_path / "voice.wav", speech_like(16_000, 3.0), 16_000)
    made = []
    for open_id, team in teams.items():
        c = clients(server.url, server.app, open_id, portaudio=False)
        assert c.ctx.set_range_audio_team_id(team) == ErrorCode.AV_OK
        assert c.ctx.enter_room("arena", room_type, server.auth("arena", open_id)) == ErrorCode.AV_OK
        made.append(c)
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    speakers = []
    for c in made:
        ctrl = c.ctx.get_audio_ctrl()
        speaker = MemorySpeaker()
        speakers.append(speaker)
        assert ctrl.register_speaker(speaker) == ErrorCode.AV_OK
        assert ctrl.select_speaker(speaker.id) == ErrorCode.AV_OK
        assert ctrl.enable_speaker(True) == ErrorCode.AV_OK
        assert ctrl.use_mic_file(voice, loop=True) == ErrorCode.AV_OK
        assert ctrl.enable_mic(True) == ErrorCode.AV_OK
    return made, speakers


def place(c: SdkClient, x: float, y: float, recv_range: float) -> None:
    room = c.ctx.get_room()
    assert room.update_audio_recv_range(recv_range) == ErrorCode.AV_OK
    assert room.update_self_position((x, y, 0.0), FORWARD, RIGHT, UP) == ErrorCode.AV_OK


def settle(made: list[SdkClient], expected: Matrix, timeout: float = 6.0) -> None:
    """Pump until who receives whom equals ``expected`` over a whole window, measured from now on."""
    names = [c.open_id for c in made]
    last: dict[tuple[str, str], float] = {}
    start = time.monotonic()
    seen: Matrix = {}

    def matches() -> bool:
        nonlocal seen
        now = time.monotonic()
        for listener in made:
            ctrl = listener.ctx.get_audio_ctrl()
            for speaker in names:
                if speaker != listener.open_id and ctrl.get_recv_stream_level(speaker)[1] > 0:
                    last[(listener.open_id, speaker)] = now
        seen = {lo: {s for s in names if now - last.get((lo, s), -1e9) < HEARD_WINDOW} for lo in names}
        return now - start > 2 * HEARD_WINDOW and seen == expected

    try:
        wait_for(made, matches, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"receivers {seen} != expected {expected}") from None


@pytest.mark.slow
@pytest.mark.public_surface
def test_four_players_follow_the_truth_table_through_the_media_path(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    made, _ = players(server, clients, tmp_path, {"10001": 1, "10002": 1, "10003": 2, "10004": 3})
    a, b, c, d = made
    place(a, 0, 0, 100)
    place(b, 500, 0, 100)  # A's teammate, far away
    place(c, 50, 0, 30)  # another team: within A's range, but A is beyond C's
    place(d, 0, 200, 100)  # a third team, out of everyone's range
    # Teammates hear each other anywhere; C -> A (A's range 100 >= 50), not A -> C (C's range 30 < 50).
    settle(made, {"10001": {"10002", "10003"}, "10002": {"10001"}, "10003": set(), "10004": set()})

    assert c.ctx.get_room().set_range_audio_mode(1) == ErrorCode.AV_OK  # TEAM: C hears and is heard by teammates only
    settle(made, {"10001": {"10002"}, "10002": {"10001"}, "10003": set(), "10004": set()})

    assert c.ctx.get_room().set_range_audio_mode(0) == ErrorCode.AV_OK
    place(c, 20, 0, 30)  # moves into its own range of A: now both ways
    settle(made, {"10001": {"10002", "10003"}, "10002": {"10001"}, "10003": {"10001"}, "10004": set()})

    assert d.ctx.set_range_audio_team_id(1) == ErrorCode.AV_OK  # D joins team 1 in the room
    wait_for(made, lambda: bool(d.events.of(EventType.CHANGE_TEAM_ID)))
    assert d.events.of(EventType.CHANGE_TEAM_ID)[-1] == {"result": ErrorCode.AV_OK, "error_info": "", "team_id": 1}
    settle(made, {"10001": {"10002", "10003", "10004"}, "10002": {"10001", "10004"}, "10003": {"10001"},
                  "10004": {"10001", "10002"}})

    place(c, 300, 300, 30)  # C walks away from everyone
    settle(made, {"10001": {"10002", "10004"}, "10002": {"10001", "10004"}, "10003": set(),
                  "10004": {"10001", "10002"}})

    # Server audio routes: A stops sending to B; B stops receiving from D.
    room_a = a.ctx.get_room()
    assert room_a.set_server_audio_route(3, ["10002"], 2, []) == ErrorCode.AV_OK
    assert b.ctx.get_room().set_server_audio_route(2, [], 3, ["10004"]) == ErrorCode.AV_OK
    wait_for(made, lambda: bool(a.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT))
             and bool(b.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT)))
    assert a.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT)[-1]["result"] == ErrorCode.AV_OK
    assert room_a.get_current_send_audio_route() == (3, ["10002"])
    assert room_a.get_current_recv_audio_route() == (2, [])
    settle(made, {"10001": {"10002", "10004"}, "10002": set(), "10003": set(), "10004": {"10001", "10002"}})
    assert room_a.set_server_audio_route(3, ["10002"], 2, []) == ErrorCode.AV_OK  # the same again: 1001
    wait_for(made, lambda: len(a.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT)) == 2)
    assert a.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT)[-1]["result"] == ErrorCode.AV_ERR_REPEATED_OPERATION
    assert room_a.set_server_audio_route(5, [], 2, []) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert room_a.set_server_audio_route(4, [str(10_000 + i) for i in range(11)], 2, []) == ErrorCode.AV_ERR_INVALID_ARGUMENT

    # The local blacklist still wins on the listener's side.
    assert a.ctx.get_audio_ctrl().add_audio_black_list("10004") == ErrorCode.AV_OK
    settle(made, {"10001": {"10002"}, "10002": set(), "10003": set(), "10004": {"10001", "10002"}})


@pytest.mark.slow
@pytest.mark.public_surface
def test_range_voice_needs_a_fluency_room_and_routes_reset_on_exit(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    (a, b), _ = players(server, clients, tmp_path, {"10001": 0, "10002": 4}, RoomType.STANDARD)
    wait_for([b], lambda: bool(b.events.of(EventType.CHANGE_TEAM_ID)))  # entered a STANDARD room with a team
    assert b.events.of(EventType.CHANGE_TEAM_ID)[-1]["result"] == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert "FLUENCY" in b.events.of(EventType.CHANGE_TEAM_ID)[-1]["error_info"]
    room = a.ctx.get_room()
    assert room.update_audio_recv_range(100) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # GME: FLUENCY only
    for bad in (-1, 2**32, "1", True, 1.5):
        assert a.ctx.set_range_audio_team_id(bad) == ErrorCode.AV_ERR_INVALID_ARGUMENT, bad
    assert room.set_range_audio_mode(2) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    for bad_position in ((1, 2), (0, float("nan"), 0), "abc", None):
        assert room.update_self_position(bad_position, FORWARD, RIGHT, UP) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert room.update_self_position((0, 0, 0), FORWARD, (1, 2), UP) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert room.update_self_position((1, 2, 3), FORWARD, RIGHT, UP) == ErrorCode.AV_OK  # positions: any room
    assert a.ctx.set_range_audio_team_id(7) == ErrorCode.AV_OK
    wait_for([a], lambda: bool(a.events.of(EventType.CHANGE_TEAM_ID)))
    assert a.events.of(EventType.CHANGE_TEAM_ID)[-1]["result"] == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert room.set_server_audio_route(1, [], 1, []) == ErrorCode.AV_OK  # routes work in any room
    wait_for([a], lambda: bool(a.events.of(EventType.SERVER_AUDIO_ROUTE_EVENT)))
    assert room.get_current_send_audio_route() == (1, [])
    assert a.ctx.exit_room() == ErrorCode.AV_OK
    wait_for([a], lambda: not a.ctx.is_room_entered())
    assert room.get_current_send_audio_route() == (0, [])
    assert room.set_server_audio_route(2, [], 2, []) == ErrorCode.AV_ERR_ROOM_NOT_EXIST
    assert room.update_self_position((0, 0, 0), FORWARD, RIGHT, UP) == ErrorCode.AV_ERR_ROOM_NOT_EXIST


@pytest.mark.slow
@pytest.mark.public_surface
def test_3d_voice_puts_a_speaker_on_the_right_into_the_right_ear(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    (listener, talker), (played, _) = players(server, clients, tmp_path, {"10001": 1, "10002": 2})
    ctrl = listener.ctx.get_audio_ctrl()
    assert ctrl.enable_spatializer(True, False) == ErrorCode.AV_ERR_3DVOICE_ERR_NOT_INITED  # 7003 before init
    assert not ctrl.is_enable_spatializer()
    damaged = tmp_path / "damaged.sofa"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert ctrl.init_spatializer(str(damaged)) == ErrorCode.AV_ERR_3DVOICE_ERR_FILE_DAMAGED  # 7002
    assert ctrl.init_spatializer("") == ErrorCode.AV_OK  # the built-in KEMAR HRTF
    played.take_all()  # the mono frames before 3D; the speaker reopens in stereo
    assert ctrl.enable_spatializer(True, False) == ErrorCode.AV_OK and ctrl.is_enable_spatializer()
    assert ctrl.enable_mic(False) == ErrorCode.AV_OK
    place(listener, 0, 0, 100)
    place(talker, 0, 5, 100)  # on the listener's right, within range/10: full volume
    # Speech-like sound is mostly below 1 kHz, where the head shadows least: 7 dB measured through the
    # whole path (the 10 dB of the issue holds for broadband sound: test_spatial.py).
    wait_for([listener, talker], lambda: ears(played, 50) > 2.0, timeout=10)  # the last second

    assert ctrl.add_spatializer_blacklist("10002") == ErrorCode.AV_OK  # heard plainly: both ears alike
    wait_for([listener, talker], lambda: 0.8 < ears(played, 25) < 1.25, timeout=10)
    assert ctrl.clear_spatializer_blacklist() == ErrorCode.AV_OK
    assert ctrl.add_spatializer_blacklist("") == ErrorCode.AV_ERR_INVALID_ARGUMENT


def ears(speaker: MemorySpeaker, frames: int) -> float:
    """Energy in the right ear over the left one in the last ``frames`` played (0 before that much
    stereo was played: the frames from before 3D are mono)."""
    try:
        stereo = speaker.peek(frames)
    except ValueError:  # mono and stereo frames together
        return 0.0
    if stereo.ndim != 2 or len(stereo) < frames * OUT_RATE // 50:
        return 0.0
    left, right = (float(np.sum(stereo[:, ear].astype(np.float64) ** 2)) for ear in (0, 1))
    return right / left if left > 0 else 0.0


def game_states(server: ThreadServer) -> float:
    """``game_state`` requests the server has received (its /metrics)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith('opengme_signal_messages_total{type="game_state"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_positions_go_out_at_a_bounded_rate_and_only_on_change(server: ThreadServer, clients: ClientMaker) -> None:
    a = clients(server.url, server.app, "10001", portaudio=False)
    assert a.ctx.enter_room("arena", RoomType.FLUENCY, server.auth("arena", "10001")) == ErrorCode.AV_OK
    wait_for([a], a.ctx.is_room_entered)
    room = a.ctx.get_room()
    before = game_states(server)
    start = time.monotonic()
    frame = 0
    while time.monotonic() - start < 1.0:  # a game at 200 frames a second, moving every frame
        frame += 1
        assert room.update_self_position((frame * 0.01, 0.0, 0.0), FORWARD, RIGHT, UP) == ErrorCode.AV_OK
        a.ctx.poll()
        time.sleep(0.005)
    wait_for([a], lambda: game_states(server) > before)
    moving = game_states(server) - before
    assert 5 <= moving <= 12, moving  # at most GAME_STATE_RATE (10) a second, not one per frame
    for _ in range(60):  # standing still: nothing more goes out
        assert room.update_self_position((frame * 0.01, 0.0, 0.0), FORWARD, RIGHT, UP) == ErrorCode.AV_OK
        a.ctx.poll()
        time.sleep(0.005)
    time.sleep(0.3)
    a.ctx.poll()
    assert game_states(server) - before <= moving + 1  # the last move's turn may still have come


@pytest.mark.slow
def test_team_id_zero_follows_how_the_member_entered(server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    """GME's TeamID-0 rule: everyone hears TeamID 0; a member that entered with 0 hears only TeamID 0,
    one that entered with a team and switched to 0 also hears WORLD players within its range."""
    made, _ = players(server, clients, tmp_path, {"10001": 1, "10002": 0, "10003": 5})
    a, host, c = made
    place(a, 0, 0, 100)
    place(host, 1000, 0, 100)  # far from everyone: TeamID 0 is heard anyway
    place(c, 1010, 0, 100)
    settle(made, {"10001": {"10002"}, "10002": set(), "10003": {"10002"}})
    assert c.ctx.set_range_audio_team_id(0) == ErrorCode.AV_OK  # entered with 5, now 0: hears WORLD players in range
    settle(made, {"10001": {"10002", "10003"}, "10002": {"10003"}, "10003": {"10002"}})
    place(a, 1005, 0, 100)  # A walks up to them: C hears A now, the host (entered with 0) still does not
    settle(made, {"10001": {"10002", "10003"}, "10002": {"10003"}, "10003": {"10001", "10002"}})
