"""``opengme message record/send/get/play`` as a person types them, against a real server process:
real speech recorded from a file, sent, fetched by another openid and played into a WAV file."""
from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from opengme.errors import ErrorCode
from support.audio import clip
from support.processes import ServeProcess, opengme_cmd


def run(*args: str, served: ServeProcess | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--server", served.url, "--data-dir", str(served.data_dir)] if served is not None else []
    return subprocess.run(opengme_cmd(*args, *extra), capture_output=True, text=True, timeout=60)


def speech_wav(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(clip(seconds).astype(np.int16).tobytes())
    return path


@pytest.mark.slow
def test_record_send_get_play(served: ServeProcess, tmp_path: Path) -> None:
    app = served.dev_app()
    recorded = tmp_path / "hello.ogg"
    rec = run("message", "record", str(recorded), "--mic", str(speech_wav(tmp_path / "said.wav", 2.0)))
    assert rec.returncode == 0, rec.stderr
    assert rec.stdout.startswith(f"recorded {recorded}: 2.0 s, ") or rec.stdout.startswith(f"recorded {recorded}: 1.9 s")
    sent = run("message", "send", app.app_id, str(recorded), "--openid", "10001", served=served)
    assert sent.returncode == 0, sent.stderr
    file_id = sent.stdout.strip()
    assert file_id.startswith(served.url + "/v1/ptt/files/")
    got = tmp_path / "got.ogg"
    fetched = run("message", "get", file_id, str(got), "--openid", "10002", served=served)
    assert fetched.returncode == 0, fetched.stderr
    assert got.read_bytes() == recorded.read_bytes()
    heard = tmp_path / "heard.wav"
    played = run("message", "play", str(got), "--speaker", str(heard))
    assert played.returncode == 0, played.stderr
    assert played.stdout.strip().startswith(f"played {got} (")
    with wave.open(str(heard)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert np.sqrt((pcm.astype(np.float64) ** 2).mean()) > 300  # speech was played, not silence


def test_errors_are_one_line(served: ServeProcess, tmp_path: Path) -> None:
    app = served.dev_app()
    missing = run("message", "send", app.app_id, str(tmp_path / "missing.ogg"), "--openid", "10001", served=served)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"opengme message: QAVPTTERROR_UPLOAD_FILE_ACCESSERROR "
                                     f"({int(ErrorCode.QAVPTTERROR_UPLOAD_FILE_ACCESSERROR)}): ")
    assert len(missing.stderr.splitlines()) == 1
    unknown = run("message", "get", served.url + "/v1/ptt/files/" + "0" * 64, str(tmp_path / "x.ogg"),
                  "--openid", "10002", served=served)
    assert unknown.returncode == 1 and "QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR (12292)" in unknown.stderr
    nowhere = run("message", "record", str(tmp_path / "no" / "x.ogg"), "--mic", str(tmp_path / "said.wav"))
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    short = run("message", "record", str(tmp_path / "x.ogg"), "--mic", "default", "--seconds", "0.5")
    assert short.returncode == 2 and "--seconds must be more than 1" in short.stderr
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(b"OggS" + bytes(100))
    play = run("message", "play", str(damaged), "--speaker", str(tmp_path / "heard.wav"))
    assert play.returncode == 1 and "AV_ERR_FILE_DAMAGED (7011)" in play.stderr
