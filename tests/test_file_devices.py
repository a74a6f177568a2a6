"""File devices as a user meets them: the format the speaker's suffix names, and errors that name the
path, the OS reason and the expected format (the device tests proper are in test_devices.py)."""
from __future__ import annotations

import errno
import os
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from opengme.devices import FileMic, FileSpeaker, owner_of
from opengme.devices.files import SPEAKER_FORMATS
from opengme.errors import ErrorCode, GmeError

RATE, FRAME = 48000, 960


def tone(seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    mono = (0.4 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def record(path: Path, samples: np.ndarray, channels: int = 1) -> FileSpeaker:
    speaker = FileSpeaker(path)
    speaker.open(RATE, FRAME, channels)
    for start in range(0, len(samples) - FRAME + 1, FRAME):
        speaker.write_frame(samples[start:start + FRAME])
    speaker.close()
    return speaker


@pytest.mark.parametrize("suffix,codec", [(".wav", "pcm_s16le"), (".flac", "flac"), (".mp3", "libmp3lame"),
                                          (".ogg", "libopus"), (".opus", "libopus")])
@pytest.mark.parametrize("channels", [1, 2])
def test_the_suffix_picks_the_format(tmp_path: Path, suffix: str, codec: str, channels: int) -> None:
    path = tmp_path / f"heard{suffix}"
    speaker = record(path, tone(1.0, channels=channels), channels)
    assert path.is_file() and not speaker.part_path.exists()
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.codec.id == av.codec.Codec(codec, "w").id and stream.channels == channels
    # What the speaker wrote plays back through a file mic: the same tone, about as long.
    mic = FileMic(path)
    mic.open(RATE, FRAME)
    heard = np.concatenate(list(mic.frames())).astype(np.float64)
    mic.close()
    assert 0.9 * RATE <= len(heard) <= 1.2 * RATE
    middle = heard[RATE // 4: RATE // 4 * 3]
    spectrum = np.abs(np.fft.rfft(middle))
    assert abs(np.fft.rfftfreq(len(middle), 1 / RATE)[np.argmax(spectrum)] - 440) < 5
    assert np.sqrt((middle ** 2).mean()) > 0.2 * 32767


def test_an_empty_recording_is_still_written(tmp_path: Path) -> None:
    for suffix in SPEAKER_FORMATS:
        speaker = FileSpeaker(tmp_path / f"silence{suffix}")
        speaker.open(RATE, FRAME)
        speaker.close()
        assert speaker.path.is_file() and not speaker.part_path.exists()
    with wave.open(str(tmp_path / "silence.wav")) as empty:  # a WAV of no frames, not a 0-byte file
        assert (empty.getnframes(), empty.getframerate()) == (0, RATE)
@pytest.mark.parametrize("name", ["heard.xyz", "heard", "heard.WAVE"])
def test_an_unknown_suffix_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    speaker = FileSpeaker(tmp_path / name)
    with pytest.raises(GmeError) as err:
        speaker.open(RATE, FRAME)
    assert err.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT
    assert str(tmp_path / name) in err.value.detail
    assert ".wav, .flac, .mp3, .ogg, .opus" in err.value.detail
    assert list(tmp_path.iterdir()) == [] and owner_of(speaker) is None


def test_upper_case_suffixes_work(tmp_path: Path) -> None:
    record(tmp_path / "HEARD.WAV", tone(0.1))
    assert (tmp_path / "HEARD.WAV").read_bytes()[:4] == b"RIFF"


def _unwritable(tmp_path: Path) -> list[tuple[Path, str]]:
    (tmp_path / "a-dir.wav").mkdir()
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("x")
    return [
        (tmp_path / "a-dir.wav", os.strerror(errno.EISDIR)),
        (tmp_path / "a-dir", os.strerror(errno.EISDIR)),  # a directory, whatever its name
        (tmp_path / "no" / "such" / "dir.wav", os.strerror(errno.ENOENT)),
        (tmp_path / "a-file" / "out.wav", os.strerror(errno.ENOTDIR)),
    ]


def test_unwritable_paths_name_the_path_and_the_reason(tmp_path: Path) -> None:
    for path, reason in _unwritable(tmp_path):
        speaker = FileSpeaker(path)
        with pytest.raises(GmeError) as err:
            speaker.check()
        assert err.value.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS
        assert f"cannot write {path}: {reason}" in err.value.detail, err.value.detail
        with pytest.raises(GmeError) as opened:
            speaker.open(RATE, FRAME)
        assert opened.value.detail == err.value.detail and owner_of(speaker) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir", "a-dir.wav", "a-file"]  # no .part anywhere


def test_a_failed_rename_leaves_no_part_file(tmp_path: Path) -> None:
    path = tmp_path / "heard.wav"
    speaker = FileSpeaker(path)
    speaker.open(RATE, FRAME)
    speaker.write_frame(tone(0.02)[:FRAME])
    path.mkdir()  # something took the final name meanwhile
    with pytest.raises(GmeError) as err:
        speaker.close()
    assert err.value.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS and str(path) in err.value.detail
    assert not speaker.part_path.exists() and not speaker.is_open


def test_mic_errors_name_the_path_the_reason_and_the_format(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    for path, reason in ((tmp_path / "missing.wav", os.strerror(errno.ENOENT)),
                         (tmp_path, os.strerror(errno.EISDIR)),
                         (tmp_path / "a-file" / "x.wav", os.strerror(errno.ENOTDIR))):
        with pytest.raises(GmeError) as err:
            FileMic(path).open(RATE, FRAME)
        assert err.value.code == ErrorCode.AV_ERR_FILE_CANNOT_ACCESS
        assert f"cannot read {path}: {reason}" in err.value.detail
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    with pytest.raises(GmeError) as err:
        FileMic(text).open(RATE, FRAME)
    assert err.value.code == ErrorCode.AV_ERR_FILE_DAMAGED
    assert str(text) in err.value.detail
    assert "expected an audio file FFmpeg can decode (wav, mp3, ogg/opus, flac, m4a …)" in err.value.detail
