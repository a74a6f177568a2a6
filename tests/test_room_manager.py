"""Room management (GME's ITMGRoomManager) through the SDK and a real server: a manager switches
another member's mic off (a third member then hears silence) with 6000 on both sides, reads states,
forbids devices; who may manage follows the AuthBuffer's privilege bit 0x100 (the rules themselves:
core/room_manager.py, tested below on their own too)."""
from __future__ import annotations

from pathlib import Path

import pytest

from opengme.authbuffer import gen_auth_buffer
from opengme.core.room_manager import PRIVILEGE_ROOM_MANAGER, OperateType, RoomManagement
from opengme.core.rooms import RoomRegistry
from opengme.devices import MemorySpeaker
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType, RoomType
from support.audio import band, tone, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for, wait_played

E = ErrorCode
OP = EventType.ROOM_MANAGEMENT_OPERATOR
PLAYER_BITS = 0xFF  # AVSDK's classic bits, without the room-manager bit


def enter(server: ThreadServer, clients: ClientMaker, open_id: str, auth_bits: int | None = None) -> SdkClient:
    client = clients(server.url, server.app, open_id, portaudio=False)
    extra = {} if auth_bits is None else {"auth_bits": auth_bits}
    auth = gen_auth_buffer(server.app.app_id, "managed", open_id, server.app.key, **extra)
    assert client.ctx.enter_room("managed", RoomType.STANDARD, auth) == E.AV_OK
    wait_for([client], client.ctx.is_room_entered)
    return client




def last_op(client: SdkClient) -> dict[str, object]:
    return client.events.of(OP)[-1]


@pytest.mark.slow
@pytest.mark.public_surface
def test_a_manager_switches_another_members_mic_off_and_both_hear_of_it(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    manager = enter(server, clients, "10001")  # GME's default privilege map: a manager
    talker = enter(server, clients, "10002", PLAYER_BITS)
    listener = enter(server, clients, "10003", PLAYER_BITS)
    everyone = [manager, talker, listener]
    heard = MemorySpeaker()
    ctrl = listener.ctx.get_audio_ctrl()
    assert ctrl.register_speaker(heard) == E.AV_OK and ctrl.select_speaker(heard.id) == E.AV_OK
    assert ctrl.enable_speaker(True) == E.AV_OK
    audio = talker.ctx.get_audio_ctrl()
    assert audio.use_mic_file(write_wav(tmp_path / "t.wav", tone(440, 20.0))) == E.AV_OK and audio.enable_mic(True) == E.AV_OK
    wait_played(everyone, 1.0, heard)
    assert band(heard.take_all()[-24000:], 440) > 1000  # the listener hears the talker

    rm = manager.ctx.get_room_manager()
    assert rm.enable_mic(False, "10002") == E.AV_OK
    wait_for(everyone, lambda: bool(manager.events.of(OP)) and bool(talker.events.of(OP)))
    expected = {"SenderID": "10001", "ReceiverID": "10002", "OperateType": OperateType.MIC, "Result": 0,
                "OperateValue": False}
    assert last_op(manager) == expected and last_op(talker) == expected
    assert audio.get_mic_state() == 0
    heard.take_all()
    wait_played(everyone, 1.0, heard)
    assert band(heard.take_all()[-24000:], 440) < 50  # silence where the tone was

    assert rm.get_mic_state("10002") == E.AV_OK
    wait_for(everyone, lambda: last_op(manager)["OperateType"] == OperateType.GET_MIC_STATE)
    assert last_op(manager)["OperateValue"] is False and last_op(manager)["Result"] == 0
    assert rm.forbid_user_operation(True, "10002") == E.AV_OK
    wait_for(everyone, lambda: last_op(talker)["OperateType"] == OperateType.FORBID)
    assert audio.enable_mic(True) == E.AV_ERR_NO_PERMISSION  # forbidden until it leaves or it is lifted
    assert rm.enable_mic(True, "10002") == E.AV_OK  # a manager cannot enable a forbidden member either
    wait_for(everyone, lambda: last_op(manager)["OperateType"] == OperateType.MIC)
    assert last_op(manager)["Result"] == E.AV_ERR_NO_PERMISSION
    assert rm.forbid_user_operation(False, "10002") == E.AV_OK
    wait_for(everyone, lambda: last_op(talker)["OperateValue"] is False
             and last_op(talker)["OperateType"] == OperateType.FORBID)
    assert audio.enable_mic(True) == E.AV_OK


@pytest.mark.public_surface
def test_who_may_manage_and_the_refusals(server: ThreadServer, clients: ClientMaker) -> None:
    """Without privilege bit 0x100: 10003 to the sender only; 10010 for a receiver not in the room;
    1201 outside a room; 1004 for bad arguments."""
    lone = clients(server.url, server.app, "10009", portaudio=False)
    assert lone.ctx.get_room_manager().enable_mic(False, "10002") == E.AV_ERR_ROOM_NOT_EXIST
    player = enter(server, clients, "10001", PLAYER_BITS)
    other = enter(server, clients, "10002", PLAYER_BITS)
    rm = player.ctx.get_room_manager()
    assert rm.enable_mic("no", "10002") == E.AV_ERR_INVALID_ARGUMENT  # type: ignore[arg-type]
    assert rm.enable_speaker(False, "") == E.AV_ERR_INVALID_ARGUMENT
    assert rm.enable_speaker(False, "10002") == E.AV_OK
    wait_for([player, other], lambda: bool(player.events.of(OP)))
    assert last_op(player) == {"SenderID": "10001", "ReceiverID": "10002", "OperateType": OperateType.SPEAKER,
                               "Result": E.AV_ERR_SERVER_NO_PERMISSION, "OperateValue": False}
    manager = enter(server, clients, "10003", PLAYER_BITS | PRIVILEGE_ROOM_MANAGER)
    assert manager.ctx.get_room_manager().get_speaker_state("10404") == E.AV_OK
    wait_for([player, other, manager], lambda: bool(manager.events.of(OP)))
    assert last_op(manager)["Result"] == E.AV_ERR_SERVER_ENDPOINT_NOT_EXIST
    assert other.events.of(OP) == []  # nothing reached the member the refused call named


def test_the_rules_pass_back_only_results_that_were_asked_for() -> None:
    registry = RoomRegistry(10, 10)
    a = registry.enter("1400000001", "r", "a", RoomType.STANDARD, 1, 0.0).member
    b = registry.enter("1400000001", "r", "b", RoomType.STANDARD, 2, 0.0).member
    rules = RoomManagement()
    rules.entered(registry, a, 0xFFFFFFFF)
    rules.entered(registry, b, PLAYER_BITS)
    with pytest.raises(GmeError) as refused:
        rules.operate(registry, b, "a", OperateType.MIC)
    assert refused.value.code == E.AV_ERR_SERVER_NO_PERMISSION
    assert rules.answered(registry, b, "a", OperateType.MIC) is None  # nobody asked
    assert rules.operate(registry, a, "b", OperateType.MIC) is b
    assert rules.answered(registry, b, "a", OperateType.MIC) is a
    assert rules.answered(registry, b, "a", OperateType.MIC) is None  # answered once
    rules.entered(registry, a, None)  # a resume keeps the privilege
    assert rules.operate(registry, a, "b", OperateType.FORBID) is b
    rules.left(a)
    with pytest.raises(GmeError):
        rules.operate(registry, a, "b", OperateType.MIC)
