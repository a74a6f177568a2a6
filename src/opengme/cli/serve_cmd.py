"""``opengme serve``: run the server on embedded defaults (overridable by opengme.toml, env, flags)."""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opengme.cli import CliError, resolved_settings, settings_command
from opengme.config import CONFIG_FILE, DEFAULT_ORIGIN, ENV_PREFIX
from opengme.logs import setup_logging

if TYPE_CHECKING:
    from opengme.server.app import Server
    from opengme.store import App


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = settings_command(
        sub, common, "serve", "run the OpenGME server (HTTP/WebSocket on one port)",
        "Run the OpenGME server until SIGINT/SIGTERM. Settings come from embedded defaults, then "
        "./opengme.toml (or --config), then OPENGME_* environment variables, then these flags "
        "(`opengme config` shows the result). On the first start with no app it creates a 'dev' app "
        "and prints its AppID and key.",
    )
    p.set_defaults(func=run)


def this_program() -> str:
    """How to run this same ``opengme`` again from the current directory, for the hints it prints.

    After ``make serve`` that is ``.venv/bin/opengme`` (not on PATH); with the venv active, ``opengme``;
    under ``python -m opengme``, that interpreter with ``-m opengme``.
    """
    argv0 = Path(sys.argv[0])
    if argv0.name == "__main__.py":
        return f"{_shortest(Path(sys.executable))} -m opengme"
    on_path = shutil.which(argv0.name)
    if on_path is not None and Path(on_path).resolve() == argv0.resolve():
        return argv0.name
    return _shortest(argv0)


def _shortest(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (as the user typed it), quoted."""
    absolute = path.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(absolute))
    text = str(relative)
    return shlex.quote(text if "/" in text else f"./{text}")


def _port_hint(port: int, origin: str) -> str:
    given = "the default" if origin == DEFAULT_ORIGIN else f"from {origin}"
    return (f"port {port} is {given}: pick another with --port N, `port = N` in {CONFIG_FILE} or "
            f"{ENV_PREFIX}PORT=N (0 picks a free port)")


def run(args: argparse.Namespace) -> int:
    from opengme.cluster import ClusterError
    from opengme.datadir import DataDirError
    from opengme.server.app import run as run_server

    found = resolved_settings(args)
    settings = found.settings
    setup_logging(settings.log_level, settings.log_format)

    def ready(server: Server, dev: App | None) -> None:
        from opengme.server import console

        # The "listening" line comes last: scripts and tests wait for it.
        if dev is not None:
            data = shlex.quote(str(settings.data_dir))
            print(
                f"Created app 'dev': AppID {dev.app_id}, permission key {dev.key}\n"
                f"Try: {this_program()} authbuffer gen {dev.app_id} 10001 --room demo --data-dir {data}",
                flush=True,
            )
        token = console.get(server).first_token
        if token is not None:
            print(f"Web console: {server.base_url}/console  operator token (shown once; "
                  f"`{this_program()} console-token` makes another): {token}", flush=True)
        print(f"OpenGME listening on {server.base_url}  (data: {settings.data_dir})", flush=True)

    try:
        run_server(settings, ready)
    except (DataDirError, ClusterError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        udp = f" (or the UDP port {settings.udp_port}: udp_port)" if settings.udp_port else ""
        raise CliError(f"cannot listen on {settings.host}:{settings.port}{udp}: {exc.strerror or exc}; "
                       f"{_port_hint(settings.port, found.origins['port'])}") from None
    sys.stdout.flush()
    return 0
