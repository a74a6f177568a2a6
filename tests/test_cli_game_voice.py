"""``opengme join --team --range --position --3d`` and ``opengme rooms`` showing teams and positions,
against a real ``opengme serve``."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from support.paths import SPEECH_WAV
from support.processes import ServeProcess, opengme_cmd
from test_cli_join import join, join_offline, one_line


def rooms(served: ServeProcess) -> str:
    done = subprocess.run(opengme_cmd("rooms", served.dev_app().app_id, "lobby", "--server", served.url,
                                      "--data-dir", str(served.data_dir)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_join_with_team_range_position_and_3d(served: ServeProcess, tmp_path: Path) -> None:
    out = tmp_path / "heard.wav"
    listener = join(served, "--openid", "10002", "--team", "1", "--range", "100", "--position", "0,0,0", "--3d",
                    "--speaker", str(out), "--duration", "7")
    assert listener.stdout is not None and listener.stdout.readline().startswith("room lobby:")
    talker = join(served, "--openid", "10001", "--team", "2", "--range", "100", "--position", "0,5,0",
                  "--mic", str(SPEECH_WAV), "--duration", "5")
    deadline = time.monotonic() + 10
    while "0,5,0" not in (table := rooms(served)) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert "TEAM" in table and "POSITION" in table
    assert lines["10001"].split()[-4:] == ["2", "WORLD", "100", "0,5,0"], table
    assert lines["10002"].split()[-4:] == ["1", "WORLD", "100", "0,0,0"], table
    _, talker_err = talker.communicate(timeout=30)
    _, listener_err = listener.communicate(timeout=30)
    assert talker.returncode == 0 and listener.returncode == 0, (talker_err, listener_err)
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.channels == 2  # 3D voice plays in stereo
        heard = np.concatenate([f.to_ndarray().reshape(-1, 2) if f.format.is_packed else f.to_ndarray().T
                                for f in container.decode(stream)]).astype(np.float64)
    left, right = (float(np.sum(heard[:, ear] ** 2)) for ear in (0, 1))
    assert right > 2 * left > 0, (left, right)  # the talker stands on the listener's right


@pytest.mark.parametrize(("args", "says"), [
    (["--position", "1,2"], "--position must be three numbers"),
    (["--position", "1,nan,2"], "--position must be three numbers"),
    (["--team", "-1"], "--team must be"),
    (["--range", "-5"], "--range must be"),
    (["--3d"], "--3d renders what you hear"),
])
def test_bad_game_voice_flags_are_usage_errors(tmp_path: Path, args: list[str], says: str) -> None:
    done = join_offline(tmp_path, *args)
    assert done.returncode == 2 and says in one_line(done)
