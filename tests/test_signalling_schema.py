"""The JSON Schema file for other clients: current with the definitions, valid draft 2020-12, and
in agreement with the parsers on real messages (checked with the jsonschema validator)."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.protocol import schema
from opengme.protocol import signalling as p
from opengme.protocol.messages import BY_NAME, MESSAGES, RECORDS, Base64
from support.paths import REPO
from support.signal_samples import REQUESTS, SERVER_MESSAGES

REGENERATE = "python -m opengme.protocol.schema > src/opengme/data/signalling.schema.json"


def validator(ref: str = "") -> jsonschema.Draft202012Validator:
    """A validator of the committed document, or of one of its ``$defs`` (``ref``)."""
    document = json.loads(schema.packaged())
    if ref:
        document = {k: v for k, v in document.items() if k != "anyOf"} | {"$ref": f"#/$defs/{ref}"}
    return jsonschema.Draft202012Validator(document)


def test_the_committed_schema_file_is_what_the_definitions_generate() -> None:
    committed = (REPO / "src" / "opengme" / schema.SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema.text(), f"the schema file is stale: run `{REGENERATE}` and commit it"
    assert schema.packaged() == committed  # what the installed package ships


def test_the_regeneration_command_prints_the_document() -> None:
    done = subprocess.run([sys.executable, "-m", "opengme.protocol.schema"], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout == schema.text()


def test_it_is_a_valid_draft_2020_12_schema() -> None:
    document = json.loads(schema.packaged())
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)
    assert set(document["$defs"]) == {*BY_NAME, *(r.name for r in RECORDS), "client_message", "server_message"}
    assert {"member", "media"} <= {r.name for r in RECORDS}


def test_every_message_type_has_a_builder_sample() -> None:
    """The samples come from the builders: one per definition shows no message lacks its builder."""
    assert {m["type"] for m in REQUESTS} == {m.name for m in MESSAGES if m.direction == "request"}
    assert {m["type"] for m in SERVER_MESSAGES} == {m.name for m in MESSAGES if m.direction != "request"}


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: m["type"])
def test_every_request_the_builders_make_is_valid(message: dict[str, Any]) -> None:
    validator("client_message").validate(message)
    validator().validate(message)


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: m["type"])
def test_every_server_message_the_builders_make_is_valid(message: dict[str, Any]) -> None:
    validator("server_message").validate(message)
    validator().validate(message)


def test_unknown_fields_and_unknown_types_pass_as_the_readers_let_them() -> None:
    members = p.members_push("enter", [(5, "10005")])
    members["members"][0]["team"] = "blue"
    for ok in ({**members, "zone": 3}, {"type": "weather", "sunny": True}):
        validator("server_message").validate(ok)
    validator("client_message").validate({**p.ping(1, 2.0), "trace": "abc"})


BAD_REQUESTS = [
    {"type": "ping", "id": 0, "t": 1},
    {"type": "ping", "id": 1, "t": "now"},
    {"type": "ping", "id": 1},
    {"type": "ping", "id": True, "t": 1},
    {"type": "enter", "id": 1, "room_id": "", "room_type": 1, "auth_buffer": ""},
    {"type": "enter", "id": 1, "room_id": "a\nb", "room_type": 1, "auth_buffer": ""},
    {"type": "enter", "id": 1, "room_id": "r", "room_type": 4, "auth_buffer": ""},
    {"type": "enter", "id": 1, "room_id": "r", "room_type": 1, "auth_buffer": "%%%"},
    {"type": "enter", "id": 1, "room_id": "r", "room_type": 1, "auth_buffer": "YQ"},
    {"type": "enter", "id": 1, "room_id": "r", "room_type": 1, "auth_buffer": "", "resume_token": ""},
    {"type": "invite_reply", "id": 1, "invite_id": "x", "accept": "yes"},
    {"type": "hello", "id": 1, "protocol": 1, "sdk_version": "x", "app_id": "1", "open_id": "10001",
     "abilities": "audio"},
]
BAD_SERVER_MESSAGES = [
    {"type": "members", "event": "left", "members": []},
    {"type": "members", "event": "enter", "members": [{"tinyid": 0, "open_id": "1"}]},
    {"type": "members", "event": "enter", "members": [{"open_id": "1"}]},
    {"type": "quality", "uplink_loss": 1.5, "received": 1, "expected": 1},
    {**p.entered(1, "r", 1, 7, [], "1.ab", False), "media": {"udp_port": 1, "key": "AAAA"}},
    {"type": "error", "id": 1, "code": "7006", "message": "x"},
]


@pytest.mark.parametrize("message", BAD_REQUESTS, ids=lambda m: json.dumps(m)[:60])
def test_a_request_the_server_refuses_the_schema_refuses(message: dict[str, Any]) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_client(json.dumps(message))
    assert not validator("client_message").is_valid(message)


@pytest.mark.parametrize("message", BAD_SERVER_MESSAGES, ids=lambda m: json.dumps(m)[:60])
def test_a_server_message_the_sdk_refuses_the_schema_refuses(message: dict[str, Any]) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_server(json.dumps(message))
    assert not validator("server_message").is_valid(message)


@pytest.mark.parametrize("kind", [Base64(), Base64(32), Base64(2)], ids=repr)
@given(text=st.text("Aa0+/=!é", max_size=48) | st.builds(lambda n, t: "QUFB" * n + t, st.integers(0, 12),
                                                          st.text("A=", max_size=4)))
def test_the_parsers_base64_rule_is_the_schemas(kind: Base64, text: str) -> None:
    """The parser checks base64 with a linear-time form of the schema's pattern: they must agree."""
    assert (kind.check(text, []) is None) == jsonschema.Draft202012Validator(kind.schema()).is_valid(text)
