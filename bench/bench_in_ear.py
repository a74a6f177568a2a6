"""In-ear monitoring delay (GME's EnableLoopBack): a member's own chirps from its mic to its own
speaker through the SDK in a real server room, with the loopback on.

The path is the send pipeline (noise suppression in FLUENCY rooms adds one frame), the send stage
(a pitched voice type adds ~20 ms more: ``bench_effects.py``), resampling to 48 kHz and the next
output period; no network. Same method as ``bench_mouth_to_ear.py`` (whose helpers it uses).

    python bench/bench_in_ear.py [--room-type 1] [--clicks 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from bench_mouth_to_ear import TimedMic, TimedSpeaker, chirp_train, find_chirps, on_server, pump

from opengme.authbuffer import gen_auth_buffer
from opengme.codec.opus import profile_for
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.sdk import Context


def measure(url: str, app_id: str, key: str, room_type: RoomType, clicks: int) -> list[float]:
    ctx = Context(url, portaudio=False)
    assert ctx.init(app_id, "10001") == ErrorCode.AV_OK
    assert ctx.enter_room("ear", room_type, gen_auth_buffer(app_id, "ear", "10001", key)) == ErrorCode.AV_OK
    deadline = time.monotonic() + 10
    while not ctx.is_room_entered() and time.monotonic() < deadline:
        pump([ctx], 0.05)
    mic, speaker = TimedMic(), TimedSpeaker()
    ctrl = ctx.get_audio_ctrl()
    ctrl.register_mic(mic)
    ctrl.select_mic(mic.id)
    ctrl.register_speaker(speaker)
    ctrl.select_speaker(speaker.id)
    assert ctrl.enable_speaker(True) == ErrorCode.AV_OK
    assert ctx.get_audio_effect_ctrl().enable_loop_back(True) == ErrorCode.AV_OK
    in_rate = profile_for(room_type).sample_rate
    train, starts = chirp_train(in_rate, clicks)
    mic.push(train)
    mic.end()
    assert ctrl.enable_mic(True) == ErrorCode.AV_OK
    pump([ctx], len(train) / in_rate + 0.5)
    ctx.exit_room()
    pump([ctx], 0.3)
    ctx.uninit()
    return find_chirps(mic, speaker, starts, in_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--room-type", type=int, default=RoomType.FLUENCY, choices=[int(t) for t in RoomType])
    parser.add_argument("--clicks", type=int, default=20)
    args = parser.parse_args()
    lat = on_server(lambda url, app_id, key: measure(url, app_id, key, RoomType(args.room_type), args.clicks))
    print(f"in-ear monitoring, {RoomType(args.room_type).name}: {len(lat)}/{args.clicks} chirps found; "
          f"median {np.median(lat):.1f} ms  p95 {np.percentile(lat, 95):.1f} ms  min {lat.min():.1f} ms")


if __name__ == "__main__":
    main()
