"""examples/cluster/run-local.sh (shown in the README's "Running a cluster") runs as printed: nodes
on consecutive ports sharing one Redis and one PostgreSQL, all stopped by one Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from support.cluster import free_port, postgres_database
from support.redis_server import redis_prefix

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cluster" / "run-local.sh"
LISTENING = re.compile(r"\[node(\d+)\] OpenGME listening on (http://\S+)")


def _two_free_ports() -> int:
    """A base port whose next one is free too (the script numbers nodes from it)."""
    for _ in range(50):
        base = free_port()
        if base < 65535:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + 1))
                return base
            except OSError:
                continue
    pytest.skip("no two consecutive free ports")


def test_the_local_cluster_script_starts_nodes_that_share_the_cluster_and_stops_them(tmp_path: Path) -> None:
    with redis_prefix() as redis_url, postgres_database() as database_url:
        base = _two_free_ports()
        env = {**os.environ, "OPENGME_REDIS_URL": redis_url, "OPENGME_DATABASE_URL": database_url,
               "BASE_PORT": str(base), "DATA_ROOT": str(tmp_path / "cluster"),
               "OPENGME": str(Path(sys.executable).with_name("opengme"))}
        proc = subprocess.Popen([str(SCRIPT), "2"], stdout=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        try:
            deadline = time.monotonic() + 40
            while len(urls) < 2 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                found = LISTENING.search(line)
                if found:
                    urls[found.group(1)] = found.group(2)
            assert urls == {"0": f"http://127.0.0.1:{base}", "1": f"http://127.0.0.1:{base + 1}"}
            for url in urls.values():
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as reply:
                    assert json.load(reply)["status"] == "ok"
            logs = [(tmp_path / "cluster" / f"node{i}" / "server.log").read_text() for i in range(2)]
            assert all("joined cluster" in log for log in logs)
            assert len(_nodes_of(tmp_path)) == 2
        finally:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            assert proc.wait(timeout=20) == 0 or proc.returncode in (130, -signal.SIGINT)
        assert _nodes_of(tmp_path) == [], "a node outlived the script"


def _nodes_of(tmp_path: Path) -> list[str]:
    """Pids of the ``opengme serve`` processes whose data directory is under ``tmp_path``."""
    found = subprocess.run(["pgrep", "-f", "--", f"serve .*--data-dir {tmp_path}"], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.split()


def test_the_local_cluster_script_refuses_a_node_count_that_is_not_a_number() -> None:
    refused = subprocess.run([str(SCRIPT), "three"], capture_output=True, text=True, timeout=10)
    assert refused.returncode == 2
    assert "usage:" in refused.stderr and "'three'" in refused.stderr
