"""``opengme``: the command line. Each subcommand lives in its own module with a ``register`` function.

The global flags ``--data-dir`` and ``--config`` are accepted before the subcommand and after it
(the later one wins). Only ``serve`` and ``app create`` create a data directory; every other command
opens the registry that exists, or says where it looked and how to point at the right one.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from opengme import __version__
from opengme.config import (
    CONFIG_FILE,
    DEFAULT_ORIGIN,
    DEFAULT_SERVER_URL,
    ENV_PREFIX,
    LOG_FORMATS,
    LOG_LEVELS,
    URL_VARIABLE,
    ConfigError,
    ResolvedSettings,
    client_server_url,
    resolve_settings,
)

if TYPE_CHECKING:
    from opengme.store import App, AppStore

SETTING_FLAGS = ("host", "port", "data_dir", "log_level", "log_format", "workers")
"""Settings a command line may override (``serve`` and ``config`` take all, the others ``--data-dir``)."""


class CliError(Exception):
    """A command failed in a way the user can fix: one line on stderr, then ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2, never a wall of text."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--data-dir",
        default=default,
        help="where the server keeps its database and files (default: ./opengme-data, "
        "or data_dir from opengme.toml / OPENGME_DATA_DIR)",
    )
    parser.add_argument(
        "--config", type=Path, default=default, help=f"settings file (default: ./{CONFIG_FILE} when it exists)"
    )


def settings_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser,
                     name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that takes the server's setting flags: ``serve``, and ``config`` that shows what
    ``serve`` would use with the same flags."""
    p = sub.add_parser(name, parents=[common], help=summary, description=description)
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", help="TCP port (default 8090; 0 picks a free port)")
    p.add_argument("--workers", metavar="N", help="media relay processes: 1 = in the server's process (default), "
                   "N >= 2 = N worker processes, 0 = one per core")
    p.add_argument("--log-level", help=f"one of {', '.join(LOG_LEVELS)} (default info)")
    p.add_argument("--log-format", help=f"{' or '.join(LOG_FORMATS)}: JSON lines for machines (default), "
                   "text for people")
    return p


def server_flag(parser: argparse.ArgumentParser) -> None:
    """``--server``: the running server a client command talks to."""
    parser.add_argument("--server", metavar="URL",
                        help=f"the server's base URL as `opengme serve` prints it, or HOST:PORT "
                        f"(default: ${URL_VARIABLE}, else {DEFAULT_SERVER_URL})")


def server_of(args: argparse.Namespace) -> str:
    """The base URL from ``--server``, else ``OPENGME_URL``, else the default; a bad one is a usage error."""
    try:
        return client_server_url(args.server)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def not_running_hint(url: str) -> str:
    return f"is `opengme serve` running at {url}?"


def resolved_settings(args: argparse.Namespace) -> ResolvedSettings:
    """The effective settings for this command line, or a one-line CLI error naming the bad one."""
    overrides = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    try:
        return resolve_settings(config_file=getattr(args, "config", None), overrides=overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def open_registry(args: argparse.Namespace, *, create: bool = False) -> AppStore:
    """The registry that exists in the data directory (``create``: or a new one, for ``app create``);
    never creates one where the user mistyped a path. A damaged data directory or database is one line."""
    from opengme.datadir import DataDirError
    from opengme.store import AppStore, RegistryNotFound

    found = resolved_settings(args)
    try:
        return AppStore(found.settings.data_dir, create=create, database_url=found.settings.database_url)
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    except RegistryNotFound as exc:
        origin = found.origins["data_dir"]
        source = "data_dir: the default" if origin == DEFAULT_ORIGIN else f"data_dir from {origin}"
        raise CliError(
            f"no app registry at {exc.path.absolute()} ({source}); point at the server's data directory "
            f"with --data-dir DIR, data_dir in {CONFIG_FILE} or {ENV_PREFIX}DATA_DIR (`opengme config` "
            "shows what is used), or create an app there with `opengme app create NAME`"
        ) from None


def load_app(args: argparse.Namespace, hint: str = "see `opengme app list`") -> App:
    """The app ``args.app_id`` from the data directory's registry, or a one-line CLI error."""
    store = open_registry(args)
    try:
        app = store.get(args.app_id)
    finally:
        store.close()
    if app is None:
        raise CliError(f"no app with AppID {args.app_id} in {store.data_dir}; {hint}")
    return app


def app_or_only(args: argparse.Namespace) -> App:
    """``args.app_id``'s app, or when none is given the registry's only app (a one-line error when
    it holds none or several: the user must choose)."""
    if args.app_id is not None:
        return load_app(args, "see `opengme app list`, or pass --app")
    store = open_registry(args)
    try:
        apps = store.list()
    finally:
        store.close()
    if len(apps) != 1:
        found = "no app" if not apps else f"{len(apps)} apps"
        raise CliError(f"{found} in {store.data_dir}: choose one with --app APPID (see `opengme app list`)")
    return apps[0]


def build_parser() -> Parser:
    from opengme.cli import (
        apikey_cmd,
        app_cmd,
        authbuffer_cmd,
        config_cmd,
        console_cmd,
        errors_cmd,
        join_cmd,
        loadtest_cmd,
        message_cmd,
        messages_cmd,
        recordings_cmd,
        rooms_cmd,
        say_cmd,
        serve_cmd,
        transcribe_cmd,
        worker_cmd,
    )

    common = argparse.ArgumentParser(add_help=False)
    _add_global_flags(common, argparse.SUPPRESS)  # not given after the subcommand: keep the one before
    parser = Parser(
        prog="opengme",
        description="OpenGME: a self-hostable game voice engine that behaves like Tencent Cloud GME.",
    )
    parser.add_argument("--version", action="version", version=f"opengme {__version__}")
    _add_global_flags(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (serve_cmd, config_cmd, app_cmd, apikey_cmd, authbuffer_cmd, errors_cmd, rooms_cmd, join_cmd,
                   messages_cmd, message_cmd, transcribe_cmd, say_cmd, console_cmd, recordings_cmd, loadtest_cmd,
                   worker_cmd):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        sys.stderr.write(f"opengme {args.command}: {exc}\n")
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `opengme errors | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
