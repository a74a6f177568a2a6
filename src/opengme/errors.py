"""GME's error codes: the one registry every layer raises from.

The names and values are GME's (its published error-code table is the contract), misspellings included,
so that code written against GME keeps working; corrected spellings are enum aliases. The texts
(description, cause, solution) are package data (``data/errors.json``) so that errors, the SDK's
``error_info`` and ``opengme errors`` all explain a code the same way.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from functools import cache
from importlib.resources import files
from typing import Any


class ErrorCode(IntEnum):
    """Every GME error code; ``AV_OK`` (0) means success or "accepted"."""

    AV_OK = 0
    AV_ERR_REPEATED_OPERATION = 1001
    AV_ERR_EXCLUSIVE_OPERATION = 1002
    AV_ERR_HAS_IN_THE_STATE = 1003
    AV_ERR_INVALID_ARGUMENT = 1004
    AV_ERR_TIMEOUT = 1005
    AV_ERR_NOT_IMPLEMENTED = 1006
    AV_ERR_NOT_IN_MAIN_THREAD = 1007
    AV_ERR_RESOURCE_IS_OCCUPIED = 1008
    AV_ERR_CONTEXT_NOT_EXIST = 1101
    AV_ERR_CONTEXT_NOT_STOPPED = 1102
    AV_ERR_ROOM_NOT_EXIST = 1201
    AV_ERR_ROOM_NOT_EXITED = 1202
    AV_ERR_DEVICE_NOT_EXIST = 1301
    AV_ERR_ENDPOINT_NOT_EXIST = 1401
    AV_ERR_ENDPOINT_HAS_NOT_VIDEO = 1402
    AV_ERR_TINYID_TO_OPENID_FAILED = 1501
    AV_ERR_OPENID_TO_TINYID_FAILED = 1502
    AV_ERR_DEVICE_TEST_NOT_EXIST = 1601
    AV_ERR_DEVICE_TEST_NOT_STOPPED = 1602
    AV_ERR_INVITET_FAILED = 1801
    AV_ERR_ACCEPTT_FAILED = 1802
    AV_ERR_REFUSE_FAILED = 1803
    QAV_ERR_NOT_TRY_NEW_ROOM = 2001
    QAV_ERR_TRY_NEW_ROOM_FAILED = 2002
    QAV_ERR_ACC_OPENFILE_FAILED = 4001
    QAV_ERR_ACC_FILE_FORAMT_NOTSUPPORT = 4002
    QAV_ERR_ACC_DECODER_FAILED = 4003
    QAV_ERR_ACC_BAD_PARAM = 4004
    QAV_ERR_ACC_MEMORY_ALLOC_FAILED = 4005
    QAV_ERR_ACC_CREATE_THREAD_FAILED = 4006
    QAV_ERR_ACC_STATE_ILLIGAL = 4007
    QAV_ERR_EFFECT_OPENFILE_FAILED = 4051
    QAV_ERR_EFFECT_FILE_FORAMT_NOTSUPPORT = 4052
    QAV_ERR_EFFECT_DECODER_FAILED = 4053
    QAV_ERR_EFFECT_BAD_PARAM = 4054
    QAV_ERR_EFFECT_MEMORY_ALLOC_FAILED = 4055
    QAV_ERR_EFFECT_CREATE_THREAD_FAILED = 4056
    QAV_ERR_EFFECT_STATE_ILLIGAL = 4057
    QAVPTTERROR_RECORDER_PARAM_NULL = 4097
    QAVPTTERROR_RECORDER_INIT_ERROR = 4098
    QAVPTTERROR_RECORDER_RECORDING_ERR = 4099
    QAVPTTERROR_RECORDER_NODATA_ERR = 4100
    QAVPTTERROR_RECORDER_OPENFILE_ERR = 4101
    QAVPTTERROR_RECORDER_PERMISSION_MIC_ERR = 4102
    QAVPTTERROR_RECORDER_AUDIO_TOO_SHORT = 4103
    QAVPTTERROR_RECORDER_RECORD_NOT_START = 4104
    AV_ERR_3DVOICE_ERR_FILE_DAMAGED = 7002
    AV_ERR_3DVOICE_ERR_NOT_INITED = 7003
    AV_ERR_NET_REQUEST_FALLED = 7004
    AV_ERR_CHARGE_OVERDUE = 7005
    AV_ERR_AUTH_FIALD = 7006
    AV_ERR_IN_OTHER_ROOM = 7007
    AV_ERR_NO_PERMISSION = 7009
    AV_ERR_FILE_CANNOT_ACCESS = 7010
    AV_ERR_FILE_DAMAGED = 7011
    AV_ERR_SERVICE_NOT_OPENED = 7012
    AV_ERR_USER_CANCELED = 7013
    AV_ERR_LOAD_LIB_FAILED = 7014
    AV_ERR_SDK_NOT_FULL_UPDATE = 7015
    QAVPTTERROR_UPLOAD_FILE_ACCESSERROR = 8193
    QAVPTTERROR_UPLOAD_SIGN_CHECK_FAIL = 8194
    QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL = 8195
    QAVPTTERROR_UPLOAD_SYSTEM_INNER_ERROR = 8197
    QAVPTTERROR_UPLOAD_RSP_DATA_DECODE_FAIL = 8198
    QAVPTTERROR_UPLOAD_APPINFO_UNSET = 8200
    AV_ERR_SERVER_FAILED = 10001
    AV_ERR_SERVER_INVALID_ARGUMENT = 10002
    AV_ERR_SERVER_NO_PERMISSION = 10003
    AV_ERR_SERVER_TIMEOUT = 10004
    AV_ERR_SERVER_ALLOC_RESOURCE_FAILED = 10005
    AV_ERR_SERVER_ID_NOT_IN_ROOM = 10006
    AV_ERR_SERVER_NOT_IMPLEMENT = 10007
    AV_ERR_SERVER_REPEATED_OPERATION = 10008
    AV_ERR_SERVER_ROOM_NOT_EXIST = 10009
    AV_ERR_SERVER_ENDPOINT_NOT_EXIST = 10010
    AV_ERR_SERVER_INVALID_ABILITY = 10011
    QAVPTTERROR_DOWNLOAD_FILE_ACCESSERROR = 12289
    QAVPTTERROR_DOWNLOAD_SIGN_CHECK_FAIL = 12290
    QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL = 12291
    QAVPTTERROR_DOWNLOAD_REMOTEFILE_ACCESSERROR = 12292
    QAVPTTERROR_DOWNLOAD_GET_SIGN_NETWORK_FAIL = 12293
    QAVPTTERROR_DOWNLOAD_SYSTEM_INNER_ERROR = 12294
    QAVPTTERROR_DOWNLOAD_GET_SIGN_RSP_DATA_DECODE_FAIL = 12295
    QAVPTTERROR_DOWNLOAD_APPINFO_UNSET = 12297
    QAVPTTERROR_PLAYER_INIT_ERR = 20481
    QAVPTTERROR_PLAYER_PLAYING_ERR = 20482
    QAVPTTERROR_PLAYER_PARAM_NULL = 20483
    QAVPTTERROR_PLAYER_OPENFILE_ERR = 20484
    QAVPTTERROR_PLAYER_PLAYER_NOT_START_ERR = 20485
    QAVPTTERROR_S2T_INTERNAL_ERROR = 32769
    QAVPTTERROR_S2T_NETWORK_FAIL = 32770
    QAVPTTERROR_S2T_RSP_DATA_DECODE_FAIL = 32772
    QAVPTTERROR_S2T_APPINFO_UNSET = 32774
    QAVPTTERROR_STREAMIN_RECORD_SUC_REC_FAIL = 32775
    QAVPTTERROR_S2T_SIGN_CHECK_FAIL = 32776
    QAVPTTERROR_S2T_PARAM_NULL = 32784
    QAVPTTERROR_S2T_AUTO_SPEECH_REC_ERROR = 32785
    QAVPTTERROR_ERR_VOICE_STREAMIN_RUNING_ERROR = 32786
    QAVPTTERROR_ERR_VOICE_STREAMING_ASR_ERROR = 50012

    # Corrected spellings, as aliases: ``ErrorCode(7006).name`` stays GME's ``AV_ERR_AUTH_FIALD``.
    AV_ERR_INVITE_FAILED = 1801
    AV_ERR_ACCEPT_FAILED = 1802
    AV_ERR_NET_REQUEST_FAILED = 7004
    AV_ERR_AUTH_FAILED = 7006
    QAVPTTERROR_ERR_VOICE_STREAMIN_RUNNING_ERROR = 32786
    QAV_ERR_ACC_FILE_FORMAT_NOTSUPPORT = 4002
    QAV_ERR_ACC_STATE_ILLEGAL = 4007
    QAV_ERR_EFFECT_FILE_FORMAT_NOTSUPPORT = 4052
    QAV_ERR_EFFECT_STATE_ILLEGAL = 4057


class Category(StrEnum):
    """The seed table a code comes from."""

    GENERAL = "general"
    VOICE_CHAT_CLIENT = "voice_chat_client"
    VOICE_CHAT_SERVER = "voice_chat_server"
    PTT_STT = "ptt_stt"  # voice messages (record, upload, download, play) and speech-to-text
    AUDIO_EFFECTS = "audio_effects"  # accompaniment and sound effects: GME's API pages, not the seed's table


@dataclass(frozen=True)
class Correction:
    """A place where the registry deliberately differs from the seed's text, and why."""

    field: str  # "description", "causes" or "solutions"
    seed: str  # what the seed says
    fixed: str  # what the registry says instead
    reason: str

    def __str__(self) -> str:
        return f"seed's {self.field} {self.seed!r} corrected: {self.reason}"


@dataclass(frozen=True)
class ErrorInfo:
    """Everything known about one code. ``causes``/``solutions`` hold one entry per seed row (two
    for the codes the seed lists twice); ``seed_text`` and ``derived`` mark the General table, whose
    single combined column was split into description/cause/solution by us."""

    code: ErrorCode
    name: str
    value: int
    category: Category
    description: str
    causes: tuple[str, ...]
    solutions: tuple[str, ...]
    corrections: tuple[Correction, ...] = ()
    seed_text: str | None = None
    derived: bool = False

    @property
    def cause(self) -> str:
        return _join(self.causes)

    @property
    def solution(self) -> str:
        return _join(self.solutions)

    @property
    def correction(self) -> str | None:
        return "; ".join(map(str, self.corrections)) or None

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other enum names for this code (corrected spellings)."""
        return tuple(n for n, m in ErrorCode.__members__.items() if m is self.code and n != self.name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the same keys for every code so consumers need no special cases."""
        return {
            "name": self.name,
            "value": self.value,
            "category": str(self.category),
            "description": self.description,
            "causes": list(self.causes),
            "solutions": list(self.solutions),
            "aliases": list(self.aliases),
            "corrections": [vars(c) for c in self.corrections],
            "seed_text": self.seed_text,
            "derived": self.derived,
        }

    def matches(self, term: str) -> bool:
        """One search term: a number is compared with the value, a word is looked for in every text."""
        if term.isdigit():
            return int(term) == self.value
        texts = (self.name, *self.aliases, self.category, self.description, *self.causes,
                 *self.solutions, self.seed_text or "")
        return any(term.lower() in text.lower() for text in texts)


_SUCCESS = ErrorInfo(ErrorCode.AV_OK, "AV_OK", 0, Category.GENERAL, "Success", (), ())
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")


def _join(texts: tuple[str, ...]) -> str:
    """Alternatives on one line; identical texts (8195 repeats its solution) only once."""
    return " / ".join(dict.fromkeys(texts))


def plain(text: str) -> str:
    """The seed's markdown as plain text for terminals and one-line messages: ``[t](u)`` -> ``t (u)``."""
    return _MARKDOWN_LINK.sub(r"\1 (\2)", text).replace("`", "")


@cache
def _registry() -> dict[ErrorCode, ErrorInfo]:
    """Read the package data once; a code missing from the enum fails loudly here."""
    entries = json.loads(files("opengme").joinpath("data/errors.json").read_text(encoding="utf-8"))
    return {
        ErrorCode(e["value"]): ErrorInfo(
            code=ErrorCode(e["value"]),
            name=e["name"],
            value=e["value"],
            category=Category(e["category"]),
            description=e["description"],
            causes=tuple(e["causes"]),
            solutions=tuple(e["solutions"]),
            corrections=tuple(Correction(**c) for c in e.get("corrections", ())),
            seed_text=e.get("seed_text"),
            derived=e.get("derived", False),
        )
        for e in entries
    }


def info(code: int | ErrorCode) -> ErrorInfo:
    """The entry for ``code`` (``AV_OK`` included); ``ValueError`` if GME has no such code."""
    try:
        code = ErrorCode(code)
    except ValueError:
        raise ValueError(f"unknown GME error code {code}") from None
    return _SUCCESS if code is ErrorCode.AV_OK else _registry()[code]


def all_errors() -> list[ErrorInfo]:
    """Every error code (not ``AV_OK``), by value."""
    return sorted(_registry().values(), key=lambda e: e.value)


def search(words: str) -> list[ErrorInfo]:
    """Entries matching every word (case-insensitive substring of the name, an alias, the category or
    any of GME's texts; a number must equal the value), by value. No words match everything."""
    terms = words.split()
    return [e for e in all_errors() if all(e.matches(t) for t in terms)]


def describe(code: int | ErrorCode) -> str:
    """One line for an SDK event's ``error_info``: empty for ``AV_OK``, as GME sends on success."""
    entry = info(code)
    return "" if entry.code is ErrorCode.AV_OK else _headline(entry)


def _headline(entry: ErrorInfo) -> str:
    return f"{entry.name} ({entry.value}): {plain(entry.description).rstrip('.')}"


class GmeError(Exception):
    """An operation failed with a GME error code; ``detail`` says what exactly went wrong.

    ``str()`` is one line: name, value, description, cause, what to do, then the detail.
    """

    def __init__(self, code: ErrorCode | int, detail: str = "") -> None:
        self.code = ErrorCode(code)
        self.detail = detail
        super().__init__(self.code, detail)  # args that rebuild the error (pickling, copy)

    @property
    def info(self) -> ErrorInfo:
        return info(self.code)

    def __str__(self) -> str:
        entry = self.info
        parts = (_headline(entry), plain(entry.cause), plain(entry.solution))
        text = " — ".join(p for p in parts if p)
        return f"{text} [detail: {self.detail}]" if self.detail else text
