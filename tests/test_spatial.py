"""3D voice (opengme.core.spatial): the built-in KEMAR HRTF, the binaural renderer's cues, GME's distance
attenuation, click-free movement, and the SOFA loader's typed errors (7002, 7003)."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opengme.core.spatial import (
    BinauralRenderer,
    Hrtf,
    HrtfFileError,
    Spatializer,
    SpatializerNotReady,
    distance_gain,
    listener_direction,
    load_hrtf,
)
from opengme.errors import ErrorCode, GmeError

BUILTIN = Path(__file__).resolve().parents[1] / "src" / "opengme" / "data" / "kemar.sofa"
FORWARD, RIGHT, UP = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)  # a listener's axes in the world


@pytest.fixture(scope="module")
def hrtf() -> Hrtf:
    return load_hrtf("")


def at_azimuth(degrees: float, distance: float = 1.0) -> tuple[float, float, float]:
    """A world position at an azimuth clockwise from the listener's forward axis (+90° = right)."""
    a = math.radians(degrees)
    return (distance * math.cos(a), distance * math.sin(a), 0.0)


def render_noise(hrtf: Hrtf, rate: int, direction: np.ndarray, gain: float = 1.0, frames: int = 40) -> np.ndarray:
    frame = rate // 50
    renderer = BinauralRenderer(hrtf, rate, frame)
    noise = np.random.default_rng(7).standard_normal((frames, frame)) * 0.1
    return np.concatenate([renderer.render([1], noise[i:i + 1], [direction], [gain]) for i in range(frames)])


def ear_db(stereo: np.ndarray) -> tuple[float, float]:
    energy = (stereo.astype(np.float64) ** 2).sum(axis=0)
    return 10 * math.log10(energy[0]), 10 * math.log10(energy[1])


def test_builtin_hrtf_is_the_reduced_kemar_set(hrtf: Hrtf) -> None:
    assert hrtf.sample_rate == 44100 and hrtf.ir.shape == (377, 2, 128)
    assert np.allclose(np.linalg.norm(hrtf.directions, axis=1), 1.0)
    assert BUILTIN.stat().st_size < 300_000


@pytest.mark.parametrize("rate", [48000, 44100])
def test_a_source_at_plus_90_is_10_db_louder_in_the_right_ear(hrtf: Hrtf, rate: int) -> None:
    for azimuth, louder in ((90, 1), (-90, 0)):
        left, right = ear_db(render_noise(hrtf, rate, listener_direction(at_azimuth(azimuth), (0, 0, 0), FORWARD, RIGHT, UP)))
        assert (right - left if louder else left - right) >= 10.0


def test_at_16_khz_the_ears_still_differ_by_9_db(hrtf: Hrtf) -> None:
    """FLUENCY rooms keep only 0-8 kHz, where KEMAR's level difference is smaller (about 9.7 dB)."""
    left, right = ear_db(render_noise(hrtf, 16000, listener_direction(at_azimuth(90), (0, 0, 0), FORWARD, RIGHT, UP)))
    assert right - left >= 9.0


@pytest.mark.parametrize("rate", [16000, 48000])
def test_a_source_in_front_is_equal_in_both_ears(hrtf: Hrtf, rate: int) -> None:
    left, right = ear_db(render_noise(hrtf, rate, listener_direction(at_azimuth(0), (0, 0, 0), FORWARD, RIGHT, UP)))
    assert abs(left - right) <= 1.0


def band_db(signal: np.ndarray, rate: int, edges: np.ndarray) -> np.ndarray:
    power = np.abs(np.fft.rfft(signal)) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    return np.array([10 * math.log10(power[(freqs >= lo) & (freqs < hi)].sum()) for lo, hi in itertools.pairwise(edges)])


def test_a_source_behind_differs_spectrally_from_one_in_front(hrtf: Hrtf) -> None:
    rate = 48000
    edges = 1000 * 2 ** np.arange(0, 4.01, 1 / 3)  # third-octave bands 1-16 kHz
    front = render_noise(hrtf, rate, np.array([1.0, 0, 0]))
    back = render_noise(hrtf, rate, np.array([-1.0, 0, 0]))
    for ear in (0, 1):
        diff = band_db(front[:, ear], rate, edges) - band_db(back[:, ear], rate, edges)
        assert np.max(np.abs(diff)) >= 6.0 and np.mean(np.abs(diff)) >= 2.0
    # ...while the overall level and the left/right balance stay close (the cue is spectral).
    assert abs(np.subtract(*ear_db(front)) - np.subtract(*ear_db(back))) <= 1.0


def test_gme_distance_attenuation() -> None:
    assert distance_gain(0.0, 100) == 1.0 and distance_gain(9.99, 100) == 1.0
    assert distance_gain(10, 100) == 1.0 and distance_gain(40, 100) == 0.25 and distance_gain(100, 100) == 0.1
    assert distance_gain(100.01, 100) == 0.0
    for bad in ((-1.0, 100.0), (1.0, 0.0), (math.nan, 10.0)):
        with pytest.raises(GmeError) as caught:
            distance_gain(*bad)
        assert caught.value.code is ErrorCode.AV_ERR_INVALID_ARGUMENT


def test_twice_range_over_10_renders_6_db_quieter(hrtf: Hrtf) -> None:
    direction = listener_direction(at_azimuth(30), (0, 0, 0), FORWARD, RIGHT, UP)
    near = ear_db(render_noise(hrtf, 16000, direction, distance_gain(10, 100)))
    far = ear_db(render_noise(hrtf, 16000, direction, distance_gain(20, 100)))
    assert far[0] - near[0] == pytest.approx(-6.02, abs=0.1) and far[1] - near[1] == pytest.approx(-6.02, abs=0.1)


def test_direction_uses_the_listeners_position_and_axes() -> None:
    # Listener at (10, 10, 0) facing world +y, so its right is world -x; a source at (5, 10, 0) is on its right.
    d = listener_direction((5, 10, 0), (10, 10, 0), (0, 1, 0), (-1, 0, 0), (0, 0, 1))
    assert np.allclose(d, [0, -1, 0])
    assert np.allclose(listener_direction((10, 10, 3), (10, 10, 0), (0, 1, 0), (-1, 0, 0), (0, 0, 2)), [0, 0, 1])
    assert np.allclose(listener_direction((1, 2, 3), (1, 2, 3), FORWARD, RIGHT, UP), [1, 0, 0])


def circling(renderer: BinauralRenderer, tone: np.ndarray, frame: int, step_degrees: float) -> np.ndarray:
    frames = len(tone) // frame
    out = []
    for i in range(frames):
        d = listener_direction(at_azimuth(i * step_degrees), (0, 0, 0), FORWARD, RIGHT, UP)
        out.append(renderer.render(["s"], tone[None, i * frame:(i + 1) * frame], [d], [1.0]))
    return np.concatenate(out)


def test_a_source_circling_the_head_makes_no_click(hrtf: Hrtf) -> None:
    rate, frame, freq = 16000, 320, 200.0
    tone = np.sin(2 * np.pi * freq * np.arange(rate * 2) / rate) * 0.5
    out = circling(BinauralRenderer(hrtf, rate, frame), tone, frame, 360 / 50)  # one turn per second
    # A smooth 200 Hz tone has |second difference| <= (2π f / fs)^2 × peak; a click (a step) is far above.
    bound = (2 * np.pi * freq / rate) ** 2 * np.abs(out).max(axis=0)
    curvature = np.abs(np.diff(out[frame:], n=2, axis=0)).max(axis=0)
    assert np.all(curvature <= 2.5 * bound), (curvature, bound)  # measured: 1.7
    # The same measure does catch a click: a hard switch of filter, with no cross-fade, between frames.
    clicky = BinauralRenderer(hrtf, rate, frame)
    switched = []
    for i in range(len(tone) // frame):
        clicky.forget("s")
        switched.append(clicky.render(["s"], tone[None, i * frame:(i + 1) * frame],
                                      [listener_direction(at_azimuth(i * 360 / 50), (0, 0, 0), FORWARD, RIGHT, UP)], [1.0]))
    jumps = np.abs(np.diff(np.concatenate(switched)[frame:], n=2, axis=0)).max(axis=0)
    assert np.any(jumps > 2.5 * bound)


def test_many_sources_mix_and_leave(hrtf: Hrtf) -> None:
    renderer = BinauralRenderer(hrtf, 16000, 320)
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((3, 320)) * 0.1
    dirs = rng.standard_normal((3, 3))
    mixed = renderer.render(["a", "b", "c"], frames, dirs, [1.0, 0.5, 0.0])
    alone = [BinauralRenderer(hrtf, 16000, 320).render([k], frames[i:i + 1], dirs[i:i + 1], [g])
             for i, (k, g) in enumerate((("a", 1.0), ("b", 0.5)))]
    assert np.allclose(mixed, alone[0] + alone[1], atol=1e-5)
    renderer.forget("b")
    renderer.forget("nobody")
    tail = renderer.render([], np.zeros((0, 320)), np.zeros((0, 3)), np.zeros(0))
    assert np.any(tail[:40]) and not np.any(tail[200:])  # a's overlap still plays out, then silence
    with pytest.raises(GmeError) as caught:
        renderer.render(["a", "a"], frames[:2], dirs[:2], [1.0, 1.0])
    assert caught.value.code is ErrorCode.AV_ERR_INVALID_ARGUMENT


@pytest.mark.public_surface  # the Python API the SDK's init_spatializer wraps
def test_use_before_init_is_7003_and_a_damaged_file_is_7002(tmp_path: Path) -> None:
    spatializer = Spatializer(16000, 320)
    with pytest.raises(SpatializerNotReady) as caught:
        _ = spatializer.renderer
    assert caught.value.code is ErrorCode.AV_ERR_3DVOICE_ERR_NOT_INITED and not spatializer.ready
    damaged = tmp_path / "damaged.sofa"
    damaged.write_bytes(BUILTIN.read_bytes()[:20_000])
    with pytest.raises(HrtfFileError) as failed:
        spatializer.init(damaged)
    assert failed.value.code is ErrorCode.AV_ERR_3DVOICE_ERR_FILE_DAMAGED and not spatializer.ready
    spatializer.init("")
    assert spatializer.ready and spatializer.renderer.frame == 320
    spatializer.init(BUILTIN)


def write_sofa(path: Path, convention: str = "SimpleFreeFieldHRIR", ir: np.ndarray | None = None,
               rate: float = 48000.0, positions: np.ndarray | None = None, delay: np.ndarray | None = None) -> None:
    ir = np.ones((2, 2, 8)) if ir is None else ir
    with h5py.File(path, "w") as f:
        f.attrs["SOFAConventions"] = convention
        f["Data.IR"] = ir
        f["Data.SamplingRate"] = np.array([rate])
        f["SourcePosition"] = np.array([[0.0, 0.0, 1.0], [90.0, 0.0, 1.0]]) if positions is None else positions
        if delay is not None:
            f["Data.Delay"] = delay


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"convention": "GeneralFIR"}, "SimpleFreeFieldHRIR"),
    ({"ir": np.ones((2, 3, 8))}, "Data.IR has shape"),
    ({"ir": np.full((2, 2, 8), np.nan)}, "not finite"),
    ({"rate": 0.0}, "SamplingRate"),
    ({"positions": np.zeros((3, 3))}, "SourcePosition has shape"),
    ({"positions": np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) * 0}, "no direction"),
    ({"delay": np.array([[-1.0, 0.0]])}, "Data.Delay"),
])
def test_malformed_sofa_files_say_what_is_wrong(tmp_path: Path, kwargs: dict[str, object], says: str) -> None:
    path = tmp_path / "bad.sofa"
    write_sofa(path, **kwargs)  # type: ignore[arg-type]
    if says == "no direction":
        with h5py.File(path, "a") as f:
            f["SourcePosition"].attrs["Type"] = "cartesian"
    with pytest.raises(HrtfFileError) as caught:
        load_hrtf(path)
    assert says in caught.value.detail


def test_a_minimal_sofa_file_with_delays_loads(tmp_path: Path) -> None:
    path = tmp_path / "small.sofa"
    write_sofa(path, delay=np.array([[0.0, 3.0]]))
    loaded = load_hrtf(str(path))
    assert loaded.ir.shape == (2, 2, 11) and np.allclose(loaded.directions[1], [0, 1, 0])
    assert not loaded.ir[:, 1, :3].any() and loaded.ir[:, 0, 8:].sum() == 0
    for missing in (tmp_path / "none.sofa", tmp_path):
        with pytest.raises(HrtfFileError):
            load_hrtf(missing)
    (tmp_path / "text.sofa").write_text("not hdf5")
    with pytest.raises(HrtfFileError):
        load_hrtf(tmp_path / "text.sofa")
    with pytest.raises(HrtfFileError):
        load_hrtf(42)  # type: ignore[arg-type]


ORIGINAL = BUILTIN.read_bytes()


@pytest.mark.public_surface
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(ORIGINAL)),
       flips=st.lists(st.tuples(st.integers(0, len(ORIGINAL) - 1), st.integers(1, 255)), max_size=8))
def test_damaged_sofa_files_raise_only_the_typed_error(tmp_path: Path, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(ORIGINAL)
    for at, mask in flips:
        data[at] ^= mask
    path = tmp_path / "fuzzed.sofa"
    path.write_bytes(bytes(data[:cut]) if cut < len(ORIGINAL) // 2 else bytes(data))
    try:
        loaded = load_hrtf(path)
    except HrtfFileError as exc:
        assert exc.code is ErrorCode.AV_ERR_3DVOICE_ERR_FILE_DAMAGED
    else:  # damage that missed everything that matters still gives a usable HRTF
        assert loaded.ir.ndim == 3 and np.all(np.isfinite(loaded.ir))
        BinauralRenderer(loaded, 16000, 320)
