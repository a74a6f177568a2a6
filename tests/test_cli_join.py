"""``opengme join`` as a user runs it: real processes against a real ``opengme serve`` on 127.0.0.1."""
from __future__ import annotations

import base64
import errno
import os
import socket
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from opengme.cli.join_cmd import LiveView
from opengme.events import EventType, UserUpdateEvent
from opengme.store import AppStore
from support.audio import tone, write_wav
from support.paths import SPEECH_WAV
from support.processes import ServeProcess, opengme_cmd

APP = "1400000042"


def join(served: ServeProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        opengme_cmd("join", served.dev_app().app_id, "lobby", "--server", served.url, "--data-dir", str(served.data_dir),
                    *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_url() -> str:
    """A loopback URL where nobody listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def join_offline(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``join`` with a local registry and no server: what it checks before it connects."""
    data = tmp_path / "data"
    if not data.exists():
        store = AppStore(data)
        store.create("dev", app_id=APP)
        store.close()
    return subprocess.run(opengme_cmd("join", APP, "lobby", "--openid", "10001", "--duration", "1",
                                      "--data-dir", str(data), "--server", free_url(), *args),
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".wav", ".mp3"])
def test_one_talks_the_other_records(served: ServeProcess, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"heard{suffix}"
    listener = join(served, "--openid", "10002", "--speaker", str(out), "--duration", "7")
    assert listener.stdout is not None
    assert listener.stdout.readline().startswith("room lobby:")  # its first state line: it is in the room
    talker = join(served, "--openid", "10001", "--mic", str(SPEECH_WAV), "--duration", "5")
    talker_out, talker_err = talker.communicate(timeout=30)
    listener_out, listener_err = listener.communicate(timeout=30)
    assert talker.returncode == 0, talker_err
    assert listener.returncode == 0, listener_err
    assert "speaking: 10001" in listener_out  # the plain-line view (stdout is not a terminal)
    assert "others: 10002" in talker_out
    with av.open(str(out)) as container:  # the format the suffix names
        assert container.format.name == suffix[1:]
        stream = container.streams.audio[0]
        assert (stream.channels, stream.rate) == (1, 48000)
        heard = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    if heard.dtype != np.int16:  # the MP3 decoder gives float samples
        heard = heard * 32767
    heard = heard.astype(np.float64)
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


def test_server_as_host_port(served: ServeProcess) -> None:
    bare = served.url.removeprefix("http://")
    ok = join(served, "--openid", "10001", "--duration", "0.5", "--server", bare)
    _, err = ok.communicate(timeout=30)
    assert ok.returncode == 0, err


def test_a_bad_server_address_is_a_usage_error(tmp_path: Path) -> None:
    result = join_offline(tmp_path, "--server", "127.0.0.1:port")
    assert result.returncode == 2
    assert one_line(result) == ("opengme join: --server must be a URL like http://127.0.0.1:8090 "
                                "(or just HOST:PORT), got '127.0.0.1:port'")


def test_no_server_running_says_so(tmp_path: Path) -> None:
    url = free_url()
    result = join_offline(tmp_path, "--server", url)
    assert result.returncode == 1
    line = one_line(result)
    assert "AV_ERR_NET_REQUEST_FALLED (7004)" in line and f"is `opengme serve` running at {url}?" in line


def test_the_speaker_path_is_checked_before_entering(tmp_path: Path) -> None:
    """No server runs here: each refusal comes before any connection, and nothing is left behind."""
    (tmp_path / "out.wav").mkdir()
    (tmp_path / "a-file").write_text("x")
    cases = [
        ("out.wav", f"cannot write out.wav: {os.strerror(errno.EISDIR)}"),
        ("no/such/heard.wav", f"cannot write no/such/heard.wav: {os.strerror(errno.ENOENT)}"),
        ("a-file/heard.wav", f"cannot write a-file/heard.wav: {os.strerror(errno.ENOTDIR)}"),
    ]
    for given, reason in cases:
        result = join_offline(tmp_path, "--speaker", given)
        line = one_line(result)
        assert result.returncode == 1 and "AV_ERR_FILE_CANNOT_ACCESS (7010)" in line and reason in line, line
        assert "--speaker" in line
    unknown = join_offline(tmp_path, "--speaker", "heard.xyz")
    assert unknown.returncode == 1 and ".wav, .flac, .mp3, .ogg, .opus" in one_line(unknown)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "data", "out.wav"]  # no .part files
    assert list((tmp_path / "out.wav").iterdir()) == []


def test_the_mic_file_is_checked_before_entering(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio\n" * 100)
    (tmp_path / "a-file").write_text("x")
    cases = [
        ("missing.wav", "AV_ERR_FILE_CANNOT_ACCESS (7010)", f"cannot read missing.wav: {os.strerror(errno.ENOENT)}"),
        (".", "AV_ERR_FILE_CANNOT_ACCESS (7010)", f"cannot read .: {os.strerror(errno.EISDIR)}"),
        ("a-file/x.wav", "AV_ERR_FILE_CANNOT_ACCESS (7010)", f"cannot read a-file/x.wav: {os.strerror(errno.ENOTDIR)}"),
        ("notes.txt", "AV_ERR_FILE_DAMAGED (7011)", "expected an audio file FFmpeg can decode"),
    ]
    for given, code, reason in cases:
        result = join_offline(tmp_path, "--mic", given)
        line = one_line(result)
        assert result.returncode == 1 and code in line and reason in line and "--mic" in line, line


def test_live_view_follows_members_and_speakers() -> None:
    view = LiveView("10001", "lobby")
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.ENTER, "user_list": ["10002", "10003"]})
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.HAS_AUDIO, "user_list": ["10003"]})
    assert view.state() == ("room lobby: 3 in the room (you: 10001; others: 10002, 10003); speaking: 10003")
    view.apply(EventType.USER_UPDATE, {"event_id": UserUpdateEvent.EXIT, "user_list": ["10003"]})
    view.apply(EventType.CHANGE_ROOM_QUALITY, {"weight": 48, "loss": 0.0, "delay": 3})
    assert view.state().endswith("others: 10002); speaking: nobody") and view.quality == 48


@pytest.mark.slow
@pytest.mark.public_surface
def test_accompany_and_voice_type_flags(served: ServeProcess, tmp_path: Path) -> None:
    """--accompany plays a file into the voice (the listener records its 1000 Hz); a file that is not
    there ends join with 4001 before anything is heard; --accompany needs --mic."""
    out = tmp_path / "heard.wav"
    listener = join(served, "--openid", "10002", "--speaker", str(out), "--duration", "6", "--room-type", "2")
    assert listener.stdout is not None and listener.stdout.readline().startswith("room lobby:")
    silence = write_wav(tmp_path / "silence.wav", tone(100, 10.0, amplitude=0))
    talker = join(served, "--openid", "10001", "--mic", str(silence), "--room-type", "2", "--duration", "4",
                  "--voice-type", "1", "--accompany", str(write_wav(tmp_path / "song.wav", tone(1000, 1.0))))
    assert talker.communicate(timeout=30)[0] and talker.returncode == 0
    assert listener.wait(timeout=30) == 0
    with av.open(str(out)) as container:
        heard = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(heard)) / len(heard)
    freqs = np.fft.rfftfreq(len(heard), 1 / 48000)
    assert spectrum[np.abs(freqs - 1000) < 20].sum() > 20 * spectrum[np.abs(freqs - 3000) < 20].sum()
    missing = join(served, "--openid", "10003", "--mic", str(silence), "--duration", "1",
                   "--accompany", str(tmp_path / "missing.mp3"))
    _, err = missing.communicate(timeout=30)
    assert missing.returncode == 1 and "QAV_ERR_ACC_OPENFILE_FAILED (4001)" in err, err
    no_mic = join_offline(tmp_path, "--accompany", str(silence))
    assert no_mic.returncode == 2 and "--mic" in one_line(no_mic)
