"""A damaged data directory (issue 9 item 9): ``opengme serve`` and the commands that open the registry
or the voice-message storage refuse it with one line that names the file and what to do (exit 2, as a
usage error), never start over it as a fresh install; and one server per data directory (a lock)."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from opengme.datadir import DB_NAME, LOCK_NAME, DataDirError
from opengme.storage import DiskStorage
from opengme.store import AppStore
from support.processes import opengme_cmd, start_server


def registry(data: Path, apps: int = 60) -> bytes:
    """A real registry of several pages (as a server leaves it), closed; its bytes."""
    store = AppStore(data)
    for i in range(apps):
        store.create(f"game {i} " + "x" * 80)
    store.close()
    return (data / DB_NAME).read_bytes()


def empty(data: Path) -> Path:
    data.mkdir()
    (data / DB_NAME).touch()
    return data / DB_NAME


def truncated(data: Path) -> Path:
    whole = registry(data)
    (data / DB_NAME).write_bytes(whole[: len(whole) // 2])
    return data / DB_NAME


def not_a_database(data: Path) -> Path:
    whole = registry(data)
    (data / DB_NAME).write_bytes(b"this is no SQLite file!!" + whole[24:])
    return data / DB_NAME


def directory_in_its_place(data: Path) -> Path:
    (data / DB_NAME).mkdir(parents=True)
    return data / DB_NAME


def file_as_data_dir(data: Path) -> Path:
    data.write_text("not a directory\n")
    return data


DAMAGE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (empty, "is empty (0 bytes)"),
    "truncated": (truncated, "is damaged (database disk image is malformed)"),
    "not a database": (not_a_database, "is damaged (file is not a database)"),
    "directory": (directory_in_its_place, "is a directory where the database should be"),
    "file as data dir": (file_as_data_dir, "is a file, not a directory"),
}


def snapshot(path: Path) -> object:
    return path.read_bytes() if path.is_file() else sorted(p.name for p in path.iterdir())


def one_line_refusal(args: list[str], named: Path, what: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert str(named) in line and what in line, line
    return line


@pytest.mark.parametrize("case", list(DAMAGE))
def test_serve_refuses_damage_in_one_line_and_touches_nothing(tmp_path: Path, case: str) -> None:
    make, what = DAMAGE[case]
    data = tmp_path / "data"
    damaged = make(data)
    before = snapshot(damaged)
    line = one_line_refusal(opengme_cmd("serve", "--port", "0", "--data-dir", str(data)), damaged, what)
    assert line.startswith("opengme serve: ")
    if damaged != data:  # says what to do
        assert "restore it from a backup, or move it aside" in line and f"{damaged}.broken" in line
    assert snapshot(damaged) == before  # no fresh install over it, no 'dev' app


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("command", [("app", "list"), ("app", "create", "again"), ("authbuffer", "gen", "1400000001",
                                                                                   "10001")])
def test_registry_commands_refuse_damage_in_one_line(tmp_path: Path, case: str, command: tuple[str, ...]) -> None:
    make, what = DAMAGE[case]
    data = tmp_path / "data"
    damaged = make(data)
    before = snapshot(damaged)
    one_line_refusal(opengme_cmd(*command, "--data-dir", str(data)), damaged, what)
    assert snapshot(damaged) == before


@pytest.mark.parametrize("case", ["empty", "truncated", "not a database", "directory"])
def test_voice_message_storage_refuses_damage_in_one_line(tmp_path: Path, case: str) -> None:
    make, what = DAMAGE[case]
    data = tmp_path / "data"
    damaged = make(data)
    with pytest.raises(DataDirError, match=what.replace("(", r"\(").replace(")", r"\)")):
        DiskStorage(data)
    one_line_refusal(opengme_cmd("messages", "list", "1400000001", "--data-dir", str(data)), damaged, what)


def test_moving_the_damaged_database_aside_starts_over(tmp_path: Path) -> None:
    """What the refusal tells the user to do: the next start is a fresh install with a 'dev' app."""
    data = tmp_path / "data"
    damaged = empty(data)
    damaged.rename(damaged.with_name(f"{DB_NAME}.broken"))
    server = start_server(data)
    try:
        assert any("Created app 'dev'" in line for line in server.banner)
    finally:
        server.stop()
    assert (data / f"{DB_NAME}.broken").stat().st_size == 0
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_damage_deep_inside_the_file_is_found_at_start(tmp_path: Path) -> None:
    """Opening reads the schema and the apps; the server also walks the whole file once (quick_check),
    so a broken index of another table stops it too."""
    data = tmp_path / "data"
    registry(data, apps=1)
    storage = DiskStorage(data)
    for i in range(300):
        storage.put("1400000001", str(10_000 + i), f"voice {i}".encode(), 1500)
    storage.close()
    db = sqlite3.connect(data / DB_NAME)
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'voice_messages_sha256'").fetchone()
    db.close()
    with (data / DB_NAME).open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + b"\xff" * 64)  # a leaf page whose cell pointers point nowhere
    AppStore(data, create=False).close()  # the registry itself still reads
    one_line_refusal(opengme_cmd("serve", "--port", "0", "--data-dir", str(data)), data / DB_NAME, "is damaged")


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        line = one_line_refusal(opengme_cmd("serve", "--port", "0", "--data-dir", str(data)), data / LOCK_NAME,
                                f"another OpenGME server (pid {first.proc.pid}) is running")
        assert "stop it first, or give this one its own --data-dir" in line
    finally:
        assert first.stop() == 0
    second = start_server(data)  # the lock went with the first server
    assert second.stop(signal.SIGKILL) == -signal.SIGKILL
    third = start_server(data)  # even after a crash: the kernel drops a dead process's flock
    assert third.stop() == 0
