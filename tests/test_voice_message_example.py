"""examples/voice_message.py (shown in the README) runs as printed: a message recorded from real
speech is sent, downloaded by another player and played into a file, which then holds that speech."""
from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from support.audio import align, correlation, resample, speech
from support.paths import REPO, SPEECH_WAV
from support.processes import ServeProcess
from test_example import app_and_key

EXAMPLE = REPO / "examples" / "voice_message.py"


def run_example(*args: str, cwd: Path, url: str = "http://127.0.0.1:9") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**os.environ, "OPENGME_URL": url})


@pytest.mark.slow
def test_the_example_sends_a_message_that_the_other_player_hears(served: ServeProcess, tmp_path: Path) -> None:
    app_id, key = app_and_key(served)
    ran = run_example(app_id, key, "--mic", str(SPEECH_WAV), "--seconds", "3", "--speaker", "heard.wav",
                      cwd=tmp_path, url=served.url)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "PTT_RECORD_COMPLETE: AV_OK message.ogg"
    assert lines[2] == "PTT_UPLOAD_COMPLETE: AV_OK message.ogg"
    assert lines[3].startswith(f"file id: {served.url}/v1/ptt/files/")
    assert lines[4:] == ["PTT_DOWNLOAD_COMPLETE: AV_OK received.ogg", "PTT_PLAY_COMPLETE: AV_OK received.ogg"]
    assert (tmp_path / "received.ogg").read_bytes() == (tmp_path / "message.ogg").read_bytes()
    with wave.open(str(tmp_path / "heard.wav")) as w:
        heard = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, w.getnchannels())[:, 0]
        heard = resample(heard, w.getframerate(), 16_000)
    said = speech()[: 3 * 16_000]
    _, aligned = align(heard, said, 16_000)
    env = [np.sqrt((x.reshape(-1, 320).astype(np.float64) ** 2).mean(axis=1)) for x in (aligned, said)]
    assert correlation(*env) > 0.9


def test_a_bad_key_is_one_line(tmp_path: Path) -> None:
    ran = run_example("1400000000", "abc", "--mic", "default", cwd=tmp_path)
    assert ran.returncode == 1
    assert ran.stderr == ("voice_message.py: AV_ERR_INVALID_ARGUMENT (1004): a permission key must be 16 printable "
                          "ASCII characters\n")


def test_no_server_ends_with_the_upload_code(tmp_path: Path) -> None:
    ran = run_example("1400000000", "a1B2c3D4e5F6g7H8", "--mic", str(SPEECH_WAV), "--seconds", "1.2", cwd=tmp_path)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert "PTT_UPLOAD_COMPLETE: QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL message.ogg" in ran.stdout
