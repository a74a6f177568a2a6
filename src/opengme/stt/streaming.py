"""Recognition while audio arrives (streaming voice messages, live captions), in worker processes.

A stream keeps state between its chunks (the decoder's search, the Opus decoder, the level), so it
is pinned to one worker: :class:`StreamWorkers` runs ``workers`` single-process executors and gives
stream *n* to worker *n mod workers*. Inside a worker each stream has a recogniser of its own (taken
from a per-language free list, so that a finished stream's decoder serves the next one without
loading the model again) and an Opus decoder at 16 kHz.

Audio goes in as Opus packets (what the server already has for captions, and 20 kbit/s instead of
256 for a streaming client); the caller coalesces: while one ``feed`` runs, packets that arrive are
kept and sent together with the next one, so a slow worker means fewer, larger chunks, never a queue
that grows.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from opengme.codec.opus import FLUENCY, CodecError, OpusDecoder
from opengme.errors import GmeError
from opengme.stt.base import (
    DEFAULT_LANGUAGE,
    EngineEntry,
    RecognitionFailed,
    RecognitionStream,
    Recognizer,
    Registry,
    build_registry,
)

MAX_PACKET = 1275  # the largest Opus packet


@dataclass
class _Live:
    recognizer: Recognizer
    stream: RecognitionStream
    decoder: OpusDecoder = field(default_factory=lambda: OpusDecoder(FLUENCY, sample_rate=16_000))


_registry: Registry | None = None
_idle: dict[str, list[Recognizer]] = {}
_live: dict[int, _Live] = {}


def _init_worker(entries: tuple[EngineEntry, ...]) -> None:
    global _registry
    _registry = build_registry(entries)


def _open(sid: int, language: str) -> None:
    assert _registry is not None, "worker started without _init_worker"
    free = _idle.setdefault(language, [])
    recognizer = free.pop() if free else _registry.build(language)
    _live[sid] = _Live(recognizer, recognizer.stream())


def _feed(sid: int, packets: list[bytes]) -> str:
    live = _live.get(sid)
    if live is None:
        raise RecognitionFailed("this recognition stream is not open")
    import numpy as np

    frames = []
    for packet in packets:
        try:
            frames.append(live.decoder.decode(packet))
        except CodecError:
            frames.append(live.decoder.conceal())  # one bad packet is a gap, not the end of the stream
    return live.stream.feed(np.concatenate(frames).reshape(-1)) if frames else ""


def _finish(sid: int) -> str:
    live = _live.pop(sid, None)
    if live is None:
        raise RecognitionFailed("this recognition stream is not open")
    try:
        return live.stream.finish()
    finally:
        _idle.setdefault(live.recognizer.language, []).append(live.recognizer)


class StreamWorkers:
    """The worker processes of streaming recognition; :meth:`open` a :class:`LiveStream` per utterance."""

    def __init__(self, entries: Iterable[EngineEntry] = (), workers: int = 1) -> None:
        self._entries = tuple(entries)
        self._languages = build_registry(self._entries)
        context = multiprocessing.get_context("spawn")
        self._executors = [ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker,
                                               initargs=(self._entries,)) for _ in range(max(1, workers))]
        self._ids = itertools.count(1)

    def resolve(self, language: str) -> str:
        """The supported tag ``language`` names, or 1004 (:class:`~opengme.stt.base.UnsupportedLanguage`)."""
        return self._languages.resolve(language)

    def open(self, language: str = DEFAULT_LANGUAGE) -> LiveStream:
        """A new stream (1004 for a language no engine supports); it opens in its worker on first use."""
        tag = self._languages.resolve(language)
        sid = next(self._ids)
        return LiveStream(self._executors[sid % len(self._executors)], sid, tag)

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)


class LiveStream:
    """One utterance recognised as its Opus packets arrive (used from one event loop)."""

    def __init__(self, executor: ProcessPoolExecutor, sid: int, language: str) -> None:
        self._executor = executor
        self.sid = sid
        self.language = language
        self._opened = False
        self._done = False

    async def _run(self, job: Any, *args: object) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job, *args)
        except BrokenProcessPool as exc:
            raise RecognitionFailed(f"a speech worker died: {exc}") from exc

    async def prepare(self) -> None:
        """Open the stream in its worker now (a first stream there waits for the model to load), so that
        the first audio need not; feeds queue behind it in the worker."""
        await self._ensure_open()

    async def _ensure_open(self) -> None:
        if not self._opened:
            self._opened = True
            await self._run(_open, self.sid, self.language)

    async def feed(self, packets: list[bytes]) -> str:
        """The partial hypothesis after these packets (20 ms of Opus each)."""
        await self._ensure_open()
        text: str = await self._run(_feed, self.sid, packets)
        return text

    async def finish(self) -> str:
        """The final text; the stream is closed afterwards."""
        await self._ensure_open()
        self._done = True
        text: str = await self._run(_finish, self.sid)
        return text

    async def close(self) -> None:
        """Drop an unfinished stream (its recogniser goes back to the worker's free list)."""
        if self._opened and not self._done:
            self._done = True
            with contextlib.suppress(GmeError):
                await self._run(_finish, self.sid)
