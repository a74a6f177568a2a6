"""Speech clips for the speech-to-text tests and bench: real read speech (LibriVox, public domain)
with its transcripts, and key-word matching (recognisers are judged by words, not exact strings)."""
from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parents[1] / "data"
JOHN = DATA / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.wav"
JOHN_WORDS = {"john", "leisure", "consider", "power"}  # "and mister john dashwood had then leisure to consider …"


def read_wav(path: Path) -> npt.NDArray[np.int16]:
    """A 16 kHz mono 16-bit WAV file's samples."""
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def librivox() -> list[tuple[npt.NDArray[np.int16], str]]:
    """The real read-speech utterances with their reference transcripts (pocketsphinx's test set)."""
    out = []
    for line in (DATA / "librivox" / "transcription").read_text().splitlines():
        sentence, _, name = line.rpartition(" (")
        text = sentence.replace("<s>", "").replace("</s>", "").strip()
        out.append((read_wav(DATA / "librivox" / f"{name.rstrip(')')}.wav"), text))
    return out


REAL_CLIPS = {  # the quality tests' and benches' real read speech: the LibriVox utterances, joined
    "librivox-A": ("0870", "0880"),
    "librivox-B": ("0890", "0920", "0930"),
}


def real_clip(name: str) -> npt.NDArray[np.int16]:
    """One of ``REAL_CLIPS`` (16 kHz): its utterances back to back, 0.3 s of silence between."""
    pause = np.zeros(4_800, np.int16)
    parts = [read_wav(DATA / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.wav") for n in REAL_CLIPS[name]]
    return np.concatenate([x for part in parts for x in (part, pause)][:-1])
