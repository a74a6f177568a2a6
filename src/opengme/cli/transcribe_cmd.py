"""`opengme transcribe FILE`: the server's speech recogniser on any audio file PyAV opens.

Heavy modules (numpy, PyAV, pocketsphinx) are imported inside :func:`run`, so ``opengme --help``
stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opengme.cli import CliError

PROGRESS_AFTER_S = 30.0  # shorter files finish before a progress line would help
CHUNK_S = 5


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "transcribe", parents=[common], help="speech-to-text on an audio file (WAV, Ogg, MP3 …), offline",
        description="Print the text spoken in FILE (any format PyAV/FFmpeg opens), recognised offline by the "
        "engine the server uses. Long files show their progress on stderr.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the audio file")
    p.add_argument("--language", default="en-US", help="BCP-47 language code (default en-US)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opengme.errors import GmeError

    try:
        print(transcribe_file(args.file, args.language))
    except GmeError as exc:
        raise CliError(exc.detail or str(exc), status=1) from None
    return 0


def transcribe_file(path: Path, language: str) -> str:
    """Decode ``path`` at 16 kHz mono, normalise its level, and recognise it chunk by chunk."""
    import numpy as np

    from opengme.codec.audiofile import decode_pcm, open_audio_file
    from opengme.stt.base import SAMPLE_RATE, build_registry, level_gain, normalise_level

    recognizer = build_registry().get(language)  # an unsupported language fails before decoding
    container = open_audio_file(path)
    try:
        chunks = list(decode_pcm(container, SAMPLE_RATE, 1, path))
    finally:
        container.close()
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    gain = level_gain(pcm)
    total_s = len(pcm) / SAMPLE_RATE
    show = total_s >= PROGRESS_AFTER_S
    session = recognizer.open_stream()  # levelled here with the whole file's gain
    step = CHUNK_S * SAMPLE_RATE
    for start in range(0, len(pcm), step):
        session.feed(normalise_level(pcm[start : start + step], gain))
        if show:
            done = min(len(pcm), start + step) / SAMPLE_RATE
            sys.stderr.write(f"\rtranscribing {path.name}: {done:.0f} of {total_s:.0f} s")
            sys.stderr.flush()
    if show:
        sys.stderr.write("\n")
    return session.finish()
