"""Debian's Chromium driven by Playwright (its own browser download does not work here), headless on
127.0.0.1 only, with a fake microphone fed from a WAV file. Tests that need it skip with the reason
when Chromium or Playwright is missing (``make test`` installs both)."""
from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # not OPENGME_*: those are settings
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (make test does it)")
    pytest.importorskip("playwright", reason="Playwright missing: pip install -e '.[test]'")


@contextmanager
def chromium(mic_wav: Path) -> Iterator[Any]:
    """A headless Chromium whose microphone plays ``mic_wav`` in a loop; a fresh profile each time."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="opengme-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True,
            args=[*ARGS, f"--use-file-for-fake-audio-capture={mic_wav}"], viewport={"width": 1000, "height": 900})
        try:
            yield context
        finally:
            context.close()


def recording(page: Any) -> np.ndarray:
    """What the page's SDK played since ``recordPlayback(true)`` (48 kHz), as int16."""
    text = page.evaluate("""() => {
        const f = window.demo.gme.takeRecording();
        const pcm = new Int16Array(f.length);
        for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
        let s = ""; const b = new Uint8Array(pcm.buffer);
        for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
        return btoa(s); }""")
    return np.frombuffer(base64.b64decode(text), dtype="<i2")


def envelope(pcm: np.ndarray, rate: int, frame_ms: int = 20) -> np.ndarray:
    """Log energy per frame (dB), floored at -60 dB below full scale: the shape of speech over time."""
    n = rate * frame_ms // 1000
    frames = pcm[: len(pcm) // n * n].astype(np.float64).reshape(-1, n) / 32768.0
    return np.asarray(10 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-6)))


def looped_envelope_correlation(said: np.ndarray, heard: np.ndarray, window: int = 100, slack: int = 10) -> float:
    """How well ``heard``'s envelope follows ``said``'s, ``said`` played in a loop from any starting
    point (a fake microphone and a file mic both loop their file): the best alignment of the whole,
    then each ``window`` frames (2 s) re-aligned within ``slack`` frames of it (a jitter buffer that ran
    dry and refilled shifts the rest of the stream by a frame or a few), and the median of the windows."""
    if len(heard) < window or len(said) < window:
        return 0.0
    loop = np.concatenate([said] * (len(heard) // len(said) + 3))

    def corr(lag: int, part: np.ndarray, start: int) -> float:
        ref = loop[lag + start: lag + start + len(part)]
        return float(np.corrcoef(ref, part)[0, 1]) if np.std(ref) > 0 and np.std(part) > 0 else -1.0

    lag = max(range(slack, len(said) + slack), key=lambda k: corr(k, heard, 0))
    scores = [max(corr(lag + d, heard[start: start + window], start) for d in range(-slack, slack + 1))
              for start in range(0, len(heard) - window + 1, window)]
    return float(np.median(scores))
