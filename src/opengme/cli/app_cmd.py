"""``opengme app``: the console's app registry (create, list, show, set switches, rotate the key)."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from opengme.cli import CliError, open_registry
from opengme.store import App, AppStore, AppStoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "app",
        parents=[common],
        help="manage apps (AppID, permission key, service switches)",
        description="Manage the apps in the data directory's registry. Changes are seen by a running "
        "server on its next request, without a restart.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        parents=[common],
        help="create an app and print its AppID and key",
        description="Create an app. --app-id and --key import an existing GME app so that the studio's "
        "AuthBuffer-signing backend keeps working unchanged.",
    )
    create.add_argument("name")
    create.add_argument("--app-id", help="numeric AppID to use (default: a new random 1400xxxxxx)")
    create.add_argument("--key", help="16-character permission key to import (default: a new random key)")
    create.set_defaults(func=_create)
    lst = actions.add_parser("list", parents=[common], help="list apps (keys are not shown)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    show = actions.add_parser("show", parents=[common], help="show one app, including its key")
    show.add_argument("app_id", metavar="APPID")
    show.set_defaults(func=_show)
    st = actions.add_parser("set", parents=[common], help="change an app's arrears flag and service switches")
    st.add_argument("app_id", metavar="APPID")
    st.add_argument("--arrears", dest="arrears", action="store_true", default=None,
                    help="mark the account in arrears (entries then fail with 7005)")
    st.add_argument("--no-arrears", dest="arrears", action="store_false", help="clear the arrears flag")
    for switch, what in (("voice", "voice chat"), ("ptt", "voice messages"), ("stt", "speech-to-text")):
        st.add_argument(f"--{switch}", choices=["on", "off"], help=f"turn {what} on or off (off gives 7012)")
    st.add_argument("--string-openid", choices=["on", "off"], help="allow non-numeric openids")
    st.add_argument("--v1-auth", choices=["on", "off"],
                    help="accept GME's v1 AuthBuffers (default on, so a GME signing backend moves over "
                    "unchanged); off refuses them with 7006: v1 has no MAC, a player can edit its openid")
    st.add_argument("--dev-signing", choices=["on", "off"],
                    help="let the server's /demo page sign AuthBuffers for anyone (development only; default off)")
    st.set_defaults(func=_set)
    rot = actions.add_parser("rotate-key", parents=[common], help="replace the app's permission key")
    rot.add_argument("app_id", metavar="APPID")
    rot.set_defaults(func=_rotate)


def _store(args: argparse.Namespace) -> AppStore:
    """The registry to change; only ``create`` makes one (where the settings say)."""
    return open_registry(args, create=args.action == "create")


def _print_app(app: App, with_key: bool) -> None:
    data = app.public_dict()
    if with_key:
        data["key"] = app.key
    print(json.dumps(data, indent=2))


def _report(action: Callable[[AppStore], App], args: argparse.Namespace, with_key: bool) -> int:
    """Run one registry action and print the app, turning a refusal into a one-line CLI error."""
    try:
        app = action(_store(args))
    except AppStoreError as exc:
        raise CliError(str(exc)) from None
    _print_app(app, with_key)
    return 0


def _create(args: argparse.Namespace) -> int:
    return _report(lambda store: store.create(args.name, app_id=args.app_id, key=args.key), args, with_key=True)


def _list(args: argparse.Namespace) -> int:
    apps = _store(args).list()
    if args.json:
        print(json.dumps([a.public_dict() for a in apps], indent=2))
        return 0
    print(f"{'APPID':<12} {'NAME':<20} VOICE PTT STT ARREARS V1-AUTH")
    for a in apps:
        flags = [("on" if v else "off") for v in (a.voice, a.ptt, a.stt, a.v1_auth)]
        print(f"{a.app_id:<12} {a.name:<20} {flags[0]:<5} {flags[1]:<3} {flags[2]:<3} "
              f"{'yes' if a.arrears else 'no':<7} {flags[3]}")
    return 0


def _show(args: argparse.Namespace) -> int:
    return _report(lambda store: store.require(args.app_id), args, with_key=True)


def _set(args: argparse.Namespace) -> int:
    changes: dict[str, bool] = {}
    if args.arrears is not None:
        changes["arrears"] = args.arrears
    for name in ("voice", "ptt", "stt", "string_openid", "v1_auth", "dev_signing"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value == "on"
    if not changes:
        raise CliError("nothing to change: give --arrears/--no-arrears, --voice, --ptt, --stt, --string-openid "
                       "--v1-auth or --dev-signing")
    return _report(lambda store: store.set(args.app_id, **changes), args, with_key=False)


def _rotate(args: argparse.Namespace) -> int:
    return _report(lambda store: store.rotate_key(args.app_id), args, with_key=True)
