"""``opengme``: the command line. Each subcommand lives in its own module with a ``register`` function."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from opengme import __version__
from opengme.config import ConfigError, load_settings

if TYPE_CHECKING:
    from opengme.store import App


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


def data_dir(args: argparse.Namespace) -> Path:
    """The data directory a command works on: ``--data-dir``, else settings, else ./opengme-data."""
    try:
        return load_settings(config_file=args.config, overrides={"data_dir": args.data_dir}).data_dir
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def load_app(args: argparse.Namespace, hint: str = "see `opengme app list`") -> App:
    """The app ``args.app_id`` from the data directory's registry, or a one-line CLI error."""
    from opengme.store import AppStore

    directory = data_dir(args)
    store = AppStore(directory)
    try:
        app = store.get(args.app_id)
    finally:
        store.close()
    if app is None:
        raise CliError(f"no app with AppID {args.app_id} in {directory}; {hint}")
    return app


def build_parser() -> Parser:
    from opengme.cli import app_cmd, authbuffer_cmd, errors_cmd, join_cmd, messages_cmd, rooms_cmd, serve_cmd

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the server keeps its database and files (default: ./opengme-data, "
        "or data_dir from opengme.toml / OPENGME_DATA_DIR)",
    )
    common.add_argument(
        "--config", type=Path, default=None, help="settings file (default: ./opengme.toml when it exists)"
    )
    parser = Parser(
        prog="opengme",
        description="OpenGME: a self-hostable game voice engine that behaves like Tencent Cloud GME.",
    )
    parser.add_argument("--version", action="version", version=f"opengme {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (serve_cmd, app_cmd, authbuffer_cmd, errors_cmd, rooms_cmd, join_cmd, messages_cmd):
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
