"""Live captions (GME: StartRealTimeASR, event 1093): what the server needs to decide, without I/O.

- :class:`CaptionSink` is what the signalling core asks of the server's captions part; the core only
  checks that the requester is a member of a room and answers ``asr_stop`` itself.
- :class:`Sentences` splits one speaker's talk into sentences by the voice bit of the media headers:
  a sentence starts with a voiced packet and ends after :data:`GAP` seconds without one (the SDK
  sends no packets in silence), or when it has lasted :data:`LONGEST` seconds.
"""
from __future__ import annotations

from typing import Final, Protocol

from opengme.core.rooms import Member

GAP: Final = 0.7
LONGEST: Final = 15.0
START, CONTENT, END = 0, 1, 2  # REALTIME_ASR sub_type


class CaptionSink(Protocol):
    """The server's captions: ``start`` answers the request itself (``asr_started`` or ``error``),
    once the app's switches and limits are checked off the event loop."""

    def start(self, member: Member, request_id: int, language: str) -> None: ...

    def stop(self, member: Member) -> None: ...


class Sentences:
    """Sentence boundaries of one speaker; time is passed in."""

    def __init__(self, gap: float = GAP, longest: float = LONGEST) -> None:
        self.gap = gap
        self.longest = longest
        self.sentence_id = 0  # the current (or last) sentence's number
        self.open = False
        self._started = 0.0
        self._last_voice = 0.0

    def heard(self, now: float, voiced: bool) -> bool:
        """A packet arrived; whether it belongs to a sentence (silence between sentences does not)."""
        if voiced:
            self._last_voice = now
            if not self.open:
                self.open = True
                self.sentence_id += 1
                self._started = now
        return self.open

    def should_end(self, now: float) -> bool:
        return self.open and (now - self._last_voice >= self.gap or now - self._started >= self.longest)

    def end(self) -> None:
        self.open = False
