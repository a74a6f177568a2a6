"""`opengme errors`, run as a real process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opengme.errors import search


def opengme_errors(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opengme", "errors", *args],
        cwd=cwd, capture_output=True, text=True, timeout=30, check=False,
    )


def test_value_lookup_prints_the_full_entry(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path, "7006")
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    assert lines[0] == "AV_ERR_AUTH_FIALD (7006)"
    labels = [line.split()[0] for line in lines[1:] if line.startswith("  ") and not line.startswith("   ")]
    assert labels == ["also", "category", "description", "cause", "solution", "seed"]
    assert "Authentication failed" in run.stdout and "AV_ERR_AUTH_FAILED" in run.stdout


def test_value_lookup_shows_corrections_and_both_rows(tmp_path: Path) -> None:
    timeout = opengme_errors(tmp_path, "10004")
    assert timeout.returncode == 0
    assert "description  Timeout" in timeout.stdout and "'Hour'" in timeout.stdout
    twice = opengme_errors(tmp_path, "32775")
    assert "causes       1. " in twice.stdout and "solutions    1. " in twice.stdout
    unwrapped = " ".join(twice.stdout.split())
    assert "2. Streaming speech-to-text converting fails, but recording and upload are successful" in unwrapped


def test_word_search_one_match_is_a_block(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path, "upload", "sign")
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == "QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL (8194)"
    assert "The signature verification failed." in run.stdout


def test_word_search_many_matches_one_line_each(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path, "auth")
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [e.value for e in search("auth")]
    assert any(line.split()[1] == "QAVPTTERROR_S2T_SIGN_CHECK_FAIL" for line in lines)


def test_no_query_lists_every_code(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and len(lines) == 99
    assert lines[0].split()[:2] == ["1001", "AV_ERR_REPEATED_OPERATION"]


def test_json_output_parses(tmp_path: Path) -> None:
    one = json.loads(opengme_errors(tmp_path, "8195", "--json").stdout)
    assert [e["name"] for e in one] == ["QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL"]
    assert len(one[0]["causes"]) == 2 and "](https://" in one[0]["solutions"][0]  # verbatim
    every = json.loads(opengme_errors(tmp_path, "--json").stdout)
    assert len(every) == 99 and {e["category"] for e in every} == {
        "general", "voice_chat_client", "voice_chat_server", "ptt_stt", "audio_effects"}
    timeout = json.loads(opengme_errors(tmp_path, "--json", "timeout", "server").stdout)
    assert [(e["value"], e["corrections"][0]["seed"]) for e in timeout] == [(10004, "Hour")]


def test_unknown_code_is_one_stderr_line_and_status_2(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path, "99999")
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and "99999" in run.stderr


def test_search_without_match_is_one_stderr_line_and_status_2(tmp_path: Path) -> None:
    run = opengme_errors(tmp_path, "no-such", "words")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["opengme errors: no error code matches 'no-such words'"]
