"""One well-formed example of every signalling message (some twice, to cover optional fields),
built with opengme.protocol.signalling's builders: the parser and the JSON Schema are tested on them."""
from __future__ import annotations

from typing import Any

from opengme.core import game_voice as gv
from opengme.core.routing import AudioRoute
from opengme.errors import ErrorCode
from opengme.protocol import signalling as p
from opengme.protocol import stt as s

KEY = bytes(range(32))

REQUESTS: list[dict[str, Any]] = [
    p.hello(1, "1400000001", "10001", "0.1.0"),
    p.enter(2, "demo", 1, b"\x00\x01binary"),
    p.enter(3, "demo", 3, b"", resume_token="123.abc"),
    p.enter(4, "room with spaces/and:marks", 2, "AUTHv2.token.mac"),
    p.exit_(5),
    p.switch(6, "other", b"buf"),
    p.change_room_type(7, 2),
    p.ping(8, 1712345678.25),
    p.ping(9, 0),
    p.invite(10, "10002"),
    p.invite_reply(11, "abcdef0123456789", True),
    s.asr_start(12, "en-US"),
    s.asr_start(13),
    s.asr_stop(14),
    p.room_manage(12, "10002", 4, False),
    p.room_manage_result(13, "10001", 6, True, 0),
    p.room_share(14, "other", "10002", b"buf"),
    p.room_share_stop(15),
]

SERVER_MESSAGES: list[dict[str, Any]] = [
    p.hello_ok(1, "0.1.0", 5.0, 90.0),
    p.hello_ok(1, "0.1.0", 5.0, 90.0, abilities=[]),
    p.hello_ok(1, "0.1.0", 5.0, 90.0, nodes=["http://10.0.0.1:8080", "http://10.0.0.2:8080"]),
    p.redirect(2, "http://10.0.0.2:8080", "a1b2c3d4e5f6"),
    p.error(2, ErrorCode.AV_ERR_AUTH_FIALD, "AuthBuffer expired"),
    p.error(None, ErrorCode.AV_ERR_SERVER_INVALID_ARGUMENT, "not JSON"),
    p.entered(3, "demo", 1, 7, [(8, "10002"), (9, "10003")], "1.ab", False),
    p.entered(3, "demo", 1, 7, [], "1.ab", False, p.media_section(4000, KEY)),
    p.switched(4, "other", 2, 7, [], "1.ab", True, p.media_section(65535, KEY)),
    p.exited(5),
    p.room_type_changed(6, 3),
    p.pong(7, 12.5),
    p.invite_sent(8, "abcd"),
    p.invite_reply_ok(9, "abcd", "demo"),
    p.invite_reply_ok(10, "abcd"),
    p.members_push("enter", [(1, "10001")]),
    p.members_push("exit", [(1, "10001"), (2**32 - 1, "player two")]),
    p.room_type_push(2, "10001"),
    p.disconnect(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "kicked"),
    p.mute(True, "muted by the server"),
    p.invitation("abcd", "10001", "demo"),
    p.invitation_result("abcd", "10002", False),
    p.quality(0.125, 14, 16),
    s.asr_started(12, "en-US"),
    s.asr_stopped(14),
    s.realtime_asr(0, "10001"),
    s.realtime_asr(1, "10001", 3, "mister john dashwood", True),
    p.room_manage_ok(11),
    p.room_operate("10001", 8, True),
    p.room_operate_result("10002", 5, False, 7009),
    p.room_share_ok(12, "start"),
    p.room_sharing("stop", "10002", "other"),
]

# --- game voice (issue 14) ---
REQUESTS += [
    gv.game_state(12, team=3, mode=1, recv_range=100.0, position=(1.5, -2.0, 0.0), entry=True),
    gv.game_state(13, position=(0.0, 0.0, 1e9)),
    gv.audio_route(14, AudioRoute.of(3, ["10002"], 4, ["10003", "10004"])),
]
SERVER_MESSAGES += [
    gv.game_state_ok(12, 3),
    gv.audio_route_ok(14),
    gv.positions_push([(7, 3, (1.0, 2.0, 3.0)), (8, 0, (0.0, 0.0, 0.0))]),
]
