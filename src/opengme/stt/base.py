"""The recogniser interface, BCP-47 language codes, and the plug point for other offline engines.

A :class:`Recognizer` turns 16 kHz mono int16 PCM into text, either at once (:meth:`~Recognizer.transcribe`)
or as it is captured (:meth:`~Recognizer.stream`: feed chunks, read partial hypotheses, finish).
A plugged-in engine implements :meth:`~Recognizer.open_stream`; levelling is done here for every engine.

Plugging another offline engine (faster-whisper, Vosk, sherpa-onnx …): write a :class:`Recognizer`
subclass whose constructor takes ``(model_path: Path, language: str)`` and loads its model from that
local path, then name it in the settings with an :class:`EngineEntry`, for example::

    [[stt.engines]]
    language = "de-DE"
    engine = "mypackage.vosk_engine:VoskRecognizer"
    model = "/srv/models/vosk-model-de-0.21"

:func:`build_registry` turns the entries into a :class:`Registry`; an entry for a language the
default also covers replaces the default for it. An engine that would download a model is not
offline: it must fail at construction when ``model`` is missing, never fetch one.
"""
from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from opengme.errors import ErrorCode, GmeError

SAMPLE_RATE: Final = 16_000
DEFAULT_LANGUAGE: Final = "en-US"
TARGET_PEAK: Final = 0.7 * 32767  # leave headroom: pocketsphinx's features dislike clipped speech
MAX_GAIN: Final = 30.0  # a quiet mic is lifted, but silence is not turned into loud noise

Pcm = npt.NDArray[np.int16]
_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class UnsupportedLanguage(GmeError):
    """No installed engine recognises this language (1004: the caller passed an unusable argument)."""

    def __init__(self, language: str, supported: Iterable[str] | None) -> None:
        if supported is None:
            detail = f"{language!r} is not a BCP-47 language code such as en-US"
        else:
            detail = (f"speech-to-text language {language!r} is not supported by any installed engine; "
                      f"supported: {', '.join(sorted(supported)) or 'none'}")
        super().__init__(ErrorCode.AV_ERR_INVALID_ARGUMENT, detail)
        self.language = language


class RecognitionFailed(GmeError):
    """The engine failed on this audio (32785, the recogniser's own error)."""

    def __init__(self, detail: str) -> None:
        super().__init__(ErrorCode.QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR, detail)

    def __reduce__(self) -> tuple[object, ...]:
        """Crosses from a worker process as the :class:`GmeError` it is (its constructor differs)."""
        return GmeError, (self.code, self.detail)


def canonical_language(code: str) -> str:
    """A BCP-47 tag in its usual casing (``en-us`` → ``en-US``, ``zh-hans-cn`` → ``zh-Hans-CN``);
    anything that is not a tag is :class:`UnsupportedLanguage`."""
    if not isinstance(code, str) or not _TAG.match(code):
        raise UnsupportedLanguage(str(code), None)
    first, *rest = code.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 2 or (len(part) == 3 and part.isdigit()):
            parts.append(part.upper())  # region
        elif len(part) == 4:
            parts.append(part.title())  # script
        else:
            parts.append(part.lower())
    return "-".join(parts)


def as_pcm(samples: npt.ArrayLike | bytes) -> Pcm:
    """16 kHz mono int16 samples from an array or raw little-endian bytes."""
    if isinstance(samples, bytes | bytearray | memoryview):
        return np.frombuffer(samples, dtype="<i2").astype(np.int16, copy=False)
    return np.asarray(samples, dtype=np.int16).reshape(-1)


def normalise_level(pcm: Pcm, gain: float | None = None) -> Pcm:
    """``pcm`` scaled so its peak sits at :data:`TARGET_PEAK` (or by ``gain``), never above
    :data:`MAX_GAIN`: recognisers are trained on speech at a sane level, not on a whispering mic."""
    if gain is None:
        gain = level_gain(pcm)
    if gain == 1.0:
        return pcm
    scaled: Pcm = np.clip(np.rint(pcm.astype(np.float32) * gain), -32768, 32767).astype(np.int16)
    return scaled


def level_gain(pcm: Pcm) -> float:
    """The gain :func:`normalise_level` applies to bring ``pcm``'s peak to :data:`TARGET_PEAK`."""
    peak = int(np.max(np.abs(pcm.astype(np.int32)))) if len(pcm) else 0
    return 1.0 if peak == 0 else min(MAX_GAIN, TARGET_PEAK / peak)


class RecognitionStream(ABC):
    """One utterance recognised while it is captured."""

    @abstractmethod
    def feed(self, pcm: Pcm) -> str:
        """Add captured audio; returns the partial hypothesis so far ("" when nothing yet)."""

    @abstractmethod
    def finish(self) -> str:
        """End the utterance and return the final text; the stream cannot be fed afterwards."""


class LevelledStream(RecognitionStream):
    """A stream whose audio is levelled as it comes: the gain follows the loudest sample so far and
    only ever goes down, so a quiet mic is lifted without a later loud word being clipped twice."""

    def __init__(self, inner: RecognitionStream) -> None:
        self._inner = inner
        self._gain = MAX_GAIN

    def feed(self, pcm: Pcm) -> str:
        samples = as_pcm(pcm)
        self._gain = min(self._gain, level_gain(samples))
        return self._inner.feed(normalise_level(samples, self._gain))

    def finish(self) -> str:
        return self._inner.finish()


class Recognizer(ABC):
    """An offline speech recogniser for one language, fed 16 kHz mono int16 PCM."""

    language: str

    @abstractmethod
    def open_stream(self) -> RecognitionStream:
        """A new streaming session on the engine, fed audio as it is (no levelling)."""

    def stream(self) -> RecognitionStream:
        """A new streaming session whose audio is levelled as it is captured."""
        return LevelledStream(self.open_stream())

    def transcribe(self, pcm: Pcm) -> str:
        """The text spoken in a whole recording (its level normalised first)."""
        session = self.open_stream()
        session.feed(normalise_level(as_pcm(pcm)))
        return session.finish()


RecognizerFactory = Callable[[str], Recognizer]


@dataclass(frozen=True)
class EngineEntry:
    """A settings entry: ``engine`` is ``"module:Class"``, a :class:`Recognizer` whose constructor takes
    ``(model_path, language)``; ``model`` is the local model directory or file it loads."""

    language: str
    engine: str
    model: Path

    def factory(self) -> RecognizerFactory:
        cls = load_engine_class(self.engine)
        model = Path(self.model)
        if not model.exists():
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                           f"speech-to-text engine {self.engine} for {self.language}: model {model} does not exist "
                           "(models are never downloaded; give the path of one on this machine)")
        return lambda language: cls(model, language)  # type: ignore[call-arg]


def load_engine_class(spec: str) -> type[Recognizer]:
    """The class named by ``"module:Class"``, checked to be a :class:`Recognizer`."""
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr) if attr else None
    except (ImportError, AttributeError) as exc:
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"speech-to-text engine {spec!r} cannot be loaded: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Recognizer)):
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                       f"speech-to-text engine {spec!r} is not 'module:Class' naming a Recognizer subclass")
    return found


class Registry:
    """Which engine recognises which language; recognisers are built on first use and kept."""

    def __init__(self, factories: dict[str, RecognizerFactory]) -> None:
        self._factories = {canonical_language(lang): f for lang, f in factories.items()}
        self._built: dict[str, Recognizer] = {}

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(self._factories)

    def resolve(self, language: str) -> str:
        """The supported tag ``language`` names (a bare ``en`` picks the first ``en-*``), or
        :class:`UnsupportedLanguage`."""
        tag = canonical_language(language)
        if tag in self._factories:
            return tag
        for known in sorted(self._factories):
            if "-" not in tag and known.split("-")[0] == tag:
                return known
        raise UnsupportedLanguage(language, self._factories)

    def build(self, language: str = DEFAULT_LANGUAGE) -> Recognizer:
        """A new recogniser of its own (a stream that runs beside others needs one)."""
        tag = self.resolve(language)
        return self._factories[tag](tag)

    def get(self, language: str = DEFAULT_LANGUAGE) -> Recognizer:
        tag = self.resolve(language)
        if tag not in self._built:
            self._built[tag] = self._factories[tag](tag)
        return self._built[tag]


def build_registry(entries: Iterable[EngineEntry] = ()) -> Registry:
    """The default engines plus the configured ones (a configured language replaces the default)."""
    from opengme.stt.pocketsphinx import PocketsphinxRecognizer

    factories: dict[str, RecognizerFactory] = dict.fromkeys(PocketsphinxRecognizer.LANGUAGES, PocketsphinxRecognizer)
    for entry in entries:
        factories[canonical_language(entry.language)] = entry.factory()
    return Registry(factories)
