"""Word error rate and real-time factor of the default speech recogniser (pocketsphinx, en-US).

Run: .venv/bin/python bench/bench_stt.py [--settings]. The WER figure comes from real recorded read
speech: five LibriVox utterances (public domain; Jane Austen, *Sense and Sensibility*, ch. 1) that
pocketsphinx's own source distribution ships as test data, copied with their transcripts into
tests/data/librivox/. It is measured on the raw files and after an Ogg/Opus round trip through the
voice-message codec (20 kbps, 16 kHz), the way an uploaded voice message reaches the recogniser.
The synthetic espeak clip (tests/data/speech_en_16k.wav) is reported separately and labelled: it is
not read speech. Real-time factor = CPU seconds of the recogniser / seconds of audio (process CPU
time, so other load on the machine does not inflate it).

``--settings`` also tries a few pocketsphinx settings (the levers) and prints each one's figures; each
lever is applied on top of the shipped settings (:data:`opengme.stt.pocketsphinx.TUNED`), except the
first line, pocketsphinx's own defaults.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jiwer

from opengme.codec.voicefile import decode_voice_file, encode_voice_file
from opengme.stt.base import SAMPLE_RATE, Pcm
from opengme.stt.pocketsphinx import TUNED, PocketsphinxRecognizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.speech import DATA, librivox, read_wav

LEVERS: dict[str, dict[str, Any]] = {
    "pocketsphinx defaults": {"lw": 6.5, "beam": 1e-48, "wbeam": 7e-29, "fwdflat": True, "bestpath": True,
                              "maxhmmpf": 30_000},
    "shipped (TUNED)": {},
    "no fwdflat, lw 5.5": {"fwdflat": False, "lw": 5.5},
    "lw 8": {"lw": 8.0},
    "lw 10": {"lw": 10.0},
    "fwdflat, lw 5": {"fwdflat": True, "lw": 5.0},
    "narrow beams": {"beam": 1e-40, "wbeam": 1e-24},
    "maxhmmpf 30000 (default)": {"maxhmmpf": 30_000},
    "topn 2": {"topn": 2},
    "pl_window 10": {"pl_window": 10},
    "no bestpath": {"bestpath": False},
    "ds 2": {"ds": 2},
    "wider beams": {"beam": 1e-60, "wbeam": 1e-40},
}


def opus_round_trip(pcm: Pcm) -> Pcm:
    with tempfile.TemporaryDirectory() as tmp:
        return decode_voice_file(encode_voice_file(Path(tmp) / "m.ogg", pcm))


def measure(recognizer: PocketsphinxRecognizer, corpus: list[tuple[Pcm, str]]) -> tuple[float, float]:
    """(WER, real-time factor) over the corpus."""
    hyps, cpu = [], 0.0
    for pcm, _ in corpus:
        start = time.process_time()
        hyps.append(recognizer.transcribe(pcm))
        cpu += time.process_time() - start
    audio_s = sum(len(p) for p, _ in corpus) / SAMPLE_RATE
    return jiwer.wer([t for _, t in corpus], hyps), cpu / audio_s


def main() -> None:
    corpus = librivox()
    opus = [(opus_round_trip(p), t) for p, t in corpus]
    seconds = sum(len(p) for p, _ in corpus) / SAMPLE_RATE
    words = sum(len(t.split()) for _, t in corpus)
    print(f"real read speech: {len(corpus)} LibriVox utterances, {seconds:.1f} s, {words} words; TUNED={TUNED}")
    levers = LEVERS if "--settings" in sys.argv else {"shipped (TUNED)": {}}
    for name, settings in levers.items():
        recognizer = PocketsphinxRecognizer(**settings)
        wer, rtf = measure(recognizer, corpus)
        wer_opus, rtf_opus = measure(recognizer, opus)
        print(f"{name:24s} WER {wer:6.1%}  RTF {rtf:.2f}   after Ogg/Opus: WER {wer_opus:6.1%}  RTF {rtf_opus:.2f}")
    synthetic = read_wav(DATA / "speech_en_16k.wav")
    start = time.process_time()
    text = PocketsphinxRecognizer().transcribe(synthetic)
    rtf = (time.process_time() - start) / (len(synthetic) / SAMPLE_RATE)
    print(f"SYNTHETIC espeak clip (not a WER figure), RTF {rtf:.2f}: {text!r}")


if __name__ == "__main__":
    main()
