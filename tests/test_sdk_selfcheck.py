"""``init`` answers 7015 (AV_ERR_SDK_NOT_FULL_UPDATE) for a partially upgraded installation, as GME.

The check compares the installed files with the hashes the installer wrote into RECORD. An
installation is made here the way pip lays one out (the package's files and a dist-info with their
hashes), then damaged the ways a partial upgrade damages one; the slow test builds and installs a
real wheel.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import opengme
from opengme.errors import ErrorCode
from opengme.sdk import Context, selfcheck
from support.paths import REPO


@pytest.fixture
def fresh_check() -> Iterator[None]:
    selfcheck.self_check.cache_clear()
    yield
    selfcheck.self_check.cache_clear()


def install(tmp_path: Path, version: str = opengme.__version__) -> tuple[importlib.metadata.Distribution, Path]:
    """This package laid out as pip installs a wheel: its files, and a dist-info whose RECORD holds
    each file's hash."""
    site = tmp_path / "site"
    shutil.copytree(Path(opengme.__file__).parent, site / "opengme", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"opengme-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: opengme\nVersion: {version}\n")
    rows = [f"{path.relative_to(site).as_posix()},sha256={selfcheck.file_hash(path, 'sha256')},{path.stat().st_size}"
            for path in sorted((site / "opengme").rglob("*")) if path.is_file()]
    (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]) + "\n")
    return importlib.metadata.PathDistribution(info), (site / "opengme").resolve()


def test_a_whole_installation_passes_the_check(fresh_check: None, tmp_path: Path) -> None:
    assert selfcheck.installation_problems(*install(tmp_path)) == []
    assert selfcheck.self_check() == ()  # this checkout: an editable install has nothing to compare
    ctx = Context("http://127.0.0.1:9")
    assert ctx.init("1400000001", "10001") == ErrorCode.AV_OK
    ctx.uninit()


@pytest.mark.public_surface
def test_a_module_from_another_release_makes_init_return_7015(fresh_check: None, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dist, package = install(tmp_path)
    older = package / "sdk" / "session.py"
    older.write_text(older.read_text() + "# as the last release had it\n")
    monkeypatch.setattr(selfcheck, "installed", lambda: (dist, package))
    (problem,) = selfcheck.self_check()
    assert problem == "opengme/sdk/session.py differs from the installed release"
    ctx = Context("http://127.0.0.1:9")
    assert ctx.init("1400000001", "10001") == ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE
    assert ctx.poll() == ErrorCode.AV_OK  # initialised all the same: 7015 is a warning
    ctx.uninit()


def test_missing_files_and_another_version_in_the_metadata_are_named(tmp_path: Path) -> None:
    dist, package = install(tmp_path, version="0.0.9")
    (package / "py.typed").unlink()  # a file nothing even imports
    assert selfcheck.installation_problems(dist, package) == [
        f"installed metadata says 0.0.9, the code says {opengme.__version__}",
        "opengme/py.typed is missing",
    ]
    assert selfcheck.installation_problems(dist, tmp_path) == [  # metadata of another copy: no file compared
        f"installed metadata says 0.0.9, the code says {opengme.__version__}"]


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
    (site / "opengme" / "py.typed").unlink()  # a file nothing even imports
    assert init_code() == str(int(ErrorCode.AV_ERR_SDK_NOT_FULL_UPDATE))
