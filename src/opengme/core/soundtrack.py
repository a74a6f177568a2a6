"""Accompaniment and sound effects, pure: decoded files mixed into the voice that is sent and into
the local speaker, 20 ms at a time.

A :class:`Track` is one file decoded once (PyAV: m4a, wav, mp3, ogg …) to mono int16 at both codec
rates (16 and 48 kHz), so the send path at the room's rate and the local speaker at 48 kHz read the
same instant. Its cursor counts 20 ms frames and moves once per captured mic frame: the
accompaniment rides the capture clock because it is part of the voice (GME mixes it into the mic
signal), so it waits while no mic is captured.

:class:`Soundtrack` holds the accompaniment (at most one) and the effects (by sound id) of one
Context and mixes one frame of them: ``mix(voice, rate)`` answers the voice with the tracks added,
and queues the 48 kHz frame the local speaker should play (what ``loop_back`` asks to be heard
locally), which ``play_local`` hands out. Not thread-safe: the SDK locks around it.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from opengme.codec.audiofile import decode_pcm, open_audio_file
from opengme.core.effects import Float, PitchShifter
from opengme.errors import ErrorCode, GmeError

RATES: Final = (16_000, 48_000)
FRAME_MS: Final = 20
LOCAL_RATE: Final = 48_000
MAX_ACCOMPANY_S: Final = 600
"""Longest accompaniment decoded (10 min: 77 MB of PCM at both rates)."""
MAX_EFFECT_S: Final = 30
"""Longest sound effect decoded."""
LOCAL_QUEUE: Final = 10
"""Frames waiting for the local speaker (200 ms); older ones are dropped when it does not pull."""
MAX_KEY: Final = 12


class DecodeFailure(Exception):
    """Why a file could not be used: ``kind`` is "open", "format" or "decode" (GME's 4001/4002/4003
    for accompaniment, 4051/4052/4053 for effects)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def decode_file(path: str, max_s: int) -> dict[int, npt.NDArray[np.int16]]:
    """``path`` as mono int16 at each of RATES; DecodeFailure when it cannot be (or is too long)."""
    pcm: dict[int, npt.NDArray[np.int16]] = {}
    for rate in RATES:
        try:
            container = open_audio_file(Path(path))
        except GmeError as exc:
            kind = "open" if exc.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS else "format"
            raise DecodeFailure(kind, exc.detail) from exc
        limit = max_s * rate
        chunks: list[npt.NDArray[np.int16]] = []
        total = 0
        try:
            for chunk in decode_pcm(container, rate, 1, Path(path)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DecodeFailure("decode", f"{path} is longer than {max_s} s")
        except GmeError as exc:
            raise DecodeFailure("decode", exc.detail) from exc
        finally:
            container.close()
        if total == 0:
            raise DecodeFailure("decode", f"{path} holds no audio")
        pcm[rate] = np.concatenate(chunks)
    return pcm


@dataclass
class Track:
    """One decoded file: where it is, how often it plays, how loud, pitched, paused."""

    path: str
    pcm: dict[int, npt.NDArray[np.int16]]
    plays: int  # times to play in all; -1 forever
    frame: int = 0
    played: int = 0
    paused: bool = False
    gain: float = 1.0
    semitones: float = 0.0
    pan: float = 0.0  # -1 left … 1 right, for the local speaker when it is stereo
    loop_back: bool = True  # heard on the local speaker
    send: bool = True  # mixed into the voice that is sent
    finished: bool = False
    _shifters: dict[int, PitchShifter] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Whole 20 ms frames in the file (a partial last one counts)."""
        return -(-len(self.pcm[LOCAL_RATE]) // (LOCAL_RATE * FRAME_MS // 1000))

    @property
    def duration_ms(self) -> int:
        return len(self.pcm[LOCAL_RATE]) * 1000 // LOCAL_RATE

    @property
    def position_ms(self) -> int:
        return min(self.frame * FRAME_MS, self.duration_ms)

    def seek(self, ms: int) -> None:
        self.frame = min(max(0, ms), self.duration_ms) // FRAME_MS

    def set_key(self, semitones: float) -> None:
        if semitones != self.semitones:
            self.semitones = semitones
            self._shifters.clear()

    def chunk(self, rate: int) -> Float:
        """The current frame at ``rate`` (zero-padded at the end), scaled and pitched."""
        n = rate * FRAME_MS // 1000
        data = self.pcm[rate][self.frame * n:(self.frame + 1) * n].astype(np.float32) / 32768.0
        if len(data) < n:
            data = np.concatenate((data, np.zeros(n - len(data), dtype=np.float32)))
        if self.semitones:
            shifter = self._shifters.get(rate)
            if shifter is None:
                shifter = self._shifters[rate] = PitchShifter(rate, self.semitones)
            data = shifter.process(data)
        return data * self.gain

    def advance(self) -> None:
        """On to the next frame; at the end, the next loop or ``finished``."""
        self.frame += 1
        if self.frame >= self.frames:
            self.played += 1
            if self.plays != -1 and self.played >= self.plays:
                self.finished = True
            else:
                self.frame = 0


def pan_gains(pan: float) -> tuple[float, float]:
    """Constant-power pan: (left, right) gains for ``pan`` in -1..1."""
    angle = (pan + 1.0) * math.pi / 4
    return math.cos(angle), math.sin(angle)


class Soundtrack:
    """The accompaniment and sound effects of one Context (see the module docstring)."""

    def __init__(self) -> None:
        self.accompany: Track | None = None
        self.accompany_volume = 100  # 0–200 %
        self.effects: dict[int, Track] = {}
        self.effects_volume = 100  # 0–200 %
        self.finished: list[Track] = []  # accompaniments that ended by themselves, for the event
        self._local: deque[npt.NDArray[np.float32]] = deque(maxlen=LOCAL_QUEUE)

    @property
    def active(self) -> bool:
        return self.accompany is not None or bool(self.effects)

    def _tracks(self) -> list[tuple[Track, float]]:
        playing: list[tuple[Track, float]] = []
        if self.accompany is not None and not self.accompany.paused:
            playing.append((self.accompany, self.accompany_volume / 100))
        playing += [(t, self.effects_volume / 100) for t in self.effects.values() if not t.paused]
        return playing

    def mix(self, voice: Float, rate: int, *, heard_in_monitor: bool = False) -> Float:
        """``voice`` (one frame at ``rate``) with the playing tracks added; their local frame queued;
        every playing track moves on one frame. ``heard_in_monitor``: in-ear monitoring plays what
        is sent, so a sent track is not queued for the local speaker a second time."""
        playing = self._tracks()
        if not playing:
            return voice
        out = voice.copy()
        local = np.zeros((LOCAL_RATE * FRAME_MS // 1000, 2), dtype=np.float32)
        heard = False
        for track, volume in playing:
            sent = track.chunk(rate) if track.send else None
            if sent is not None:
                out += sent * volume
            if track.loop_back and not (sent is not None and heard_in_monitor):  # at 48 kHz the sent chunk is the local one (a pitched track steps once)
                mono = sent if sent is not None and rate == LOCAL_RATE else track.chunk(LOCAL_RATE)
                left, right = pan_gains(track.pan)
                local[:, 0] += mono * (volume * left * math.sqrt(2))
                local[:, 1] += mono * (volume * right * math.sqrt(2))
                heard = True
            track.advance()
        if heard:
            self._local.append(local)
        self._reap()
        return out

    def _reap(self) -> None:
        acc = self.accompany
        if acc is not None and acc.finished:
            self.finished.append(acc)
            self.accompany = None
        for sound_id in [i for i, t in self.effects.items() if t.finished]:
            del self.effects[sound_id]

    def play_local(self) -> npt.NDArray[np.float32] | None:
        """The next 48 kHz stereo frame for the local speaker, or None (nothing queued)."""
        return self._local.popleft() if self._local else None

    def clear_local(self) -> None:
        self._local.clear()
