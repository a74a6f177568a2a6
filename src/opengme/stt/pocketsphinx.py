"""The embedded default recogniser: CMU pocketsphinx with the en-US model its wheel ships.

Settings were chosen against measured word error rate on real read speech (``bench/bench_stt.py``);
see :data:`TUNED`.
"""
from __future__ import annotations

from typing import Any, Final

import pocketsphinx

from opengme.stt.base import SAMPLE_RATE, Pcm, RecognitionFailed, RecognitionStream, Recognizer, as_pcm

TUNED: Final[dict[str, Any]] = {"fwdflat": False, "maxhmmpf": 10_000}
"""Overrides of pocketsphinx's defaults, measured on real read speech in bench/bench_stt.py: without the
flat-lexicon second pass WER drops from 32 % to 27 % (28 % after Ogg/Opus) and the real-time factor
from about 0.24 to 0.20. Capping active HMMs per frame at 10 000 (default 30 000) changed neither figure
on clean speech; it bounds the CPU a frame of noise can cost. Language weights 8 and 10, narrower
beams, topn 2 and ds 2 made WER worse; wider beams only cost time. The set is 71 words: one word is
1.4 points, so smaller differences (pl_window, bestpath) are noise, not levers."""


class PocketsphinxStream(RecognitionStream):
    """One utterance in a pocketsphinx decoder (the decoder is reused: one stream at a time)."""

    def __init__(self, decoder: pocketsphinx.Decoder) -> None:
        self._decoder = decoder
        self._open = True
        decoder.start_utt()

    def feed(self, pcm: Pcm) -> str:
        if not self._open:
            raise RecognitionFailed("this recognition stream has finished")
        try:
            self._decoder.process_raw(as_pcm(pcm).astype("<i2", copy=False).tobytes(), False, False)
        except RuntimeError as exc:
            raise RecognitionFailed(f"pocketsphinx: {exc}") from exc
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        if not self._open:
            raise RecognitionFailed("this recognition stream has finished")
        self._open = False
        try:
            self._decoder.end_utt()
        except RuntimeError as exc:
            raise RecognitionFailed(f"pocketsphinx: {exc}") from exc
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class PocketsphinxRecognizer(Recognizer):
    """pocketsphinx with its bundled US English acoustic model, dictionary and language model."""

    LANGUAGES: Final = ("en-US",)

    def __init__(self, language: str = "en-US", **settings: Any) -> None:
        self.language = language
        options = {**TUNED, **settings}
        self._decoder = pocketsphinx.Decoder(loglevel="FATAL", samprate=SAMPLE_RATE, **options)

    def open_stream(self) -> RecognitionStream:
        return PocketsphinxStream(self._decoder)
