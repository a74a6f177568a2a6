"""``opengme recordings``: server-side recordings in the data directory (tasks, files, callback settings)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from opengme.cli import CliError, load_app, open_registry, resolved_settings

if TYPE_CHECKING:
    from opengme.server.recording import RecordingDB

FULL_MODES = {"off": 0, "single": 1, "mixed": 2, "both": 3}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("recordings", parents=[common], help="list and fetch server-side recordings; set callbacks",
                       description="Server-side recordings (GME's StartRecord family) kept in the data directory.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = actions.add_parser("list", parents=[common], help="list recording tasks and their files")
    lst.add_argument("app_id", metavar="APPID", nargs="?", help="only this app's tasks")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    get = actions.add_parser("get", parents=[common], help="write one recorded mp3 file")
    get.add_argument("app_id", metavar="APPID")
    get.add_argument("file_name", metavar="FILENAME", help="as list, DescribeRecordInfo and the callbacks name it")
    get.add_argument("-o", "--output", type=Path, help="where to write it (default: standard output)")
    get.set_defaults(func=_get)
    config = actions.add_parser("config", parents=[common], help="an app's callback URL and full recording",
                                description="Set where APPID's recording callbacks go and whether every room of "
                                "it is recorded (full recording: from the first member's entry to the last one's exit).")
    config.add_argument("app_id", metavar="APPID")
    config.add_argument("--callback-url", help="http(s) URL that gets the signed callbacks ('' for none)")
    config.add_argument("--full", choices=sorted(FULL_MODES), help="full recording mode, or off")
    config.set_defaults(func=_config)


def _db(args: argparse.Namespace) -> RecordingDB:
    from opengme.server.recording import RecordingDB, shared_url

    store = open_registry(args)
    try:  # a cluster's tables are in its shared database (with redis_url), as its nodes read them
        return RecordingDB(store.data_dir, shared_url(resolved_settings(args).settings))
    finally:
        store.close()


def _list(args: argparse.Namespace) -> int:
    db = _db(args)
    try:
        tasks = [(t, db.files(t.task_id)) for t in db.tasks(args.app_id)]
    finally:
        db.close()
    if args.json:
        print(json.dumps([{"task_id": t.task_id, "app_id": t.app_id, "room_id": t.room_id, "mode": t.mode,
                           "auto": t.auto, "node": t.node, "started_at": t.started_at, "stopped_at": t.stopped_at,
                           "files": [{"user_id": f.user_id, "file_name": f.file_name, "begin": f.begin, "end": f.end,
                                      "status": f.status} for f in files]} for t, files in tasks], indent=2))
        return 0
    if not tasks:
        print("no recordings" + (f" for app {args.app_id}" if args.app_id else ""))
    for t, files in tasks:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.started_at))
        state = "running" if t.stopped_at is None else "stopped"
        print(f"task {t.task_id}  app {t.app_id}  room {t.room_id}  mode {t.mode}  {state}  started {started} UTC")
        for f in files:
            seconds = "" if f.end is None else f"{f.end - f.begin:.1f} s"
            print(f"  {f.file_name:<60} user {f.user_id:<12} {seconds}")
    return 0


def _get(args: argparse.Namespace) -> int:
    from opengme.storage import open_storage

    app = load_app(args)
    db = _db(args)
    try:
        found = db.file(app.app_id, args.file_name)
    finally:
        db.close()
    if found is None or found.file_id is None:
        raise CliError(f"no stored recording {args.file_name} in app {app.app_id}; see `opengme recordings list`", 1)
    settings = resolved_settings(args).settings
    storage = open_storage(settings.data_dir, settings.ptt_retention_days, settings.storage_url, settings.database_url)
    try:
        message = storage.get(found.file_id)
        if message is None:
            raise CliError(f"recording {args.file_name} is past its retention", 1)
        data = storage.read(message)
    finally:
        storage.close()
    if args.output is None:
        sys.stdout.buffer.write(data)
    else:
        args.output.write_bytes(data)
    return 0


def _config(args: argparse.Namespace) -> int:
    app = load_app(args)
    url = args.callback_url
    if url and not url.startswith(("http://", "https://")):
        raise CliError("--callback-url must be an http:// or https:// URL")
    db = _db(args)
    try:
        url, mode = db.configure(app.app_id, url, None if args.full is None else FULL_MODES[args.full])
    finally:
        db.close()
    full = {v: k for k, v in FULL_MODES.items()}[mode]
    print(f"app {app.app_id}: callbacks to {url or '(none)'}, full recording {full}")
    return 0
