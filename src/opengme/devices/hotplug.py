"""Device hot-plug, pure: what changed between two listings of one direction, as GME's events.

GME (Windows) sends MIC_NEW_DEVICE (1011) / MIC_LOST_DEVICE (1012) / MIC_DEFAULT_DEVICE_CHANGED
(1013) and the speaker's 1009 / 1010 / 1008, each with ``deviceID``, ``deviceName``, ``isNewDevice``,
``isUsedDevice`` (the device is the one in use), ``result`` and ``error_info``. The SDK's watch
(``opengme.sdk.device_watch``) lists the devices at a low rate and hands each pair of listings here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opengme.events import EventType

from .base import AudioDevice

KIND_EVENTS = {
    "mic": (EventType.MIC_NEW_DEVICE, EventType.MIC_LOST_DEVICE, EventType.MIC_DEFAULT_DEVICE_CHANGED),
    "speaker": (EventType.SPEAKER_NEW_DEVICE, EventType.SPEAKER_LOST_DEVICE, EventType.SPEAKER_DEFAULT_DEVICE_CHANGED),
}


@dataclass(frozen=True)
class Listing:
    """One direction's devices (id → name, in listing order) and the default's id."""

    names: dict[str, str]
    default: str | None

    @classmethod
    def of(cls, devices: Sequence[AudioDevice], default: AudioDevice | None) -> Listing:
        return cls({d.id: d.name for d in devices}, default.id if default is not None else None)


def payload(device_id: str, name: str, *, new: bool, used: bool) -> dict[str, Any]:
    return {"deviceID": device_id, "deviceName": name, "isNewDevice": new, "isUsedDevice": used,
            "result": 0, "error_info": ""}


def changes(kind: str, before: Listing, after: Listing, used: str | None) -> list[tuple[EventType, dict[str, Any]]]:
    """The events for going from ``before`` to ``after``; ``used`` is the id of the open device."""
    new_event, lost_event, default_event = KIND_EVENTS[kind]
    events = [(new_event, payload(i, n, new=True, used=i == used)) for i, n in after.names.items()
              if i not in before.names]
    events += [(lost_event, payload(i, n, new=False, used=i == used)) for i, n in before.names.items()
               if i not in after.names]
    if after.default != before.default and after.default is not None:
        events.append((default_event, payload(after.default, after.names.get(after.default, ""),
                                              new=after.default not in before.names, used=after.default == used)))
    return events
