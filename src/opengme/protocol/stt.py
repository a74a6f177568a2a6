"""The speech-to-text HTTP API beside the voice-message one (docs/protocol.md, "Speech-to-text"):
paths, request bodies, and the GME code each refusal carries.

Pure functions and constants shared by the server (``opengme.server.stt``) and the SDK (``opengme.sdk.stt``).

- ``POST <file_id>/text`` with ``{"language": "en-US"}`` recognises a stored voice message and
  answers ``{"code": 0, "file_id", "text", "language", "cached"}``. The text is stored with the
  message: a repeat (same language) answers at once, without recognising again.
- ``POST /v1/ptt/speech`` with ``{"text", "voice_name", "language", "speaking_rate"}`` synthesises
  the text as an Ogg/Opus voice message, stores it like an upload, and answers as an upload does
  (``file_id``, ``download_url`` …) plus ``text``.
- ``GET /v1/ptt/stream`` (WebSocket) recognises while the player records; see :mod:`opengme.stt.streaming`.

All three are authorised by the three AuthBuffer headers of an upload (:func:`opengme.protocol.ptt.auth_headers`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from opengme.errors import ErrorCode, GmeError
from opengme.protocol.messages import BY_NAME, Json
from opengme.protocol.ptt import FILES_PATH, Direction

MAX_TEXT: Final = 5000  # characters, as GME documents for text_to_speech
RATES: Final = (0.6, 1.5)  # speaking_rate bounds, 1.0 = normal speed
TEXT_SUFFIX: Final = "/text"
SPEECH_PATH: Final = "/v1/ptt/speech"
STREAM_PATH: Final = "/v1/ptt/stream"
MAX_BODY: Final = 4 * MAX_TEXT + 1024  # a request body: the longest text in UTF-8 and the other fields
MAX_LANGUAGE: Final = 35  # BCP-47 tags are short; a longer one is refused before any lookup
MAX_VOICE_NAME: Final = 64

S2T: Final = Direction(ErrorCode.QAVPTTERROR_S2T_APPINFO_UNSET, ErrorCode.QAVPTTERROR_S2T_SIGN_CHECK_FAIL,
                       ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR)
"""Speech-to-text and text-to-speech requests: 32774 no AuthBuffer, 32776 refused, 32769 storage failed."""
BUSY: Final = ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR  # the app's concurrency limit is reached (HTTP 429)
FAILED: Final = ErrorCode.QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR  # the recogniser failed on this audio
NO_TRANSLATION: Final = ("no translation engine is configured on this server: OpenGME recognises and "
                         "synthesises offline, but does not translate (pass an empty translate_language)")


def text_url(file_id: str) -> str:
    """Where the text of the voice message ``file_id`` (its URL, without a link signature) is asked for."""
    return file_id.split("?", 1)[0].rstrip("/") + TEXT_SUFFIX


def is_text_path(path: str) -> bool:
    return path.startswith(FILES_PATH + "/") and path.endswith(TEXT_SUFFIX)


def _invalid(detail: str) -> GmeError:
    return GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, detail)


def _object(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        raise _invalid("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object")
    return data


def _language(data: dict[str, object], default: str = "en-US") -> str:
    language = data.get("language", default) or default
    if not isinstance(language, str) or len(language) > MAX_LANGUAGE:
        raise _invalid(f"language must be a BCP-47 code such as en-US (at most {MAX_LANGUAGE} characters)")
    return language


@dataclass(frozen=True)
class TextRequest:
    """``POST <file_id>/text``."""

    language: str

    @classmethod
    def parse(cls, body: bytes) -> TextRequest:
        return cls(_language(_object(body)))


@dataclass(frozen=True)
class SpeechRequest:
    """``POST /v1/ptt/speech``: what text-to-speech needs, checked (1004 says what to fix)."""

    text: str
    voice_name: str
    language: str
    speaking_rate: float

    @classmethod
    def parse(cls, body: bytes) -> SpeechRequest:
        data = _object(body)
        rate = data.get("speaking_rate", 1.0)
        voice = data.get("voice_name", "")
        request = cls(data.get("text"), voice, _language(data), rate)  # type: ignore[arg-type]
        request.check()
        return request

    def check(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip() or len(self.text) > MAX_TEXT:
            raise _invalid(f"text must be 1 to {MAX_TEXT} characters")
        if not isinstance(self.voice_name, str) or len(self.voice_name) > MAX_VOICE_NAME:
            raise _invalid(f"voice_name must be a string of at most {MAX_VOICE_NAME} characters")
        rate = self.speaking_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not RATES[0] <= rate <= RATES[1]:
            raise _invalid(f"speaking_rate must be a number in {RATES[0]}–{RATES[1]} (1.0 = normal), got {rate!r}")

    def body(self) -> dict[str, object]:
        return {"text": self.text, "voice_name": self.voice_name, "language": self.language,
                "speaking_rate": float(self.speaking_rate)}


# --- live captions: signalling messages (defined in opengme.protocol.messages) ---------------------


def asr_start(id: int, language: str = "") -> Json:
    return BY_NAME["asr_start"].build({"id": id, "language": language or None})


def asr_stop(id: int) -> Json:
    return BY_NAME["asr_stop"].build({"id": id})


def asr_started(id: int, language: str) -> Json:
    return BY_NAME["asr_started"].build({"id": id, "language": language})


def asr_stopped(id: int) -> Json:
    return BY_NAME["asr_stopped"].build({"id": id})


def realtime_asr(sub_type: int, open_id: str, sentence_id: int = 0, text: str = "", final: bool = False) -> Json:
    return BY_NAME["realtime_asr"].build({"sub_type": sub_type, "open_id": open_id, "sentence_id": sentence_id,
                                          "text": text[:1024], "final": final})
