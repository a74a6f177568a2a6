"""The client SDK: GME's ITMG API in Python spelling (``Context`` → ``Room``, ``AudioCtrl`` …).

``Context.get_room()`` is GME's ITMGRoom and ``Context.get_audio_ctrl()`` its ITMGAudioCtrl,
``Context.get_ptt()`` its ITMGPTT (voice messages). The
facades share one internal :class:`~opengme.sdk.core.SdkCore`; the media behind the audio calls is a
pure :class:`~opengme.sdk.media_session.MediaSession` (pipelines, UDP with a WebSocket fallback)
driven by one audio thread per Context (:mod:`opengme.sdk.media`).
"""
from __future__ import annotations

from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.context import Context, Delegate
from opengme.sdk.media_session import MediaTransport
from opengme.sdk.ptt import Ptt
from opengme.sdk.room import Room

__all__ = ["AudioCtrl", "Context", "Delegate", "MediaTransport", "Ptt", "Room"]
