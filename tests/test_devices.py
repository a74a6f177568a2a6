"""Audio devices: file, memory and PortAudio devices, listing, selection and occupancy."""
from __future__ import annotations

import sys
import threading
import types
import wave
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.devices import (
    DEVICEID_DEFAULT,
    DeviceInfo,
    DeviceRegistry,
    FileMic,
    FileSpeaker,
    FramePacer,
    MemoryMic,
    MemorySpeaker,
    PortAudioMic,
    PortAudioSpeaker,
    SampleFifo,
    acquire,
    load_sounddevice,
    owner_of,
    query_devices,
    release,
)
from opengme.devices.portaudio import PlayoutRing
from opengme.errors import ErrorCode, GmeError

# ---------------------------------------------------------------- helpers


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def chirp(f0: float, f1: float, seconds: float, rate: int) -> np.ndarray:
    """Linear chirp: instantaneous frequency f0 + (f1 - f0) * t / seconds."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return (0.5 * 32767 * np.sin(phase)).astype(np.int16)


CODECS = {"wav": "pcm_s16le", "ogg": "libopus", "mp3": "libmp3lame", "flac": "flac"}


def write_audio(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Encode mono int16 samples with PyAV in the container/codec the suffix names."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix[1:]], rate=rate, layout="mono")
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024],
                                               format="s16", layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def read_all(mic: FileMic | MemoryMic) -> list[np.ndarray]:
    return list(mic.frames())


# ---------------------------------------------------------------- FileMic


@pytest.mark.parametrize("suffix, source_rate", [("wav", 44100), ("ogg", 48000), ("mp3", 44100),
                                                 ("flac", 22050)])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_file_mic_resamples_any_format_to_exact_frames(tmp_path: Path, suffix: str,
                                                       source_rate: int, rate: int) -> None:
    path = write_audio(tmp_path / f"tone.{suffix}", sine(440, 1.0, source_rate), source_rate)
    frame_samples = rate // 50
    mic = FileMic(path)
    mic.open(rate, frame_samples)
    frames = read_all(mic)
    mic.close()

    assert mic.exhausted
    assert all(f.shape == (frame_samples,) and f.dtype == np.int16 for f in frames)
    # 1 s = 50 frames; lossy codecs add up to a few tens of ms of delay/padding.
    assert 50 <= len(frames) <= 53
    middle = np.concatenate(frames[10:40])
    assert abs(peak_hz(middle, rate) - 440) < 5
    assert 0.4 * 32767 < np.abs(middle).max() < 0.6 * 32767


def test_file_mic_chirp_comes_out_in_order(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "chirp.wav", chirp(200, 2000, 1.0, 44100), 44100)
    mic = FileMic(path)
    mic.open(16000, 320)
    audio = np.concatenate(read_all(mic))
    mic.close()
    early, late = audio[3200:4800], audio[11200:12800]  # around 0.25 s and 0.75 s
    assert abs(peak_hz(early, 16000) - 650) < 60
    assert abs(peak_hz(late, 16000) - 1550) < 60


def test_file_mic_keeps_every_sample_and_pads_the_last_frame(tmp_path: Path) -> None:
    source = np.arange(1, 1001, dtype=np.int16)
    path = write_audio(tmp_path / "ramp.wav", source, 16000)
    mic = FileMic(path)
    mic.open(16000, 320)
    frames = []
    while not mic.exhausted:
        frames.append(mic.read_frame())
    assert mic.read_frame() is None
    audio = np.concatenate(frames)
    assert len(frames) == 4
    assert np.array_equal(audio[:1000], source)
    assert not audio[1000:].any()


def test_file_mic_exhausted_with_the_last_frame_on_an_exact_length(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "two.wav", np.ones(640, dtype=np.int16), 16000)
    mic = FileMic(path)
    mic.open(16000, 320)
    assert mic.read_frame() is not None and not mic.exhausted
    assert mic.read_frame() is not None and mic.exhausted


def test_file_mic_loops_seamlessly(tmp_path: Path) -> None:
    source = np.arange(1, 801, dtype=np.int16)  # 2.5 frames: loop must not pad between passes
    path = write_audio(tmp_path / "loop.wav", source, 16000)
    mic = FileMic(path, loop=True)
    mic.open(16000, 320)
    audio = np.concatenate([mic.read_frame() for _ in range(25)])
    mic.close()
    assert not mic.exhausted
    assert np.array_equal(audio, np.tile(source, 10))


def test_file_mic_stereo_frames(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", sine(1000, 0.2, 48000), 48000)
    mic = FileMic(path)
    mic.open(48000, 960, channels=2)
    frame = mic.read_frame()
    assert frame is not None and frame.shape == (960, 2)
    assert np.array_equal(frame[:, 0], frame[:, 1]) and frame.any()


def test_file_mic_reopen_starts_over(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "ramp.wav", np.arange(1, 1001, dtype=np.int16), 16000)
    mic = FileMic(path)
    mic.open(16000, 320)
    first = mic.read_frame()
    mic.close()
    assert mic.read_frame() is None  # a closed mic produces nothing
    mic.open(16000, 320)
    assert np.array_equal(mic.read_frame(), first)


@pytest.mark.public_surface
def test_missing_or_unreadable_file_is_7010(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.wav", tmp_path):
        mic = FileMic(path)
        with pytest.raises(GmeError) as err:
            mic.open(16000, 320)
        assert err.value.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS
        assert str(path) in err.value.detail
        assert not mic.is_open and owner_of(mic) is None


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b"just some text\n" * 100,
                                     b"RIFF\x10\x00\x00\x00WAVEfmt garbage"])
@pytest.mark.public_surface
def test_damaged_file_is_7011(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    mic = FileMic(path)
    with pytest.raises(GmeError) as err:
        mic.open(16000, 320)
    assert err.value.code == ErrorCode.AV_ERR_FILE_DAMAGED
    assert not mic.is_open and owner_of(mic) is None


@pytest.mark.public_surface
def test_bad_format_is_invalid_argument(tmp_path: Path) -> None:
    mic = FileMic(tmp_path / "x.wav")
    for args in ((0, 320), (16000, 0), (16000, 320, 3)):
        with pytest.raises(GmeError) as err:
            mic.open(*args)
        assert err.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT


# ---------------------------------------------------------------- FileSpeaker


def test_file_speaker_writes_a_wav_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out" / "heard.wav"
    path.parent.mkdir()
    tone = sine(440, 0.2, 48000)
    speaker = FileSpeaker(path)
    speaker.open(48000, 960)
    for start in range(0, len(tone), 960):
        speaker.write_frame(tone[start:start + 960])
    assert not path.exists() and speaker.part_path.exists()
    speaker.close()
    assert path.exists() and not speaker.part_path.exists()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48000)
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert np.array_equal(data, tone)
    # What the speaker wrote is a valid input for a file mic.
    mic = FileMic(path)
    mic.open(48000, 960)
    assert np.array_equal(np.concatenate(read_all(mic)), tone)


def test_file_speaker_stereo_and_frame_checks(tmp_path: Path) -> None:
    speaker = FileSpeaker(tmp_path / "st.wav")
    speaker.open(16000, 320, channels=2)
    frame = np.stack([np.arange(320), -np.arange(320)], axis=1).astype(np.int16)
    speaker.write_frame(frame)
    for bad in (frame[:, 0], frame.astype(np.float32), frame[:100]):
        with pytest.raises(GmeError) as err:
            speaker.write_frame(bad)
        assert err.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT
    speaker.close()
    with wave.open(str(tmp_path / "st.wav"), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() == 320
        data = np.frombuffer(wav.readframes(320), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(data, frame)


@pytest.mark.public_surface
def test_file_speaker_unwritable_path_is_7010(tmp_path: Path) -> None:
    speaker = FileSpeaker(tmp_path / "no" / "such" / "dir.wav")
    with pytest.raises(GmeError) as err:
        speaker.open(16000, 320)
    assert err.value.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS
    assert owner_of(speaker) is None


# ---------------------------------------------------------------- memory devices


def test_memory_mic_across_threads(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    source = rng.integers(-32768, 32767, 16000, dtype=np.int16)
    mic = MemoryMic()
    mic.open(16000, 320)

    def produce() -> None:
        start = 0
        while start < len(source):
            size = int(rng.integers(1, 700))
            mic.push(source[start:start + size])
            start += size
        mic.end()

    producer = threading.Thread(target=produce)
    producer.start()
    frames = []
    while not mic.exhausted:
        frame = mic.read_frame()
        if frame is not None:
            assert frame.shape == (320,)
            frames.append(frame)
    producer.join()
    assert np.array_equal(np.concatenate(frames), source)
    assert mic.read_frame() is None


def test_memory_mic_waits_for_whole_frames_and_pads_at_end() -> None:
    mic = MemoryMic()
    mic.push(np.full(100, 5, dtype=np.int16))  # pushing before open is allowed
    mic.open(16000, 320)
    assert mic.read_frame() is None and not mic.exhausted
    mic.push(np.full(300, 6, dtype=np.int16))
    first = mic.read_frame()
    assert first is not None and first[:100].tolist() == [5] * 100 and (first[100:] == 6).all()
    assert mic.buffered_samples == 80
    mic.end()
    last = mic.read_frame()
    assert last is not None and (last[:80] == 6).all() and not last[80:].any()
    assert mic.exhausted
    with pytest.raises(GmeError) as err:
        mic.push(np.zeros(10, dtype=np.int16))
    assert err.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT


def test_memory_mic_stereo_and_type_checks() -> None:
    mic = MemoryMic()
    mic.open(48000, 960, channels=2)
    block = np.stack([np.arange(960), np.arange(960) + 1], axis=1).astype(np.int16)
    mic.push(block)
    frame = mic.read_frame()
    assert frame is not None and np.array_equal(frame, block)
    for bad in (np.zeros(960), np.zeros((960, 1), dtype=np.int16)):
        with pytest.raises(GmeError):
            mic.push(bad)


def test_memory_speaker_across_threads() -> None:
    speaker = MemorySpeaker()
    speaker.open(16000, 320)
    frames = [np.full(320, i, dtype=np.int16) for i in range(50)]
    writer = threading.Thread(target=lambda: [speaker.write_frame(f) for f in frames])
    writer.start()
    pulled: list[np.ndarray] = []
    while len(pulled) < 25:
        frame = speaker.pull()
        if frame is not None:
            pulled.append(frame)
    writer.join()
    rest = speaker.take_all()
    assert [int(f[0]) for f in pulled] == list(range(25))
    assert rest.shape == (25 * 320,) and np.array_equal(rest, np.concatenate(frames[25:]))
    assert speaker.frames_written == 50 and speaker.pull() is None
    assert speaker.take_all().shape == (0,)


def test_memory_speaker_stereo_and_peek() -> None:
    speaker = MemorySpeaker()
    speaker.open(48000, 960, channels=2)
    frames = [np.full((960, 2), (i, -i), dtype=np.int16) for i in range(5)]
    for frame in frames:
        speaker.write_frame(frame)
    assert np.array_equal(speaker.peek(2), np.concatenate(frames[3:]))  # a look: nothing is taken
    assert speaker.peek(0).shape == (0, 2)
    heard = speaker.take_all()
    assert heard.shape == (5 * 960, 2) and np.array_equal(heard, np.concatenate(frames))
    assert speaker.peek(3).shape == (0, 2)


def test_closed_speaker_plays_nothing() -> None:
    speaker = MemorySpeaker()
    speaker.open(16000, 320)
    speaker.close()
    speaker.write_frame(np.zeros(320, dtype=np.int16))
    assert speaker.frames_written == 0


# ---------------------------------------------------------------- pacing and buffers


def test_frame_pacer_keeps_wall_clock_rate() -> None:
    pacer = FramePacer(0.02, max_burst=5)
    pulled = 0
    now = 100.0
    for tick in range(100):  # a jittery timer: ticks 15-25 ms apart
        now += 0.015 + 0.01 * ((tick * 7) % 3) / 2
        pulled += pacer.due(now)
    assert pulled == int((now - 100.015) / 0.02) + 1


def test_frame_pacer_first_frame_now_and_bounded_catch_up() -> None:
    pacer = FramePacer(0.02, max_burst=3)
    assert pacer.due(0.0) == 1
    assert pacer.due(0.019) == 0
    assert pacer.due(0.020) == 1
    assert pacer.due(1.0) == 3  # a 1 s stall: no 48-frame burst
    assert pacer.due(1.0) == 0
    assert pacer.due(1.02) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=30), st.lists(st.integers(1, 40), max_size=30))
def test_sample_fifo_is_exact(chunks: list[int], pops: list[int]) -> None:
    fifo = SampleFifo()
    data = np.arange(sum(chunks), dtype=np.int16)
    start = 0
    for size in chunks:
        fifo.push(data[start:start + size])
        start += size
    out: list[np.ndarray] = []
    for size in pops:
        got = fifo.pop(size)
        if got is None:
            assert len(fifo) < size
        else:
            out.append(got)
    rest = fifo.pop_padded(len(fifo) or 1)
    if rest is not None:
        out.append(rest)
    joined = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
    assert np.array_equal(joined, data)


def test_sample_fifo_capacity_drops_oldest() -> None:
    fifo = SampleFifo(capacity=10)
    fifo.push(np.arange(8))
    fifo.push(np.arange(8, 14))
    assert len(fifo) == 10 and fifo.dropped == 4
    assert fifo.pop(10).tolist() == list(range(4, 14))


def test_playout_ring_prebuffers_and_counts_underruns() -> None:
    ring = PlayoutRing(capacity=10 * 4, prebuffer=2 * 4)
    ring.write(np.full(4, 1))
    assert not ring.render(4).any()  # priming: one frame is not enough yet
    ring.write(np.full(4, 2))
    assert ring.render(4).tolist() == [1] * 4
    assert ring.render(4).tolist() == [2] * 4
    assert not ring.render(4).any() and ring.underruns == 1  # starved: silence, re-prime
    ring.write(np.full(4, 3))
    assert not ring.render(4).any()
    ring.write(np.full(4, 4))
    assert ring.render(4).tolist() == [3] * 4


# ---------------------------------------------------------------- registry and occupancy


@pytest.mark.public_surface
def test_empty_registry_has_no_devices() -> None:
    registry = DeviceRegistry(portaudio=False)
    assert registry.mics.infos() == [] and len(registry.speakers.infos()) == 0
    assert registry.mics.select(DEVICEID_DEFAULT) == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    assert registry.speakers.select(DEVICEID_DEFAULT) == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    with pytest.raises(GmeError) as err:
        registry.mics.current()
    assert err.value.code == ErrorCode.AV_ERR_DEVICE_NOT_EXIST


@pytest.mark.public_surface
def test_registry_lists_and_selects_virtual_devices(tmp_path: Path) -> None:
    registry = DeviceRegistry(portaudio=False)
    bot = MemoryMic("bot-mic", "Bot voice")
    file_mic = FileMic(tmp_path / "speech.ogg", device_id="file-mic")
    assert registry.mics.register(bot) == ErrorCode.AV_OK
    assert registry.mics.register(file_mic) == ErrorCode.AV_OK
    assert registry.mics.infos() == [DeviceInfo("0", "Default: Bot voice"),
                                       DeviceInfo("bot-mic", "Bot voice"),
                                       DeviceInfo("file-mic", "speech.ogg")]
    assert len(registry.mics.infos()) == 3
    assert registry.mics.current() is bot  # "0" without PortAudio: the first virtual device
    assert registry.mics.select("file-mic") == ErrorCode.AV_OK
    assert registry.mics.current() is file_mic
    assert registry.mics.select("nope") == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    assert registry.mics.current() is file_mic  # a failed select changes nothing
    assert registry.mics.register(bot) == ErrorCode.AV_ERR_HAS_IN_THE_STATE  # 1003: already listed
    assert registry.mics.register(MemoryMic("bot-mic")) == ErrorCode.AV_ERR_INVALID_ARGUMENT  # 1004: id taken
    assert registry.mics.find("bot-mic") is bot  # the listed device stays
    assert registry.mics.register(MemoryMic(DEVICEID_DEFAULT)) == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert registry.mics.unregister("file-mic") == ErrorCode.AV_OK
    with pytest.raises(GmeError) as err:
        registry.mics.current()
    assert err.value.code == ErrorCode.AV_ERR_DEVICE_NOT_EXIST
    assert registry.mics.select(DEVICEID_DEFAULT) == ErrorCode.AV_OK
    assert registry.mics.current() is bot

    speaker = MemorySpeaker("spk")
    assert registry.speakers.register(speaker) == ErrorCode.AV_OK
    assert registry.speakers.infos()[0] == DeviceInfo("0", "Default: Memory speaker")
    assert registry.speakers.select("spk") == ErrorCode.AV_OK
    assert registry.speakers.current() is speaker


@pytest.mark.public_surface
def test_device_open_by_two_owners_is_occupied() -> None:
    first, second = DeviceRegistry(portaudio=False), DeviceRegistry(portaudio=False)
    mic = MemoryMic("shared")
    first.mics.register(mic)
    second.mics.register(mic)
    mic.open(16000, 320, owner=first)
    with pytest.raises(GmeError) as err:
        second.mics.current().open(16000, 320, owner=second)
    assert err.value.code == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
    with pytest.raises(GmeError) as err:
        mic.open(16000, 320, owner=first)
    assert err.value.code == ErrorCode.AV_ERR_HAS_IN_THE_STATE  # 1003: this owner already holds it
    assert owner_of(mic) is first and mic.sample_rate == 16000
    mic.close()
    mic.open(48000, 960, owner=second)
    assert owner_of(mic) is second
    mic.close()
    assert owner_of(mic) is None


def test_acquire_release_table() -> None:
    a, b = object(), object()
    mic = MemoryMic()
    assert acquire(mic, a) == ErrorCode.AV_OK
    assert acquire(mic, b) == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
    assert release(mic, b) == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
    assert release(mic, a) == ErrorCode.AV_OK
    assert acquire(mic, b) == ErrorCode.AV_OK
    assert release(mic, b) == ErrorCode.AV_OK and owner_of(mic) is None


@pytest.mark.public_surface
def test_two_file_speakers_on_one_path_exclude_each_other(tmp_path: Path) -> None:
    one, two = FileSpeaker(tmp_path / "a.wav"), FileSpeaker(tmp_path / "." / "a.wav")
    one.open(16000, 320, owner="ctx1")
    with pytest.raises(GmeError) as err:
        two.open(16000, 320, owner="ctx2")
    assert err.value.code == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
    one.close()
    two.open(16000, 320, owner="ctx2")
    two.close()


# ---------------------------------------------------------------- PortAudio


@pytest.mark.public_surface
def test_portaudio_missing_library_is_7014(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(GmeError) as err:
        load_sounddevice()
    assert err.value.code == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert "pip install 'opengme[devices]'" in err.value.detail
    assert "libportaudio2" in err.value.detail
    with pytest.raises(GmeError) as err:
        query_devices()
    assert err.value.code == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    mic = PortAudioMic(0, "card")
    with pytest.raises(GmeError) as err:
        mic.open(16000, 320)
    assert err.value.code == ErrorCode.AV_ERR_LOAD_LIB_FAILED
    assert not mic.is_open and owner_of(mic) is None

    registry = DeviceRegistry()  # falls back to virtual devices only
    registry.mics.register(MemoryMic("bot"))
    assert [info.device_id for info in registry.mics.infos()] == ["0", "bot"]
    assert registry.portaudio_error is not None
    assert registry.portaudio_error.code == ErrorCode.AV_ERR_LOAD_LIB_FAILED


class StandInStream:
    """Stands in for a PortAudio stream (no sound card here): keeps the callback it was opened with."""

    opened: ClassVar[list[StandInStream]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        StandInStream.opened.append(self)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_portaudio_speaker_plays_stereo_frames_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speaker's side of the callback with 2 channels: what PortAudio asks for is what was written."""
    stand_in = types.ModuleType("sounddevice")
    stand_in.OutputStream = StandInStream  # type: ignore[attr-defined]
    stand_in.PortAudioError = RuntimeError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sounddevice", stand_in)
    StandInStream.opened.clear()
    speaker = PortAudioSpeaker(3, "card")
    speaker.open(48000, 960, channels=2)
    (stream,) = StandInStream.opened
    assert stream.options["channels"] == 2 and stream.options["blocksize"] == 960
    frames = [np.stack([np.arange(960) + i, -np.arange(960) - i], axis=1).astype(np.int16) for i in range(3)]
    for frame in frames:
        speaker.write_frame(frame)
    played = []
    for _ in range(3):
        out = np.zeros((960, 2), dtype=np.int16)
        stream.options["callback"](out, 960, None, None)
        played.append(out)
    assert np.array_equal(np.concatenate(played), np.concatenate(frames))
    speaker.close()


def _portaudio_or_skip() -> None:
    try:
        load_sounddevice()
    except GmeError:
        pytest.skip("PortAudio is not installed here")


def test_portaudio_listing_when_present() -> None:
    _portaudio_or_skip()
    found = query_devices()
    registry = DeviceRegistry()
    listed = registry.mics.infos()
    assert [i.device_id for i in listed[1:]] == [m.id for m in found.mics]
    if found.default_mic is not None:
        assert listed[0] == DeviceInfo("0", f"Default: {found.default_mic.name}")
        assert registry.mics.current() is registry.mics.find(found.default_mic.id)
    assert all(m.id.startswith("portaudio:") and m.clocked for m in found.mics)


def test_portaudio_streams_when_present() -> None:
    _portaudio_or_skip()
    found = query_devices()
    if found.default_mic is None or found.default_speaker is None:
        pytest.skip("no default PortAudio devices")
    mic, speaker = found.default_mic, found.default_speaker
    with mic, speaker:
        mic.open(16000, 320, owner="ctx")
        speaker.open(16000, 320, owner="ctx")
        other = query_devices().default_mic
        assert other is not None
        with pytest.raises(GmeError) as err:
            other.open(16000, 320, owner="other ctx")
        assert err.value.code == ErrorCode.AV_ERR_RESOURCE_IS_OCCUPIED
        frame = None
        for _ in range(200):
            speaker.write_frame(np.zeros(320, dtype=np.int16))
            frame = mic.read_frame()
            if frame is not None:
                break
            threading.Event().wait(0.01)
        assert frame is not None and frame.shape == (320,) and frame.dtype == np.int16
    assert not mic.is_open and owner_of(mic) is None
