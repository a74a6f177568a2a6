"""Where the CLI looks for its data and settings: read-only commands never create a registry, global
flags go before or after the subcommand, and ``opengme config`` shows the effective settings."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from opengme.config import Settings
from opengme.store import DB_NAME, AppStore
from support.processes import opengme_cmd

APP, KEY = "1400000042", "K3yK3yK3yK3yK3y!"


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENGME_")}
    return subprocess.run(opengme_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=30,
                          env={**clean, **(env or {})})


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    store = AppStore(tmp_path / "served")
    store.create("shooter", app_id=APP, key=KEY)
    store.close()
    return tmp_path / "served"


READERS = [
    ("app", "list"), ("app", "list", "--json"), ("app", "show", APP), ("app", "set", APP, "--voice", "off"),
    ("app", "rotate-key", APP), ("authbuffer", "gen", APP, "10001"), ("authbuffer", "verify", "AAAA"),
    ("rooms", APP), ("kick", APP, "lobby", "10001"), ("mute", APP, "lobby", "10001"),
    ("join", APP, "lobby", "--openid", "10001", "--duration", "1"),
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_readers_never_create_a_registry_and_say_where_they_looked(tmp_path: Path, args: tuple[str, ...]) -> None:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = run(cwd, *args)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert f"no app registry at {cwd / 'opengme-data' / DB_NAME}" in line  # absolute: where it looked
    assert "data_dir: the default" in line
    for way in ("--data-dir", "data_dir in opengme.toml", "OPENGME_DATA_DIR"):
        assert way in line
    assert list(cwd.iterdir()) == []


def test_the_missing_registry_names_the_source_of_the_data_dir(tmp_path: Path) -> None:
    result = run(tmp_path, "app", "list", env={"OPENGME_DATA_DIR": "typo-data"})
    assert result.returncode == 2 and "data_dir from OPENGME_DATA_DIR" in result.stderr
    assert str(tmp_path / "typo-data" / DB_NAME) in result.stderr and not (tmp_path / "typo-data").exists()


def test_app_create_still_creates_the_registry(tmp_path: Path) -> None:
    created = run(tmp_path, "app", "create", "first")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "opengme-data" / DB_NAME).is_file()


@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_global_flags_go_before_or_after_the_subcommand(registry: Path, tmp_path: Path, where: str) -> None:
    flags = ["--data-dir", str(registry)]
    args = {"before": [*flags, "app", "list"], "between": ["app", *flags, "list"],
            "after": ["app", "list", *flags]}[where]
    result = run(tmp_path, *args, "--json")
    assert result.returncode == 0, result.stderr
    assert [a["app_id"] for a in json.loads(result.stdout)] == [APP]


def test_the_later_global_flag_wins(registry: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "--data-dir", str(tmp_path / "nowhere"), "app", "show", APP, "--data-dir", str(registry))
    assert result.returncode == 0, result.stderr


def test_config_before_the_subcommand(registry: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(f'data_dir = "{registry}"\n')
    result = run(tmp_path, "--config", "mine.toml", "app", "show", APP)
    assert result.returncode == 0 and json.loads(result.stdout)["key"] == KEY


def test_config_prints_every_setting_with_its_origin(tmp_path: Path) -> None:
    (tmp_path / "opengme.toml").write_text("[server]\nport = 9000\n")
    result = run(tmp_path, "config", "--log-level", "debug", env={"OPENGME_MEMBER_TIMEOUT": "12"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "settings file: opengme.toml"
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in lines[2:]}
    assert set(rows) == set(Settings.__dataclass_fields__)
    assert rows["port"] == ["9000", "opengme.toml [server]"]
    assert rows["member_timeout"] == ["12.0", "OPENGME_MEMBER_TIMEOUT"]
    assert rows["log_level"] == ["debug", "--log-level"]
    assert rows["host"] == ["127.0.0.1", "default"]


def test_config_json_and_without_a_file(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "--json", "--port", "0")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["settings file"] is None
    assert data["settings"]["port"] == {"value": 0, "from": "--port"}
    assert data["settings"]["data_dir"] == {"value": "opengme-data", "from": "default"}
    plain = run(tmp_path, "config")
    assert plain.stdout.splitlines()[0] == "settings file: none (no ./opengme.toml here; --config FILE names one)"


def test_config_refuses_what_serve_would_refuse(tmp_path: Path) -> None:
    result = run(tmp_path, "config", env={"OPENGME_PORT": "abc"})
    assert result.returncode == 2
    assert result.stderr == "opengme config: OPENGME_PORT must be a whole number, got 'abc'\n"
