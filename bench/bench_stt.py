"""Word error rate and real-time factor of the default speech recogniser (pocketsphinx, en-US).

Run: .venv/bin/python bench/bench_stt.py [--settings]. The WER figure comes from real recorded read
speech: five LibriVox utterances (public domain; Jane Austen, *Sense and Sensibility*, ch. 1) that
pocketsphinx's own source distribution ships as test data, copied with their transcripts into
tests/data/librivox/. It is measured on the raw files and after an Ogg/Opus round trip through the
voice-message codec (20 kbps, 16 kHz), the way an uploaded voice message reaches the recogniser.
The synthetic espeak clip (tests/data/speech_en_16k.wav) is reported separately and labelled: it is
not read speech. Real-time factor = CPU seconds of the recogniser / seconds of audio (process CPU
time, so other load on the machine does not inflate it).

Streaming (the path of ``start_recording_with_streaming_recognition`` and live captions): each
utterance is encoded to 16 kHz Opus and fed in real time (a packet every 20 ms) to a streaming worker
process, batching as the server does; the figure is the lag of each partial hypothesis behind the
newest audio it covers (median and 95th percentile), and the WER of the streamed final texts.
``--no-streaming`` skips it (it takes as long as the audio).

``--settings`` also tries a few pocketsphinx settings (the levers) and prints each one's figures; each
lever is applied on top of the shipped settings (:data:`opengme.stt.pocketsphinx.TUNED`), except the
first line, pocketsphinx's own defaults.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from opengme.codec.opus import FLUENCY, OpusEncoder
from opengme.codec.voicefile import decode_voice_file, encode_voice_file
from opengme.stt.base import SAMPLE_RATE, Pcm
from opengme.stt.pocketsphinx import TUNED, PocketsphinxRecognizer
from opengme.stt.streaming import StreamWorkers

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


async def stream_one(workers: StreamWorkers, pcm: Pcm) -> tuple[str, list[float]]:
    """Feed ``pcm`` in real time as Opus packets; the final text and the lag of every partial."""
    encoder = OpusEncoder(FLUENCY)
    packets = [encoder.encode(np.resize(pcm[i:i + 320], 320).astype(np.int16)) for i in range(0, len(pcm), 320)]
    live = workers.open("en-US")
    pending: list[tuple[bytes, float]] = []
    done = asyncio.Event()

    async def capture() -> None:
        start = time.monotonic()
        for n, packet in enumerate(packets):
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            pending.append((packet, time.monotonic()))
        done.set()

    producer = asyncio.create_task(capture())
    lags, last = [], ""
    while not (done.is_set() and not pending):
        if not pending:
            await asyncio.sleep(0.005)
            continue
        batch, pending[:] = list(pending), []
        text = await live.feed([b for b, _ in batch])
        if text != last:
            lags.append(time.monotonic() - batch[-1][1])
            last = text
    await producer
    return await live.finish(), lags


async def streaming(corpus: list[tuple[Pcm, str]]) -> None:
    workers = StreamWorkers(workers=1)
    try:
        await stream_one(workers, corpus[0][0][: SAMPLE_RATE])  # warm-up: the worker loads the model
        finals, lags = [], []
        for pcm, _ in corpus:
            final, lag = await stream_one(workers, pcm)
            finals.append(final)
            lags += lag
    finally:
        workers.close()
    lags.sort()
    print(f"streaming (16 kHz Opus in real time): WER {jiwer.wer([t for _, t in corpus], finals):6.1%}; "
          f"lag of a partial behind its newest audio: median {lags[len(lags) // 2] * 1000:.0f} ms, "
          f"p95 {lags[int(len(lags) * 0.95)] * 1000:.0f} ms over {len(lags)} partials")


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
    if "--no-streaming" not in sys.argv:
        asyncio.run(streaming(corpus))


if __name__ == "__main__":
    main()
