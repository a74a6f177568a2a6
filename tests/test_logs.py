"""Log lines: JSON objects for machines (the default), plain text for people."""
from __future__ import annotations

import json
import logging
import sys

import pytest

from opengme.logs import JsonFormatter, TextFormatter, fields, setup_logging


def _record(message: str, **values: object) -> logging.LogRecord:
    record = logging.LogRecord("opengme.server", logging.WARNING, __file__, 1, message, None, None)
    record.created = 1_700_000_000.25
    record.msecs = 250.0
    record.__dict__.update(fields(**values))
    return record


def test_json_lines_carry_the_fields() -> None:
    entry = json.loads(JsonFormatter().format(_record("entry refused", code=7006, openid="10001")))
    assert entry == {"ts": "2023-11-14T22:13:20.250Z", "level": "warning", "logger": "opengme.server",
                     "msg": "entry refused", "code": 7006, "openid": "10001"}


def test_text_lines_read_like_a_sentence() -> None:
    line = TextFormatter().format(_record("entry refused", code=7006, room="the lobby", ok=True))
    assert line == '2023-11-14T22:13:20.250Z WARNING opengme.server: entry refused code=7006 room="the lobby" ok=true'


def test_text_lines_keep_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    assert text.splitlines()[0].endswith("opengme.server: failed") and "RuntimeError: boom" in text


@pytest.mark.parametrize("fmt,formatter", [("json", JsonFormatter), ("text", TextFormatter)])
def test_setup_picks_the_format(fmt: str, formatter: type[logging.Formatter]) -> None:
    setup_logging("debug", fmt)
    root = logging.getLogger("opengme")
    assert root.level == logging.DEBUG and isinstance(root.handlers[0].formatter, formatter)
