"""Record a voice message as player 10001, send it, and let player 10002 download and play it.

    .venv/bin/python examples/voice_message.py APPID KEY --mic FILE|default [--seconds S] [--speaker OUT|default]
"""
import argparse
import os
import sys
import time

from opengme import Context, ErrorCode, EventType, GmeError
from opengme.authbuffer import gen_auth_buffer  # in production, your backend signs AuthBuffers

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("app_id", metavar="APPID")
parser.add_argument("key", metavar="KEY", help="the app's permission key (`opengme app show APPID`)")
parser.add_argument("--mic", metavar="FILE|default", required=True, help="record from this audio file or the mic")
parser.add_argument("--seconds", type=float, default=3.0, help="how long to record (default 3)")
parser.add_argument("--speaker", metavar="OUT|default", default="default",
                    help="play into this file (.wav, .flac, .mp3, .ogg) or the sound card (default)")
args = parser.parse_args()
try:  # voice messages need no room: their AuthBuffer has an empty room id
    auths = {open_id: gen_auth_buffer(args.app_id, "", open_id, args.key) for open_id in ("10001", "10002")}
except GmeError as exc:  # a malformed AppID or key: say which, in one line
    sys.exit(f"voice_message.py: {exc.code.name} ({int(exc.code)}): {exc.detail}")
url = os.environ.get("OPENGME_URL", "http://127.0.0.1:8090")


def player(open_id):
    """A Context for one player, ready for voice messages."""
    ctx = Context(url)
    ctx.init(args.app_id, open_id)
    ctx.get_ptt().apply_ptt_auth_buffer(auths[open_id])
    return ctx


def check(code, what):
    """Calls answer at once; a refusal is one line (`opengme errors CODE` explains it)."""
    if code != ErrorCode.AV_OK:
        sys.exit(f"voice_message.py: {what}: {code.name} ({int(code)})")


def wait_for(ctx, wanted, seconds=60.0):
    """Poll, as a game loop does, until the ``wanted`` event arrives; print it, return its data."""
    arrived = []
    ctx.set_delegate(lambda event, data: arrived.append(data) if event is wanted else None)
    deadline = time.monotonic() + seconds
    while not arrived and time.monotonic() < deadline:
        ctx.poll()  # events are delivered only here, on this thread
        time.sleep(1 / 30)
    if not arrived:
        sys.exit(f"voice_message.py: no {wanted.name} within {seconds:g} s")
    data = arrived[0]
    print(f"{wanted.name}: {ErrorCode(data['result']).name} {data['file_path']}", flush=True)
    if data["result"] != ErrorCode.AV_OK:
        sys.exit(1)
    return data


alice, bob = player("10001"), player("10002")
if args.mic != "default":
    alice.get_audio_ctrl().use_mic_file(args.mic)  # or select_mic(id) from get_mic_list()
if args.speaker != "default":
    bob.get_audio_ctrl().use_speaker_file(args.speaker)

sender = alice.get_ptt()
check(sender.start_recording("message.ogg"), "start_recording")  # Ogg/Opus, mono 16 kHz, ~20 kbps
deadline = time.monotonic() + args.seconds
while time.monotonic() < deadline:
    alice.poll()
    time.sleep(1 / 30)
sender.stop_recording()
wait_for(alice, EventType.PTT_RECORD_COMPLETE)
print(f"recorded {sender.get_voice_file_duration('message.ogg')[1]} ms, "
      f"{sender.get_file_size('message.ogg')[1]} bytes")
sender.upload_recorded_file("message.ogg")
file_id = wait_for(alice, EventType.PTT_UPLOAD_COMPLETE)["file_id"]
print("file id:", file_id)  # a URL: share it with the other players through your game

receiver = bob.get_ptt()
receiver.download_recorded_file(file_id, "received.ogg")
wait_for(bob, EventType.PTT_DOWNLOAD_COMPLETE)
check(receiver.play_recorded_file("received.ogg"), "play_recorded_file")
wait_for(bob, EventType.PTT_PLAY_COMPLETE)
alice.uninit()
bob.uninit()  # a file speaker is complete once the playback closed it
