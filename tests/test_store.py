"""The app registry (GME's console): creation, import, switches, key rotation, validation."""
from __future__ import annotations

from pathlib import Path

import pytest

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
