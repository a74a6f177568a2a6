"""``opengme messages``: the stored voice messages of the data directory (list, show, delete, clean).

Works on the same storage as a running server (safe while it runs): a deletion is seen by its next
download, which then answers 12292.
"""
from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opengme.cli import CliError, resolved_settings

if TYPE_CHECKING:  # the storage pulls in PyAV: `opengme --help` need not load it
    from opengme.storage import Message, MessageStorage


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "messages",
        parents=[common],
        help="list, show and delete stored voice messages",
        description="Inspect the voice messages kept in the data directory (safe while the server runs). "
        "FILE_ID is the id or the whole file URL that an upload returned.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = actions.add_parser("list", parents=[common], help="list an app's messages, oldest first")
    lst.add_argument("app_id", metavar="APPID")
    lst.add_argument("--openid", help="only the messages this openid uploaded")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    show = actions.add_parser("show", parents=[common], help="show one message's metadata as JSON")
    show.add_argument("file_id", metavar="FILE_ID")
    show.set_defaults(func=_show)
    delete = actions.add_parser("delete", parents=[common], help="delete one message (downloads then give 12292)")
    delete.add_argument("file_id", metavar="FILE_ID")
    delete.set_defaults(func=_delete)
    clean = actions.add_parser("clean", parents=[common],
                               help="run the retention pass now (expired messages, orphan files)")
    clean.set_defaults(func=_clean)


def _storage(args: argparse.Namespace) -> MessageStorage:
    from opengme.datadir import DataDirError
    from opengme.storage import open_storage

    settings = resolved_settings(args).settings
    if not settings.data_dir.is_dir():
        raise CliError(f"no data directory at {settings.data_dir}; pass --data-dir")
    try:
        return open_storage(settings.data_dir, settings.ptt_retention_days, settings.storage_url,
                            settings.database_url)
    except DataDirError as exc:
        raise CliError(str(exc)) from None


def _file_id(text: str) -> str:
    """The id inside a file URL (``http://host/v1/ptt/files/ID?…``), or the text itself."""
    return urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1] if "/" in text else text


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(message: Message, retention_days: float) -> dict[str, object]:
    data = message.to_dict()
    data["created"] = _when(message.created_at)
    data["expires"] = _when(message.created_at + retention_days * 86_400) if retention_days else None
    return data


def _require(storage: MessageStorage, text: str) -> Message:
    message = storage.get(_file_id(text))
    if message is None:
        raise CliError(f"no voice message {text!r} (unknown, deleted or past retention)", status=1)
    return message


def _list(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        messages = storage.list(args.app_id, args.openid)
    finally:
        storage.close()
    if args.json:
        retention = resolved_settings(args).settings.ptt_retention_days
        print(json.dumps([_describe(m, retention) for m in messages], indent=2))
        return 0
    print(f"{'FILE_ID':<26} {'OPENID':<20} {'BYTES':>8} {'MS':>6} CREATED")
    for m in messages:
        print(f"{m.file_id:<26} {m.open_id:<20} {m.size:>8} {m.duration_ms:>6} {_when(m.created_at)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        message = _require(storage, args.file_id)
    finally:
        storage.close()
    print(json.dumps(_describe(message, resolved_settings(args).settings.ptt_retention_days), indent=2))
    return 0


def _delete(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        message = _require(storage, args.file_id)
        storage.delete(message.file_id)
    finally:
        storage.close()
    print(f"deleted {message.file_id}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    storage = _storage(args)
    try:
        report = storage.clean_up()
    finally:
        storage.close()
    print(f"expired messages: {report.expired}, files removed: {report.files}, "
          f"temporary files removed: {report.temporary}")
    return 0
