"""The client SDK: GME's ITMG API in Python spelling (``Context`` → ``Room``, ``AudioCtrl`` …).

``Context.get_room()`` is GME's ITMGRoom and ``Context.get_audio_ctrl()`` its ITMGAudioCtrl; the
media engine behind the audio calls (one audio thread per Context, UDP with a WebSocket fallback)
lives in :mod:`opengme.sdk.media`.
"""
from __future__ import annotations

from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.context import Context, Delegate
from opengme.sdk.media import MediaTransport
from opengme.sdk.room import Room

__all__ = ["AudioCtrl", "Context", "Delegate", "MediaTransport", "Room"]
