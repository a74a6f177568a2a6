"""The signalling messages as a JSON Schema (draft 2020-12) document for clients in other languages
(a browser client validates with it), generated from ``opengme.protocol.messages``.

The committed copy is package data, ``opengme/data/signalling.schema.json`` (``packaged()``), so that
the server can serve it; tests/test_signalling_schema.py fails when it differs from ``text()``.
Regenerate it after changing a definition::

    python -m opengme.protocol.schema > src/opengme/data/signalling.schema.json

``#/$defs/client_message`` and ``#/$defs/server_message`` check a message of a known type against
its definition and let any other type through, as the tolerant readers do; no definition forbids
additional properties. ``#/$defs/<type>`` is one message, ``#/$defs/member`` and ``#/$defs/media``
the shared objects.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from importlib.resources import files

from opengme.protocol.messages import MESSAGES, PROTOCOL_VERSION, RECORDS, Json, Message

SCHEMA_FILE = "data/signalling.schema.json"  # inside the opengme package
DIALECT = "https://json-schema.org/draft/2020-12/schema"
SENDERS = {"request": "client to server", "reply": "server to client, answers a request", "push": "server to client"}

TOLERANCE = (
    "Readers ignore fields they do not know (also inside nested objects) and server message types "
    "they do not know; additive changes (new optional fields, message types, abilities) keep the "
    "major protocol version. A server answers an unknown request type with error 10007."
)


def _message(message: Message) -> Json:
    return {
        "description": f"{message.doc} ({message.direction}: {SENDERS[message.direction]})",
        "type": "object",
        "properties": {"type": {"const": message.name}, **message.properties()},
        "required": ["type", *message.required()],
    }


def _union(description: str, messages: Iterable[Message]) -> Json:
    """A known ``type`` must match its definition; an unknown one passes (it is ignored)."""
    return {
        "description": description,
        "type": "object",
        "properties": {"type": {"type": "string"}},
        "required": ["type"],
        "allOf": [
            {"if": {"properties": {"type": {"const": m.name}}}, "then": {"$ref": f"#/$defs/{m.name}"}}
            for m in messages
        ],
    }


def document() -> Json:
    defs: Json = {
        "client_message": _union("A frame the client sends: one request.",
                                 (m for m in MESSAGES if m.direction == "request")),
        "server_message": _union("A frame the server sends: a reply (with the request's id) or a push.",
                                 (m for m in MESSAGES if m.direction != "request")),
    }
    defs.update((record.name, record.definition()) for record in RECORDS)
    defs.update((message.name, _message(message)) for message in MESSAGES)
    return {
        "$schema": DIALECT,
        "$id": f"urn:opengme:signalling:{PROTOCOL_VERSION}",
        "title": f"OpenGME signalling protocol {PROTOCOL_VERSION} (docs/protocol.md)",
        "description": "One JSON object per WebSocket text frame on /v1/signal. " + TOLERANCE,
        "anyOf": [{"$ref": "#/$defs/client_message"}, {"$ref": "#/$defs/server_message"}],
        "$defs": defs,
    }


def text() -> str:
    """The document as committed: indented, ASCII only (control characters in patterns are escaped)."""
    return json.dumps(document(), indent=2, ensure_ascii=True) + "\n"


def packaged() -> str:
    """The committed copy shipped with the package."""
    return files("opengme").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def main() -> None:
    sys.stdout.write(text())


if __name__ == "__main__":
    main()
