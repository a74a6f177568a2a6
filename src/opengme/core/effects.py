"""Voice effects, pure: GME's voice changer types, karaoke presets and the 10-band equalizer.

One :class:`VoiceEffects` per stream (the send path, or one voice message at playback) turns 20 ms
int16 frames into 20 ms int16 frames at any of the codec rates (16 or 48 kHz), keeping its state
from frame to frame. Order: voice type → karaoke → equalizer.

Filters, reverb, chorus, phaser, distortion and bit crushing are Spotify's ``pedalboard`` (JUCE
DSP). Pitch is not: pedalboard's ``PitchShift`` (Rubber Band) holds 1–2 s of audio when streamed
(pedalboard issue #350, measured here: 51,872 samples at 48 kHz), and Signalsmith Stretch's
binding (``python-stretch``) restarts on every call, which smears 20 ms blocks into a 50 Hz buzz.
:class:`PitchShifter` is the classic two-tap delay-line shifter instead (both taps sweep a 40 ms
window, crossfaded with sin² weights that vanish where a tap wraps), which costs ~20 ms of delay.
Formants move with the pitch, as GME's "LOLITA"/"UNCLE" do.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import pedalboard as pb
from pedalboard._pedalboard import Pedalboard

Float = npt.NDArray[np.float32]
Pcm = npt.NDArray[np.int16]

EQ_BANDS_HZ: Final = (32, 64, 125, 250, 500, 1000, 2000, 4000, 8000, 16000)
"""GME's 10-band equalizer: centre frequencies."""
EQ_MAX_DB: Final = 12.0
PITCH_WINDOW_MS: Final = 40.0
MAX_SEMITONES: Final = 12.0


class VoiceType(IntEnum):
    """``ITMG_VOICE_TYPE_*`` of GME 2.x (3.x renumbers them; OpenGME keeps 2.x)."""

    ORIGINAL_SOUND = 0
    LOLITA = 1
    UNCLE = 2
    INTANGIBLE = 3
    DEAD_FATBOY = 4
    HEAVY_MENTAL = 5
    DIALECT = 6
    INFLUENZA = 7
    CAGED_ANIMAL = 8
    HEAVY_MACHINE = 9
    STRONG_CURRENT = 10
    KINDER_GARTEN = 11
    HUANG = 12


class KaraokeType(IntEnum):
    """``ITMG_KARAOKE_TYPE_*`` of GME 2.x."""

    ORIGINAL = 0
    POP = 1
    ROCK = 2
    RB = 3
    DANCE = 4
    HEAVEN = 5
    TTS = 6
    VIGOROUS = 7
    LIMPID = 8


@dataclass(frozen=True)
class Preset:
    """One voice type or karaoke preset: a pitch shift and a pedalboard chain (built per rate)."""

    description: str
    semitones: float
    plugins: tuple[tuple[str, dict[str, float]], ...] = ()

    def board(self, rate: int) -> Pedalboard:
        """The chain at ``rate``; filters above 0.45 × rate (no room below Nyquist) are left out."""
        plugins = []
        for name, params in self.plugins:
            cutoff = params.get("cutoff_frequency_hz")
            if cutoff is not None and cutoff >= 0.45 * rate:
                continue
            plugins.append(getattr(pb, name)(**params))
        return Pedalboard(plugins)


VOICE_PRESETS: Final[dict[VoiceType, Preset]] = {
    VoiceType.ORIGINAL_SOUND: Preset("the voice as captured", 0.0),
    VoiceType.LOLITA: Preset("young girl: 7 semitones up, brighter", 7.0,
                             (("HighShelfFilter", {"cutoff_frequency_hz": 3000, "gain_db": 3}),)),
    VoiceType.UNCLE: Preset("older man: 5 semitones down, fuller lows", -5.0,
                            (("LowShelfFilter", {"cutoff_frequency_hz": 200, "gain_db": 3}),)),
    VoiceType.INTANGIBLE: Preset("ethereal: a little higher, chorus and a large reverb", 2.0,
                                 (("Chorus", {"rate_hz": 0.8, "depth": 0.3, "mix": 0.4}),
                                  ("Reverb", {"room_size": 0.85, "wet_level": 0.35, "dry_level": 0.7}))),
    VoiceType.DEAD_FATBOY: Preset("fat boy: 3 semitones down, boomy and dull", -3.0,
                                  (("LowShelfFilter", {"cutoff_frequency_hz": 250, "gain_db": 6}),
                                   ("LowpassFilter", {"cutoff_frequency_hz": 3500}))),
    VoiceType.HEAVY_MENTAL: Preset("heavy metal: driven distortion in a small room", 0.0,
                                   (("Distortion", {"drive_db": 20}),
                                    ("Reverb", {"room_size": 0.3, "wet_level": 0.2}),
                                    ("Gain", {"gain_db": -6}))),
    VoiceType.DIALECT: Preset("foreign accent: a slight lift and a sweeping phaser", 1.0,
                              (("Phaser", {"rate_hz": 1.5, "depth": 0.6, "mix": 0.5}),)),
    VoiceType.INFLUENZA: Preset("heavy cold: nasal peak, highs cut", -1.0,
                                (("PeakFilter", {"cutoff_frequency_hz": 1000, "gain_db": 8, "q": 2}),
                                 ("LowpassFilter", {"cutoff_frequency_hz": 1800}))),
    VoiceType.CAGED_ANIMAL: Preset("caged beast: 7 semitones down, growl and echo", -7.0,
                                   (("Distortion", {"drive_db": 12}),
                                    ("Reverb", {"room_size": 0.6, "wet_level": 0.3}),
                                    ("Gain", {"gain_db": -4}))),
    VoiceType.HEAVY_MACHINE: Preset("robot: metallic comb filter", 0.0,
                                    (("Delay", {"delay_seconds": 0.008, "feedback": 0.7, "mix": 0.5}),
                                     ("Chorus", {"rate_hz": 0.1, "depth": 0.1, "mix": 0.3}))),
    VoiceType.STRONG_CURRENT: Preset("electric current: crushed bits, thin and buzzing", 0.0,
                                     (("HighpassFilter", {"cutoff_frequency_hz": 300}),
                                      ("Bitcrush", {"bit_depth": 5}),
                                      ("Distortion", {"drive_db": 8}),
                                      ("Gain", {"gain_db": -4}))),
    VoiceType.KINDER_GARTEN: Preset("child: 10 semitones up, lows cut", 10.0,
                                    (("HighpassFilter", {"cutoff_frequency_hz": 150}),)),
    VoiceType.HUANG: Preset("minion: an octave up", 12.0,
                            (("HighShelfFilter", {"cutoff_frequency_hz": 4000, "gain_db": 2}),)),
}

KARAOKE_PRESETS: Final[dict[KaraokeType, Preset]] = {
    KaraokeType.ORIGINAL: Preset("no karaoke processing", 0.0),
    KaraokeType.POP: Preset("pop: presence lift and a small room", 0.0,
                            (("PeakFilter", {"cutoff_frequency_hz": 3000, "gain_db": 3, "q": 1}),
                             ("Reverb", {"room_size": 0.4, "wet_level": 0.15}))),
    KaraokeType.ROCK: Preset("rock: light drive and a live room", 0.0,
                             (("Distortion", {"drive_db": 6}), ("Reverb", {"room_size": 0.5, "wet_level": 0.2}),
                              ("Gain", {"gain_db": -3}))),
    KaraokeType.RB: Preset("R&B: warm lows and a soft hall", 0.0,
                           (("LowShelfFilter", {"cutoff_frequency_hz": 200, "gain_db": 4}),
                            ("Reverb", {"room_size": 0.6, "wet_level": 0.25}))),
    KaraokeType.DANCE: Preset("dance: slap-back echo", 0.0,
                              (("Delay", {"delay_seconds": 0.12, "feedback": 0.3, "mix": 0.25}),)),
    KaraokeType.HEAVEN: Preset("heaven: a very large hall", 0.0,
                               (("Reverb", {"room_size": 0.95, "wet_level": 0.4, "dry_level": 0.7}),)),
    KaraokeType.TTS: Preset("TTS: thin, synthetic timbre", 0.0,
                            (("HighpassFilter", {"cutoff_frequency_hz": 250}),
                             ("Chorus", {"rate_hz": 0.2, "depth": 0.15, "mix": 0.5}))),
    KaraokeType.VIGOROUS: Preset("vigorous: compressed and bright", 0.0,
                                 (("Compressor", {"threshold_db": -20, "ratio": 4}),
                                  ("HighShelfFilter", {"cutoff_frequency_hz": 5000, "gain_db": 4}))),
    KaraokeType.LIMPID: Preset("limpid: clean lows, airy highs, a touch of room", 0.0,
                               (("HighpassFilter", {"cutoff_frequency_hz": 150}),
                                ("HighShelfFilter", {"cutoff_frequency_hz": 7000, "gain_db": 5}),
                                ("Reverb", {"room_size": 0.3, "wet_level": 0.1}))),
}


class PitchShifter:
    """Streaming pitch shift by ``semitones`` (see the module docstring): any block length in, the
    same length out, ~half a window of delay. Not thread-safe."""

    def __init__(self, rate: int, semitones: float, window_ms: float = PITCH_WINDOW_MS) -> None:
        if not -2 * MAX_SEMITONES <= semitones <= 2 * MAX_SEMITONES:
            raise ValueError(f"pitch shift of {semitones} semitones is outside ±{2 * MAX_SEMITONES}")
        self.ratio = float(2.0 ** (semitones / 12.0))
        self.window = max(8, round(rate * window_ms / 1000))
        self._history = np.zeros(self.window + 2, dtype=np.float32)
        self._phase = 0.0  # of tap A, in [0, 1): its delay is phase × window

    def process(self, block: Float) -> Float:
        n = len(block)
        if self.ratio == 1.0 or n == 0:
            return block
        buf = np.concatenate((self._history, block))
        start = len(self._history)
        step = (1.0 - self.ratio) / self.window
        phases = (self._phase + step * np.arange(1, n + 1)) % 1.0
        self._phase = float(phases[-1])
        out = np.zeros(n, dtype=np.float32)
        idx = np.arange(n) + start
        for offset in (0.0, 0.5):
            p = (phases + offset) % 1.0
            pos = idx - p * self.window
            base = np.floor(pos).astype(np.int64)
            frac = (pos - base).astype(np.float32)
            tap = buf[base] * (1.0 - frac) + buf[np.minimum(base + 1, len(buf) - 1)] * frac
            out += tap * (np.sin(np.pi * p) ** 2).astype(np.float32)
        self._history = buf[-(self.window + 2):]
        return out


class _Stage:
    """One preset running at one rate: its pitch shifter (if any) and its chain."""

    def __init__(self, preset: Preset, rate: int) -> None:
        self.rate = rate
        self.shifter = PitchShifter(rate, preset.semitones) if preset.semitones else None
        self.board = preset.board(rate)

    def process(self, x: Float) -> Float:
        if self.shifter is not None:
            x = self.shifter.process(x)
        if len(self.board):
            x = self.board(x.reshape(1, -1), self.rate, reset=False).reshape(-1)
        return x


def equalizer_board(gains_db: Sequence[float], rate: int) -> Pedalboard:
    """The 10 bands as peak filters (Q 1.4, about an octave); bands too close to Nyquist are left out."""
    return Pedalboard([pb.PeakFilter(cutoff_frequency_hz=f, gain_db=g, q=1.4)
                          for f, g in zip(EQ_BANDS_HZ, gains_db, strict=True) if g and f < 0.45 * rate])


def check_gains(gains_db: Sequence[float]) -> tuple[float, ...]:
    """The equalizer's 10 gains, or ValueError saying what is wrong."""
    values = tuple(gains_db)
    if len(values) != len(EQ_BANDS_HZ):
        raise ValueError(f"the equalizer takes {len(EQ_BANDS_HZ)} gains ({', '.join(map(str, EQ_BANDS_HZ))} Hz), "
                         f"got {len(values)}")
    for g in values:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not -EQ_MAX_DB <= g <= EQ_MAX_DB:
            raise ValueError(f"each equalizer gain must be a number in ±{EQ_MAX_DB:g} dB, got {g!r}")
    return tuple(float(g) for g in values)


def to_float(frame: Pcm) -> Float:
    return frame.astype(np.float32) / 32768.0


def to_pcm(x: Float) -> Pcm:
    pcm: Pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)
    return pcm


class VoiceEffects:
    """The voice type, karaoke preset and equalizer of one stream. Settings may change at any time
    (the next frame uses them); each rate keeps its own DSP state. Not thread-safe."""

    def __init__(self) -> None:
        self.voice_type = VoiceType.ORIGINAL_SOUND
        self.karaoke_type = KaraokeType.ORIGINAL
        self.gains_db: tuple[float, ...] = (0.0,) * len(EQ_BANDS_HZ)
        self._stages: dict[tuple[str, int, int], _Stage] = {}
        self._eq: dict[int, Pedalboard] = {}

    @property
    def active(self) -> bool:
        return bool(self.voice_type or self.karaoke_type or any(self.gains_db))

    def set_voice_type(self, voice_type: int) -> None:
        self.voice_type = VoiceType(voice_type)

    def set_karaoke_type(self, karaoke_type: int) -> None:
        self.karaoke_type = KaraokeType(karaoke_type)

    def set_equalizer(self, gains_db: Sequence[float]) -> None:
        self.gains_db = check_gains(gains_db)
        self._eq.clear()

    def _stage(self, kind: str, value: int, preset: Preset, rate: int) -> _Stage:
        key = (kind, value, rate)
        stage = self._stages.get(key)
        if stage is None:
            stage = self._stages[key] = _Stage(preset, rate)
        return stage

    def process_float(self, x: Float, rate: int) -> Float:
        if self.voice_type:
            x = self._stage("voice", self.voice_type, VOICE_PRESETS[self.voice_type], rate).process(x)
        if self.karaoke_type:
            x = self._stage("karaoke", self.karaoke_type, KARAOKE_PRESETS[self.karaoke_type], rate).process(x)
        if any(self.gains_db):
            eq = self._eq.get(rate)
            if eq is None:
                eq = self._eq[rate] = equalizer_board(self.gains_db, rate)
            x = eq(x.reshape(1, -1), rate, reset=False).reshape(-1)
        return x

    def process(self, frame: Pcm, rate: int) -> Pcm:
        """One mono int16 frame at ``rate`` through the effects (the same frame when none is on)."""
        if not self.active:
            return frame
        return to_pcm(self.process_float(to_float(frame), rate))
