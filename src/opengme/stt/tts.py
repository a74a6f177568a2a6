"""Offline text-to-speech with eSpeak NG, whose library and voice data ship inside the
``espeakng-loader`` wheel (nothing downloaded, nothing installed on the system).

eSpeak NG keeps global state, so one synthesis runs at a time per process (a lock); the server
runs it in the recognition worker pool, off the event loop.
"""
from __future__ import annotations

import ctypes
import threading
from typing import Final

import av
import numpy as np

from opengme.errors import ErrorCode, GmeError
from opengme.protocol.stt import MAX_TEXT, RATES
from opengme.stt.base import SAMPLE_RATE, Pcm

WORDS_PER_MINUTE: Final = 160  # eSpeak NG's rate at speaking_rate 1.0
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_CHARS_UTF8: Final = 1
_RATE_PARAMETER: Final = 1
_VOICES: Final = {"en-US": "en-us", "en-GB": "en-gb"}

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()
_engine: tuple[ctypes.CDLL, int] | None = None
_chunks: list[Pcm] = []


@_CALLBACK  # type: ignore[untyped-decorator]
def _collect(wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
    if wav and count > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16).copy())
    return 0


def _load() -> tuple[ctypes.CDLL, int]:
    global _engine
    if _engine is None:
        import espeakng_loader  # type: ignore[import-untyped]

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(espeakng_loader.get_data_path()).encode(), 0)
        if rate <= 0:
            raise GmeError(ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR, "eSpeak NG did not initialise (its data directory is missing)")
        lib.espeak_SetSynthCallback(_collect)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        _engine = (lib, rate)
    return _engine


def synthesize(text: str, language: str = "en-US", speaking_rate: float = 1.0) -> Pcm:
    """``text`` spoken as 16 kHz mono int16 PCM: 1004 for empty or over-long text, a rate outside
    0.6–1.5, or a language without a voice."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"text must be 1 to {MAX_TEXT} characters")
    if not RATES[0] <= speaking_rate <= RATES[1]:
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                       f"speaking_rate {speaking_rate} is outside {RATES[0]}–{RATES[1]}")
    voice = _VOICES.get(language)
    if voice is None:
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT,
                       f"no text-to-speech voice for {language!r}; available: {', '.join(sorted(_VOICES))}")
    with _lock:
        lib, rate = _load()
        lib.espeak_SetVoiceByName(voice.encode())
        lib.espeak_SetParameter(_RATE_PARAMETER, round(WORDS_PER_MINUTE * speaking_rate), 0)
        _chunks.clear()
        data = text.encode()
        if lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None) != 0:
            raise GmeError(ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR, "eSpeak NG could not synthesise this text")
        pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    return _resample(pcm, rate)


def _resample(pcm: Pcm, rate: int) -> Pcm:
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, np.int16)
