"""The sans-I/O signalling protocol: known fields validated in full, unknown ones ignored and
counted (tolerant readers), builders round-trip, versions and abilities negotiated in hello."""
from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.errors import ErrorCode
from opengme.ids import open_id_problem, room_id_problem
from opengme.protocol import signalling as p
from opengme.protocol.messages import BY_NAME
from support.signal_samples import REQUESTS, SERVER_MESSAGES

INVALID = ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT


def refused(text: str | bytes, max_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client(text, max_bytes)
    return info.value


def raw(**fields: object) -> str:
    return json.dumps(fields)


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: m["type"])
def test_every_request_builder_round_trips(message: dict) -> None:
    assert p.parse_client(p.encode(message)) == message
    assert p.parse_client(p.encode(message).encode("utf-8")) == message


def test_type_sets_cover_the_doc() -> None:
    assert {"hello", "enter", "exit", "switch", "change_room_type", "ping", "invite", "invite_reply",
            "asr_start", "asr_stop", "room_manage", "room_manage_result", "room_share",
            "room_share_stop", "game_state", "audio_route"} == p.REQUEST_TYPES
    assert {"members", "room_type", "disconnect", "mute", "invitation", "invitation_result",
                            "quality", "realtime_asr", "room_operate", "room_operate_result",
                            "room_sharing", "positions"} == p.PUSH_TYPES
    assert {"hello_ok", "error", "entered", "switched", "exited", "room_type_changed", "pong",
                             "invite_sent", "invite_reply_ok", "asr_started", "asr_stopped", "room_manage_ok",
                             "room_share_ok", "game_state_ok", "audio_route_ok", "redirect"} == p.REPLY_TYPES


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
        (raw(type="ping", id=1, t=10**400), "t must be a finite number"),  # no float holds it
        (raw(type="ping", id=1), "missing field t"),
        (raw(type="ping", id=1, extra=1), "missing field t"),  # an unknown field does not stand in
        (raw(type="enter", id=1, room_id="", room_type=1, auth_buffer=""), "room_id must be 1-127"),
        (raw(type="enter", id=1, room_id="x" * 128, room_type=1, auth_buffer=""), "room_id must be 1-127"),
        (raw(type="enter", id=1, room_id="a\nb", room_type=1, auth_buffer=""), "printable"),
        (raw(type="enter", id=1, room_id=5, room_type=1, auth_buffer=""), "room_id must be a string"),
        (raw(type="enter", id=1, room_id="r", room_type=0, auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type=4, auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type="1", auth_buffer=""), "room_type must be one of"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer="%%%"), "base64"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer=b"x".hex() + "="), "base64"),
        (raw(type="enter", id=1, room_id="r", room_type=1, auth_buffer="YQ==YQ=="), "base64"),
        (raw(type="enter", id=1, room_id="r", room_type=True, auth_buffer=""), "room_type must be one of"),
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


def test_hello_of_another_major_version_is_10007_naming_both_and_closes_even_with_unknown_fields() -> None:
    future = raw(type="hello", id=1, protocol=2, new_field=True)
    error = refused(future)
    assert (error.code, error.id, error.close_code) == (ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT, 1, p.CLOSE_NORMAL)
    assert "protocol 2" in error.message and "protocol 1" in error.message
    assert p.ACCEPTED_PROTOCOLS == (p.PROTOCOL_VERSION,) == (1,)


@pytest.mark.parametrize("asked, granted", [
    (["audio"], ["audio"]),
    (["audio", "video"], ["audio"]),  # video is never granted: OpenGME is audio-only
    (["spatial", "audio", "audio", ""], ["audio"]),
    (["video", "holograms"], []),
    ([], []),
])
def test_hello_asks_for_abilities_and_the_server_grants_what_it_supports(asked: list[str], granted: list[str]) -> None:
    hello = p.parse_client(p.encode(p.hello(3, "1", "10001", "0.1", abilities=asked)))  # never 10011 any more
    assert hello["abilities"] == asked
    assert p.grant(hello["abilities"]) == granted
    reply = p.parse_server(p.encode(p.hello_ok(3, "0.1", 5.0, 90.0, p.grant(asked))))
    assert reply["abilities"] == granted


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


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m["type"])
def test_every_server_builder_round_trips(message: dict) -> None:
    assert p.parse_server(p.encode(message)) == message


@pytest.mark.parametrize("bad", [
    raw(type="entered", id=1),
    raw(type="pong", id=1, t="soon"),
    raw(type="members", event="left", members=[]),
    raw(type="members", event="enter", members=[{"tinyid": 0, "open_id": "1"}]),
    raw(type="members", event="enter", members=[{"tinyid": 2**32, "open_id": "1"}]),  # no u32 holds it
    raw(type="members", event="enter", members=[{"open_id": "1", "team": "red"}]),  # unknown, but tinyid missing
    raw(**{**p.entered(1, "r", 1, 7, [], "1.ab", False), "media": {"udp_port": 1, "key": "AAAA"}}),
    raw(type="error", id=1, code="10002", message="x"),
    raw(**{**p.hello_ok(1, "v", 5.0, 90.0), "abilities": "audio"}),
    raw(id=1),
])
def test_parse_server_still_refuses_a_malformed_known_message(bad: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_server(bad)
    assert info.value.code == INVALID


def test_unknown_fields_are_left_out_counted_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    ignored = p.Ignored()
    members = {**p.members_push("enter", [(5, "10005")]), "team": "red"}
    members["members"][0]["team"] = "blue"  # inside a member too
    entered = {**p.entered(1, "r", 1, 7, [], "1.ab", False, p.media_section(4000, bytes(32))), "region": "eu"}
    entered["media"]["relay"] = "10.0.0.1"
    with caplog.at_level(logging.DEBUG, logger="opengme.protocol"):
        assert p.parse_server(p.encode(members), ignored) == p.members_push("enter", [(5, "10005")])
        assert p.parse_server(p.encode(entered), ignored) == p.entered(1, "r", 1, 7, [], "1.ab", False,
                                                                        p.media_section(4000, bytes(32)))
        assert p.parse_client(raw(type="ping", id=4, t=1.5, trace="x", spatial={"x": 1}), ignored=ignored) \
            == p.ping(4, 1.5)
    assert ignored.fields == {"members.team": 1, "members.member.team": 1, "entered.region": 1,
                              "entered.media.relay": 1, "ping.trace": 1, "ping.spatial": 1}
    assert "team" in caplog.text and "'entered'" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_an_unknown_server_type_is_only_its_name_and_counted() -> None:
    """A newer server's push (or reply to a newer request) carries nothing this side would act on:
    even an id is dropped, so no pending request is taken to be answered by it."""
    ignored = p.Ignored()
    assert p.parse_server(raw(type="weather", id=3, sunny=True), ignored) == {"type": "weather"}
    assert p.parse_server(raw(type="weather"), ignored) == {"type": "weather"}
    assert ignored.types == {"weather": 2} and not ignored.fields


def test_without_a_tally_the_process_wide_one_counts() -> None:
    before = p.IGNORED.fields["exit.why"]
    p.parse_client(raw(type="exit", id=1, why="bored"))
    assert p.IGNORED.fields["exit.why"] == before + 1


def test_error_and_disconnect_carry_codes_newer_than_this_table() -> None:
    """A newer server's error code still reaches the user (as the number) instead of losing the reply."""
    assert p.parse_server(raw(type="error", id=2, code=123456, message="new"))["code"] == 123456
    assert p.parse_server(raw(type="disconnect", code=99999, reason="new"))["code"] == 99999


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


ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=20)  # lone surrogates too
HUGE_INTS = st.integers(min_value=-(10**400), max_value=10**400) | st.integers()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | HUGE_INTS | st.floats(allow_nan=False, allow_infinity=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _text(message: Any) -> str | None:
    """JSON text of ``message`` as a peer may send it (lone surrogates escaped), None when none exists."""
    try:
        return json.dumps(message)
    except (ValueError, TypeError):
        return None


@given(ANY_TEXT | st.text(max_size=200) | st.binary(max_size=200))
def test_the_parsers_never_raise_anything_but_protocol_error(data: str | bytes) -> None:
    try:
        message = p.parse_client(data)
    except p.ProtocolError as exc:
        assert exc.code in {INVALID, ErrorCode.AV_ERR_SERVER_NOT_IMPLEMENT}
    else:
        assert message["type"] in p.REQUEST_TYPES
    try:
        assert isinstance(p.parse_server(data, p.Ignored())["type"], str)
    except p.ProtocolError as exc:
        assert exc.code == INVALID


FIELD_NAMES = sorted({f.name for m in BY_NAME.values() for f in m.fields} | {"type", "x", "tinyid", "udp_port"})


@given(st.dictionaries(st.sampled_from(FIELD_NAMES) | ANY_TEXT,
                       JSON_VALUES | st.sampled_from(sorted(BY_NAME)) | st.sampled_from(["", "AAAA", "10001", "r"])))
def test_structured_garbage_is_refused_cleanly_by_both_parsers(fields: dict[str, Any]) -> None:
    text = _text(fields)
    if text is None:
        return
    for parse in (p.parse_client, p.parse_server):
        try:
            message = parse(text)
        except p.ProtocolError as exc:
            assert exc.message
        else:
            assert message["type"] == fields["type"]
            assert set(message) <= set(fields)  # only ever fields it was given
            assert all(message[k] == fields[k] for k in message if k not in ("members", "media"))


def _with_extras(message: dict[str, Any], extras: dict[str, Any], nested: dict[str, Any]) -> dict[str, Any]:
    """``message`` plus ``extras`` (unknown names only) at the top and ``nested`` in its objects."""
    grown = copy.deepcopy(message)
    known = {f.name for f in BY_NAME[message["type"]].fields} | {"type"}
    grown.update({k: v for k, v in extras.items() if k not in known})
    for member in grown.get("members", []):
        member.update({k: v for k, v in nested.items() if k not in ("tinyid", "open_id")})
    if "media" in known and grown.get("media") is not None:  # an extra named "media" is just an unknown field
        grown["media"].update({k: v for k, v in nested.items() if k not in ("udp_port", "key")})
    return grown


EXTRAS = st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=4)


@given(st.sampled_from(REQUESTS), EXTRAS)
def test_any_request_plus_unknown_fields_parses_to_the_same_dict(message: dict[str, Any], extras: dict[str, Any]) -> None:
    text = _text(_with_extras(message, extras, {}))
    if text is not None:
        assert p.parse_client(text, max_bytes=10**7, ignored=p.Ignored()) == p.parse_client(p.encode(message))


@given(st.sampled_from(SERVER_MESSAGES), EXTRAS, EXTRAS)
def test_any_server_message_plus_unknown_fields_parses_to_the_same_dict(
        message: dict[str, Any], extras: dict[str, Any], nested: dict[str, Any]) -> None:
    text = _text(_with_extras(message, extras, nested))
    if text is not None:
        assert p.parse_server(text, p.Ignored()) == p.parse_server(p.encode(message)) == message
