"""``opengme serve`` as a user runs it: a real process on a free loopback port."""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from opengme.cli.serve_cmd import this_program
from support.processes import ServeProcess, opengme_cmd, start_server


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def test_healthz_answers(served: ServeProcess) -> None:
    status, ctype, body = _get(served.url + "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    data = json.loads(body)
    assert data["status"] == "ok" and data["version"]


def test_metrics_are_prometheus_text(served: ServeProcess) -> None:
    status, ctype, body = _get(served.url + "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    lines = body.splitlines()
    assert "opengme_apps 1.0" in lines
    assert any(line.startswith("process_start_time_seconds ") for line in lines)
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)
    assert any(line.startswith("opengme_build_info{") and 'version="' in line for line in lines)


def test_first_start_creates_dev_app_and_says_how_to_go_on(served: ServeProcess) -> None:
    text = "\n".join(served.banner)
    assert "Created app 'dev'" in text
    app_id = text.split("AppID ")[1].split(",")[0]
    assert f"opengme authbuffer gen {app_id} " in text
    listed = subprocess.run(opengme_cmd("app", "list", "--json", "--data-dir", str(served.data_dir)),
                            capture_output=True, text=True, check=True)
    assert [a["app_id"] for a in json.loads(listed.stdout)] == [app_id]
    # The suggested command works as printed (here the server runs as `python -m opengme`).
    tried = next(line for line in served.banner if line.startswith("Try: ")).removeprefix("Try: ")
    assert tried.split()[1:4] == ["-m", "opengme", "authbuffer"]
    assert Path(tried.split()[0]).absolute() == Path(sys.executable).absolute()
    result = subprocess.run(shlex.split(tried), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and base64.b64decode(result.stdout.strip(), validate=True)


def test_the_hint_names_the_program_as_it_can_be_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    program = venv_bin / "opengme"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/opengme", "serve"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert this_program() == ".venv/bin/opengme"  # `make serve`: not on PATH, so the path as typed
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert this_program() == "opengme"  # the venv is active: the bare name runs the same program
    monkeypatch.setattr(sys, "argv", [str(program), "serve"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert this_program() == "opengme"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert this_program() == str(program)


def test_second_start_creates_no_new_app(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    assert first.stop() == 0
    second = start_server(tmp_path)
    try:
        assert not any("Created app" in line for line in second.banner)
    finally:
        second.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(tmp_path: Path, sig: int) -> None:
    server = start_server(tmp_path)
    assert server.stop(sig) == 0


def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(opengme_cmd("serve", "--port", str(port), "--data-dir", str(tmp_path)),
                                capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"opengme serve: cannot listen on 127.0.0.1:{port}: ")
    assert lines[0].endswith(f"port {port} is from --port: pick another with --port N, `port = N` in opengme.toml "
                             "or OPENGME_PORT=N (0 picks a free port)")


def test_settings_from_toml_and_environment(tmp_path: Path) -> None:
    (tmp_path / "opengme.toml").write_text('[server]\nhost = "127.0.0.1"\nport = 1\n')
    # The environment beats the file, and the command line beats both (port 0 = free port).
    server = start_server(tmp_path / "data", "--config", str(tmp_path / "opengme.toml"),
                          env={"OPENGME_LOG_LEVEL": "warning"})
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert _get(server.url + "/healthz")[0] == 200
    finally:
        server.stop()


def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("port = 'eighty'\n")
    result = subprocess.run(opengme_cmd("serve", "--config", str(tmp_path / "bad.toml"),
                                        "--data-dir", str(tmp_path)), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr == f"opengme serve: {tmp_path / 'bad.toml'}: port must be a whole number, got 'eighty'\n"


@pytest.mark.parametrize("where", ["file", "environment", "flag"])
def test_an_unknown_log_level_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "opengme.toml").write_text('log_level = "verbose"\n' if where == "file" else "")
    env = {**os.environ, **({"OPENGME_LOG_LEVEL": "verbose"} if where == "environment" else {})}
    flags = ["--log-level", "verbose"] if where == "flag" else []
    result = subprocess.run(opengme_cmd("serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *flags),
                            capture_output=True, text=True, timeout=20, env=env, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    place = {"file": "opengme.toml: log_level", "environment": "OPENGME_LOG_LEVEL", "flag": "--log-level"}[where]
    assert result.stderr == (f"opengme serve: {place} must be one of debug, info, warning, error, "
                             "got 'verbose'\n")
    assert not (tmp_path / "data").exists()


def test_text_logs_for_people(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--log-format", "text", stderr=subprocess.PIPE)
    assert server.stop() == 0
    assert server.proc.stderr is not None
    lines = server.proc.stderr.read().splitlines()
    listening = next(line for line in lines if "opengme.server: listening" in line)
    assert re.fullmatch(r"\S+Z INFO opengme\.server: listening url=http://127\.0\.0\.1:\d+ .*", listening)
    assert not any(line.startswith("{") for line in lines)
