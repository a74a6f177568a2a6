"""Custom data on the voice stream (GME's SendCustomData): the payload format (fuzzed), the sender's
pacing, the relay's forwarding and limits, a receive path that predates it, and end to end through
the SDK and a real server: the right number of CUSTOMDATA_UPDATE events, only with the speaker on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.core import custom_data as cd
from opengme.core.downlink import Downlink
from opengme.core.relay import Relay
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.protocol.media import MediaCrypto, MediaHeader, PacketType
from support.audio import tone, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, wait_for, wait_played
from test_relay_core import Client, join

E = ErrorCode


# --- format and pacing -----------------------------------------------------------------------------


@given(st.binary(max_size=1300))
def test_decode_takes_only_its_own_version_and_sizes(payload: bytes) -> None:
    try:
        data = cd.decode(payload)
    except cd.CustomDataError:
        assert len(payload) < 2 or payload[0] != cd.VERSION or len(payload) > cd.MAX_CUSTOM_DATA + 1
    else:
        assert payload[0] == cd.VERSION and data == payload[1:] and 1 <= len(data) <= cd.MAX_CUSTOM_DATA


@given(st.binary(min_size=1, max_size=cd.MAX_CUSTOM_DATA))
def test_encode_decode_round_trip(data: bytes) -> None:
    assert cd.decode(cd.encode(data)) == data


def test_sender_paces_copies_and_counts_them() -> None:
    sender = cd.CustomDataSender()
    with pytest.raises(ValueError, match="repeat_count"):
        sender.start(b"x", 0)
    with pytest.raises(cd.CustomDataError):
        sender.start(bytes(cd.MAX_CUSTOM_DATA + 1), 1)
    sender.start(b"hi", 3)
    sent = [t for t in np.arange(0, 1, 0.02) if sender.due(float(t)) is not None]
    assert len(sent) == 3 and np.allclose(np.diff(sent), cd.CUSTOM_INTERVAL_S)
    assert not sender.active
    sender.start(b"again", -1)
    assert sum(sender.due(t / 50) is not None for t in range(100)) == 20  # 2 s, one every 100 ms
    sender.stop()
    assert sender.due(10.0) is None


# --- relay and old readers -------------------------------------------------------------------------


def custom(client: Client, data: bytes) -> bytes:
    return client.crypto.seal(MediaHeader(PacketType.CUSTOM, client.session), cd.encode(data))


def test_relay_forwards_custom_data_like_voice_within_its_limits() -> None:
    relay = Relay()
    a, b, c = (join(relay, "r", t, 7000 + t) for t in (1, 2, 3))
    out = relay.handle_datagram(custom(a, b"hello"), a.addr, 1.0)
    assert sorted(to for _, to in out) == [b.addr, c.addr]
    for datagram, to in out:
        listener = b if to == b.addr else c
        header, payload = listener.crypto.open(datagram)
        assert header.ptype is PacketType.CUSTOM and header.tinyid == 1 and cd.decode(payload) == b"hello"
    assert relay.handle_datagram(custom(a, b"too soon"), a.addr, 1.01) == []  # RELAY_MIN_INTERVAL_S
    big = a.crypto.seal(MediaHeader(PacketType.CUSTOM, a.session), bytes(cd.MAX_CUSTOM_DATA + 2))
    assert relay.handle_datagram(big, a.addr, 2.0) == []
    assert relay.counters.dropped_custom == 2
    relay.set_muted(1, True)
    assert relay.handle_datagram(custom(a, b"muted"), a.addr, 3.0) == []


def test_a_receive_path_that_does_not_know_custom_data_ignores_it() -> None:
    """The downlink (which plays DATA only) takes a CUSTOM datagram without playing or raising."""
    key = bytes(range(32))
    relay_side = MediaCrypto.for_server(key)
    downlink = Downlink(RoomType.STANDARD, MediaCrypto.for_client(key))
    datagram = relay_side.seal(MediaHeader(PacketType.CUSTOM, 5), cd.encode(b"x"))
    assert downlink.receive(datagram, 0.0) is PacketType.CUSTOM
    assert downlink.recv_stream_level(5) == 0 and not downlink.speaking()


# --- end to end --------------------------------------------------------------------------------------


def enter_all(server: ThreadServer, clients: ClientMaker, ids: list[str], room_type: int) -> list[SdkClient]:
    made = [clients(server.url, server.app, o, portaudio=False) for o in ids]
    for c in made:
        assert c.ctx.enter_room("data", room_type, server.auth("data", c.open_id)) == E.AV_OK
    wait_for(made, lambda: all(c.ctx.is_room_entered() for c in made))
    return made


@pytest.mark.slow
@pytest.mark.public_surface
def test_custom_data_arrives_as_often_as_sent_to_speakers_that_are_on(
        server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    from opengme.devices import MemorySpeaker
    a, b, c = enter_all(server, clients, ["10001", "10002", "10003"], RoomType.STANDARD)
    speaker = MemorySpeaker()
    ctrl = b.ctx.get_audio_ctrl()
    assert ctrl.register_speaker(speaker) == E.AV_OK and ctrl.select_speaker(speaker.id) == E.AV_OK
    assert ctrl.enable_speaker(True) == E.AV_OK  # C keeps its speaker off
    room = a.ctx.get_room()
    assert room.send_custom_data(b"hello", 3) == E.AV_ERR_INVALID_ARGUMENT  # no open mic yet
    audio = a.ctx.get_audio_ctrl()
    assert audio.use_mic_file(write_wav(tmp_path / "a.wav", tone(440, 8.0))) == E.AV_OK and audio.enable_mic(True) == E.AV_OK
    assert room.send_custom_data("hello", 3) == E.AV_OK
    wait_played([a, b, c], 1.0, speaker)
    got = b.events.of(EventType.CUSTOMDATA_UPDATE)
    assert got == [{"sub_type": 0, "content": "hello", "senderid": "10001", "content_bytes": b"hello"}] * 3
    assert c.events.of(EventType.CUSTOMDATA_UPDATE) == []
    assert room.send_custom_data(bytes([0xFF, 1]), -1) == E.AV_OK  # until stopped, binary
    wait_for([a, b, c], lambda: len(b.events.of(EventType.CUSTOMDATA_UPDATE)) >= 6)
    assert room.stop_send_custom_data() == E.AV_OK
    wait_played([a, b, c], 0.5, speaker)
    count = len(b.events.of(EventType.CUSTOMDATA_UPDATE))
    wait_played([a, b, c], 0.5, speaker)
    assert len(b.events.of(EventType.CUSTOMDATA_UPDATE)) == count  # stopped
    assert b.events.of(EventType.CUSTOMDATA_UPDATE)[-1]["content_bytes"] == bytes([0xFF, 1])


@pytest.mark.public_surface
def test_custom_data_refusals(server: ThreadServer, clients: ClientMaker, tmp_path: Path) -> None:
    """1201 outside a room; 1004 in a FLUENCY room, for sizes outside 1..1000 bytes and a repeat_count of 0."""
    (lone,) = [clients(server.url, server.app, "10009", portaudio=False)]
    assert lone.ctx.get_room().send_custom_data(b"x", 1) == E.AV_ERR_ROOM_NOT_EXIST
    assert lone.ctx.get_room().stop_send_custom_data() == E.AV_ERR_ROOM_NOT_EXIST
    (a,) = enter_all(server, clients, ["10001"], RoomType.FLUENCY)
    audio = a.ctx.get_audio_ctrl()
    assert audio.use_mic_file(write_wav(tmp_path / "a.wav", tone(440, 2.0))) == E.AV_OK and audio.enable_mic(True) == E.AV_OK
    assert a.ctx.get_room().send_custom_data(b"x", 1) == E.AV_ERR_INVALID_ARGUMENT  # FLUENCY
    assert a.ctx.get_room().change_room_type(RoomType.STANDARD) == E.AV_OK
    wait_for([a], lambda: a.ctx.get_room().get_room_type() == RoomType.STANDARD)
    room = a.ctx.get_room()
    assert room.send_custom_data(b"", 1) == E.AV_ERR_INVALID_ARGUMENT
    assert room.send_custom_data(bytes(cd.MAX_CUSTOM_DATA + 1), 1) == E.AV_ERR_INVALID_ARGUMENT
    assert room.send_custom_data(b"x", 0) == E.AV_ERR_INVALID_ARGUMENT
    assert room.send_custom_data(b"x", 1) == E.AV_OK
