"""Where the repository, GME's error table (the seed) and the recorded test clip are."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seed" / "000_c576b4204aeb422d.txt"
SPEECH_WAV = REPO / "tests" / "data" / "speech_en_16k.wav"  # espeak-ng, mono 16-bit 16 kHz
