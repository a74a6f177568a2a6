"""The app registry (GME's console): creation, import, switches, key rotation, validation."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from opengme.datadir import DataDirError
from opengme.store import DB_NAME, AppStore, AppStoreError, RegistryNotFound


def test_create_makes_numeric_app_id_and_16_char_key(tmp_path: Path) -> None:
    app = AppStore(tmp_path).create("game")
    assert app.app_id.isdigit() and app.app_id.startswith("1400")
    assert len(app.key) == 16 and app.key.isalnum()
    assert (app.voice, app.ptt, app.stt, app.arrears) == (True, True, True, False)


def test_import_existing_gme_app(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    app = store.create("imported", app_id="1400089356", key="a1b2c3d4e5f6g7h8")
    assert (app.app_id, app.key) == ("1400089356", "a1b2c3d4e5f6g7h8")
    with pytest.raises(AppStoreError, match="already exists"):
        store.create("again", app_id="1400089356")


@pytest.mark.parametrize("app_id", ["abc", "", "0", "99999999999", "-5", "１２３"])
def test_bad_app_ids_are_refused(tmp_path: Path, app_id: str) -> None:
    with pytest.raises(AppStoreError, match="AppID"):
        AppStore(tmp_path).create("x", app_id=app_id)


@pytest.mark.parametrize("key", ["short", "x" * 17, "ключключключключ", "tab\there1234567"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(AppStoreError, match="16 printable ASCII"):
        AppStore(tmp_path).create("x", key=key)


def test_switches_and_rotation_are_seen_by_another_connection(tmp_path: Path) -> None:
    writer, reader = AppStore(tmp_path), AppStore(tmp_path)
    app = writer.create("game")
    writer.set(app.app_id, voice=False, arrears=True)
    seen = reader.get(app.app_id)
    assert seen is not None and not seen.voice and seen.arrears
    rotated = writer.rotate_key(app.app_id)
    assert rotated.key != app.key and reader.require(app.app_id).key == rotated.key


def test_unknown_switch_and_app(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    app = store.create("game")
    with pytest.raises(AppStoreError, match="unknown switch"):
        store.set(app.app_id, video=True)
    with pytest.raises(AppStoreError, match="no app with AppID 1"):
        store.set("1", voice=True)
    assert store.get("not-a-number") is None


def test_public_dict_never_contains_the_key(tmp_path: Path) -> None:
    app = AppStore(tmp_path).create("game")
    assert app.key not in repr(app.public_dict())


def test_opening_an_existing_registry_only_creates_nothing(tmp_path: Path) -> None:
    """Readers (``app list``, ``join`` …) open with ``create=False``: a wrong path stays empty."""
    missing = tmp_path / "elsewhere" / "data"
    with pytest.raises(RegistryNotFound) as err:
        AppStore(missing, create=False)
    assert err.value.path == missing / DB_NAME and str(missing / DB_NAME) in str(err.value)
    assert isinstance(err.value, AppStoreError)
    assert not (tmp_path / "elsewhere").exists()
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(RegistryNotFound):
        AppStore(empty_dir, create=False)
    assert list(empty_dir.iterdir()) == []
    writer = AppStore(tmp_path / "made")  # the default still creates (the server's first start)
    writer.create("dev")
    writer.close()
    reader = AppStore(tmp_path / "made", create=False)
    assert [a.name for a in reader.list()] == ["dev"]
    reader.close()


def test_v1_auth_is_on_by_default_and_a_switch(tmp_path: Path) -> None:
    store = AppStore(tmp_path)
    app = store.create("game")
    assert app.v1_auth is True and app.public_dict()["v1_auth"] is True
    assert store.set(app.app_id, v1_auth=False).v1_auth is False
    store.close()
    reader = AppStore(tmp_path, create=False)
    assert reader.require(app.app_id).v1_auth is False
    reader.close()


OLD_SCHEMA = """CREATE TABLE apps (
    app_id TEXT PRIMARY KEY, key TEXT NOT NULL, name TEXT NOT NULL,
    voice INTEGER NOT NULL DEFAULT 1, ptt INTEGER NOT NULL DEFAULT 1, stt INTEGER NOT NULL DEFAULT 1,
    arrears INTEGER NOT NULL DEFAULT 0, string_openid INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
)"""


def test_a_registry_from_before_the_v1_auth_switch_gains_it_on(tmp_path: Path) -> None:
    """The migration: an existing database keeps its apps, which accept v1 as they did."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(OLD_SCHEMA)
    db.execute("INSERT INTO apps (app_id, key, name, created_at, updated_at) VALUES "
               "('1400089356', 'a1b2c3d4e5f6g7h8', 'old game', 1.0, 2.0)")
    db.commit()
    db.close()
    readers = [AppStore(tmp_path, create=False) for _ in range(2)]  # the second finds it migrated
    app = readers[0].require("1400089356")
    assert (app.name, app.key, app.v1_auth, app.updated_at) == ("old game", "a1b2c3d4e5f6g7h8", True, 2.0)
    assert readers[1].set("1400089356", v1_auth=False).v1_auth is False
    assert readers[0].require("1400089356").v1_auth is False
    for store in readers:
        store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    columns = [row[1] for row in db.execute("PRAGMA table_info(apps)")]
    db.close()
    assert columns.count("v1_auth") == 1


def test_an_empty_database_file_is_refused_not_taken_for_a_new_one(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).touch()
    for create in (True, False):
        with pytest.raises(DataDirError, match=r"is empty \(0 bytes\).*move it aside"):
            AppStore(tmp_path, create=create)
    assert (tmp_path / DB_NAME).stat().st_size == 0


def test_a_new_registry_appears_complete_and_leaves_no_temporary(tmp_path: Path) -> None:
    AppStore(tmp_path / "data").close()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [DB_NAME]
    assert (tmp_path / "data" / DB_NAME).read_bytes().startswith(b"SQLite format 3\x00")
