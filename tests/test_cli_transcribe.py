"""`opengme transcribe` and `opengme say`: real files in, text or a voice message out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from opengme.cli import main, transcribe_cmd
from opengme.codec.voicefile import encode_voice_file, voice_file_duration_ms
from support.speech import JOHN, JOHN_WORDS, read_wav, words


def test_an_ogg_opus_file_is_transcribed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ogg = encode_voice_file(tmp_path / "john.ogg", read_wav(JOHN))
    assert main(["transcribe", str(ogg), "--language", "en-US"]) == 0
    out, err = capsys.readouterr()
    assert words(out) >= JOHN_WORDS and err == ""


def test_a_long_file_shows_progress_on_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(transcribe_cmd, "PROGRESS_AFTER_S", 5.0)
    assert main(["transcribe", str(JOHN)]) == 0
    out, err = capsys.readouterr()
    assert words(out) >= JOHN_WORDS
    assert "transcribing sense_and_sensibility_01_austen_64kb-0870.wav:" in err and "7 of 7 s" in err


@pytest.mark.parametrize(("make", "status", "fragment"), [
    (lambda d: d / "missing.wav", 1, "cannot read"),
    (lambda d: (d / "notes.txt").write_text("not audio") and d / "notes.txt", 1, "not a readable audio file"),
])
def test_a_bad_file_is_one_line(tmp_path: Path, make, status: int, fragment: str) -> None:
    run = subprocess.run([sys.executable, "-m", "opengme", "transcribe", str(make(tmp_path))],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == status and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("opengme transcribe: ") and fragment in run.stderr


def test_an_unsupported_language_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(JOHN), "--language", "de-DE"]) == 1
    assert "'de-DE' is not supported by any installed engine; supported: en-US" in capsys.readouterr().err


def test_say_writes_a_voice_message_that_transcribes_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "said.ogg"
    assert main(["say", "The soldiers walked to the castle in the morning.", str(out), "--rate", "0.9"]) == 0
    assert 2000 < voice_file_duration_ms(out) < 6000
    assert main(["transcribe", str(out)]) == 0
    assert "soldiers" in words(capsys.readouterr().out)


def test_say_refuses_a_bad_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["say", "hello", str(tmp_path / "x.ogg"), "--rate", "2"]) == 2
    assert "outside 0.6–1.5" in capsys.readouterr().err and not (tmp_path / "x.ogg").exists()
