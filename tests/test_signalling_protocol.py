"""The sans-I/O signalling protocol: every client message validated, builders round-trip."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.errors import ErrorCode
from opengme.ids import open_id_problem, room_id_problem
from opengme.protocol import signalling as p

INVALID = ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT


def refused(text: str | bytes, max_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client(text, max_bytes)
    return info.value


def raw(**fields: object) -> str:
    return json.dumps(fields)


GOOD_REQUESTS = [
    p.hello(1, "1400000001", "10001", "0.1.0"),
    p.enter(2, "demo", 1, b"\x00\x01binary"),
    p.enter(3, "demo", 3, b"", resume_token="123.abc"),
    p.enter(4, "room with spaces/and:marks", 2, "AUTHv2.token.mac"),
    p.exit_(5),
    p.switch(6, "other", b"buf"),
    p.change_room_type(7, 2),
    p.ping(8, 1712345678.25),
    p.ping(9, 0),
    p.invite(10, "10002"),
    p.invite_reply(11, "abcdef0123456789", True),
]


@pytest.mark.parametrize("message", GOOD_REQUESTS, ids=lambda m: m["type"])
def test_every_request_builder_round_trips(message: dict) -> None:
    assert p.parse_client(p.encode(message)) == message
    assert p.parse_client(p.encode(message).encode("utf-8")) == message


def test_type_sets_cover_the_doc() -> None:
    assert {"hello", "enter", "exit", "switch", "change_room_type", "ping", "invite", "invite_reply"} == p.REQUEST_TYPES
    assert {"members", "room_type", "disconnect", "mute", "invitation", "invitation_result",
                            "quality"} == p.PUSH_TYPES
    assert {"hello_ok", "error", "entered", "switched", "exited", "room_type_changed", "pong",
                             "invite_sent", "invite_reply_ok"} == p.REPLY_TYPES


def test_auth_buffer_is_base64_of_the_bytes_and_text_is_utf8() -> None:
    assert p.decode_auth_buffer(p.enter(1, "r", 1, b"\xff\x00")["auth_buffer"]) == b"\xff\x00"
    assert p.decode_auth_buffer(p.encode_auth_buffer("AUTHv2.x")) == b"AUTHv2.x"
    with pytest.raises(ValueError):
        p.decode_auth_buffer("not base64!")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"hello"', "JSON object"),
        (raw(id=1), "string 'type'"),
        (raw(type=5, id=1), "string 'type'"),
        ('{"type":"ping","id":1,"t":NaN}', "NaN"),
        ('{"type":"ping","id":1,"t":Infinity}', "Infinity"),
        (raw(type="ping", t=1), "id must be"),
        (raw(type="ping", id=0, t=1), "id must be"),
        (raw(type="ping", id=2**31, t=1), "id must be"),
        (raw(type="ping", id=True, t=1), "id must be"),
        (raw(type="ping", id="1", t=1), "id must be"),
        (raw(type="ping", id=1, t="now"), "t must be a finite number"),
        (raw(type="ping", id=1, t=False), "t must be a finite number"),
        (raw(type="ping", id=1), "missing field t"),
        (raw(type="ping", id=1, t=1, extra=1), "unknown field(s) extra"),
        (raw(type="exit", id=1, room_id="x"), "unknown field(s) room_id"),
        (raw(type="enter", id=1, room_id="", room_type=1, auth_buffer=""), "room_id must be 1-127"),
        (raw(type="enter", id=1, room_id="x" * 128, room_type=1, auth_buffer=""), "room_id must be 1-127"),
        (raw(type="enter", id=1, room_id="a\nb", room_type=1, auth_buffer=""), "printable"),
        (raw(type="enter", id=1, room_id=5, room_type=1, auth_buffer=""), "room_id must be a string"),
        (raw(type="enter", id=1, room_id="r", room_type=0, auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type=4, auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type="1", auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer="%%%"), "base64"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer=b"x".hex() + "="), "base64"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer="", resume_token=""), "resume_token"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer="", resume_token=7), "resume_token"),
        (raw(type="invite_reply", id=1, invite_id="x", accept="yes"), "accept must be true or false"),
        (raw(type="invite_reply", id=1, invite_id="", accept=True), "invite_id"),
        (raw(type="invite", id=1, open_id=""), "open_id must be 1-127"),
        (raw(type="hello", id=1, protocol=1, sdk_version="x", app_id="1", open_id="10001", abilities="audio"),
         "abilities must be a list"),
        (raw(type="hello", id=1, protocol="1", sdk_version="x", app_id="1", open_id="10001", abilities=[]),
         "protocol must be an integer"),
    ],
)
def test_malformed_requests_get_10002(text: str, fragment: str) -> None:
    error = refused(text)
    assert error.code == INVALID
    assert fragment in error.message
    assert error.close_code is None


def test_the_request_id_is_echoed_when_it_is_readable() -> None:
    assert refused(raw(type="ping", id=42, t="x")).id == 42
    assert refused(raw(type="ping", id=-1, t=1)).id is None
    assert refused("{").id is None


def test_unknown_type_is_10007_with_the_id() -> None:
    error = refused(raw(type="video_request", id=9))
    assert (error.code, error.id) == (ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, 9)
    assert "video_request" in error.message


def test_oversized_frame_is_10002_and_closes_with_1009() -> None:
    message = p.encode(p.ping(1, 1.0))
    assert p.parse_client(message, max_bytes=len(message))["type"] == "ping"
    error = refused(message, max_bytes=len(message) - 1)
    assert (error.code, error.close_code) == (INVALID, p.CLOSE_TOO_BIG)
    # the limit is in UTF-8 bytes, not characters
    wide = p.encode(p.invite(1, "é" * 20))
    assert len(wide) < 60 < len(wide.encode("utf-8"))
    assert refused(wide, max_bytes=60).close_code == p.CLOSE_TOO_BIG


def test_hello_of_another_protocol_version_is_7015_and_closes_even_with_unknown_fields() -> None:
    future = raw(type="hello", id=1, protocol=2, new_field=True)
    error = refused(future)
    assert (error.code, error.id, error.close_code) == (ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE, 1, p.CLOSE_NORMAL)
    assert "protocol 2" in error.message and "protocol 1" in error.message


@pytest.mark.parametrize("ability", ["video", "screen", ""])
def test_abilities_other_than_audio_are_10011(ability: str) -> None:
    error = refused(p.encode(p.hello(3, "1", "10001", "0.1", abilities=["audio", ability])))
    assert (error.code, error.id) == (ErrorCode.AV_ERR_SERVER_INVALID_ABILITY, 3)
    assert p.parse_client(p.encode(p.hello(3, "1", "10001", "0.1", abilities=[])))["abilities"] == []


@pytest.mark.parametrize(
    "open_id, allow_string, ok",
    [
        ("10001", False, True),
        ("18446744073709551615", False, True),  # u64 max
        ("18446744073709551616", False, False),
        ("10000", False, False),
        ("123", False, False),
        ("010001", False, False),  # non-canonical: would alias 10001
        ("+10001", False, False),
        ("１２３４５６", False, False),  # full-width digits are not ASCII
        ("player-1", False, False),
        ("", False, False),
        (10001, False, False),
        ("player-1", True, True),
        ("123", True, True),
        ("x" * 127, True, True),
        ("x" * 128, True, False),
        ("tab\there", True, False),
        ("", True, False),
    ],
)
def test_validate_open_id(open_id: object, allow_string: bool, ok: bool) -> None:
    reason = open_id_problem(open_id, allow_string)
    assert (reason is None) == ok, reason
    if not ok:
        assert "openid" in reason


def test_validate_room_id() -> None:
    assert room_id_problem("a") is None
    assert room_id_problem("房间-1 / ok") is None
    assert room_id_problem("x" * 127) is None
    assert room_id_problem("x" * 128) is not None
    assert room_id_problem("") is not None
    assert room_id_problem("bell\x07") is not None


GOOD_SERVER_MESSAGES = [
    p.hello_ok(1, "0.1.0", 5.0, 90.0),
    p.error(2, ErrorCode.AV_ERR_AUTH_FIALD, "AuthBuffer expired"),
    p.error(None, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "not JSON"),
    p.entered(3, "demo", 1, 7, [(8, "10002"), (9, "10003")], "1.ab", False),
    p.switched(4, "other", 2, 7, [], "1.ab", True),
    p.exited(5),
    p.room_type_changed(6, 3),
    p.pong(7, 12.5),
    p.invite_sent(8, "abcd"),
    p.invite_reply_ok(9, "abcd", "demo"),
    p.invite_reply_ok(10, "abcd"),
    p.members_push("enter", [(1, "10001")]),
    p.members_push("exit", [(1, "10001")]),
    p.room_type_push(2, "10001"),
    p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "kicked"),
    p.mute(True, "muted by the server"),
    p.invitation("abcd", "10001", "demo"),
    p.invitation_result("abcd", "10002", False),
]


@pytest.mark.parametrize("message", GOOD_SERVER_MESSAGES, ids=lambda m: m["type"])
def test_every_server_builder_round_trips(message: dict) -> None:
    assert p.parse_server(p.encode(message)) == message


def test_parse_server_is_strict_too() -> None:
    for bad in (
        raw(type="entered", id=1),
        raw(type="pong", id=1, t=1, extra=2),
        raw(type="members", event="left", members=[]),
        raw(type="members", event="enter", members=[{"tinyid": 0, "open_id": "1"}]),
        raw(type="error", id=1, code=123456, message="x"),
        raw(type="surprise"),
    ):
        with pytest.raises(p.ProtocolError):
            p.parse_server(bad)


def test_builders_clip_long_texts_so_the_sdk_accepts_them() -> None:
    long = "x" * 5000
    for message in (p.error(1, INVALID, long), p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, long),
                    p.mute(False, long)):
        assert p.parse_server(p.encode(message))["type"] == message["type"]
    with pytest.raises(ValueError):
        p.members_push("left", [])


def test_encode_is_compact_and_keeps_unicode() -> None:
    text = p.encode(p.invite(1, "玩家"))
    assert " " not in text and "玩家" in text


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_client_never_raises_anything_but_protocol_error(data: str | bytes) -> None:
    try:
        message = p.parse_client(data)
    except p.ProtocolError as exc:
        assert exc.code in {INVALID, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE,
                            ErrorCode.AV_ERR_SERVER_INVALID_ABILITY}
    else:
        assert message["type"] in p.REQUEST_TYPES


@given(st.dictionaries(st.sampled_from(["type", "id", "t", "room_id", "room_type", "auth_buffer", "open_id",
                                        "accept", "invite_id", "x"]),
                       st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
                       | st.sampled_from(sorted(p.REQUEST_TYPES))))
def test_structured_garbage_is_refused_cleanly(fields: dict) -> None:
    try:
        text = json.dumps(fields)
    except ValueError:
        return
    try:
        message = p.parse_client(text)
    except p.ProtocolError as exc:
        assert exc.message
    else:
        assert message == fields and fields["type"] in p.REQUEST_TYPES
