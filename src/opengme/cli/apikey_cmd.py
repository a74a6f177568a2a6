"""``opengme apikey``: SecretId/SecretKey pairs for the Tencent Cloud API 3.0 endpoint (``POST /``).

The SecretKey is printed once, by ``create``; ``list`` never shows it."""
from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from opengme.cli import CliError, open_registry

if TYPE_CHECKING:
    from opengme.apikeys import ApiKeyStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "apikey", parents=[common], help="manage SecretId/SecretKey pairs for GME's server API (API 3.0)",
        description="Manage the API credentials that Tencent Cloud SDKs sign GME server-API requests with "
        "(POST / on the server). A running server sees changes on its next request.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[common], help="make a key pair and print it (the only time "
                                "the SecretKey is shown)")
    create.add_argument("--note", default="", help="what the key is for (shown by list)")
    create.add_argument("--app", dest="apps", metavar="APPID", action="append", default=[],
                        help="limit the key to this app (repeat for more; default: every app)")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=_create)
    lst = actions.add_parser("list", parents=[common], help="list keys (SecretKeys are not shown)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    for name, summary, func in (("disable", "refuse a key's requests (AuthFailure.SecretIdNotFound)", _disable),
                                ("enable", "accept a disabled key again", _enable),
                                ("delete", "remove a key for good", _delete)):
        one = actions.add_parser(name, parents=[common], help=summary)
        one.add_argument("secret_id", metavar="SECRETID")
        one.set_defaults(func=func)


def _keys(args: argparse.Namespace) -> ApiKeyStore:
    from opengme.apikeys import ApiKeyStore

    store = open_registry(args)  # the registry must exist: its directory is the server's
    try:
        return ApiKeyStore(store.data_dir, store.database_url)
    finally:
        store.close()


def _create(args: argparse.Namespace) -> int:
    from opengme.apikeys import ApiKeyError

    registry = open_registry(args)
    try:
        unknown = [a for a in args.apps if registry.get(a) is None]
    finally:
        registry.close()
    if unknown:
        raise CliError(f"no app with AppID {', '.join(unknown)}; see `opengme app list`")
    keys = _keys(args)
    try:
        key = keys.create(args.note, tuple(args.apps))
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    finally:
        keys.close()
    if args.json:
        print(json.dumps({**key.public_dict(), "secret_key": key.secret_key}, indent=2))
        return 0
    print(f"SecretId:  {key.secret_id}")
    print(f"SecretKey: {key.secret_key}")
    print(f"apps:      {', '.join(key.app_ids) or 'all'}")
    print("The SecretKey is shown only now: store it where your backend reads its Tencent Cloud credentials.")
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _keys(args)
    try:
        found = keys.list()
    finally:
        keys.close()
    if args.json:
        print(json.dumps([k.public_dict() for k in found], indent=2))
        return 0
    print(f"{'SECRETID':<38} {'ENABLED':<8} {'CREATED (UTC)':<20} {'APPS':<24} NOTE")
    for k in found:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(k.created_at))
        print(f"{k.secret_id:<38} {'yes' if k.enabled else 'no':<8} {created:<20} "
              f"{','.join(k.app_ids) or 'all':<24} {k.note}")
    return 0


def _change(args: argparse.Namespace, enabled: bool | None, done: str) -> int:
    from opengme.apikeys import ApiKeyError

    keys = _keys(args)
    try:
        if enabled is None:
            keys.delete(args.secret_id)
        else:
            keys.set_enabled(args.secret_id, enabled)
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    finally:
        keys.close()
    print(f"{done} {args.secret_id}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    return _change(args, False, "disabled")


def _enable(args: argparse.Namespace) -> int:
    return _change(args, True, "enabled")


def _delete(args: argparse.Namespace) -> int:
    return _change(args, None, "deleted")
