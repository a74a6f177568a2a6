"""``AudioSettings``: every audio choice of one Context, in one immutable snapshot.

The facades (``AudioCtrl`` today, ``AudioEffectCtrl`` and ``Ptt`` next) read it and replace it
through :meth:`opengme.sdk.core.SdkCore.update_audio`; the media session applies it to its
pipelines (:meth:`opengme.sdk.media_session.MediaSession.apply`). Nothing else keeps a copy, so a
setting cannot disagree between layers. Members are named by openid here, as the API names them;
the media session resolves them to tinyids with the room's member list.

Scope (GME): the switches, loopback, blacklist, per-member volumes, volume tracking, the role and
the device test belong to a room and go on exit (``after_exit``); the mic and speaker volumes and
the mix stream count and the 3A switches (AEC/AGC/ANS) are the user's and stay until ``uninit``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from opengme.core.apm import Switches
from opengme.core.mixer import DEFAULT_MIX_STREAMS
from opengme.events import AudioRole

UNITY = 100


def _no_volumes() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AudioSettings:
    """One Context's audio settings (see the module docstring). Replace, never mutate."""

    capture: bool = False  # EnableAudioCaptureDevice: the mic is open
    send: bool = False  # EnableAudioSend
    play: bool = False  # EnableAudioPlayDevice: the speaker is open
    recv: bool = False  # EnableAudioRecv
    loopback: bool = False  # EnableLoopBack
    role: AudioRole = AudioRole.ANCHOR
    blacklist: frozenset[str] = frozenset()  # AddAudioBlackList, by openid
    member_volumes: Mapping[str, int] = field(default_factory=_no_volumes)  # SetSpeakerVolumeByOpenID
    track_volume_s: float | None = None  # TrackingVolume: USER_VOLUMES every so often, None when off
    device_test: bool = False  # the mic loops into the speaker, outside a room
    mic_volume: int | None = None  # SetMicVolume; None until set (reads 101, plays as 100)
    speaker_volume: int | None = None  # SetSpeakerVolume; likewise
    mix_streams: int = DEFAULT_MIX_STREAMS  # SetRecvMixStreamCount
    processing: Switches = field(default_factory=Switches)  # enable_aec / enable_agc / enable_ns; None fields: room default
    forbidden: bool = False  # a room manager's ForbidUserOperation: enabling devices answers 7009

    @property
    def mic_gain(self) -> int:
        """The mic volume the uplink applies (unity until set)."""
        return UNITY if self.mic_volume is None else self.mic_volume

    @property
    def speaker_gain(self) -> int:
        """The speaker volume the downlink applies (unity until set)."""
        return UNITY if self.speaker_volume is None else self.speaker_volume

    def with_role(self, role: AudioRole) -> AudioSettings:
        """An AUDIENCE member stops sending at once (GME)."""
        return replace(self, role=role, send=self.send and role is AudioRole.ANCHOR)

    def with_member_volume(self, open_id: str, volume: int) -> AudioSettings:
        return replace(self, member_volumes=MappingProxyType({**self.member_volumes, open_id: volume}))

    def after_exit(self) -> AudioSettings:
        """What leaving a room (or ``uninit``) keeps: the user's volumes, mix stream count and 3A switches."""
        return AudioSettings(mic_volume=self.mic_volume, speaker_volume=self.speaker_volume,
                             mix_streams=self.mix_streams, processing=self.processing)
