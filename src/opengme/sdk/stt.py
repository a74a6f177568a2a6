"""Speech requests of ``Ptt`` (GME §6.4): ``speech_to_text``, ``text_to_speech`` and ``translate_text``.

Requests run in ``Ptt``'s transfer threads (:class:`~opengme.sdk.ptt_transfer.Transfers`) and end as
one :class:`SpeechReport` that ``Ptt`` emits inside ``poll``: PTT_SPEECH2TEXT_COMPLETE (5005 {result,
file_id, text}) and PTT_TEXT2SPEECH_COMPLETE (5008 {result, text, file_id}). What a reply means is
decided by :func:`speech_report`, a pure function.

Choices where GME leaves room (documented once, here):

- A call's own mistakes answer at once: 1004 for wrong types, an unusable language tag, text-to-speech
  text that is empty or over 5000 characters, or a rate outside 0.6–1.5; 1006 for a translation
  (``translate_text``, or a non-empty ``translate_language``): no translation engine is configured.
- Everything else arrives in the event, as for uploads: 32774 no ``apply_ptt_auth_buffer``; 32784 an
  empty file id or one that is not a voice message's URL (or names no message on the server);
  32770 no answer from the server; 32772 an empty reply or one that is not what the protocol says;
  and the server's refusals: 32776 AuthBuffer refused, 7005 arrears, 7012 voice messages or
  speech-to-text turned off, 32769 the app's concurrency limit, 32785 the recogniser failed, 1004
  a language no engine of the server supports.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType
from opengme.protocol import stt as sproto
from opengme.sdk.ptt_transfer import Codes, Reply, Transfers, file_id_problem, judge_reply, send
from opengme.stt.base import canonical_language

log = logging.getLogger("opengme.sdk.stt")

CODES: Final = Codes(sproto.S2T, ErrorCode.QAVPTTERROR_S2T_PARAM_NULL, ErrorCode.QAVPTTERROR_S2T_NETWORK_FAIL,
                     ErrorCode.QAVPTTERROR_S2T_RSP_DATA_DECODE_FAIL, ErrorCode.QAVPTTERROR_S2T_RSP_DATA_DECODE_FAIL)
TEXT, SPEECH = EventType.PTT_SPEECH2TEXT_COMPLETE, EventType.PTT_TEXT2SPEECH_COMPLETE
TIMEOUT_S: Final = 90.0  # a 58 s message waiting behind others in the server's workers


@dataclass(frozen=True)
class SpeechReport:
    """One finished speech request: the event to emit, its payload, and why (for the log)."""

    event: EventType
    payload: dict[str, Any]
    message: str = ""

    @property
    def code(self) -> ErrorCode:
        return ErrorCode(self.payload["result"])


def speech_report(event: EventType, payload: dict[str, Any], reply: Reply) -> SpeechReport:
    """The event a reply means: ``payload`` completed with ``result`` and the reply's field
    (``text`` for 5005, ``file_id`` for 5008)."""
    code, message = judge_reply(CODES, reply)
    field = "text" if event == TEXT else "file_id"
    if code == ErrorCode.AV_OK:
        try:
            value = json.loads(reply.body)[field]
        except (ValueError, TypeError, KeyError):
            value = None
        if not isinstance(value, str):
            return SpeechReport(event, {**payload, "result": CODES.undecodable},
                                f"the reply is not JSON with a {field}")
        return SpeechReport(event, {**payload, "result": ErrorCode.AV_OK, field: value})
    return SpeechReport(event, {**payload, "result": code}, message)


def _post(event: EventType, payload: dict[str, Any], url: str, headers: dict[str, str],
          body: dict[str, Any]) -> SpeechReport:
    reply = send(url, {**headers, "Content-Type": "application/json"}, json.dumps(body).encode(), TIMEOUT_S)
    return speech_report(event, payload, reply)


def _invalid(why: str) -> ErrorCode:
    log.info("invalid argument: %s", why)
    return ErrorCode.AV_ERR_INVALID_ARGUMENT


def _no_translation() -> ErrorCode:
    log.info("%s", sproto.NO_TRANSLATION)
    return ErrorCode.AV_ERR_NOT_IMPLEMENTED


def language_refusal(language: object, translate_language: object) -> ErrorCode | None:
    """The synchronous answer for a bad ``language``/``translate_language`` pair, or None."""
    if not isinstance(language, str) or not isinstance(translate_language, str):
        return _invalid("language and translate_language must be str")
    try:
        canonical_language(language)
    except GmeError as exc:
        return _invalid(exc.detail)
    if translate_language:
        return _no_translation()
    return None


class SpeechRequests:
    """The speech calls of one ``Ptt``: they share its transfer threads and its AuthBuffer headers."""

    def __init__(self, transfers: Transfers) -> None:
        self._transfers = transfers

    def speech_to_text(self, headers: dict[str, str] | None, file_id: object, language: object,
                       translate_language: object) -> tuple[ErrorCode, SpeechReport | None]:
        """The call's answer and, when it ends at once, its event (else the request is running)."""
        if not isinstance(file_id, str):
            return _invalid("file_id must be a str"), None
        refusal = language_refusal(language, translate_language)
        if refusal is not None:
            return refusal, None
        assert isinstance(language, str)
        payload: dict[str, Any] = {"result": ErrorCode.AV_OK, "file_id": file_id, "text": ""}
        problem = "empty file_id" if not file_id else file_id_problem(file_id)
        if headers is None:
            return ErrorCode.AV_OK, SpeechReport(TEXT, {**payload, "result": CODES.protocol.unset},
                                                 "call apply_ptt_auth_buffer first")
        if problem is not None:
            return ErrorCode.AV_OK, SpeechReport(TEXT, {**payload, "result": CODES.local_file}, problem)
        self._transfers.submit(_post, TEXT, payload, sproto.text_url(file_id), headers, {"language": language})
        return ErrorCode.AV_OK, None

    def text_to_speech(self, headers: dict[str, str] | None, server_url: str, text: object, voice_name: object,
                       language: object, speaking_rate: object) -> tuple[ErrorCode, SpeechReport | None]:
        refusal = language_refusal(language, "")
        if refusal is not None:
            return refusal, None
        ask = sproto.SpeechRequest(text, voice_name, language, speaking_rate)  # type: ignore[arg-type]
        try:
            ask.check()
        except GmeError as exc:
            return _invalid(exc.detail), None
        payload: dict[str, Any] = {"result": ErrorCode.AV_OK, "text": text, "file_id": ""}
        if headers is None:
            return ErrorCode.AV_OK, SpeechReport(SPEECH, {**payload, "result": CODES.protocol.unset},
                                                 "call apply_ptt_auth_buffer first")
        self._transfers.submit(_post, SPEECH, payload, server_url.rstrip("/") + sproto.SPEECH_PATH, headers,
                               ask.body())
        return ErrorCode.AV_OK, None

    @staticmethod
    def translate_text(text: object, source_language: object, target_languages: object) -> ErrorCode:
        if not all(isinstance(x, str) for x in (text, source_language, target_languages)):
            return _invalid("text, source_language and target_languages must be str")
        return _no_translation()
