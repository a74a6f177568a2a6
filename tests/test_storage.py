"""The voice-message storage: put/get/read/delete/list, retention, and what a crash leaves behind."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from opengme.storage import DiskStorage, MessageGone, new_file_id
from opengme.store import AppStore

DAY = 86_400.0
T0 = 1_800_000_000.0


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[DiskStorage]:
    s = DiskStorage(tmp_path, retention=90 * DAY)
    yield s
    s.close()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "messages").rglob("*") if p.is_file())


def test_put_get_read_list_delete(tmp_path: Path, storage: DiskStorage) -> None:
    a = storage.put("1400000001", "10001", b"first", 1500, now=T0)
    b = storage.put("1400000001", "10002", b"second", 2500, now=T0 + 1)
    other_app = storage.put("1400000002", "10001", b"third", 3000, now=T0 + 2)
    assert a.file_id != b.file_id and len(a.file_id) >= 22
    assert storage.get(a.file_id, now=T0) == a
    assert storage.read(a) == b"first" and (a.size, a.duration_ms) == (5, 1500)
    assert storage.list("1400000001", now=T0) == [a, b]
    assert storage.list("1400000001", "10002", now=T0) == [b]
    assert storage.list("1400000002", now=T0) == [other_app]
    for bad in ("", "../../etc/passwd", "x" * 200, a.file_id + "/"):
        assert storage.get(bad) is None and storage.delete(bad) is False
    assert storage.delete(a.file_id) is True and storage.delete(a.file_id) is False
    assert storage.get(a.file_id, now=T0) is None
    assert len(_files(tmp_path)) == 2  # a's file went with its only message
    # Paths stay inside the storage: no file id or path ever reaches the caller's side.
    assert all(p.parent.parent == tmp_path / "messages" for p in _files(tmp_path))


def test_same_bytes_are_stored_once_and_kept_while_a_message_uses_them(tmp_path: Path,
                                                                      storage: DiskStorage) -> None:
    a = storage.put("1400000001", "10001", b"same", 1500, now=T0)
    b = storage.put("1400000001", "10002", b"same", 1500, now=T0)
    assert a.sha256 == b.sha256 and len(_files(tmp_path)) == 1
    storage.delete(a.file_id)
    assert storage.read(b) == b"same"
    storage.delete(b.file_id)
    assert _files(tmp_path) == []


def test_a_missing_or_damaged_file_is_message_gone(tmp_path: Path, storage: DiskStorage) -> None:
    a = storage.put("1400000001", "10001", b"bytes", 1500)
    (blob,) = _files(tmp_path)
    blob.write_bytes(b"BYTES")
    with pytest.raises(MessageGone, match="damaged"):
        storage.read(a)
    blob.unlink()
    with pytest.raises(MessageGone, match="missing"):
        storage.read(a)


def test_retention_hides_then_cleans_expired_messages(tmp_path: Path, storage: DiskStorage) -> None:
    old = storage.put("1400000001", "10001", b"old", 1500, now=T0)
    new = storage.put("1400000001", "10001", b"new", 1500, now=T0 + 10 * DAY)
    later = T0 + 90 * DAY + 1
    assert storage.get(old.file_id, now=later) is None  # hidden at once, before any clean-up
    assert storage.list("1400000001", now=later) == [new]
    report = storage.clean_up(now=later)
    assert (report.expired, report.files, report.temporary) == (1, 1, 0)
    assert [p.name for p in _files(tmp_path)] == [f"{new.sha256}.ogg"]
    assert storage.get(new.file_id, now=later) == new
    forever = DiskStorage(tmp_path, retention=0)
    assert forever.get(new.file_id, now=T0 + 10_000 * DAY) == new
    forever.close()


def test_the_table_lives_in_the_app_registrys_database(tmp_path: Path, storage: DiskStorage) -> None:
    apps = AppStore(tmp_path)
    app = apps.create("game")
    storage.put(app.app_id, "10001", b"x", 1500)
    assert apps.require(app.app_id) == app and (tmp_path / "opengme.db").is_file()
    apps.close()


def test_concurrent_puts_from_threads(tmp_path: Path, storage: DiskStorage) -> None:
    def put(i: int) -> None:
        for j in range(10):
            storage.put("1400000001", str(10_000 + i), f"{i}-{j % 3}".encode(), 1500)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = storage.list("1400000001")
    assert len(messages) == 40 and all(storage.read(m) for m in messages)
    assert len(_files(tmp_path)) == 12


def test_a_crash_between_the_file_and_its_row_leaves_no_message_and_the_orphan_is_cleaned(
        tmp_path: Path) -> None:
    """A real process dies (os._exit, no clean-up) after the file is renamed into place, before
    the row is inserted: nothing is visible, and the next clean-up removes the orphan file."""
    kept = DiskStorage(tmp_path)
    survivor = kept.put("1400000001", "10001", b"completed before the crash", 1500)
    kept.close()
    child = textwrap.dedent(f"""
        import os
        import opengme.storage as s
        real = s.write_atomically
        def write_then_die(*args, **kwargs):
            real(*args, **kwargs)
            os._exit(137)
        s.write_atomically = write_then_die
        s.DiskStorage({str(tmp_path)!r}).put("1400000001", "10001", b"half-stored message", 1500)
    """)
    assert subprocess.run([sys.executable, "-c", child], timeout=60).returncode == 137
    storage = DiskStorage(tmp_path)
    assert len(_files(tmp_path)) == 2  # the orphan file is on disk …
    assert storage.list("1400000001") == [survivor]  # … but no message refers to it
    report = storage.clean_up()
    assert (report.expired, report.files) == (0, 1)
    assert [p.name for p in _files(tmp_path)] == [f"{survivor.sha256}.ogg"]
    assert storage.read(survivor) == b"completed before the crash"
    storage.close()


def test_clean_up_removes_left_over_temporary_files(tmp_path: Path, storage: DiskStorage) -> None:
    (tmp_path / "messages" / "tmp" / ".x.ogg.1.2.tmp").write_bytes(b"partial")
    assert storage.clean_up().temporary == 1
    assert _files(tmp_path) == []


def test_file_ids_never_start_with_a_dash() -> None:
    """`opengme messages delete ID` would take such an id for an option."""
    assert not any(new_file_id().startswith("-") for _ in range(2000))  # ~60 would without the check
