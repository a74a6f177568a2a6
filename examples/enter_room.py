"""Enter a room and print member events: python examples/enter_room.py APPID KEY [OPENID] [SECONDS]"""
import os
import sys
import time

from opengme import Context, RoomType
from opengme.authbuffer import gen_auth_buffer  # in production, your backend signs AuthBuffers

app_id, key, open_id = sys.argv[1], sys.argv[2], (sys.argv[3:] or ["10001"])[0]
seconds = float((sys.argv[4:] or ["30"])[0])

ctx = Context(os.environ.get("OPENGME_URL", "http://127.0.0.1:8090"))
ctx.set_delegate(lambda event, data: print(event.name, data, flush=True))
ctx.init(app_id, open_id)
ctx.enter_room("lobby", RoomType.FLUENCY, gen_auth_buffer(app_id, "lobby", open_id, key))
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    ctx.poll()  # events are delivered only here, on this thread: call it from your game loop
    time.sleep(1 / 30)
ctx.exit_room()
for _ in range(30):  # give EXIT_ROOM a moment to arrive
    ctx.poll()
    time.sleep(1 / 30)
ctx.uninit()
