"""examples/enter_room.py (shown in the README) runs as printed: two players enter a room and see
each other, one talks from a file while the other records, and bad arguments give one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from support.paths import REPO, SPEECH_WAV
from support.processes import ServeProcess, opengme_cmd

EXAMPLE = REPO / "examples" / "enter_room.py"


def app_and_key(served: ServeProcess) -> tuple[str, str]:
    apps = json.loads(subprocess.run(opengme_cmd("app", "list", "--json", "--data-dir", str(served.data_dir)),
                                     capture_output=True, text=True, check=True).stdout)
    app_id = apps[0]["app_id"]
    key = json.loads(subprocess.run(opengme_cmd("app", "show", app_id, "--data-dir", str(served.data_dir)),
                                    capture_output=True, text=True, check=True).stdout)["key"]
    return app_id, key


def example(*args: str, url: str = "http://127.0.0.1:9") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(EXAMPLE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OPENGME_URL": url})


@pytest.mark.slow
def test_readme_example_prints_member_events(served: ServeProcess) -> None:
    app_id, key = app_and_key(served)
    first = example(app_id, key, "10001", "4", url=served.url)
    assert first.stdout is not None
    assert first.stdout.readline().startswith("ENTER_ROOM")  # in the room before the second arrives
    second = example(app_id, key, "10002", "1", url=served.url)
    out_second, _ = second.communicate(timeout=30)
    out_first, _ = first.communicate(timeout=30)
    assert "ENTER_ROOM {'result': <ErrorCode.AV_OK: 0>" in out_second
    assert "'user_list': ['10002', '10001']" in out_second  # yourself (as GME), then who was there
    assert "'event_id': <UserUpdateEvent.ENTER: 1>, 'user_list': ['10002']" in out_first
    assert "'event_id': <UserUpdateEvent.EXIT: 2>, 'user_list': ['10002']" in out_first
    assert "CHANGE_ROOM_QUALITY {'weight': " in out_first
    assert "EXIT_ROOM" in out_first and first.returncode == 0


@pytest.mark.slow
def test_the_example_talks_and_records_once_in_the_room(served: ServeProcess, tmp_path: Path) -> None:
    app_id, key = app_and_key(served)
    heard = tmp_path / "heard.mp3"
    listener = example(app_id, key, "10002", "8", "--speaker", str(heard), url=served.url)
    talker = example(app_id, key, "10001", "6", "--mic", str(SPEECH_WAV), url=served.url)
    talked, talk_err = talker.communicate(timeout=30)
    listened, listen_err = listener.communicate(timeout=30)
    assert talker.returncode == 0 and listener.returncode == 0, talk_err + listen_err
    # enable_* answer AV_OK because they come after ENTER_ROOM (right after enter_room they give 1201).
    lines = talked.splitlines()
    assert lines[0].startswith("ENTER_ROOM {'result': <ErrorCode.AV_OK: 0>") and lines[1] == "enable_mic AV_OK"
    assert "enable_speaker AV_OK" in listened.splitlines()
    with av.open(str(heard)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    frames = samples[: len(samples) // 960 * 960].reshape(-1, 960)
    assert (np.sqrt((frames ** 2).mean(axis=1)) > 0.01).sum() > 50  # about a second of speech arrived


def test_no_arguments_print_the_usage() -> None:
    result = example()
    _, err = result.communicate(timeout=30)
    assert result.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[0].startswith("usage: enter_room.py ")
    assert err.splitlines()[-1] == "enter_room.py: error: the following arguments are required: APPID, KEY"


def test_a_bad_key_is_one_line() -> None:
    result = example("1400000000", "abc")
    _, err = result.communicate(timeout=30)
    assert result.returncode == 1
    assert err == ("enter_room.py: AV_ERR_INVALID_ARGUMENT (1004): a permission key must be 16 printable "
                   "ASCII characters\n")
