"""``opengme app …`` against the data directory of a running server."""
from __future__ import annotations

import json
import subprocess

from support.processes import ServeProcess, opengme_cmd


def _run(served: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(opengme_cmd(*args, "--data-dir", str(served.data_dir)),
                          capture_output=True, text=True, timeout=20)


def test_app_lifecycle_on_a_running_servers_data_dir(served: ServeProcess) -> None:
    created = _run(served, "app", "create", "shooter", "--app-id", "1400000042", "--key", "K3yK3yK3yK3yK3y!")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["key"] == "K3yK3yK3yK3yK3y!"
    shown = json.loads(_run(served, "app", "show", "1400000042").stdout)
    assert shown["name"] == "shooter" and shown["voice"] is True
    changed = _run(served, "app", "set", "1400000042", "--voice", "off", "--arrears", "--stt", "off")
    assert changed.returncode == 0
    data = json.loads(changed.stdout)
    assert (data["voice"], data["arrears"], data["stt"], data["ptt"]) == (False, True, False, True)
    assert "key" not in data
    rotated = json.loads(_run(served, "app", "rotate-key", "1400000042").stdout)
    assert rotated["key"] != "K3yK3yK3yK3yK3y!" and len(rotated["key"]) == 16
    listing = _run(served, "app", "list").stdout
    assert "1400000042" in listing and "shooter" in listing and rotated["key"] not in listing


def test_app_errors_are_one_line_exit_2(served: ServeProcess) -> None:
    for args in (("app", "show", "999"), ("app", "create", "x", "--key", "short"),
                 ("app", "set", "999", "--voice", "on"), ("app", "set", "1400000000"),
                 ("app", "set", "1", "--voice", "maybe"), ("app", "frobnicate")):
        result = _run(served, *args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, args


def test_help_describes_every_command() -> None:
    result = subprocess.run(opengme_cmd("--help"), capture_output=True, text=True, check=True)
    for command in ("serve", "app", "authbuffer", "errors"):
        assert command in result.stdout
    sub = subprocess.run(opengme_cmd("app", "set", "--help"), capture_output=True, text=True, check=True)
    assert "7005" in sub.stdout and "7012" in sub.stdout


def test_output_into_a_closed_pipe_is_quiet() -> None:
    """`opengme errors 7006 | head -1`: no traceback when the reader goes away."""
    proc = subprocess.Popen(opengme_cmd("errors", "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first write
    assert proc.wait(timeout=20) == 141
    assert proc.stderr.read() == b""
