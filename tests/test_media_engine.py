"""The media engine carries the media session's seams to real devices on its audio thread: a mic
tap and a local player without any room (voice messages will record and play there), and a stereo
voice stage that reopens an open speaker with two channels."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from opengme.devices import Frame, MemoryMic, MemorySpeaker
from opengme.errors import ErrorCode
from opengme.sdk.media import MediaEngine
from support.sdk_harness import wait_for

RATE = 48_000


def ramp_frames(count: int, start: int = 0) -> list[Frame]:
    return [((np.arange(960) + 960 * k) % 3000 - 1500 + start).astype(np.int16) for k in range(count)]


class Player:
    """A local source: ``frames``, then finished."""

    def __init__(self, frames: list[Frame]) -> None:
        self._frames: Iterator[Frame] = iter(frames)

    def __call__(self, frame_samples: int) -> Frame | None:
        return next(self._frames, None)


def test_a_mic_tap_and_a_player_work_without_a_room() -> None:
    engine = MediaEngine("opengme-sdk-media-test", object(), lambda datagram: None)
    try:
        mic, speaker = MemoryMic(), MemorySpeaker()
        said = np.concatenate(ramp_frames(10))
        mic.push(said)
        tapped: list[tuple[Frame, int]] = []
        engine.add_mic_tap(lambda frame, rate: tapped.append((frame, rate)))
        music = ramp_frames(8, start=7)
        engine.add_player(Player(music))
        assert engine.use_speaker(speaker) == ErrorCode.AV_OK and engine.use_mic(mic) == ErrorCode.AV_OK
        wait_for([], lambda: len(tapped) >= 10 and speaker.frames_written >= 8)
        assert {rate for _, rate in tapped} == {RATE}
        assert np.array_equal(np.concatenate([frame for frame, _ in tapped[:10]]), said)  # every frame, as captured
        assert np.array_equal(speaker.take_all(), np.concatenate(music))  # the player, and nothing else
        assert engine.key is None and engine.counters.sent == engine.counters.sent_ws == 0  # no room, nothing sent
    finally:
        engine.close()


def test_a_stereo_voice_stage_reopens_the_open_speaker_with_two_channels() -> None:
    engine = MediaEngine("opengme-sdk-media-test", object(), lambda datagram: None)
    try:
        speaker = MemorySpeaker()
        assert engine.use_speaker(speaker) == ErrorCode.AV_OK and speaker.channels == 1
        assert engine.set_voice_stage(lambda frames: frames, channels=2) == ErrorCode.AV_OK
        assert speaker.is_open and speaker.channels == 2
        music = ramp_frames(3)
        engine.add_player(Player(music))
        wait_for([], lambda: speaker.frames_written >= 3)
        heard = speaker.take_all()
        assert heard.shape == (3 * 960, 2)  # a mono player in both ears
        assert np.array_equal(heard[:, 0], np.concatenate(music)) and np.array_equal(heard[:, 1], heard[:, 0])
        assert engine.set_voice_stage(None) == ErrorCode.AV_OK and speaker.channels == 1  # mono again
    finally:
        engine.close()
