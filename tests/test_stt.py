"""The speech recogniser (pocketsphinx, en-US), its language registry and plug point, and the offline
text-to-speech, on real recorded read speech (LibriVox), the synthetic clip and synthesised speech."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pocketsphinx
import pytest

from opengme.errors import ErrorCode, GmeError
from opengme.stt.base import (
    EngineEntry,
    RecognitionFailed,
    Registry,
    UnsupportedLanguage,
    build_registry,
    canonical_language,
    level_gain,
    normalise_level,
)
from opengme.stt.pocketsphinx import PocketsphinxRecognizer
from opengme.stt.tts import synthesize
from support.speech import DATA, JOHN, JOHN_WORDS, read_wav, words


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry()


def test_read_speech_is_recognised_with_its_key_words(registry: Registry) -> None:
    assert words(registry.get("en-US").transcribe(read_wav(JOHN))) >= JOHN_WORDS


def test_a_quiet_recording_is_levelled_before_recognition(registry: Registry) -> None:
    quiet = (read_wav(JOHN) // 25).astype(np.int16)
    assert level_gain(quiet) > 10
    assert words(registry.get().transcribe(quiet)) >= JOHN_WORDS


def test_level_normalisation_bounds() -> None:
    silence = np.zeros(1600, np.int16)
    assert normalise_level(silence) is silence  # silence is not amplified into noise
    loud = np.array([32767, -32768, 0], np.int16)
    assert np.abs(normalise_level(loud).astype(np.int32)).max() < 32767 * 0.75
    assert level_gain(np.array([1], np.int16)) == 30.0  # capped


def test_the_synthetic_repository_clip_gives_recognisable_words(registry: Registry) -> None:
    heard = words(registry.get().transcribe(read_wav(DATA / "speech_en_16k.wav")))
    assert {"room", "microphone"} <= heard


@pytest.mark.public_surface
def test_streaming_gives_partial_hypotheses_then_the_final_text(registry: Registry) -> None:
    pcm = (read_wav(JOHN) // 20).astype(np.int16)  # a quiet mic: levelled as it streams
    session = registry.get().stream()
    partials = [session.feed(pcm[i : i + 8000]) for i in range(0, len(pcm), 8000)]
    assert any(partials[: len(partials) // 2 + 1]), "a partial hypothesis arrives while audio is still coming"
    assert "john" in words(partials[-1])
    assert words(session.finish()) >= JOHN_WORDS
    with pytest.raises(RecognitionFailed) as caught:
        session.feed(pcm[:1600])
    assert caught.value.code == ErrorCode.QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR


@pytest.mark.parametrize(("given", "expected"), [("en-US", "en-US"), ("EN-us", "en-US"), ("zh-hans-cn", "zh-Hans-CN")])
def test_language_codes_are_canonical_bcp47(given: str, expected: str) -> None:
    assert canonical_language(given) == expected


@pytest.mark.parametrize(("language", "fragment"), [
    ("de-DE", "not supported by any installed engine; supported: en-US"), ("fr", "supported: en-US"),
    ("", "not a BCP-47 language code"), ("english please", "not a BCP-47"), ("en_US", "not a BCP-47"),
])
def test_a_language_no_engine_supports_is_refused_clearly(registry: Registry, language: str, fragment: str) -> None:
    with pytest.raises(UnsupportedLanguage) as caught:
        registry.get(language)
    assert caught.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert fragment in caught.value.detail and repr(language) in caught.value.detail


def test_a_bare_language_picks_its_regional_engine(registry: Registry) -> None:
    assert registry.resolve("en") == "en-US"


class LocalModelSphinx(PocketsphinxRecognizer):
    """An engine plugged in through the settings: pocketsphinx loading a model from a local path."""

    def __init__(self, model: Path, language: str) -> None:
        super().__init__(language, hmm=str(model / "en-us"), lm=str(model / "en-us.lm.bin"),
                         dict=str(model / "cmudict-en-us.dict"))


def test_another_engine_plugs_in_with_a_local_model_path() -> None:
    model = Path(pocketsphinx.get_model_path()) / "en-us"
    entry = EngineEntry("en-gb", f"{__name__}:LocalModelSphinx", model)
    registry = build_registry([entry])
    assert registry.languages == {"en-US", "en-GB"}
    recognizer = registry.get("en-GB")
    assert isinstance(recognizer, LocalModelSphinx) and recognizer.language == "en-GB"
    assert words(recognizer.transcribe(read_wav(JOHN))) >= JOHN_WORDS


@pytest.mark.parametrize(("engine", "model", "fragment"), [
    (f"{__name__}:LocalModelSphinx", "/no/such/model", "does not exist"),
    ("no_such_module:Engine", ".", "cannot be loaded"),
    (f"{__name__}:words", ".", "Recognizer subclass"),
    (f"{__name__}", ".", "Recognizer subclass"),
])
def test_a_bad_engine_entry_says_what_to_fix(engine: str, model: str, fragment: str) -> None:
    with pytest.raises(GmeError) as caught:
        build_registry([EngineEntry("de-DE", engine, Path(model))])
    assert fragment in caught.value.detail


def test_synthesised_speech_is_recognised_back(registry: Registry) -> None:
    pcm = synthesize("The soldiers walked to the castle in the morning.")
    assert 2 < len(pcm) / 16000 < 6
    assert {"soldiers", "castle", "morning"} <= words(registry.get().transcribe(pcm))


@pytest.mark.parametrize(("text", "rate", "language"), [
    ("", 1.0, "en-US"), ("x" * 5001, 1.0, "en-US"), ("hello", 0.5, "en-US"), ("hello", 1.6, "en-US"),
    ("hello", 1.0, "xx-XX"),
])
def test_text_to_speech_refuses_bad_arguments_with_1004(text: str, rate: float, language: str) -> None:
    with pytest.raises(GmeError) as caught:
        synthesize(text, language, rate)
    assert caught.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT


def test_speaking_rate_changes_the_duration() -> None:
    slow, fast = (len(synthesize("one two three four five six", speaking_rate=r)) for r in (0.6, 1.5))
    assert slow > 1.8 * fast
