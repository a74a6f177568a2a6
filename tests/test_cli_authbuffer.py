"""``opengme authbuffer gen|verify`` as a real subprocess against a registry in tmp_path."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opengme.authbuffer import V1, decode_auth_buffer, gen_auth_buffer
from opengme.store import AppStore

APP, KEY = "1400000042", "K3yK3yK3yK3yK3y!"
OTHER_APP, OTHER_KEY = "1400000043", "AnotherKey16chrs"


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opengme", "authbuffer", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    store = AppStore(tmp_path)
    store.create("other", app_id=OTHER_APP, key=OTHER_KEY)  # listed first: v1 search must skip its key
    store.create("shooter", app_id=APP, key=KEY)
    store.close()
    return tmp_path


def assert_7006(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "AV_ERR_AUTH_FIALD (7006)" in lines[0] and reason in lines[0], lines
    assert KEY not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("v1", [True, False])
def test_gen_then_verify(data_dir: Path, v1: bool) -> None:
    gen = run(data_dir, "gen", APP, "10001", "--room", "lobby", "--ttl", "600", *(["--v1"] if v1 else []))
    assert gen.returncode == 0, gen.stderr
    text = gen.stdout.strip()
    assert len(gen.stdout.splitlines()) == 1
    claims = decode_auth_buffer(base64.b64decode(text, validate=True), KEY)  # standard base64 of the buffer
    assert claims.version == (1 if v1 else 2)
    assert abs(claims.expire - (time.time() + 600)) < 30

    ok = run(data_dir, "verify", text, "--room", "lobby", "--openid", "10001")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"version": claims.version, "app_id": APP, "open_id": "10001",
                                     "room_id": "lobby", "expire": claims.expire}

    assert_7006(run(data_dir, "verify", text, "--room", "other-room"),
                "AuthBuffer was made for room 'lobby' but the entry is for room 'other-room'")
    assert_7006(run(data_dir, "verify", text, "--openid", "20002"), "AuthBuffer is for openid '10001', not '20002'")
    assert_7006(run(data_dir, "verify", text, "--room", ""), "entry is for voice messages (empty room id)")


def test_gen_takes_a_privilege_map(data_dir: Path) -> None:
    """--auth-bits: a player's buffer without the room-manager bit (0x100); a bad map is a usage error,
    and GME's v1 format (no MAC; decoding insists on the full map) refuses any other map."""
    gen = run(data_dir, "gen", APP, "10001", "--room", "lobby", "--auth-bits", "0xff")
    assert gen.returncode == 0, gen.stderr
    assert decode_auth_buffer(base64.b64decode(gen.stdout.strip()), KEY).auth_bits == 0xFF
    bad = run(data_dir, "gen", APP, "10001", "--auth-bits", "0x1FFFFFFFF")
    assert bad.returncode == 2 and "--auth-bits" in bad.stderr and bad.stdout == ""
    v1 = run(data_dir, "gen", APP, "10001", "--auth-bits", "0xff", "--v1")
    assert v1.returncode == 2 and "v1 format carries only the full privilege map" in v1.stderr


def test_verify_accepts_a_raw_v2_token_and_gme_style_v1(data_dir: Path) -> None:
    token = gen_auth_buffer(APP, "", "7", KEY, ttl=60).decode()
    assert json.loads(run(data_dir, "verify", token).stdout)["room_id"] == ""
    legacy = base64.b64encode(gen_auth_buffer(APP, "", "7", KEY, 2_100_000_000, version=V1)).decode()
    assert json.loads(run(data_dir, "verify", legacy, "--app-id", APP).stdout)["expire"] == 2_100_000_000


def test_verify_failures(data_dir: Path) -> None:
    expired = base64.b64encode(gen_auth_buffer(APP, "r", "7", KEY, 1_000_000_000, version=V1)).decode()
    assert_7006(run(data_dir, "verify", expired), "AuthBuffer expired at 2001-09-09T01:46:40Z")
    foreign = base64.b64encode(gen_auth_buffer(APP, "r", "7", "NotInTheRegistry", ttl=60, version=V1)).decode()
    assert_7006(run(data_dir, "verify", foreign), "not signed with the key of any app in the registry")
    token = base64.b64encode(gen_auth_buffer(APP, "r", "7", KEY, ttl=60)).decode()
    assert_7006(run(data_dir, "verify", token, "--app-id", OTHER_APP), f"AuthBuffer is for AppID {APP}, not {OTHER_APP}")
    unknown = gen_auth_buffer("1400000099", "r", "7", KEY, ttl=60).decode()
    assert_7006(run(data_dir, "verify", unknown), "AppID 1400000099 is not in this server's registry")
    assert_7006(run(data_dir, "verify", "AAAA"), "AuthBuffer is 3 bytes")


def test_gen_errors_are_one_line_exit_2(data_dir: Path, tmp_path: Path) -> None:
    for args, needle in (
        (("gen", "1400000099", "1"), "no app with AppID 1400000099"),
        (("gen", APP, "1", "--room", "r" * 128), "AV_ERR_INVALID_ARGUMENT (1004)"),
    ):
        result = run(data_dir, *args)
        assert result.returncode == 2 and needle in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    missing = run(tmp_path / "nowhere", "gen", APP, "1")
    assert missing.returncode == 2 and "no app registry" in missing.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("ttl", ["0", "-5", "1.5", "soon"])
def test_gen_refuses_a_ttl_that_is_not_a_positive_whole_number(data_dir: Path, ttl: str) -> None:
    result = run(data_dir, "gen", APP, "10001", "--ttl", ttl)
    assert result.returncode == 2 and result.stdout == ""
    assert f"--ttl must be a positive whole number of seconds, got '{ttl}'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
