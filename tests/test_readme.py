"""The README works when copied: its command blocks run as written against a real server.

Each fenced block with a language carries a ``<!-- readme-test: KIND [PATH] -->`` comment:

- ``banner``: the console output of ``make serve``; must match what ``.venv/bin/opengme serve`` prints
  (``make serve`` runs exactly that), and the ``Try:`` line it prints must work as printed.
- ``run``: runs in bash, in order, in a directory laid out like a fresh clone after ``make serve``
  (``.venv``, ``examples``, ``tests``; the server's data in ``./opengme-data``), with the README's
  placeholder AppID and key replaced by the server's. ``.venv/bin`` is not on PATH, as after
  ``make serve``. Variables a run block sets (``APPID=…``) are set for the later ones, as in one
  terminal.
- ``output``: every line must appear in what the run block before it printed; measured numbers
  (CHANGE_ROOM_QUALITY's) and the grouping of users in USER_UPDATE lines (which depends on who
  entered first) may differ.
- ``file PATH`` / ``excerpt PATH``: the block is the file / a part of it.
- ``write PATH``: the block is written to PATH before the run blocks after it.
- ``skip``: not checked (say why next to it).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from opengme.store import AppStore
from support.paths import REPO
from support.processes import ServeProcess, start_server

README = REPO / "README.md"
PLACEHOLDER_APP, PLACEHOLDER_KEY = "1400123456", "a1B2c3D4e5F6g7H8"
PLACEHOLDER_URL = "http://127.0.0.1:8090"
PLACEHOLDER_TOKEN = "Xq3vN8-operator-token-shown-once-Lw5dPk0aZs2"
_MARKER = re.compile(r"<!-- readme-test: (\w+)(?: (\S+))? -->")
_ASSIGNMENT = re.compile(r"^[A-Z_]+=[^\s$`(]+")  # NAME=literal (not a command substitution)
_USER_UPDATE = re.compile(r"^USER_UPDATE \{'event_id': (<[^>]+>), 'user_list': \[(.*)\]\}$")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Block:
    kind: str
    arg: str | None
    lang: str
    text: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind})"


def readme_blocks() -> tuple[list[Block], list[int]]:
    """The README's fenced blocks with a language and their markers, and the lines of unmarked ones."""
    blocks: list[Block] = []
    unmarked: list[int] = []
    marker: re.Match[str] | None = None
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if found := _MARKER.fullmatch(line.strip()):
            marker = found
        elif line.startswith("```"):
            lang, start = line[3:].strip(), i + 1
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            if lang and marker is None:
                unmarked.append(start)
            elif lang and marker is not None:
                blocks.append(Block(marker[1], marker[2], lang, "\n".join(lines[start:i]) + "\n", start))
            marker = None
        elif line.strip():
            marker = None  # a marker belongs to the block right after it
        i += 1
    return blocks, unmarked


def atoms(text: str) -> set[str]:
    """What an output line promises, up to measured numbers and the grouping of users."""
    found: set[str] = set()
    for line in text.splitlines():
        update = _USER_UPDATE.match(line)
        if update:
            found |= {f"USER_UPDATE {update[1]} {user.strip()}" for user in update[2].split(",")}
        elif line.startswith("CHANGE_ROOM_QUALITY "):
            found.add(_NUMBER.sub("N", line))
        elif line.strip():
            found.add(line)
    return found


def test_every_block_is_checked() -> None:
    blocks, unmarked = readme_blocks()
    assert not unmarked, f"README blocks at lines {unmarked} have no <!-- readme-test: … --> comment"
    kinds = {b.kind for b in blocks}
    assert kinds <= {"banner", "run", "output", "file", "excerpt", "write", "skip"}, kinds
    assert {"banner", "run", "output", "file", "excerpt"} <= kinds


def test_file_blocks_are_the_files() -> None:
    for block in readme_blocks()[0]:
        if block.kind == "file":
            assert block.text == (REPO / str(block.arg)).read_text(), f"{block} differs from {block.arg}"
        elif block.kind == "excerpt":
            assert block.text in (REPO / str(block.arg)).read_text(), f"{block} is not in {block.arg}"


def test_make_serve_runs_the_venvs_opengme() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^VENV\s*:=\s*\.venv$", makefile, re.M) and re.search(r"^BIN\s*:=\s*\$\(VENV\)/bin$", makefile, re.M)
    assert re.search(r"^serve:.*\n\t\$\(BIN\)/opengme serve \$\(ARGS\)$", makefile, re.M)


def _fresh_clone(tmp_path: Path) -> Path:
    """A directory like the repository after `make serve`: the venv, the examples and the test data."""
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    for name in ("examples", "tests"):
        (work / name).symlink_to(REPO / name)
    return work


def _environment(served: ServeProcess | None = None) -> dict[str, str]:
    """No OPENGME_* from the caller, .venv/bin not on PATH (as after `make serve`)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENGME_")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", os.defpath).split(os.pathsep)
                                  if p and Path(p).resolve() != Path(venv_bin).resolve())
    if served is not None:
        env["OPENGME_URL"] = served.url
    return env


def _check_banner(block: Block, served: ServeProcess, app_id: str, key: str) -> None:
    printed = [line.rsplit(" ", 1)[-1] for line in served.banner if line.startswith("Web console: ")]
    token = printed[0] if printed else PLACEHOLDER_TOKEN  # random: the README shows a placeholder
    expected = [line.replace(PLACEHOLDER_APP, app_id).replace(PLACEHOLDER_KEY, key)
                .replace(PLACEHOLDER_URL, served.url).replace(PLACEHOLDER_TOKEN, token)
                for line in block.text.splitlines()[1:]]
    assert served.banner == expected, f"{block}: serve printed {served.banner}"


def _loud_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    scale = 32768.0 if samples.dtype == np.int16 else 1.0
    frames = samples[: len(samples) // 960 * 960].reshape(-1, 960).astype(np.float64) / scale
    return int((np.sqrt((frames ** 2).mean(axis=1)) > 0.01).sum())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    if not (Path(sys.prefix) / "bin" / "opengme").exists():
        pytest.skip("opengme is not installed in this interpreter's environment (run `make test`)")
    work = _fresh_clone(tmp_path)
    served = start_server(Path("opengme-data"), command=[".venv/bin/opengme", "serve"], cwd=work,
                          env=_environment())
    try:
        store = AppStore(work / "opengme-data", create=False)
        app = store.list()[0]
        store.close()
        blocks = readme_blocks()[0]
        banner = next(b for b in blocks if b.kind == "banner")
        _check_banner(banner, served, app.app_id, app.key)
        tried = next(line for line in served.banner if line.startswith("Try: ")).removeprefix("Try: ")
        result = subprocess.run(shlex.split(tried), cwd=work, env=_environment(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0 and result.stdout.strip(), f"the Try: line failed: {result.stderr}"

        prelude: list[str] = []
        printed = ""
        for block in blocks:
            text = block.text.replace(PLACEHOLDER_APP, app.app_id).replace(PLACEHOLDER_KEY, app.key)
            if block.kind == "write":
                (work / str(block.arg)).write_text(text)
            elif block.kind == "run":
                script = "set -e\n" + "".join(f"{a}\n" for a in prelude) + text
                ran = subprocess.run(["bash", "-c", script], cwd=work, env=_environment(served),
                                     capture_output=True, text=True, timeout=120)
                assert ran.returncode == 0, f"{block} failed ({ran.returncode}):\n{ran.stdout}\n{ran.stderr}"
                assert "Traceback" not in ran.stderr, f"{block}:\n{ran.stderr}"
                printed = ran.stdout
                prelude += [m[0] for line in text.splitlines() if (m := _ASSIGNMENT.match(line))]
            elif block.kind == "output":
                missing = atoms(text) - atoms(printed)
                assert not missing, f"{block}: not printed: {sorted(missing)}\nprinted:\n{printed}"
        # What the voice blocks recorded is speech, in the format each file's suffix names.
        for name in ("heard.mp3", "heard.wav"):
            assert _loud_frames(work / name) > 50, name
    finally:
        served.stop()


def test_output_atoms_ignore_numbers_and_grouping() -> None:
    sample = ("USER_UPDATE {'event_id': <UserUpdateEvent.ENTER: 1>, 'user_list': ['10002', '10001']}\n"
              "CHANGE_ROOM_QUALITY {'weight': 50, 'loss': 0.0, 'delay': 1}\n")
    real = ("USER_UPDATE {'event_id': <UserUpdateEvent.ENTER: 1>, 'user_list': ['10002']}\n"
            "USER_UPDATE {'event_id': <UserUpdateEvent.ENTER: 1>, 'user_list': ['10001']}\n"
            "CHANGE_ROOM_QUALITY {'weight': 48, 'loss': 0.02, 'delay': 12}\n")
    assert atoms(sample) <= atoms(real)
    assert not atoms("USER_UPDATE {'event_id': <UserUpdateEvent.EXIT: 2>, 'user_list': ['10001']}") <= atoms(real)
