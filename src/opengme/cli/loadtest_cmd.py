"""``opengme loadtest``: load a running server with simulated members and say how it coped.

Members enter through the real signalling with AuthBuffers signed with the app's key from the data
directory (as ``opengme join``), bind the UDP media path and send paced, encrypted Opus-sized
datagrams (``opengme.loadtest``). It prints the join rate and entry latency, the forwarded rate,
loss and end-to-end latency, with a live line on stderr; ``--plot`` draws rate and latency over time
and ``--baseline`` plays the same traffic through a bare UDP forwarder for comparison. A server that
is not on this machine is refused unless ``--allow-remote`` says it is meant.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from urllib.parse import urlsplit

from opengme.cli import CliError, app_or_only, not_running_hint, server_flag, server_of
from opengme.events import RoomType
from opengme.loadtest.plan import MAX_DURATION_S, MAX_MEMBERS, Plan, PlanError, is_loopback

if TYPE_CHECKING:
    pass

T = TypeVar("T")
PER_ADDRESS_HINT = ("a load test comes from one address: start the server with OPENGME_MAX_IP_CONNECTIONS=0 "
                    "OPENGME_MAX_IP_ENTRY_RATE=0 (per-address caps off) for more than a few dozen members")

_EXAMPLES = """\
examples:
  opengme loadtest --rooms 2 --members 3 --speakers 2 --duration 5
  opengme loadtest --rooms 50 --members 5 --speakers 5 --duration 10 --baseline --plot load.png
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "loadtest",
        parents=[common],
        help="load a running server with simulated members (join rate, forwarded rate, loss, latency)",
        description=textwrap.fill(
            f"Enter --rooms × --members simulated members (at most {MAX_MEMBERS}) through the signalling, "
            "have --speakers of each room send 50 encrypted Opus-sized packets/s for --duration seconds "
            f"(at most {MAX_DURATION_S:g}), and report what the relay forwarded. Members sign AuthBuffers "
            "with the app's key from --data-dir. A server with the default per-address caps admits 64 "
            "members from one machine: start it with OPENGME_MAX_IP_CONNECTIONS=0 "
            "OPENGME_MAX_IP_ENTRY_RATE=0 for more. A cluster: --server URL1,URL2,… spreads the entries "
            "over its nodes (each follows the redirect to the node serving its room).", 79),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server_flag(p)
    p.add_argument("--rooms", type=int, required=True, metavar="N", help="rooms")
    p.add_argument("--members", type=int, required=True, metavar="M", help="members per room")
    p.add_argument("--speakers", type=int, required=True, metavar="K", help="members per room who talk")
    p.add_argument("--duration", type=float, required=True, metavar="S", help="seconds of talk")
    p.add_argument("--room-type", type=int, default=RoomType.FLUENCY, choices=[int(t) for t in RoomType],
                   help="1 FLUENCY (default), 2 STANDARD, 3 HIGHQUALITY: sets the packet size")
    p.add_argument("--app", dest="app_id", metavar="APPID",
                   help="the app whose key signs the members' AuthBuffers (default: the only app)")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="draw forwarded rate and latency over time")
    p.add_argument("--baseline", action="store_true",
                   help="also play the same traffic through a bare UDP forwarder on 127.0.0.1 and print "
                   "the relay's ratio to it")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --server that is not on this machine (the test sends it real load)")
    p.set_defaults(func=run)


class LiveLine:
    """The progress line on stderr: redrawn in place on a terminal, a plain line a second otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._count = 0

    def __call__(self, text: str) -> None:
        self._count += 1
        if self.tty:
            self.out.write("\r\x1b[K" + text)
        elif self._count % 2:
            self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty and self._count:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows has no uvloop
        return asyncio.run(main)
    return uvloop.run(main)


def _servers(args: argparse.Namespace) -> list[str]:
    """``--server`` as one URL or several, comma-separated (a cluster's nodes: entries are spread over
    them, and each follows ``redirect`` to the node serving its room)."""
    if not args.server or "," not in args.server:
        return [server_of(args)]
    return [server_of(argparse.Namespace(server=part.strip())) for part in args.server.split(",") if part.strip()]


def run(args: argparse.Namespace) -> int:
    try:
        plan = Plan(args.rooms, args.members, args.speakers, args.duration, args.room_type)
    except PlanError as exc:
        raise CliError(str(exc)) from None
    servers = _servers(args)
    server = ",".join(servers)
    for host in (urlsplit(url).hostname or "" for url in servers):
        if not is_loopback(host) and not args.allow_remote:
            raise CliError(f"{host} is not this machine: a load test sends real load ({plan.expected_rate:,.0f} "
                           "packets/s forwarded); pass --allow-remote if that is meant")
    if args.plot is not None:
        from opengme.loadtest.plot import PlotError, check_available

        try:
            check_available()
        except PlotError as exc:
            raise CliError(str(exc)) from None
    app = app_or_only(args)
    from opengme.loadtest import runner, stats

    target = runner.Target(servers[0], app.app_id, app.key, tuple(servers))
    out, live = sys.stdout, LiveLine(sys.stderr)
    print(f"opengme loadtest: {_count(plan.rooms, 'room')} × {_count(plan.members, 'member')} "
          f"({plan.speakers} speaking), "
          f"{plan.duration:g} s, {RoomType(plan.room_type).name} rooms, app {app.app_id}, server {server}; "
          f"{plan.expected_rate:,.0f} packets/s to forward", file=out, flush=True)
    try:
        result = _run_loop(runner.run_relay(plan, target, live))
        timelines = {"relay": result.timeline}
        lines = result.entries.lines() + result.traffic.lines("relay")
        if args.baseline and result.entries.entered:
            bare, timelines["baseline"] = _run_loop(runner.run_baseline(plan, live))
            lines += bare.lines("baseline") + stats.comparison(result.traffic, bare)
    except runner.NoServer as exc:
        raise CliError(f"cannot reach the server at {server}: {exc} ({not_running_hint(server)})", 1) from None
    except runner.BaselineError as exc:
        raise CliError(f"--baseline: {exc}", 1) from None
    finally:
        live.end()
    print("\n".join(lines), file=out, flush=True)
    if args.plot is not None:
        from opengme.loadtest.plot import PlotError, draw

        try:
            draw(args.plot, timelines, f"{_count(plan.rooms, 'room')} × {_count(plan.members, 'member')}, "
                 f"{plan.speakers} speaking")
        except PlotError as exc:
            raise CliError(str(exc)) from None
        print(f"plot: {args.plot}", file=out)
    if result.entries.entered < plan.total:
        raise CliError(f"{plan.total - result.entries.entered} of {plan.total} members did not enter "
                       f"(reasons above); {PER_ADDRESS_HINT}", 1)
    return 0
