"""Decoding any audio file PyAV opens (wav, mp3, ogg/opus, flac …) into int16 PCM at a chosen format.

File mics read through it today; voice messages, speech-to-text and accompaniment will too.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.container import InputContainer

from opengme.errors import ErrorCode, GmeError

_LAYOUTS = {1: "mono", 2: "stereo"}


def open_audio_file(path: Path) -> InputContainer:
    """Open ``path`` for decoding: 7010 when it cannot be read, 7011 when it is not audio."""
    try:
        container = av.open(str(path), mode="r")
    except OSError as exc:
        raise GmeError(ErrorCode.AV_ERR_FILE_CANNOT_ACCESS,
                       f"cannot read {path}: {exc.strerror or exc}") from exc
    except (av.FFmpegError, ValueError) as exc:
        raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED,
                       f"{path} is not a readable audio file: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED, f"{path} has no audio stream")
    return container


def decode_pcm(container: InputContainer, sample_rate: int, channels: int,
               path: Path) -> Iterator[npt.NDArray[np.int16]]:
    """Interleaved int16 chunks of the first audio stream, resampled to ``sample_rate``/``channels``."""
    resampler = av.AudioResampler(format="s16", layout=_LAYOUTS[channels], rate=sample_rate)
    try:
        for decoded in container.decode(container.streams.audio[0]):
            for out in resampler.resample(decoded):
                yield out.to_ndarray().astype(np.int16, copy=False).reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().astype(np.int16, copy=False).reshape(-1)
    except (av.FFmpegError, ValueError) as exc:
        raise GmeError(ErrorCode.AV_ERR_FILE_DAMAGED, f"{path}: cannot decode audio: {exc}") from exc
