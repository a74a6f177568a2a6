"""``opengme serve`` as a user runs it: a real process on a free loopback port."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

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
    assert len(lines) == 1 and "cannot listen" in lines[0] and "Traceback" not in result.stderr


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
    assert result.stderr.count("\n") == 1 and "port must be a int" in result.stderr
