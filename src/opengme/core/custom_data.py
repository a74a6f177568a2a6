"""Custom data on the voice stream (GME's ``SendCustomData``), pure: the payload format and the
sender's pacing.

A member's custom data travels in CUSTOM media datagrams (``PacketType.CUSTOM``), sealed with the
member's key exactly like its voice, sent right after one of its voice packets: only while the mic
is sending voice, as GME requires. The payload is ``version (1 byte, 1) ‖ data (1..MAX_CUSTOM_DATA
bytes)``; a reader drops a payload of another version or size (a later version may add fields), and
a reader that predates CUSTOM drops the datagram as an unknown type, so old SDKs and relays ignore it.

Pacing: one copy with the first voice packet, then one every CUSTOM_INTERVAL_S with the next voice
packet, ``repeat_count`` copies in all (-1: until stopped). Each copy that arrives is one
CUSTOMDATA_UPDATE (1092) at the receiver, as GME delivers each repetition.
"""
from __future__ import annotations

from typing import Final

VERSION: Final = 1
MAX_CUSTOM_DATA: Final = 1000
"""Bytes of data per message (GME documents no limit; a datagram holds at most 1,200 bytes)."""
CUSTOM_INTERVAL_S: Final = 0.1
"""Between two copies of a repeated message (10 a second at most)."""
PACING_SLACK_S: Final = 0.005
"""A voice packet this much early still carries the next copy (ticks are 20 ms apart, not exact)."""
RELAY_MIN_INTERVAL_S: Final = 0.05
"""The relay forwards at most one CUSTOM datagram per member this often; more are dropped."""


class CustomDataError(ValueError):
    """A CUSTOM payload that is not ours to read."""


def encode(data: bytes) -> bytes:
    if not 1 <= len(data) <= MAX_CUSTOM_DATA:
        raise CustomDataError(f"custom data must be 1..{MAX_CUSTOM_DATA} bytes, got {len(data)}")
    return bytes((VERSION,)) + data


def decode(payload: bytes) -> bytes:
    """The data of a CUSTOM payload; CustomDataError for another version or an impossible size."""
    if len(payload) < 2:
        raise CustomDataError(f"a CUSTOM payload of {len(payload)} bytes holds no data")
    if payload[0] != VERSION:
        raise CustomDataError(f"CUSTOM payload version {payload[0]} is not {VERSION}")
    if len(payload) - 1 > MAX_CUSTOM_DATA:
        raise CustomDataError(f"custom data of {len(payload) - 1} bytes exceeds {MAX_CUSTOM_DATA}")
    return payload[1:]


class CustomDataSender:
    """What to attach to the next voice packet (pure: time is passed in)."""

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._left = 0  # copies still to send; -1 forever
        self._next = 0.0

    @property
    def active(self) -> bool:
        return self._payload is not None

    def start(self, data: bytes, repeat_count: int) -> None:
        """Send ``data`` ``repeat_count`` times (-1 until stopped), replacing what was being sent."""
        if repeat_count == 0 or repeat_count < -1:
            raise ValueError(f"repeat_count must be -1 or at least 1, got {repeat_count}")
        self._payload = encode(data)
        self._left = repeat_count
        self._next = 0.0

    def stop(self) -> None:
        self._payload = None

    def due(self, now: float) -> bytes | None:
        """The payload to send with the voice packet that goes out at ``now``, or None."""
        payload = self._payload
        if payload is None or now < self._next:
            return None
        self._next = now + CUSTOM_INTERVAL_S - PACING_SLACK_S
        if self._left > 0:
            self._left -= 1
            if self._left == 0:
                self._payload = None
        return payload
