"""Audio devices: real ones through PortAudio, file and memory ones for headless use.

The SDK pulls 20 ms int16 frames from a ``MicDevice`` and pushes them to a ``SpeakerDevice``;
``DeviceRegistry`` lists and selects them the way GME's GetMicList / SelectMic do.
"""
from .base import AudioDevice, Frame, FramePacer, MicDevice, SampleFifo, SpeakerDevice, acquire, owner_of, release
from .files import FileMic, FileSpeaker
from .memory import MemoryMic, MemorySpeaker
from .portaudio import PortAudioMic, PortAudioSpeaker, load_sounddevice, query_devices
from .registry import DEVICEID_DEFAULT, DeviceInfo, DeviceList, DeviceRegistry

__all__ = [
    "DEVICEID_DEFAULT", "AudioDevice", "DeviceInfo", "DeviceList", "DeviceRegistry", "FileMic",
    "FileSpeaker", "Frame", "FramePacer", "MemoryMic", "MemorySpeaker", "MicDevice",
    "PortAudioMic", "PortAudioSpeaker", "SampleFifo", "SpeakerDevice", "acquire",
    "load_sounddevice", "owner_of", "query_devices", "release",
]
