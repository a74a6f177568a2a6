"""``opengme serve``: run the server on embedded defaults (overridable by opengme.toml, env, flags)."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from opengme.cli import CliError
from opengme.config import ConfigError, load_settings
from opengme.logs import setup_logging

if TYPE_CHECKING:
    from opengme.server.app import Server


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="run the OpenGME server (HTTP/WebSocket on one port)",
        description="Run the OpenGME server until SIGINT/SIGTERM. Settings come from embedded defaults, "
        "then ./opengme.toml (or --config), then OPENGME_* environment variables, then these flags. "
        "On the first start with no app it creates a 'dev' app and prints its AppID and key.",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8090; 0 picks a free port)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opengme.server.app import ensure_dev_app
    from opengme.server.app import run as run_server
    from opengme.store import AppStore

    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "log_level": args.log_level}
    try:
        settings = load_settings(config_file=args.config, overrides=overrides)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    setup_logging(settings.log_level)
    store = AppStore(settings.data_dir)
    dev = ensure_dev_app(store)
    store.close()

    def ready(server: Server) -> None:
        # The "listening" line comes last: scripts and tests wait for it.
        if dev is not None:
            print(
                f"Created app 'dev': AppID {dev.app_id}, permission key {dev.key}\n"
                f"Try: opengme authbuffer gen {dev.app_id} 10001 --room demo --data-dir {settings.data_dir}",
                flush=True,
            )
        print(f"OpenGME listening on {server.base_url}  (data: {settings.data_dir})", flush=True)

    try:
        run_server(settings, ready)
    except OSError as exc:
        raise CliError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None
    sys.stdout.flush()
    return 0
