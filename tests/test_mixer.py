"""Mixer: exact sums, volumes, N-loudest selection with hysteresis, soft limiting, stereo."""
from __future__ import annotations

import numpy as np
import pytest

from opengme.core.mixer import Mixer, fit_channels

N = 960


def dc(value: int, n: int = N) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def ramp() -> np.ndarray:
    return (np.arange(N, dtype=np.int16) % 200 - 100).astype(np.int16)  # -100..99 sawtooth


def test_two_known_signals_sum_exactly() -> None:
    mixer: Mixer[int] = Mixer()
    out = mixer.mix({1: dc(1000), 2: ramp()})
    assert out.dtype == np.int16 and out.shape == (N,)
    np.testing.assert_array_equal(out, 1000 + ramp().astype(np.int32))
    assert set(mixer.mixed) == {1, 2}


def test_member_volume_0_mutes_and_takes_no_slot() -> None:
    mixer: Mixer[str] = Mixer(max_streams=1)
    mixer.set_volume("loud", 0)
    out = mixer.mix({"loud": dc(20000), "quiet": dc(300)})
    np.testing.assert_array_equal(out, dc(300))
    assert mixer.mixed == ("quiet",)


def test_member_volume_200_doubles_and_50_halves() -> None:
    mixer: Mixer[str] = Mixer()
    mixer.set_volume("a", 200)
    mixer.set_volume("b", 50)
    np.testing.assert_array_equal(mixer.mix({"a": dc(1000), "b": dc(-600)}), dc(2000 - 300))
    assert (mixer.volume("a"), mixer.volume("b"), mixer.volume("c")) == (200, 50, 100)


def test_volume_200_on_a_loud_signal_is_soft_clipped_not_wrapped() -> None:
    mixer: Mixer[str] = Mixer()
    mixer.set_volume("a", 200)
    signal = np.linspace(-30000, 30000, N).astype(np.int16)
    out = mixer.mix({"a": signal})
    # Below the knee (0.8 of full scale) it is exactly doubled ...
    small = np.abs(signal.astype(np.int32)) * 2 <= 0.8 * 32767
    np.testing.assert_array_equal(out[small], signal[small].astype(np.int32) * 2)
    # ... above it compressed toward full scale, keeping sign and order (no wraparound, no flat top).
    assert np.all(np.sign(out) == np.sign(signal))
    assert np.all(np.diff(out.astype(np.int32)) >= 0)
    assert out.max() <= 32767 and out.min() >= -32767
    assert out.max() > 32000


def test_speaker_volume_scales_the_whole_mix() -> None:
    mixer: Mixer[int] = Mixer()
    mixer.speaker_volume = 50
    np.testing.assert_array_equal(mixer.mix({1: dc(1000), 2: dc(600)}), dc(800))
    mixer.speaker_volume = 0
    np.testing.assert_array_equal(mixer.mix({1: dc(1000)}), dc(0))
    with pytest.raises(ValueError):
        mixer.speaker_volume = 201


def test_eight_inputs_mix_the_six_loudest() -> None:
    mixer: Mixer[str] = Mixer(max_streams=6)
    frames = {f"m{a}": dc(a * 100) for a in (3, 8, 1, 5, 2, 7, 4, 6)}
    out = mixer.mix(frames)
    np.testing.assert_array_equal(out, dc(100 * (3 + 4 + 5 + 6 + 7 + 8)))
    assert mixer.mixed == ("m8", "m7", "m6", "m5", "m4", "m3")  # loudest first
    mixer.set_max_streams(20)
    np.testing.assert_array_equal(mixer.mix(frames), dc(100 * sum(range(1, 9))))


def test_selection_hysteresis_keeps_a_similar_talker_and_yields_to_a_clearly_louder_one() -> None:
    mixer: Mixer[str] = Mixer(max_streams=1)
    mixer.mix({"a": dc(1000)})
    for _ in range(50):  # b is 0.8 dB louder: within the 3 dB hysteresis, a keeps the slot
        mixer.mix({"a": dc(1000), "b": dc(1100)})
        assert mixer.mixed == ("a",)
    switched = []
    for _ in range(10):  # b is 6 dB louder: it takes over within a few frames
        mixer.mix({"a": dc(1000), "b": dc(2000)})
        switched.append(mixer.mixed)
    assert switched[-1] == ("b",) and switched.index(("b",)) <= 3
    # Without hysteresis the slightly louder talker would win at once.
    plain: Mixer[str] = Mixer(max_streams=1, hysteresis_db=0.0)
    plain.mix({"a": dc(1000)})
    plain.mix({"a": dc(1000), "b": dc(1100)})
    assert plain.mixed == ("b",)


def test_a_one_frame_transient_does_not_steal_the_slot() -> None:
    mixer: Mixer[str] = Mixer(max_streams=1)
    for _ in range(5):
        mixer.mix({"a": dc(1000), "b": dc(500)})
    mixer.mix({"a": dc(1000), "b": dc(2000)})  # a click: 6 dB over a for one frame
    assert mixer.mixed == ("a",)  # smoothed energy absorbs it


def test_many_full_scale_streams_limit_instead_of_overflowing() -> None:
    mixer: Mixer[int] = Mixer(max_streams=20)
    out = mixer.mix({i: dc(30000) for i in range(20)})
    assert np.all(out > 32000) and np.all(out <= 32767)
    out = mixer.mix({i: dc(-30000) for i in range(20)})
    assert np.all(out < -32000) and np.all(out >= -32767)


def test_empty_and_silent_inputs_give_silence_and_no_mixed_members() -> None:
    mixer: Mixer[int] = Mixer(frame_samples=320)
    np.testing.assert_array_equal(mixer.mix({}), np.zeros(320, np.int16))
    np.testing.assert_array_equal(mixer.mix({1: dc(0, 320)}), np.zeros(320, np.int16))
    assert mixer.mixed == ()


def test_invalid_arguments_are_rejected() -> None:
    mixer: Mixer[int] = Mixer()
    for n in (0, 21):
        with pytest.raises(ValueError):
            mixer.set_max_streams(n)
    with pytest.raises(ValueError):
        Mixer(max_streams=21)
    for vol in (-1, 201):
        with pytest.raises(ValueError):
            mixer.set_volume(1, vol)
    with pytest.raises(ValueError):
        mixer.mix({1: dc(0, 320)})  # a 16 kHz frame into a 48 kHz mixer
    with pytest.raises(ValueError):
        mixer.mix({1: dc(0), 2: dc(0, 320)})


def test_remove_forgets_volume_and_selection_history() -> None:
    mixer: Mixer[int] = Mixer(max_streams=1)
    mixer.set_volume(1, 150)
    mixer.mix({1: dc(500)})
    mixer.remove(1)  # 1 left the room; if it comes back it starts afresh
    assert mixer.volume(1) == 100
    mixer.mix({1: dc(500), 2: dc(520)})
    assert mixer.mixed == (2,)  # no incumbent bonus carried over for 1


def stereo(left: int, right: int) -> np.ndarray:
    return np.stack([dc(left), dc(right)], axis=1)


def test_a_stereo_mix_takes_stereo_and_mono_frames() -> None:
    mixer: Mixer[int] = Mixer(channels=2)
    assert mixer.channels == 2
    out = mixer.mix({1: stereo(1000, 0), 2: stereo(0, 500), 3: dc(100)})
    assert out.dtype == np.int16 and out.shape == (N, 2)
    np.testing.assert_array_equal(out, stereo(1100, 600))  # a mono voice is heard in both ears
    mixer.set_volume(1, 50)
    mixer.speaker_volume = 200
    np.testing.assert_array_equal(mixer.mix({1: stereo(1000, 0)}), stereo(1000, 0))
    np.testing.assert_array_equal(mixer.mix({}), np.zeros((N, 2), np.int16))
    with pytest.raises(ValueError):
        Mixer(channels=3)


def test_a_stereo_mix_ranks_by_the_energy_of_both_ears_and_limits_each() -> None:
    mixer: Mixer[str] = Mixer(max_streams=1, channels=2)
    mixer.mix({"left": stereo(3000, 0), "both": stereo(2500, 2500)})
    assert mixer.mixed == ("both",)  # more energy over the two ears than the louder one-sided voice
    out = Mixer[int](max_streams=20, channels=2).mix({i: stereo(30000, -30000) for i in range(20)})
    assert np.all(out[:, 0] > 32000) and np.all(out[:, 1] < -32000)


def test_a_mono_mix_refuses_stereo_frames_and_fit_channels_converts() -> None:
    with pytest.raises(ValueError):
        Mixer[int]().mix({1: stereo(1, 1)})
    frame = stereo(1000, -1000)
    assert fit_channels(frame, 2) is frame and fit_channels(dc(7), 1).shape == (N,)
    np.testing.assert_array_equal(fit_channels(frame, 1), dc(0))  # the two ears averaged
    np.testing.assert_array_equal(fit_channels(dc(7), 2), stereo(7, 7))
