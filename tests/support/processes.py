"""A real ``opengme serve`` process on a free loopback port, and the command line to run others."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from opengme.store import App, AppStore

_LISTENING = re.compile(r"OpenGME listening on (http://\S+)")


@dataclass
class ServeProcess:
    """A running ``opengme serve`` subprocess and what it printed at start."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[str]
    banner: list[str]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def dev_app(self) -> App:
        """The ``dev`` app ``serve`` created on its first start (the only one unless a test adds more)."""
        store = AppStore(self.data_dir)
        try:
            return store.list()[0]
        finally:
            store.close()


def opengme_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "opengme", *args]


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None,
                 port: int = 0, timeout: float = 20.0, stderr: int = subprocess.DEVNULL,
                 command: list[str] | None = None, cwd: Path | None = None) -> ServeProcess:
    """Start ``opengme serve`` (or ``command``) and wait for its "listening" line (the port is the one it
    picked). ``stderr=subprocess.PIPE`` keeps the log lines to read after ``stop``."""
    proc = subprocess.Popen(
        [*(command or opengme_cmd("serve")), "--port", str(port), "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    banner: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line.rstrip("\n"))
        match = _LISTENING.search(line)
        if match:  # the listening line is the banner's last
            return ServeProcess(url=match.group(1), data_dir=data_dir, proc=proc, banner=banner)
    proc.kill()
    raise RuntimeError(f"opengme serve did not start: {banner}")
