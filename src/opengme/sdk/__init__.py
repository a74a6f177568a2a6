"""The client SDK: GME's ITMG API in Python spelling (``Context`` → ``Room`` …).

The real-time voice issue adds ``Context.get_audio_ctrl()`` next to ``get_room()``; the room's
``entered`` reply will carry its ``media`` section, already kept in ``Session.room.media``.
"""
from __future__ import annotations

from opengme.sdk.context import Context, Delegate
from opengme.sdk.room import Room

__all__ = ["Context", "Delegate", "Room"]
