"""Media datagram format, AEAD sealing and the replay window (opengme.protocol.media)."""
from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.events import RoomType
from opengme.protocol.media import (
    BIND_MAGIC,
    HEADER_SIZE,
    MAX_INDEX,
    MAX_PAYLOAD,
    MIN_DATAGRAM,
    Codec,
    Direction,
    DropReason,
    Flags,
    MediaCrypto,
    MediaHeader,
    MediaPacketError,
    PacketType,
    ReplayWindow,
    session_id,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def pair(key: bytes = KEY) -> tuple[MediaCrypto, MediaCrypto]:
    return MediaCrypto.for_client(key), MediaCrypto.for_server(key)


def data_header(tinyid: int = 4242, seq: int = 7, **kw: object) -> MediaHeader:
    return MediaHeader(PacketType.DATA, tinyid, seq=seq, timestamp=seq * 960, **kw)  # type: ignore[arg-type]


# -- header format -----------------------------------------------------------------------------

headers = st.builds(
    MediaHeader,
    ptype=st.sampled_from(PacketType),
    tinyid=st.integers(0, 0xFFFFFFFF),
    seq=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    level=st.integers(0, 127),
    voice=st.booleans(),
    flags=st.sampled_from([Flags.NONE, Flags.MARKER, Flags.DTX | Flags.FEC, Flags.MARKER | Flags.FEC]),
    room_type=st.sampled_from(RoomType),
    codec=st.just(Codec.OPUS),
    direction=st.sampled_from(Direction),
    counter=st.integers(0, 0xFFFF),
)


@given(headers)
def test_header_pack_unpack_round_trip(header: MediaHeader) -> None:
    wire = header.pack()
    assert len(wire) == HEADER_SIZE
    assert MediaHeader.unpack(wire) == header


def test_header_byte_layout_is_the_documented_one() -> None:
    h = MediaHeader(PacketType.DATA, 0x01020304, seq=0xABCD, timestamp=0x11223344, level=33, voice=True,
                    flags=Flags.MARKER | Flags.FEC, room_type=RoomType.STANDARD,
                    direction=Direction.SERVER_TO_CLIENT, counter=0xBEEF)
    assert h.pack() == bytes([0b01_1_00001, 0x05, 0xAB, 0xCD, 0x11, 0x22, 0x33, 0x44,
                              1, 2, 3, 4, 0x80 | 33, 0x21, 0xBE, 0xEF])


@pytest.mark.parametrize("bad", [
    dict(level=128), dict(seq=1 << 16), dict(tinyid=-1), dict(timestamp=1 << 32), dict(counter=1 << 16),
])
def test_header_pack_refuses_out_of_range_fields(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        MediaHeader(**{"ptype": PacketType.DATA, "tinyid": 1, **bad}).pack()  # type: ignore[arg-type]


@pytest.mark.parametrize("wire", [
    b"", b"\x41" * 15,
    bytes([0b10_0_00001]) + bytes(15),  # version 2 (RTP)
    bytes([0b01_0_00000]) + bytes(12) + b"\x11" + bytes(2),  # packet type 0
    bytes([0b01_0_00001]) + bytes(12) + b"\x01" + bytes(2),  # room type 0
    bytes([0b01_0_00001]) + bytes(12) + b"\x12" + bytes(2),  # codec 2
])
def test_header_unpack_rejects_foreign_bytes(wire: bytes) -> None:
    with pytest.raises(MediaPacketError) as err:
        MediaHeader.unpack(wire)
    assert err.value.reason is DropReason.MALFORMED


# -- sealing ----------------------------------------------------------------------------------

def test_seal_open_round_trip_uplink_and_downlink() -> None:
    client, server = pair()
    payload = os.urandom(80)
    wire = client.seal(data_header(level=20, voice=True, flags=Flags.MARKER), payload)
    assert len(wire) == HEADER_SIZE + len(payload) + 16
    assert payload not in wire  # the Opus bytes are encrypted
    header, got = server.open(wire)
    assert got == payload
    assert header == data_header(level=20, voice=True, flags=Flags.MARKER)  # uplink, counter 0
    back = server.seal(data_header(tinyid=99, seq=3), b"down")
    header, got = client.open(back)
    assert (got, header.tinyid, header.seq, header.direction) == (b"down", 99, 3, Direction.SERVER_TO_CLIENT)


def test_counter_on_the_wire_is_the_senders_packet_index() -> None:
    client, server = pair()
    counters = [server.open(client.seal(data_header(seq=s), b"x"))[0].counter for s in range(5)]
    assert counters == [0, 1, 2, 3, 4]
    assert client.send_index == 5


def test_tampering_any_byte_is_rejected() -> None:
    client, _ = pair()
    wire = client.seal(data_header(), os.urandom(80))
    for i in range(len(wire)):
        for bit in (0x01, 0x80):
            forged = bytearray(wire)
            forged[i] ^= bit
            _, server = pair()
            with pytest.raises(MediaPacketError) as err:
                server.open(bytes(forged))
            assert err.value.reason in (DropReason.AUTH, DropReason.MALFORMED), i
            assert server.window.top == -1, "a forged packet must not move the window"


def test_wrong_key_and_wrong_direction_are_rejected() -> None:
    client, _ = pair()
    wire = client.seal(data_header(), b"voice")
    with pytest.raises(MediaPacketError) as err:
        MediaCrypto.for_server(OTHER_KEY).open(wire)
    assert err.value.reason is DropReason.AUTH
    with pytest.raises(MediaPacketError) as err:  # a client never accepts an uplink packet
        MediaCrypto.for_client(KEY).open(wire)
    assert err.value.reason is DropReason.MALFORMED


def test_reflecting_an_uplink_packet_with_the_direction_flipped_fails() -> None:
    """The direction is in the nonce and the AD: the same key's two uses never collide."""
    client, _ = pair()
    wire = bytearray(client.seal(data_header(), b"voice"))
    wire[0] |= 0x20
    with pytest.raises(MediaPacketError) as err:
        MediaCrypto.for_client(KEY).open(bytes(wire))
    assert err.value.reason is DropReason.AUTH


def test_moving_ciphertext_to_another_tinyid_fails() -> None:
    client, server = pair()
    wire = bytearray(client.seal(data_header(tinyid=5), b"voice"))
    wire[11] = 6
    with pytest.raises(MediaPacketError):
        server.open(bytes(wire))


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE, MIN_DATAGRAM - 1])
def test_short_datagrams_are_malformed(size: int) -> None:
    _, server = pair()
    wire = pair()[0].seal(data_header(), b"")[:size]
    with pytest.raises(MediaPacketError) as err:
        server.open(wire)
    assert err.value.reason is DropReason.MALFORMED


def test_empty_payload_and_max_payload_are_allowed() -> None:
    client, server = pair()
    assert server.open(client.seal(data_header(seq=1), b""))[1] == b""
    big = os.urandom(MAX_PAYLOAD)
    assert server.open(client.seal(data_header(seq=2), big))[1] == big
    with pytest.raises(ValueError):
        client.seal(data_header(seq=3), big + b"x")


def test_replayed_packet_is_rejected_once_accepted() -> None:
    client, server = pair()
    wire = client.seal(data_header(), b"voice")
    server.open(wire)
    with pytest.raises(MediaPacketError) as err:
        server.open(wire)
    assert err.value.reason is DropReason.REPLAY


def test_reordering_inside_window_is_accepted_and_each_once() -> None:
    client, server = pair()
    wires = [client.seal(data_header(seq=s), bytes([s])) for s in range(50)]
    order = list(range(50))[::-1]  # worst case: newest first
    got = [server.open(wires[i])[1][0] for i in order]
    assert got == order
    for w in wires:
        with pytest.raises(MediaPacketError):
            server.open(w)


def test_too_old_packet_is_rejected() -> None:
    client = MediaCrypto.for_client(KEY)
    server = MediaCrypto.for_server(KEY, window=64)
    wires = [client.seal(data_header(seq=s), b"v") for s in range(70)]
    server.open(wires[69])
    server.open(wires[6])  # age 63: still inside
    with pytest.raises(MediaPacketError) as err:
        server.open(wires[5])  # age 64: outside
    assert err.value.reason is DropReason.REPLAY


def test_counter_rolls_over_u16_and_keeps_authenticating() -> None:
    client, server = pair()
    client.send_index = server_start = 0xFFF0
    server.window.update(server_start - 1)  # as if the earlier 65k packets had arrived
    for i in range(40):
        header, _ = server.open(client.seal(data_header(seq=(server_start + i) & 0xFFFF), b"v"))
        assert header.counter == (server_start + i) & 0xFFFF
    assert server.window.top == 0xFFF0 + 39  # the extended index crossed 2**16


def test_late_packet_from_before_the_rollover_is_placed_correctly() -> None:
    client, server = pair()
    client.send_index = 0xFFFE
    before = [client.seal(data_header(), b"a"), client.seal(data_header(), b"b")]  # 0xFFFE, 0xFFFF
    after = client.seal(data_header(), b"c")  # 0x10000, counter 0 on the wire
    server.window.update(0xFFFD)
    server.open(after)
    assert [server.open(w)[1] for w in before] == [b"a", b"b"]
    assert server.window.top == 0x10000


def test_bind_carries_the_fixed_tag_and_a_tagless_bind_is_refused() -> None:
    client, server = pair()
    header, payload = server.open(client.seal_bind(77, timestamp=5))
    assert (header.ptype, header.tinyid, payload) == (PacketType.BIND, 77, BIND_MAGIC)
    fake = client.seal(MediaHeader(PacketType.BIND, 77), b"hello")
    with pytest.raises(MediaPacketError) as err:
        server.open(fake)
    assert err.value.reason is DropReason.MALFORMED


def test_session_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        MediaCrypto.for_client(b"short")


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_garbage_only_raises_media_packet_error(blob: bytes) -> None:
    _, server = pair()
    with pytest.raises(MediaPacketError):
        server.open(blob)
    assert server.window.top == -1


# -- replay window, exhaustive and property-based ---------------------------------------------

def test_window_initial_state_accepts_anything_in_range() -> None:
    w = ReplayWindow(16)
    assert w.check(0) and w.check(MAX_INDEX)
    assert not w.check(-1) and not w.check(MAX_INDEX + 1)


def test_window_exhaustive_against_a_set_model() -> None:
    """Every accept/reject decision for every index near a moving top matches the definition."""
    size = 8
    w = ReplayWindow(size)
    seen: set[int] = set()
    for step, index in enumerate([3, 1, 2, 3, 10, 2, 5, 9, 11, 4, 30, 23, 22, 29, 30, 31]):
        for probe in range(-2, 40):
            expected = probe >= 0 and probe not in seen and (probe > w.top or w.top - probe < size)
            assert w.check(probe) == expected, (step, probe)
        if w.check(index):
            w.update(index)
            seen.add(index)


def test_window_extend_picks_the_nearest_index() -> None:
    w = ReplayWindow()
    assert w.extend(5) == 5  # nothing received: roll-over counter 0
    w.update(0x2FFF0)
    assert w.extend(0xFFF0) == 0x2FFF0
    assert w.extend(0xFFFF) == 0x2FFFF
    assert w.extend(0x0005) == 0x30005  # just after a wrap
    assert w.extend(0x7FEF) == 0x37FEF  # furthest ahead still judged ahead
    assert w.extend(0x7FF0) == 0x27FF0  # half-way: judged behind
    w2 = ReplayWindow()
    w2.update(3)
    assert w2.extend(0xFFFE) == -2 and not w2.check(-2)  # "before the first packet" is impossible


@given(st.lists(st.integers(0, 5000), max_size=200), st.sampled_from([1, 64, 128, 1024]))
def test_window_matches_model(indexes: list[int], size: int) -> None:
    w = ReplayWindow(size)
    seen: set[int] = set()
    top = -1
    for i in indexes:
        expected = i not in seen and (i > top or top - i < size)
        assert w.check(i) == expected
        if expected:
            w.update(i)
            seen.add(i)
            top = max(top, i)
    assert w.top == top


@given(st.integers(0, MAX_INDEX - 40000), st.lists(st.integers(-20000, 20000), min_size=1, max_size=50))
def test_window_extend_recovers_indexes_within_half_the_counter(top: int, offsets: list[int]) -> None:
    w = ReplayWindow()
    w.update(top)
    for off in offsets:
        assert w.extend((top + off) & 0xFFFF) == top + off


def test_the_session_id_is_derived_from_the_key_and_fits_the_header() -> None:
    assert session_id(KEY) == int.from_bytes(hashlib.sha256(b"OpenGME-session-id-v1\0" + KEY).digest()[:4])
    assert session_id(KEY) != session_id(OTHER_KEY)
    assert MediaHeader.unpack(MediaHeader(PacketType.DATA, session_id(KEY)).pack()).tinyid == session_id(KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        session_id(KEY[:16])


def test_a_challenge_carries_exactly_its_nonce() -> None:
    server, client = MediaCrypto.for_server(KEY), MediaCrypto.for_client(KEY)
    header = MediaHeader(PacketType.CHALLENGE, 7)
    assert client.open(server.seal(header, bytes(16)))[1] == bytes(16)
    with pytest.raises(MediaPacketError) as caught:
        client.open(server.seal(header, bytes(15)))
    assert caught.value.reason is DropReason.MALFORMED
