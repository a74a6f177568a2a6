"""Load test of a real ``opengme serve`` on 127.0.0.1 with ``opengme loadtest --baseline``: the figures
in the README's "Load testing" section (join rate, entry latency, forwarded rate, loss, end-to-end
latency, and the relay's CPU per forwarded packet against a bare UDP forwarder in the same run).

Starts the server in a temporary data directory with the per-address caps off (every simulated
member comes from 127.0.0.1), runs the load tester as a user would, prints its report and stops.
``--workers 1,2`` runs it once per relay mode (``opengme serve --workers N``), same parameters, the
bare-forwarder baseline with the first only: the README's workers comparison.

    python bench/bench_loadtest.py [--rooms 50] [--members 5] [--speakers 5] [--duration 10] [--plot out.png]
                                   [--workers 1,2]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

LISTENING = re.compile(r"OpenGME listening on (http://\S+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="50")
    parser.add_argument("--members", default="5")
    parser.add_argument("--speakers", default="5")
    parser.add_argument("--duration", default="10")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--workers", default="1", help="comma-separated relay process counts, one run each")
    args = parser.parse_args()
    status = 0
    for index, workers in enumerate(args.workers.split(",")):
        print(f"--- opengme serve --workers {workers}", flush=True)
        status = status or run(args, workers.strip(), baseline=index == 0)
    sys.exit(status)


def run(args: argparse.Namespace, workers: str, baseline: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        env = {**os.environ, "OPENGME_MAX_IP_CONNECTIONS": "0", "OPENGME_MAX_IP_ENTRY_RATE": "0"}
        server = subprocess.Popen([sys.executable, "-m", "opengme", "serve", "--port", "0", "--data-dir", data,
                                   "--workers", workers, "--log-level", "warning"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            url = None
            for line in server.stdout:
                if (found := LISTENING.search(line)) is not None:
                    url = found.group(1)
                    break
            if url is None:
                sys.exit("opengme serve did not start")
            command = [sys.executable, "-m", "opengme", "loadtest", "--server", url, "--data-dir", data,
                       "--rooms", args.rooms, "--members", args.members, "--speakers", args.speakers,
                       "--duration", args.duration]
            if baseline:
                command.append("--baseline")
            if args.plot is not None:
                command += ["--plot", str(args.plot.with_stem(f"{args.plot.stem}-workers{workers}"))]
            return subprocess.run(command).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)

if __name__ == "__main__":
    main()
