"""Recognition (and text-to-speech) in worker processes, off the event loop: decoding speech is seconds of CPU that
would otherwise stall signalling and media for every room on the server.

Workers are started with ``spawn`` (never ``fork`` of a process that runs an event loop and threads)
and build their recognisers on first use, so the first job in a language pays the model load once
per worker. At most ``limit`` jobs are admitted at once; a job beyond that is refused at once with
:class:`PoolBusy` instead of queueing behind minutes of audio.
"""
from __future__ import annotations

import asyncio
import io
import multiprocessing
import signal
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from opengme.errors import ErrorCode, GmeError
from opengme.stt.base import (
    DEFAULT_LANGUAGE,
    SAMPLE_RATE,
    EngineEntry,
    Pcm,
    RecognitionFailed,
    Registry,
    as_pcm,
    build_registry,
)

_registry: Registry | None = None  # one per worker process
_T = TypeVar("_T")


class PoolBusy(GmeError):
    """More recognitions are running than the pool admits (32769: the service cannot take it now)."""

    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR,
                         f"{limit} speech recognitions are already running; try again when one finishes")


def _init_worker(entries: tuple[EngineEntry, ...]) -> None:
    """Also ignores SIGINT: a Ctrl-C in the terminal reaches the whole process group, and it is the
    parent (``serve``, ``worker``) that decides how to stop, not a traceback from each worker."""
    global _registry
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _registry = build_registry(entries)


def _transcribe(pcm: bytes, language: str) -> str:
    assert _registry is not None, "worker started without _init_worker"
    return _registry.get(language).transcribe(as_pcm(pcm))


def _synthesize(text: str, language: str, speaking_rate: float) -> bytes:
    from opengme.stt.tts import synthesize

    return synthesize(text, language, speaking_rate).astype("<i2", copy=False).tobytes()


def _transcribe_voice(data: bytes, language: str) -> str:
    """A stored voice message's text: decoding it is costly too, so it happens here, not in the server."""
    assert _registry is not None, "worker started without _init_worker"
    from opengme.codec.audiofile import decode_pcm

    try:
        container = av.open(io.BytesIO(data), mode="r")
        try:
            chunks = list(decode_pcm(container, SAMPLE_RATE, 1, Path("voice message")))
        finally:
            container.close()
    except (av.FFmpegError, ValueError, GmeError) as exc:
        raise RecognitionFailed(f"the voice message cannot be decoded: {exc}") from None
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return _registry.get(language).transcribe(pcm)


def _speak_voice(text: str, language: str, speaking_rate: float) -> bytes:
    """``text`` spoken, as the bytes of an Ogg/Opus voice message."""
    from opengme.codec.voicefile import encode_voice_file
    from opengme.stt.tts import synthesize

    pcm = synthesize(text, language, speaking_rate)
    with tempfile.TemporaryDirectory(prefix="opengme-tts-") as folder:
        return encode_voice_file(Path(folder) / "speech.ogg", pcm).read_bytes()


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

    def resolve(self, language: str) -> str:
        """The supported tag ``language`` names, or :class:`~opengme.stt.base.UnsupportedLanguage` (1004)."""
        return self._languages.resolve(language)

    async def transcribe(self, pcm: Pcm | bytes, language: str = DEFAULT_LANGUAGE) -> str:
        """The text of a whole 16 kHz mono recording: 1004 for an unsupported language, :class:`PoolBusy`
        beyond the limit, 32785 when the engine fails on the audio."""
        tag = self._languages.resolve(language)
        data = pcm if isinstance(pcm, bytes) else as_pcm(pcm).astype("<i2", copy=False).tobytes()
        return await self._run(_transcribe, data, tag)

    async def synthesize(self, text: str, language: str = DEFAULT_LANGUAGE, speaking_rate: float = 1.0) -> Pcm:
        """``text`` spoken as 16 kHz mono PCM by the offline text-to-speech (1004 for bad arguments)."""
        return as_pcm(await self._run(_synthesize, text, language, speaking_rate))

    async def transcribe_voice(self, data: bytes, language: str = DEFAULT_LANGUAGE) -> str:
        """The text of an Ogg/Opus voice message (decoded in the worker): as :meth:`transcribe`."""
        return await self._run(_transcribe_voice, data, self._languages.resolve(language))

    async def speak_voice(self, text: str, language: str = DEFAULT_LANGUAGE, speaking_rate: float = 1.0) -> bytes:
        """``text`` spoken, as an Ogg/Opus voice message's bytes (encoded in the worker)."""
        return await self._run(_speak_voice, text, language, speaking_rate)

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
