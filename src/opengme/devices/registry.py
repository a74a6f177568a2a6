"""Device listing and selection, the way GME's GetMicList / SelectMic behave.

A list holds the host's PortAudio devices (when PortAudio exists) followed by the file and memory
devices registered on it. ``DEVICEID_DEFAULT`` ("0") is listed first whenever any device exists
and stands for the system default device, or, without one, the first registered virtual device.
Selection stores an id; ``current_mic()`` resolves it when the SDK opens the device, so selecting
"0" follows the default. Occupancy between SDK contexts is the lock table in ``base``
(``acquire`` / ``release``), taken by ``open``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from opengme.errors import ErrorCode, GmeError

from .base import AudioDevice, MicDevice, SpeakerDevice, acquire, owner_of, release
from .portaudio import PortAudioDevices, query_devices

__all__ = ["DEVICEID_DEFAULT", "DeviceInfo", "DeviceList", "DeviceRegistry", "acquire", "owner_of",
           "release"]

DEVICEID_DEFAULT = "0"

D = TypeVar("D", bound=AudioDevice)


@dataclass(frozen=True)
class DeviceInfo:
    """One row of GetMicList / GetSpeakerList (``TMGAudioDeviceInfo``)."""

    device_id: str
    name: str


class DeviceList(Generic[D]):
    """One direction (capture or playback): hardware devices, registered devices, the selection."""

    def __init__(self, kind: str, hardware: Callable[[], tuple[Sequence[D], D | None]],
                 unavailable: Callable[[], GmeError | None] = lambda: None) -> None:
        """``hardware`` lists the host's devices and its default; ``unavailable`` says why it lists
        none when its library failed to load (7014), None otherwise."""
        self.kind = kind
        self._hardware = hardware
        self._unavailable = unavailable
        self._registered: dict[str, D] = {}
        self._known: dict[tuple[str, str], D] = {}  # keeps hardware device objects stable
        self._selected = DEVICEID_DEFAULT

    @property
    def selected_id(self) -> str:
        return self._selected

    def register(self, device: D) -> ErrorCode:
        """Add a virtual device; its id must be new and not the reserved "0". The same device again
        is 1003 (already registered, treat as success); another device reusing a listed id is 1004."""
        if device.id == DEVICEID_DEFAULT:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        listed = self.find(device.id)
        if listed is device:
            return ErrorCode.AV_ERR_HAS_IN_THE_STATE
        if listed is not None:
            return ErrorCode.AV_ERR_INVALID_ARGUMENT
        self._registered[device.id] = device
        return ErrorCode.AV_OK

    def unregister(self, device_id: str) -> ErrorCode:
        if self._registered.pop(device_id, None) is None:
            return ErrorCode.AV_ERR_DEVICE_NOT_EXIST
        return ErrorCode.AV_OK

    def devices(self) -> list[D]:
        """Every device, hardware first."""
        return self._scan()[0]

    def default(self) -> D | None:
        """What "0" stands for now."""
        return self._scan()[1]

    def listing(self) -> tuple[list[D], D | None]:
        """Every device and what "0" stands for, from one scan (the hot-plug watch compares these)."""
        return self._scan()

    def infos(self) -> list[DeviceInfo]:
        """The GME listing: "0" (the default) first, then every device."""
        devices, default = self._scan()
        if default is None:
            return []
        return ([DeviceInfo(DEVICEID_DEFAULT, f"Default: {default.name}")]
                + [DeviceInfo(d.id, d.name) for d in devices])

    def find(self, device_id: str) -> D | None:
        """The device behind an id ("0" included), None if there is none."""
        devices, default = self._scan()
        if device_id == DEVICEID_DEFAULT:
            return default
        return next((d for d in devices if d.id == device_id), None)

    def select(self, device_id: str) -> ErrorCode:
        """SelectMic / SelectSpeaker: 1301 for an unknown id, 7014 when no device exists because
        PortAudio failed to load (see :meth:`missing`); the selection is then unchanged."""
        if self.find(device_id) is None:
            return ErrorCode(self.missing(device_id).code)
        self._selected = device_id
        return ErrorCode.AV_OK

    def current(self) -> D:
        """The selected device, resolved now; GmeError 1301 if it is gone or none exists (7014 when
        that is because PortAudio failed to load)."""
        device = self.find(self._selected)
        if device is None:
            raise self.missing(self._selected)
        return device

    def missing(self, device_id: str) -> GmeError:
        """Why ``device_id`` names no device: when nothing is listed because the hardware library
        failed to load (the common headless case), that failure (7014, with the library's error
        text); otherwise 1301."""
        failure = self._unavailable()
        if failure is not None and self.default() is None:
            return GmeError(failure.code, failure.detail)
        return GmeError(ErrorCode.AV_ERR_DEVICE_NOT_EXIST, f"no {self.kind} device {device_id!r}")

    def _scan(self) -> tuple[list[D], D | None]:
        found, system_default = self._hardware()
        hardware = [self._known.setdefault((d.id, d.name), d) for d in found]
        virtual = list(self._registered.values())
        if system_default is not None:
            default: D | None = self._known[(system_default.id, system_default.name)]
        else:
            default = next(iter(virtual + hardware), None)
        return hardware + virtual, default


class DeviceRegistry:
    """The devices of one SDK context: ``mics`` and ``speakers`` (listing, selection, registration);
    ``AudioCtrl`` turns them into GME's calls.

    With ``portaudio=False`` (or when PortAudio is missing) only registered devices are listed;
    the reason PortAudio was unavailable is kept in ``portaudio_error``.
    """

    def __init__(self, *, portaudio: bool = True) -> None:
        self._use_portaudio = portaudio
        self.portaudio_error: GmeError | None = None
        self.consulted = False  # a list was scanned (the hot-plug watch waits for the app's first device call)
        self.mics: DeviceList[MicDevice] = DeviceList(
            "mic", lambda: self._portaudio_side(lambda pa: (pa.mics, pa.default_mic)), self._why_no_hardware)
        self.speakers: DeviceList[SpeakerDevice] = DeviceList(
            "speaker", lambda: self._portaudio_side(lambda pa: (pa.speakers, pa.default_speaker)),
            self._why_no_hardware)

    def _why_no_hardware(self) -> GmeError | None:
        return self.portaudio_error

    def _portaudio_side(self, pick: Callable[[PortAudioDevices], tuple[Sequence[D], D | None]]
                        ) -> tuple[Sequence[D], D | None]:
        """Hardware devices of one direction; once PortAudio fails to load, stop asking."""
        self.consulted = True
        if not self._use_portaudio or self.portaudio_error is not None:
            return [], None
        try:
            return pick(query_devices())
        except GmeError as exc:
            self.portaudio_error = exc
            return [], None
