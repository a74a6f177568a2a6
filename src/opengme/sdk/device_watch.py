"""Device hot-plug in the SDK: the device lists watched at a low rate, GME's events, and the switch
to the default device.

Once a second (inside ``poll``, from the app's first device call on) the watch lists the mics and the speakers (the
host's PortAudio devices and the registered file and memory devices) and emits what changed
(:mod:`opengme.devices.hotplug`: 1011/1012/1013 for mics, 1009/1010/1008 for speakers). The switch,
as GME does it: when the open device disappears, or the selection is the default ("0") and the
default changed, the open device moves to the default at once (``select_mic("0")`` /
``select_speaker("0")``); if that fails, the mic or speaker switch turns off as after any failed
selection.

PortAudio builds its device list when it initialises and does not refresh it while it runs, so
hardware plugged in later shows up after the process restarts PortAudio; registered devices come
and go at once (that is what the tests drive).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from opengme.devices import DEVICEID_DEFAULT
from opengme.devices.hotplug import Listing, changes
from opengme.errors import ErrorCode
from opengme.sdk.audio_ctrl import AudioCtrl
from opengme.sdk.core import MIC, SPEAKER, DeviceKind, SdkCore

POLL_S: Final = 1.0


class DeviceWatch:
    """One Context's hot-plug watch (a part of its core: ``pump`` runs in ``poll``)."""

    def __init__(self, core: SdkCore, audio: AudioCtrl) -> None:
        self._core = core
        self._kinds: tuple[tuple[str, DeviceKind[Any], Callable[[str], ErrorCode]], ...] = (
            ("mic", MIC, audio.select_mic), ("speaker", SPEAKER, audio.select_speaker))
        self._last: dict[str, Listing] = {}
        self._next = 0.0
        core.attach(self)

    def pump(self) -> None:
        """Once a second, and only once the app made a device call (listing, selecting, registering,
        opening): a Context that never touches devices never loads PortAudio."""
        now = self._core.now()
        if now < self._next or not self._core.devices.consulted:
            return
        self._next = now + POLL_S
        for kind, device_kind, select in self._kinds:
            self._check(kind, device_kind, select)

    def _check(self, kind: str, device_kind: DeviceKind[Any], select: Callable[[str], ErrorCode]) -> None:
        core = self._core
        devices = device_kind.devices(core.devices)
        listing = Listing.of(*devices.listing())
        before, self._last[kind] = self._last.get(kind), listing
        if before is None or before == listing:
            return
        held = core.held(device_kind)
        used = held.id if held is not None else None
        for event, data in changes(kind, before, listing, used):
            core.emit(event, data)
        if held is None:
            return
        following_default = devices.selected_id == DEVICEID_DEFAULT and listing.default != used
        if used not in listing.names or following_default:
            select(DEVICEID_DEFAULT)

    def close(self) -> None:
        """``uninit``: the next ``init`` starts from a fresh listing."""
        self._last = {}
        self._next = 0.0
