"""The README's example runs as printed: two players enter a room and see each other."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from support.paths import REPO
from support.processes import ServeProcess, opengme_cmd

EXAMPLE = REPO / "examples" / "enter_room.py"


@pytest.mark.slow
def test_readme_example_prints_member_events(served: ServeProcess) -> None:
    apps = json.loads(subprocess.run(opengme_cmd("app", "list", "--json", "--data-dir", str(served.data_dir)),
                                     capture_output=True, text=True, check=True).stdout)
    app_id = apps[0]["app_id"]
    key = json.loads(subprocess.run(opengme_cmd("app", "show", app_id, "--data-dir", str(served.data_dir)),
                                    capture_output=True, text=True, check=True).stdout)["key"]
    env = {**os.environ, "OPENGME_URL": served.url}
    first = subprocess.Popen([sys.executable, str(EXAMPLE), app_id, key, "10001", "4"],
                             stdout=subprocess.PIPE, text=True, env=env)
    time.sleep(1.5)
    second = subprocess.run([sys.executable, str(EXAMPLE), app_id, key, "10002", "1"],
                            capture_output=True, text=True, env=env, timeout=30)
    out_first, _ = first.communicate(timeout=30)
    assert "ENTER_ROOM {'result': <ErrorCode.AV_OK: 0>" in second.stdout
    assert "'user_list': ['10002', '10001']" in second.stdout  # yourself (as GME), then who was there
    assert "'event_id': <UserUpdateEvent.ENTER: 1>, 'user_list': ['10002']" in out_first
    assert "'event_id': <UserUpdateEvent.EXIT: 2>, 'user_list': ['10002']" in out_first
    assert "EXIT_ROOM" in out_first and first.returncode == 0
