"""``opengme join`` as a user runs it: real processes against a real ``opengme serve`` on 127.0.0.1."""
from __future__ import annotations

import base64
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from opengme.cli.join_cmd import LiveView
from opengme.events import EventType, UserUpdateEvent
from support.paths import SPEECH_WAV
from support.processes import ServeProcess, opengme_cmd


def join(served: ServeProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        opengme_cmd("join", served.dev_app().app_id, "lobby", "--server", served.url, "--data-dir", str(served.data_dir),
                    *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_one_talks_the_other_records(served: ServeProcess, tmp_path: Path) -> None:
    out = tmp_path / "heard.wav"
    listener = join(served, "--openid", "10002", "--speaker", str(out), "--duration", "7")
    time.sleep(1.0)  # the listener is in before the talker starts
    talker = join(served, "--openid", "10001", "--mic", str(SPEECH_WAV), "--duration", "5")
    talker_out, talker_err = talker.communicate(timeout=30)
    listener_out, listener_err = listener.communicate(timeout=30)
    assert talker.returncode == 0, talker_err
    assert listener.returncode == 0, listener_err
    assert "speaking: 10001" in listener_out  # the plain-line view (stdout is not a terminal)
    assert "others: 10002" in talker_out
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, 48000)
        heard = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
    assert len(heard) > 5 * 48000
    frames = heard[: len(heard) // 960 * 960].reshape(-1, 960)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 300  # speech-level 20 ms frames (about -40 dBFS)
    assert loud.sum() > 60  # well over a second of speech energy arrived


def test_errors_are_one_line_with_the_gme_code(served: ServeProcess) -> None:
    forged = base64.b64encode(b"not an auth buffer at all").decode()
    refused = join(served, "--openid", "10001", "--auth-buffer", forged, "--duration", "1")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 1 and err.count("AV_ERR_AUTH_FIALD (7006)") == 1 and err.count("\n") == 1
    usage = join(served, "--openid", "10001", "--auth-buffer", "%%%", "--duration", "1")
    _, err = usage.communicate(timeout=30)
    assert usage.returncode == 2 and "base64" in err
    missing = join(served, "--openid", "10001", "--mic", "/nonexistent/voice.wav", "--duration", "1")
    _, err = missing.communicate(timeout=30)
    assert missing.returncode == 1 and "AV_ERR_FILE_CANNOT_ACCESS (7010)" in err


def test_live_view_follows_members_and_speakers() -> None:
    view = LiveView("10001", "lobby")
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.ENTER, "user_list": ["10002", "10003"]})
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.HAS_AUDIO, "user_list": ["10003"]})
    assert view.state() == ("room lobby: 3 in the room (you: 10001; others: 10002, 10003); speaking: 10003")
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.EXIT, "user_list": ["10003"]})
    view.apply(EventType.CHANGE_ROOM_QUALITY, {"weight": 48, "loss": 0.0, "delay": 3})
    assert view.state().endswith("others: 10002); speaking: nobody") and view.quality == 48
