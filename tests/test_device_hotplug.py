"""Device hot-plug: the listing diff (pure), and through the SDK with memory devices added and
removed at run time: GME's 1008–1013 events, and the open mic following the default when its device
goes away (a real server room)."""
from __future__ import annotations

import pytest

from opengme.devices import MemoryMic, MemorySpeaker
from opengme.devices.hotplug import Listing, changes
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from support.sdk_harness import ClientMaker, ThreadServer, engine, wait_for

E = ErrorCode


def test_changes_name_new_lost_and_default_devices() -> None:
    before = Listing({"a": "A", "b": "B"}, "a")
    after = Listing({"b": "B", "c": "C"}, "b")
    assert changes("mic", before, after, used="a") == [
        (EventType.MIC_NEW_DEVICE, {"deviceID": "c", "deviceName": "C", "isNewDevice": True, "isUsedDevice": False,
                                    "result": 0, "error_info": ""}),
        (EventType.MIC_LOST_DEVICE, {"deviceID": "a", "deviceName": "A", "isNewDevice": False, "isUsedDevice": True,
                                     "result": 0, "error_info": ""}),
        (EventType.MIC_DEFAULT_DEVICE_CHANGED, {"deviceID": "b", "deviceName": "B", "isNewDevice": False,
                                                "isUsedDevice": False, "result": 0, "error_info": ""}),
    ]
    assert [e for e, _ in changes("speaker", after, before, used=None)] == [
        EventType.SPEAKER_NEW_DEVICE, EventType.SPEAKER_LOST_DEVICE, EventType.SPEAKER_DEFAULT_DEVICE_CHANGED]
    assert changes("mic", before, before, used=None) == []


@pytest.mark.slow
@pytest.mark.public_surface
def test_devices_coming_and_going_give_events_and_the_open_mic_follows_the_default(
        server: ThreadServer, clients: ClientMaker) -> None:
    client = clients(server.url, server.app, "10001", portaudio=False)
    ctrl = client.ctx.get_audio_ctrl()
    first, second = MemoryMic("mic-1", "Headset"), MemoryMic("mic-2", "Webcam mic")
    assert ctrl.register_mic(first) == E.AV_OK
    client.ctx.poll()  # the watch's first listing
    assert ctrl.register_mic(second) == E.AV_OK
    assert ctrl.register_speaker(MemorySpeaker("spk-1", "Speakers")) == E.AV_OK
    wait_for([client], lambda: bool(client.events.of(EventType.SPEAKER_NEW_DEVICE)))
    assert client.events.of(EventType.MIC_NEW_DEVICE) == [
        {"deviceID": "mic-2", "deviceName": "Webcam mic", "isNewDevice": True, "isUsedDevice": False,
         "result": 0, "error_info": ""}]
    assert client.events.of(EventType.SPEAKER_DEFAULT_DEVICE_CHANGED)[0]["deviceID"] == "spk-1"

    assert client.ctx.enter_room("hot", RoomType.FLUENCY, server.auth("hot", "10001")) == E.AV_OK
    wait_for([client], client.ctx.is_room_entered)
    assert ctrl.select_mic("mic-1") == E.AV_OK and ctrl.enable_mic(True) == E.AV_OK
    assert engine(client).mic is first
    assert ctrl.devices.mics.unregister("mic-1") == E.AV_OK  # unplugged while in use
    wait_for([client], lambda: bool(client.events.of(EventType.MIC_LOST_DEVICE)))
    lost = client.events.of(EventType.MIC_LOST_DEVICE)[0]
    assert (lost["deviceID"], lost["isUsedDevice"]) == ("mic-1", True)
    assert client.events.of(EventType.MIC_DEFAULT_DEVICE_CHANGED)[-1]["deviceID"] == "mic-2"
    assert engine(client).mic is second and ctrl.get_mic_state() == 1  # moved to the default, still on
