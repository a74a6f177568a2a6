"""``opengme console-token``: a new operator token for the web console (``/console``).

The token replaces the previous one (whose console sessions then end); only its hash is stored, in
the data directory's ``opengme.db``, so it is printed once and cannot be shown again.
"""
from __future__ import annotations

import argparse
import time

from opengme.cli import CliError, resolved_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("console-token", parents=[common], help="print a new operator token for the web console",
                       description="Create a new operator token for the web console at /console, replacing the "
                       "previous one (signed-in consoles are signed out). The token is printed once; only its "
                       "hash is kept in the data directory.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opengme.datadir import DataDirError
    from opengme.server.console_auth import OperatorTokens

    settings = resolved_settings(args).settings
    data_dir = settings.data_dir
    if not settings.database_url and not (data_dir / "opengme.db").exists():
        raise CliError(f"no data directory with a registry at {data_dir.absolute()}; start `opengme serve` there "
                       "first, or point at it with --data-dir DIR")
    try:
        tokens = OperatorTokens(data_dir, settings.database_url)
    except DataDirError as exc:
        raise CliError(str(exc)) from None
    try:
        token = tokens.issue(time.time())
    finally:
        tokens.close()
    print(f"Console operator token (shown once; sign in at /console): {token}")
    return 0
