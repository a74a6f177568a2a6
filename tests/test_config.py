"""Settings precedence: defaults < opengme.toml < OPENGME_* < command line."""
from __future__ import annotations

from pathlib import Path

import pytest

from opengme.config import ConfigError, Settings, load_settings


def test_defaults_are_gmes_documented_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert (s.host, s.port, s.entry_timeout, s.member_timeout, s.reconnect_give_up) == (
        "127.0.0.1", 8090, 30.0, 90.0, 3600.0)


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "o.toml"
    cfg.write_text("port = 9000\nmember_timeout = 10\nmax_rooms = 3\n")
    s = load_settings(cfg, environ={"OPENGME_PORT": "9100", "OPENGME_MAX_ROOMS": "4", "OTHER": "x"},
                      overrides={"port": 9200, "host": None})
    assert (s.port, s.member_timeout, s.max_rooms, s.host) == (9200, 10.0, 4, "127.0.0.1")
    assert isinstance(s.data_dir, Path)


@pytest.mark.parametrize("text,needle", [
    ("port = 70000", "port must be 0-65535"),
    ("colour = 'red'", "unknown setting 'colour'"),
    ("entry_timeout = -1", "must not be negative"),
    ("port = [", "not valid TOML"),
])
def test_bad_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "o.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(cfg, environ={})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_defaults_object() -> None:
    assert Settings().max_message_bytes == 65536
