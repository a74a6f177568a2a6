"""Wiring of ``opengme serve``: one asyncio process with the HTTP/WebSocket server and its parts.

Each part (signalling, admin API, media relay …) is a module with a ``setup(server)`` function that
adds its routes and start/stop hooks, so this file stays the table of contents.

The event loop also carries the media relay, so nothing blocking runs on it: reads of the app
registry (SQLite) and AuthBuffer checks go through ``Server.run_blocking`` to a few worker threads.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from opengme import __version__
from opengme.config import Settings
from opengme.datadir import ServerLock, prepare
from opengme.logs import fields
from opengme.server.gate import Gate, GatedRunner
from opengme.server.metrics import CONTENT_TYPE, Metrics
from opengme.store import App, AppStore

log = logging.getLogger("opengme.server")

Hook = Callable[[], Awaitable[None]]
P = ParamSpec("P")
T = TypeVar("T")
BLOCKING_WORKERS = 2
"""Threads for blocking work. Few on purpose: pure-Python TEA holds the GIL, and every extra thread
that wants it lengthens the event loop's waits; two keep one slow SQLite read from stalling the rest."""


@dataclass
class Server:
    """The running server's shared state: settings, app registry, metrics and the aiohttp app."""

    settings: Settings
    store: AppStore
    metrics: Metrics = field(default_factory=Metrics)
    web_app: web.Application = field(default_factory=web.Application)
    started_at: float = field(default_factory=time.time)
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    base_url: str = ""
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(BLOCKING_WORKERS, thread_name_prefix="opengme-blocking"))

    def __post_init__(self) -> None:
        self.web_app.router.add_get("/healthz", self._healthz)
        self.web_app.router.add_get("/metrics", self._metrics)
        self._apps = 0  # read off the event loop before each scrape (SQLite)
        self.metrics.gauge("opengme_apps", "Apps in the registry.", lambda: self._apps)
        self.on_stop.insert(0, self._stop_workers)  # first in the list: the last hook to run on stop
        self.gate = Gate(self.settings, self.metrics)  # connection caps and the header deadline

    def runner(self, **options: Any) -> web.AppRunner:
        """The aiohttp runner to serve this server with: its connections pass ``gate``."""
        return GatedRunner(self.web_app, self.gate, **options)

    def uptime(self) -> float:
        return time.time() - self.started_at

    async def run_blocking(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` on a worker thread (SQLite, CPU-heavy checks), so that the event loop goes on."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, functools.partial(call, *args, **kwargs))

    async def _stop_workers(self) -> None:
        """Drop queued jobs (their requests' connections are closed by now) and let the threads end."""
        self.workers.shutdown(wait=False, cancel_futures=True)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__, "uptime": round(self.uptime(), 3)})

    async def _metrics(self, request: web.Request) -> web.Response:
        self._apps = len(await asyncio.to_thread(self.store.list))
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def build_server(settings: Settings, store: AppStore | None = None) -> Server:
    """Create the server with every part attached (also used by in-process tests)."""
    from opengme.server import (
        actions,
        admin,
        bus,
        captions,
        cluster,
        console,
        invitations,
        media,
        nodes,
        ptt,
        recording,
        shared_records,
        signalling,
        stt,
        tc3,
        web,
    )

    server = Server(settings=settings, store=store or AppStore(settings.data_dir, database_url=settings.database_url))
    for part in (cluster, nodes, signalling, shared_records, bus, invitations, actions, admin, tc3, media, ptt, stt,
                 captions, recording, console, web):
        part.setup(server)
    return server


def ensure_dev_app(store: AppStore) -> App | None:
    """On a first start with no app, create a ``dev`` app so a newcomer can go on at once."""
    return store.create_first("dev")


async def serve(settings: Settings, ready: Callable[[Server], None] | None = None,
                store: AppStore | None = None) -> None:
    """Run until SIGINT/SIGTERM, then stop every part cleanly."""
    server = build_server(settings, store)
    runner = server.runner(handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{_url_host(host)}:{port}"
    for hook in server.on_start:
        await hook()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", extra=fields(url=server.base_url, data_dir=str(settings.data_dir), version=__version__))
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        for hook in reversed(server.on_stop):
            await hook()
        await runner.cleanup()
        server.store.close()
        log.info("stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def open_data_dir(settings: Settings) -> tuple[ServerLock, AppStore]:
    """The start-up check: lock the data directory (one server per directory), then open its registry
    and walk the whole database once. :class:`DataDirError` (one line) when either fails; nothing is
    created over a database that exists but cannot be read."""
    prepare(settings.data_dir, create=True)
    lock = ServerLock(settings.data_dir)
    lock.acquire()
    store: AppStore | None = None
    try:
        store = AppStore(settings.data_dir, database_url=settings.database_url)
        store.check()
    except BaseException:
        if store is not None:
            store.close()
        lock.release()
        raise
    return lock, store


Ready = Callable[[Server, App | None], None]
"""Called once the server listens, with the ``dev`` app its first start created (else None)."""


def run(settings: Settings, ready: Ready | None = None) -> None:
    """Blocking entry point used by ``opengme serve``; uvloop when available. Holds the data
    directory's lock for the server's life; :class:`DataDirError` before anything else when the
    directory is taken or damaged."""
    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover - Windows has no uvloop
        runner = asyncio.run
    lock, store = open_data_dir(settings)
    try:
        dev = ensure_dev_app(store)

        def listening(server: Server) -> None:
            if ready is not None:
                ready(server, dev)

        runner(serve(settings, listening, store))
    finally:
        lock.release()
    sys.stdout.flush()
