"""Recognition (and text-to-speech) in worker processes, off the event loop: decoding speech is seconds of CPU that
would otherwise stall signalling and media for every room on the server.

Workers are started with ``spawn`` (never ``fork`` of a process that runs an event loop and threads)
and build their recognisers on first use, so the first job in a language pays the model load once
per worker. At most ``limit`` jobs are admitted at once; a job beyond that is refused at once with
:class:`PoolBusy` instead of queueing behind minutes of audio.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from opengme.errors import ErrorCode, GmeError
from opengme.stt.base import DEFAULT_LANGUAGE, EngineEntry, Pcm, RecognitionFailed, Registry, as_pcm, build_registry

_registry: Registry | None = None  # one per worker process
_T = TypeVar("_T")


class PoolBusy(GmeError):
    """More recognitions are running than the pool admits (32769: the service cannot take it now)."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR,
                         f"{limit} speech recognitions are already running; try again when one finishes")


def _init_worker(entries: tuple[EngineEntry, ...]) -> None:
    global _registry
    _registry = build_registry(entries)


def _transcribe(pcm: bytes, language: str) -> str:
    assert _registry is not None, "worker started without _init_worker"
    return _registry.get(language).transcribe(as_pcm(pcm))


def _synthesize(text: str, language: str, speaking_rate: float) -> bytes:
    from opengme.stt.tts import synthesize

    return synthesize(text, language, speaking_rate).astype("<i2", copy=False).tobytes()


class RecognitionPool:
    """``await pool.transcribe(pcm, "en-US")`` from the event loop; ``close()`` when the server stops."""

    def __init__(self, entries: Iterable[EngineEntry] = (), workers: int = 2, limit: int = 10) -> None:
        if workers < 1 or limit < 1:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"workers ({workers}) and limit ({limit}) must be at least 1")
        self._entries = tuple(entries)
        self._languages = build_registry(self._entries)  # validates entries and languages here, not in a worker
        self.limit = limit
        self.running = 0
        self._executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self._entries,))

    @property
    def languages(self) -> frozenset[str]:
        return self._languages.languages

    async def transcribe(self, pcm: Pcm | bytes, language: str = DEFAULT_LANGUAGE) -> str:
        """The text of a whole 16 kHz mono recording: 1004 for an unsupported language, :class:`PoolBusy`
        beyond the limit, 32785 when the engine fails on the audio."""
        tag = self._languages.resolve(language)
        data = pcm if isinstance(pcm, bytes) else as_pcm(pcm).astype("<i2", copy=False).tobytes()
        return await self._run(_transcribe, data, tag)

    async def synthesize(self, text: str, language: str = DEFAULT_LANGUAGE, speaking_rate: float = 1.0) -> Pcm:
        """``text`` spoken as 16 kHz mono PCM by the offline text-to-speech (1004 for bad arguments)."""
        return as_pcm(await self._run(_synthesize, text, language, speaking_rate))

    async def _run(self, job: Callable[..., _T], *args: object) -> _T:
        if self.running >= self.limit:
            raise PoolBusy(self.limit)
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job, *args)
        except BrokenProcessPool as exc:
            raise RecognitionFailed(f"a speech worker died: {exc}") from exc
        finally:
            self.running -= 1

    def close(self) -> None:
        """Stop the workers (waits for running jobs)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
