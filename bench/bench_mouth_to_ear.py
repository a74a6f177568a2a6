"""Mouth-to-ear latency through the whole voice path: mic → SDK → real server (UDP relay) → SDK → speaker.

A train of short chirps goes into member A's mic (a MemoryMic read by A's 20 ms audio tick); member B
plays into a MemorySpeaker. Both devices note the monotonic time of every frame they hand over, so
each chirp's "mouth" time (when its first sample would have been captured: the frame is complete
20 ms after its start) and "ear" time (when that sample reaches the speaker) are known; the chirp is
found in B's output by cross-correlation. Printed: median, p95, min and max over the train, against
the 80 ms target. The server is a real ``opengme serve`` subprocess on 127.0.0.1; both clients live
in this process (two audio threads and two network threads sharing one GIL, the worst case for a
bot host). Device buffers of a real sound card (typically 10–20 ms each way) are not included.

    python bench/bench_mouth_to_ear.py [--room-type 1] [--clicks 30] [--transport auto|udp|ws]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from opengme.authbuffer import gen_auth_buffer
from opengme.codec.opus import profile_for
from opengme.devices import Frame, MemoryMic, MemorySpeaker
from opengme.errors import ErrorCode
from opengme.events import EventType, RoomType
from opengme.sdk import Context
from opengme.store import AppStore

OUT_RATE = 48_000
CLICK_S = 0.02
PERIOD_S = 0.4
SEARCH_S = 0.35
"""How far after its mouth time a chirp is looked for: less than the period, so the next one is never taken."""
TARGET_MS = 80.0
_LISTENING = re.compile(r"OpenGME listening on (http://\S+)")


class TimedMic(MemoryMic):
    """A MemoryMic that notes when each frame was taken (the frame's capture-complete time)."""

    def __init__(self) -> None:
        super().__init__(name="Timed mic")
        self.read_at: list[float] = []

    def read_frame(self) -> Frame | None:
        frame = super().read_frame()
        if frame is not None:
            self.read_at.append(time.monotonic())
        return frame


class TimedSpeaker(MemorySpeaker):
    """A MemorySpeaker that notes when each frame was played."""

    def __init__(self) -> None:
        super().__init__(name="Timed speaker")
        self.written_at: list[float] = []

    def _write(self, frame: Frame) -> None:
        self.written_at.append(time.monotonic())
        super()._write(frame)


def chirp(rate: int) -> np.ndarray:
    """20 ms linear chirp 400 Hz → 4 kHz, Hann-windowed: a sharp correlation peak in the speech band."""
    t = np.arange(int(CLICK_S * rate)) / rate
    phase = 2 * np.pi * (400 * t + (4000 - 400) / (2 * CLICK_S) * t ** 2)
    return (12000 * np.sin(phase) * np.hanning(len(t))).astype(np.int16)


def chirp_train(rate: int, clicks: int) -> tuple[np.ndarray, list[int]]:
    """``clicks`` chirps PERIOD_S apart (silence before and after) and where each starts."""
    period = int(PERIOD_S * rate)
    train = np.zeros(period * (clicks + 2), dtype=np.int16)
    starts = [period * (i + 1) for i in range(clicks)]
    for s in starts:
        train[s: s + int(CLICK_S * rate)] = chirp(rate)
    return train, starts


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "opengme", "serve", "--port", "0", "--data-dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if match := _LISTENING.search(line):
            return proc, match.group(1)
    raise RuntimeError("opengme serve did not start")


def pump(contexts: list[Context], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for ctx in contexts:
            ctx.poll()
        time.sleep(1 / 30)


def measure(url: str, app_id: str, key: str, room_type: RoomType, clicks: int, transport: str) -> list[float]:
    a, b = (Context(url, portaudio=False, media_transport=transport) for _ in range(2))
    entered: list[int] = []
    for ctx, open_id in ((a, "10001"), (b, "10002")):
        ctx.set_delegate(lambda event, data: entered.append(data["result"]) if event is EventType.ENTER_ROOM else None)
        assert ctx.init(app_id, open_id) == ErrorCode.AV_OK
        assert ctx.enter_room("bench", room_type, gen_auth_buffer(app_id, "bench", open_id, key)) == ErrorCode.AV_OK
    deadline = time.monotonic() + 10
    while len(entered) < 2 and time.monotonic() < deadline:
        pump([a, b], 0.05)
    assert entered == [ErrorCode.AV_OK] * 2, entered
    mic, speaker = TimedMic(), TimedSpeaker()
    ctrl_a, ctrl_b = a.get_audio_ctrl(), b.get_audio_ctrl()
    ctrl_a.register_mic(mic)
    ctrl_a.select_mic(mic.id)
    ctrl_b.register_speaker(speaker)
    ctrl_b.select_speaker(speaker.id)
    assert ctrl_b.enable_speaker(True) == ErrorCode.AV_OK

    in_rate = profile_for(room_type).sample_rate
    train, starts = chirp_train(in_rate, clicks)
    mic.push(train)
    mic.end()
    assert ctrl_a.enable_mic(True) == ErrorCode.AV_OK
    pump([a, b], len(train) / in_rate + 1.0)
    for ctx in (a, b):
        ctx.exit_room()
    pump([a, b], 0.3)
    for ctx in (a, b):
        ctx.uninit()

    return find_chirps(mic, speaker, starts, in_rate)


def find_chirps(mic: TimedMic, speaker: TimedSpeaker, starts: list[int], in_rate: int) -> list[float]:
    """Each chirp's latency (ms) from the mic's capture time to where the speaker played it."""
    out = speaker.take_all().astype(np.float64)
    template = chirp(OUT_RATE).astype(np.float64)
    in_frame, out_frame = in_rate // 50, OUT_RATE // 50
    read_at, written_at = np.array(mic.read_at), np.array(speaker.written_at)
    play_time = np.repeat(written_at, out_frame) + np.tile(np.arange(out_frame) / OUT_RATE, len(written_at))
    latencies = []
    for s in starts:
        mouth = read_at[s // in_frame] - 0.02 + (s % in_frame) / in_rate
        window = np.nonzero((play_time >= mouth) & (play_time <= mouth + SEARCH_S))[0]
        if len(window) < len(template):
            continue
        region = out[window[0]: window[-1] + 1]
        corr = np.correlate(region, template, mode="valid")
        peak = int(np.argmax(corr))
        energy = np.sqrt(np.dot(region[peak: peak + len(template)], region[peak: peak + len(template)]))
        if corr[peak] / (np.linalg.norm(template) * energy + 1e-9) < 0.5:
            continue  # not found cleanly (lost burst); do not guess
        latencies.append((play_time[window[0] + peak] - mouth) * 1000)
    return latencies


def on_server(run: Callable[[str, str, str], list[float]]) -> np.ndarray:
    """``run(url, app_id, key)`` against a fresh ``opengme serve``; its latencies (exits when none)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            store = AppStore(Path(tmp))
            app = store.list()[0]
            store.close()
            latencies = run(url, app.app_id, app.key)
        finally:
            proc.terminate()
            proc.wait(10)
    if not latencies:
        print("no chirp found in the output")
        raise SystemExit(1)
    return np.array(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--room-type", type=int, default=RoomType.FLUENCY, choices=[int(t) for t in RoomType])
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--transport", default="auto", choices=["auto", "udp", "ws"])
    args = parser.parse_args()
    lat = on_server(lambda url, app_id, key: measure(url, app_id, key, RoomType(args.room_type), args.clicks,
                                                     args.transport))
    verdict = "meets" if np.median(lat) <= TARGET_MS else "MISSES"
    print(f"mouth-to-ear, {RoomType(args.room_type).name}, {args.transport}: {len(lat)}/{args.clicks} chirps found")
    print(f"  median {np.median(lat):.1f} ms  p95 {np.percentile(lat, 95):.1f} ms  "
          f"min {lat.min():.1f} ms  max {lat.max():.1f} ms  ({verdict} the {TARGET_MS:.0f} ms target)")
    print(f"  threads left: {[t.name for t in threading.enumerate() if t.name.startswith('opengme-sdk')]}")


if __name__ == "__main__":
    main()
