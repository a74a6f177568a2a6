"""Room sharing (GME's cross-room talk): the relay's linked route tables, and end to end through the
SDK and a real server: two rooms hear each other's linked members, and stop when the link stops."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from opengme.core.relay import Relay
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.server import media as media_part
from support.audio import band, tone, write_wav
from support.sdk_harness import ClientMaker, SdkClient, ThreadServer, listen, talk, wait_for, wait_played
from test_relay_core import join

E = ErrorCode
START, STOP = EventType.ROOM_SHARING_START, EventType.ROOM_SHARING_STOP


def test_linked_members_reach_the_other_room_including_late_comers() -> None:
    relay = Relay()
    a, c = join(relay, "r1", 1, 7001), join(relay, "r1", 3, 7003)
    b = join(relay, "r2", 2, 7002)
    relay.link(1, 2)
    assert sorted(relay.listeners(1)) == [2, 3] and sorted(relay.listeners(2)) == [1, 3]
    d = join(relay, "r2", 4, 7004)  # enters the linked room later: hears A too
    assert sorted(relay.listeners(1)) == [2, 3, 4] and relay.listeners(4) == [2]
    out = relay.handle_datagram(a.voice(), a.addr, 1.0)
    assert sorted(to for _, to in out) == sorted([b.addr, c.addr, d.addr])
    with pytest.raises(ValueError, match="two different rooms"):
        relay.link(1, 3)
    assert relay.unlink(2) == 1 and relay.linked(1) is None
    assert relay.listeners(1) == [3] and sorted(relay.listeners(2)) == [4]
    relay.link(1, 2)
    relay.remove_member(2)  # leaving ends the link
    assert relay.linked(1) is None and relay.listeners(1) == [3]




def test_a_linked_speaker_served_by_another_relay_reaches_the_room_through_inject() -> None:
    """``--workers N``: the two rooms live on two relays. The speaker's relay hands each voice packet
    on (``set_link_tap``); the other relay seals it for its room as if the speaker were linked there."""
    here, there = Relay(), Relay()
    a, c = join(here, "r1", 1, 7001), join(here, "r1", 3, 7003)
    b, d = join(there, "r2", 2, 7002), join(there, "r2", 4, 7004)
    handed: list[tuple[bytes, bytes]] = []
    here.set_link_tap(1, lambda header, payload: handed.append((header, payload)))
    out = here.handle_datagram(a.voice(b"hello"), a.addr, 1.0)
    assert [to for _, to in out] == [c.addr]  # its own room as before
    [(header, payload)] = handed
    injected = there.inject(1, header, payload, "r2")
    assert sorted(to for _, to in injected) == sorted([b.addr, d.addr])
    heard_here = c.crypto.open(out[0][0])
    for datagram, to in injected:
        listener = b if to == b.addr else d
        head, body = listener.crypto.open(datagram)
        assert body == b"hello" and head.tinyid == 1  # the speaker's tinyid, as on one relay
        assert (head.seq, head.timestamp, head.level) == (heard_here[0].seq, heard_here[0].timestamp,
                                                          heard_here[0].level)
    assert there.counters.forwarded == 2
    assert there.inject(1, header, payload, "nowhere") == []  # the room went meanwhile
    assert there.inject(1, header[:4], payload, "r2") == []
    here.set_link_tap(1, None)
    here.handle_datagram(a.voice(b"again"), a.addr, 2.0)
    assert len(handed) == 1


def member(server: ThreadServer, clients: ClientMaker, open_id: str, room: str) -> SdkClient:
    client = clients(server.url, server.app, open_id, portaudio=False)
    assert client.ctx.enter_room(room, RoomType.STANDARD, server.auth(room, open_id)) == E.AV_OK
    wait_for([client], client.ctx.is_room_entered)
    return client






@pytest.mark.slow
@pytest.mark.public_surface
@pytest.mark.parametrize("workers", [1, 2], ids=["one relay", "two relay processes"])
def test_two_linked_rooms_hear_each_others_linked_members_until_it_stops(
        make_server: Callable[..., ThreadServer], clients: ClientMaker, tmp_path: Path, workers: int) -> None:
    server = make_server(workers=workers)
    a, c = member(server, clients, "10001", "r1"), member(server, clients, "10003", "r1")
    b, d = member(server, clients, "10002", "r2"), member(server, clients, "10004", "r2")
    if workers > 1:  # the rooms are on two relay processes: the voices cross through the server
        pool = media_part.get(server.server).pool
        assert pool is not None
        assert pool.table.owner(f"{server.app.app_id}\0r1") != pool.table.owner(f"{server.app.app_id}\0r2")
    everyone = [a, b, c, d]
    in_r1, in_r2 = listen(c), listen(d)
    talk(a, write_wav(tmp_path / "a.wav", tone(440, 30.0)))
    talk(b, write_wav(tmp_path / "b.wav", tone(1000, 30.0)))

    def heard() -> tuple[np.ndarray, np.ndarray]:
        in_r1.take_all(), in_r2.take_all()
        wait_played(everyone, 1.0, in_r1, in_r2)
        return in_r1.take_all()[-24000:], in_r2.take_all()[-24000:]

    r1, r2 = heard()
    assert band(r1, 440) > 1000 and band(r1, 1000) < 50 and band(r2, 1000) > 1000 and band(r2, 440) < 50
    assert a.ctx.get_room().start_room_sharing("r2", "10002", server.auth("r2", "10001")) == E.AV_OK
    wait_for(everyone, lambda: bool(a.events.of(START)) and bool(b.events.of(START)))
    assert a.events.of(START) == [{"result": 0, "error_info": ""}]
    assert b.events.of(START) == [{"result": 0, "error_info": "", "open_id": "10001", "room_id": "r1"}]
    r1, r2 = heard()
    assert band(r1, 1000) > 1000 and band(r2, 440) > 1000  # each room hears the other's linked member
    assert a.ctx.get_room().stop_room_sharing() == E.AV_OK
    wait_for(everyone, lambda: bool(a.events.of(STOP)) and bool(b.events.of(STOP)))
    r1, r2 = heard()
    assert band(r1, 1000) < 50 and band(r2, 440) < 50 and band(r1, 440) > 1000


@pytest.mark.public_surface
def test_room_sharing_refusals(server: ThreadServer, clients: ClientMaker) -> None:
    """1201 outside a room, 1004 bad arguments; in events: 7006 an AuthBuffer for another room,
    10010 a target not in that room, 10002 a target in your own room, 10008 stopping with no link."""
    lone = clients(server.url, server.app, "10009", portaudio=False)
    assert lone.ctx.get_room().start_room_sharing("r2", "10002", b"x") == E.AV_ERR_ROOM_NOT_EXIST
    a, b = member(server, clients, "10001", "r1"), member(server, clients, "10002", "r2")
    room = a.ctx.get_room()
    assert room.start_room_sharing("", "10002", b"x") == E.AV_ERR_INVALID_ARGUMENT
    cases = [(("r2", "10002", server.auth("r1", "10001")), E.AV_ERR_AUTH_FIALD),
             (("r2", "10404", server.auth("r2", "10001")), E.AV_ERR_SERVER_ENDPOINT_NOT_EXIST),
             (("r1", "10001", server.auth("r1", "10001")), E.AV_ERR_SERVER_INVALID_ARGUMENT)]
    for args, code in cases:
        before = len(a.events.of(START))
        assert room.start_room_sharing(*args) == E.AV_OK
        wait_for([a, b], lambda: len(a.events.of(START)) > before)
        assert a.events.of(START)[-1]["result"] == code
    assert room.stop_room_sharing() == E.AV_OK
    wait_for([a, b], lambda: bool(a.events.of(STOP)))
    assert a.events.of(STOP)[-1]["result"] == E.AV_ERR_SERVER_REPEATED_OPERATION
    assert b.events.of(START) == []
