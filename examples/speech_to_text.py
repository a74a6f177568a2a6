"""Speech-to-text, offline on your own server: player 10001 records with streaming recognition,
player 10002 asks for the text of the uploaded message, and a text is spoken into a voice message.

    .venv/bin/python examples/speech_to_text.py APPID KEY --mic FILE|default [--seconds S]
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
parser.add_argument("--seconds", type=float, default=4.0, help="how long to record (default 4)")
args = parser.parse_args()
try:  # speech-to-text needs no room: the AuthBuffer of voice messages (empty room id)
    auths = {open_id: gen_auth_buffer(args.app_id, "", open_id, args.key) for open_id in ("10001", "10002")}
except GmeError as exc:  # a malformed AppID or key: say which, in one line
    sys.exit(f"speech_to_text.py: {exc.code.name} ({int(exc.code)}): {exc.detail}")
url = os.environ.get("OPENGME_URL", "http://127.0.0.1:8090")


def player(open_id):
    ctx = Context(url)
    ctx.init(args.app_id, open_id)
    ctx.get_ptt().apply_ptt_auth_buffer(auths[open_id])
    return ctx


def poll_until(ctx, wanted, seconds=60.0, each=None):
    """Poll until ``wanted`` arrives (``each`` sees the other events); its data, or exit with its code."""
    arrived = []
    ctx.set_delegate(lambda event, data: arrived.append(data) if event is wanted else each and each(event, data))
    deadline = time.monotonic() + seconds
    while not arrived and time.monotonic() < deadline:
        ctx.poll()
        time.sleep(1 / 30)
    if not arrived or arrived[0]["result"] != ErrorCode.AV_OK:
        sys.exit(f"speech_to_text.py: {wanted.name}: {arrived[0]['result'] if arrived else 'no answer'}")
    print(f"{wanted.name}: {arrived[0].get('text', '')!r}", flush=True)
    return arrived[0]


alice, bob = player("10001"), player("10002")
if args.mic != "default":
    alice.get_audio_ctrl().use_mic_file(args.mic)
ptt = alice.get_ptt()
ptt.start_recording_with_streaming_recognition("spoken.ogg", "en-US")
partials = []
deadline = time.monotonic() + args.seconds
running = EventType.PTT_STREAMINGRECOGNITION_IS_RUNNING  # 5007 with the partial text, while the player speaks
alice.set_delegate(lambda event, data: partials.append(data["text"]) if event is running else None)
while time.monotonic() < deadline:
    alice.poll()
    time.sleep(1 / 30)
ptt.stop_recording()
file_id = poll_until(alice, EventType.PTT_STREAMINGRECOGNITION_COMPLETE)["file_id"]  # text and file id
print(f"{len(partials)} partial texts while recording")
bob.get_ptt().speech_to_text(file_id)  # any player of the app: the stored text, at once
poll_until(bob, EventType.PTT_SPEECH2TEXT_COMPLETE)
bob.get_ptt().text_to_speech("The soldiers walked to the castle in the morning.", "", "en-US", 1.0)
spoken = poll_until(bob, EventType.PTT_TEXT2SPEECH_COMPLETE)["file_id"]  # a voice message anyone can play
bob.get_ptt().speech_to_text(spoken)
poll_until(bob, EventType.PTT_SPEECH2TEXT_COMPLETE)
alice.uninit()
bob.uninit()
