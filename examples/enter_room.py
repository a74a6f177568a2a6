"""Enter room "lobby", print its events, and optionally talk from a file and record what you hear.

    .venv/bin/python examples/enter_room.py APPID KEY [OPENID] [SECONDS] [--mic FILE] [--speaker OUT]
"""
import argparse
import os
import sys
import time

from opengme import Context, ErrorCode, EventType, GmeError, RoomType
from opengme.authbuffer import gen_auth_buffer  # in production, your backend signs AuthBuffers

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("app_id", metavar="APPID")
parser.add_argument("key", metavar="KEY", help="the app's permission key (`opengme app show APPID`)")
parser.add_argument("open_id", metavar="OPENID", nargs="?", default="10001")
parser.add_argument("seconds", metavar="SECONDS", nargs="?", type=float, default=30.0)
parser.add_argument("--mic", metavar="FILE", help="speak from this audio file")
parser.add_argument("--speaker", metavar="OUT", help="record what you hear (.wav, .flac, .mp3, .ogg, .opus)")
args = parser.parse_args()
try:
    auth = gen_auth_buffer(args.app_id, "lobby", args.open_id, args.key)
except GmeError as exc:  # a malformed AppID, openid or key: say which, in one line
    sys.exit(f"enter_room.py: {exc.code.name} ({int(exc.code)}): {exc.detail}")

ctx = Context(os.environ.get("OPENGME_URL", "http://127.0.0.1:8090"))
ctrl = ctx.get_audio_ctrl()


def on_event(event, data):
    print(event.name, data, flush=True)
    if event is EventType.ENTER_ROOM and data["result"] == ErrorCode.AV_OK:
        # Mic and speaker are off after entry and work only in a room: turn them on once
        # ENTER_ROOM has arrived (right after enter_room() they would answer 1201).
        if args.mic:
            print("enable_mic", ctrl.enable_mic(True).name)  # = capture device + send
        if args.speaker:
            print("enable_speaker", ctrl.enable_speaker(True).name)  # = play device + receive


ctx.set_delegate(on_event)
ctx.init(args.app_id, args.open_id)
if args.mic:
    ctrl.use_mic_file(args.mic)  # or ctrl.select_mic(id) from ctrl.get_mic_list(); "0" = default
if args.speaker:
    ctrl.use_speaker_file(args.speaker)  # or a PortAudio speaker, or a MemorySpeaker for a game engine
ctx.enter_room("lobby", RoomType.FLUENCY, auth)
deadline = time.monotonic() + args.seconds
while time.monotonic() < deadline:
    ctx.poll()  # events are delivered only here, on this thread: call it from your game loop
    time.sleep(1 / 30)
ctx.exit_room()
for _ in range(30):  # give EXIT_ROOM a moment to arrive
    ctx.poll()
    time.sleep(1 / 30)
ctx.uninit()  # closes the devices: the recording is complete now
