"""Game voice in the signalling core (opengme.core.game_voice) with the real pure relay behind it: the
requests, GME's errors, positions pushed to whoever receives a voice, cleanup when members leave."""
from __future__ import annotations

import os
from collections.abc import Iterable

from opengme.core import game_voice as gv
from opengme.core.relay import Relay, RoutePolicy
from opengme.core.rooms import Member
from opengme.core.routing import AudioRoute
from opengme.core.signalling import Output
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol import signalling as p
from test_signalling_core import Rig, is_error, reply, sent

Json = dict[str, object]


class RelayMedia:
    """The core's media plane as ``server.media.Media`` wires it, over a real pure ``Relay``."""

    def __init__(self) -> None:
        self.relay = Relay()

    def open_session(self, member: Member, muted: bool) -> Json:
        key = os.urandom(32)
        self.relay.add_member(f"{member.app_id}\0{member.room_id}", member.tinyid, key)
        return p.media_section(4000, key)

    def set_muted(self, member: Member, muted: bool) -> None:
        self.relay.set_muted(member.tinyid, muted)

    def set_route_policy(self, app_id: str, room_id: str, policy: RoutePolicy | None) -> None:
        self.relay.set_route_policy(f"{app_id}\0{room_id}", policy)

    def update_routes(self, tinyids: Iterable[int]) -> None:
        for tinyid in tinyids:
            self.relay.update_routes(tinyid)

    def set_routes(self, pairs: Iterable[tuple[int, int, bool]]) -> None:
        self.relay.set_routes(pairs)

    def listeners(self, tinyid: int) -> list[int]:
        return self.relay.listeners(tinyid)

    def after(self, output: Output) -> Output:
        """Departures reach the relay as room events (as in the server)."""
        for event in output.events:
            if event.kind == "leave":
                self.relay.remove_member(event.member.tinyid)
        return output


def rig_with_relay() -> tuple[Rig, RelayMedia]:
    rig, media = Rig(), RelayMedia()
    rig.core.media = media
    return rig, media


def state(rig: Rig, media: RelayMedia, conn: int, **fields: object) -> Output:
    return media.after(rig.ask(conn, lambda id: gv.game_state(id, **fields)))  # type: ignore[arg-type]


def tinyid(rig: Rig, open_id: str, room_id: str = "r1") -> int:
    return rig.core.registry.member(rig.app.app_id, room_id, open_id).tinyid


def test_states_routes_and_positions_through_the_relay() -> None:
    rig, media = rig_with_relay()
    a, b, c = rig.member("10001"), rig.member("10002"), rig.member("10003")
    ta, tb, tc = (tinyid(rig, o) for o in ("10001", "10002", "10003"))
    assert set(media.relay.listeners(ta)) == {tb, tc}  # no game voice yet: everyone hears everyone
    out = state(rig, media, a, team=1, recv_range=10.0, position=(0.0, 0.0, 0.0), entry=True)
    assert reply(out, a) == {"type": "game_state_ok", "id": reply(out, a)["id"], "team": 1}
    # b and c are at GME's defaults (TeamID 0 at entry): they hear TeamID 0 only, and everyone hears them.
    assert media.relay.listeners(ta) == [] and set(media.relay.listeners(tb)) == {ta, tc}
    state(rig, media, b, team=2, recv_range=10.0, position=(5.0, 0.0, 0.0), entry=True)
    assert media.relay.listeners(ta) == [tb] and media.relay.listeners(tb) == [ta]
    out = state(rig, media, b, position=(7.0, 0.0, 0.0))  # a hears b: a gets b's new position
    assert sent(out, a) == [gv.positions_push([(tb, 2, (7.0, 0.0, 0.0))])]
    assert [m["type"] for m in sent(out, c)] == []  # c hears nobody with a team
    out = state(rig, media, b, position=(50.0, 0.0, 0.0))  # out of range: the pair goes
    assert media.relay.listeners(ta) == [] and media.relay.listeners(tb) == []
    route = AudioRoute.of(4, ["10002"], 2, [])
    out = media.after(rig.ask(c, lambda id: gv.audio_route(id, route)))
    # c (TeamID 0) is heard by everyone; its whitelist leaves b only.
    assert reply(out, c)["type"] == "audio_route_ok" and media.relay.listeners(tc) == [tb]
    out = media.after(rig.ask(c, lambda id: gv.audio_route(id, route)))
    assert is_error(reply(out, c), ErrorCode.AV_ERR_REPEATED_OPERATION)  # 1001: the same route again
    described = rig.core.game_voice.describe(rig.core.registry.member(rig.app.app_id, "r1", "10002"))
    assert described == {"team": 2, "mode": 0, "range": 10.0, "position": [50.0, 0.0, 0.0]}


def test_range_voice_needs_fluency_and_bad_routes_are_1004() -> None:
    rig, media = rig_with_relay()
    conn = rig.hello("10001")
    assert reply(rig.enter(conn, "std", room_type=RoomType.STANDARD), conn)["type"] == "entered"
    for fields in ({"team": 3}, {"recv_range": 5.0}, {"mode": 1}):
        assert is_error(reply(state(rig, media, conn, **fields), conn), ErrorCode.AV_ERR_INVALID_ARGUMENT, "FLUENCY")
    assert reply(state(rig, media, conn, position=(1.0, 2.0, 3.0)), conn)["type"] == "game_state_ok"
    too_many = {"type": "audio_route", "id": 99, "send_type": 4, "send_list": [str(10_000 + i) for i in range(11)],
                "recv_type": 2, "recv_list": []}
    assert is_error(reply(rig.request(conn, too_many), conn), ErrorCode.AV_ERR_INVALID_ARGUMENT, "at most 10")


def test_the_room_state_goes_with_its_last_member() -> None:
    rig, media = rig_with_relay()
    a, b = rig.member("10001"), rig.member("10002")
    state(rig, media, a, team=1, entry=True)
    assert rig.core.game_voice.routing(rig.app.app_id, "r1") is not None
    late = rig.member("10003")  # entering a game-voice room: registered at GME's defaults
    assert rig.core.game_voice.describe(rig.core.registry.member(rig.app.app_id, "r1", "10003"))["team"] == 0
    for conn in (a, b, late):
        media.after(rig.ask(conn, p.exit_))
    assert rig.core.game_voice.routing(rig.app.app_id, "r1") is None
    assert not media.relay.members(f"{rig.app.app_id}\0r1")
