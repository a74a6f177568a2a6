"""``init`` answers 7015 (AV_ERR_SDK_NOT_FULL_UPDATE) for a partially upgraded installation, as GME."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opengme.errors import ErrorCode
from opengme.sdk import Context, selfcheck, session
from support.paths import REPO


@pytest.fixture
def fresh_check() -> Iterator[None]:
    selfcheck.self_check.cache_clear()
    yield
    selfcheck.self_check.cache_clear()


def test_every_sdk_module_carries_the_package_version(fresh_check: None) -> None:
    assert selfcheck.self_check() == ()
    ctx = Context("http://127.0.0.1:9")
    assert ctx.init("1400000001", "10001") == ErrorCode.AV_OK
    ctx.uninit()


def test_a_module_from_another_release_makes_init_return_7015(fresh_check: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "SDK_STAMP", "0.0.9")
    (problem,) = selfcheck.self_check()
    assert "opengme.sdk.session" in problem and "0.0.9" in problem
    ctx = Context("http://127.0.0.1:9")
    assert ctx.init("1400000001", "10001") == ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE
    assert ctx.poll() == ErrorCode.AV_OK  # initialised all the same: 7015 is a warning
    ctx.uninit()


def test_file_hash_matches_what_pip_wrote_into_a_record() -> None:
    dist = importlib.metadata.distribution("aiohttp")
    entries = [f for f in dist.files or () if f.hash is not None and f.suffix == ".py"][:20]
    assert entries
    for entry in entries:
        assert entry.hash is not None
        assert selfcheck.file_hash(Path(dist.locate_file(entry)), entry.hash.mode) == entry.hash.value


INIT_CODE = "from opengme.sdk import Context; import opengme, sys; c = Context('http://127.0.0.1:9'); " \
            "print(int(c.init('1400000001', '10001')), opengme.__file__); c.uninit()"


@pytest.mark.slow
def test_an_edited_file_of_a_wheel_install_is_7015(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here (the build backend comes from PyPI): {build.stderr[-300:]}")
    (wheel,) = (tmp_path / "wheel").glob("opengme-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def init_code() -> str:
        out = subprocess.run([sys.executable, "-c", INIT_CODE], capture_output=True, text=True, env=env,
                             check=True, timeout=60).stdout.split()
        assert Path(out[1]).is_relative_to(site)  # the wheel's copy is the one imported
        return out[0]

    assert init_code() == str(int(ErrorCode.AV_OK))
    original = (site / "opengme" / "sdk" / "room.py").read_text()
    (site / "opengme" / "sdk" / "room.py").write_text(original + "# hot-patched by hand\n")
    assert init_code() == str(int(ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE))
    (site / "opengme" / "sdk" / "room.py").write_text(original)
    assert init_code() == str(int(ErrorCode.AV_OK))
    (site / "opengme" / "cli" / "errors_cmd.py").unlink()  # a file the SDK does not even import
    assert init_code() == str(int(ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE))
