"""Settings precedence (defaults < opengme.toml < OPENGME_* < command line) and the rules every source obeys."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from opengme.config import ConfigError, Settings, load_settings, resolve_settings, server_url


def test_defaults_are_gmes_documented_timings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={})
    assert (s.host, s.port, s.entry_timeout, s.member_timeout, s.reconnect_give_up) == (
        "127.0.0.1", 8090, 30.0, 90.0, 3600.0)
    assert (s.log_level, s.log_format) == ("info", "json")


def test_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "o.toml"
    cfg.write_text("port = 9000\nmember_timeout = 10\nmax_rooms = 3\n")
    s = load_settings(cfg, environ={"OPENGME_PORT": "9100", "OPENGME_MAX_ROOMS": "4", "OTHER": "x"},
                      overrides={"port": 9200, "host": None})
    assert (s.port, s.member_timeout, s.max_rooms, s.host) == (9200, 10.0, 4, "127.0.0.1")
    assert isinstance(s.data_dir, Path)


def test_origins_say_where_each_setting_came_from(tmp_path: Path) -> None:
    cfg = tmp_path / "o.toml"
    cfg.write_text("[server]\nport = 9000\nmember_timeout = 10\n")
    resolved = resolve_settings(cfg, environ={"OPENGME_MEMBER_TIMEOUT": "12.5"}, overrides={"log_level": "debug"})
    assert resolved.settings.member_timeout == 12.5 and resolved.settings.port == 9000
    assert resolved.config_file == cfg
    assert resolved.origins["port"] == f"{cfg} [server]"
    assert resolved.origins["member_timeout"] == "OPENGME_MEMBER_TIMEOUT"
    assert resolved.origins["log_level"] == "--log-level"
    assert resolved.origins["host"] == "default"
    assert set(resolved.origins) == set(Settings.__dataclass_fields__)


@pytest.mark.parametrize("text,needle", [
    ("port = 70000", "port must be 0-65535, got 70000"),
    ("colour = 'red'", "unknown setting 'colour'"),
    ("prot = 1", "unknown setting 'prot' (did you mean 'port'?)"),
    ("entry_timeout = -1", "entry_timeout must not be negative"),
    ("port = [", "not valid TOML"),
    ("port = 8095.9", "port must be a whole number, got 8095.9"),
    ("port = 'eighty'", "port must be a whole number, got 'eighty'"),
    ("port = true", "port must be a whole number, got True"),
    ("member_timeout = 'soon'", "member_timeout must be a number of seconds, got 'soon'"),
    ("host = 1", "host must be a string, got 1"),
    ("log_level = 'verbose'", "log_level must be one of debug, info, warning, error, got 'verbose'"),
    ("log_format = 'xml'", "log_format must be one of json, text, got 'xml'"),
    ("[logging]\nlevel = 'info'", "unknown setting 'logging'"),
    ("[serverr]\nport = 1", "unknown setting 'serverr' (did you mean 'server'?)"),
    ("server = 1", "'server' must be a table ([server]), got 1"),
    ("port = 1\n[server]\nport = 2", "port is set both at the top level and in [server]"),
])
def test_bad_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "o.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert needle in str(err.value) and str(cfg) in str(err.value)
    assert "a int" not in str(err.value)


@pytest.mark.parametrize("environ,needle", [
    ({"OPENGME_PORT": "abc"}, "OPENGME_PORT must be a whole number, got 'abc'"),
    ({"OPENGME_PORT": "8095.9"}, "OPENGME_PORT must be a whole number, got '8095.9'"),
    ({"OPENGME_LOG_LEVEL": "verbose"}, "OPENGME_LOG_LEVEL must be one of debug, info, warning, error"),
    ({"OPENGME_ENTRY_TIMEOUT": "nan"}, "OPENGME_ENTRY_TIMEOUT must be a number of seconds, got 'nan'"),
    ({"OPENGME_PROT": "9000"}, "OPENGME_PROT is not a setting (did you mean OPENGME_PORT?)"),
])
def test_bad_environment_names_the_variable(environ: dict[str, str], needle: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_settings(environ=environ)
    assert needle in str(err.value)


def test_environment_variables_of_the_clients_are_not_settings(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={"OPENGME_URL": "http://127.0.0.1:9", "OPENGME_TEST_IMPAIR": "loss=0.1"})
    assert s == Settings()


def test_values_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(environ={"OPENGME_LOG_LEVEL": "DEBUG", "OPENGME_PORT": " 9001 ", "OPENGME_LOG_FORMAT": "Text"})
    assert (s.log_level, s.port, s.log_format) == ("debug", 9001, "text")
    integral = tmp_path / "o.toml"
    integral.write_text("entry_timeout = 5\n")  # an integer where seconds are asked for is fine
    assert load_settings(integral, environ={}).entry_timeout == 5.0


def test_command_line_values_are_checked_like_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("--port must be a whole number, got '80.5'")):
        load_settings(environ={}, overrides={"port": "80.5"})
    with pytest.raises(ConfigError, match="--log-level must be one of"):
        load_settings(environ={}, overrides={"log_level": "verbose"})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_defaults_object() -> None:
    assert Settings().max_message_bytes == 65536


@pytest.mark.parametrize("given,url", [
    ("127.0.0.1:8090", "http://127.0.0.1:8090"),
    ("localhost:9000/", "http://localhost:9000"),
    ("http://127.0.0.1:8090/", "http://127.0.0.1:8090"),
    ("https://voice.example.com", "https://voice.example.com"),
    ("[::1]:8090", "http://[::1]:8090"),
])
def test_server_url_accepts_host_port(given: str, url: str) -> None:
    assert server_url(given, "--server") == url


@pytest.mark.parametrize("given", ["ftp://host:1", "http://", "127.0.0.1:port", "", "http://host:99999"])
def test_server_url_refuses_the_rest(given: str) -> None:
    with pytest.raises(ConfigError, match=r"--server must be a URL like http://127.0.0.1:8090 \(or just HOST:PORT\)"):
        server_url(given, "--server")
