"""The pure room registry: lifecycle, room types, takeover, limits, mutes, liveness, switch, invitations."""
from __future__ import annotations

import pytest

from opengme.core.rooms import Member, RoomEvent, RoomRegistry
from opengme.errors import ErrorCode, GmeError
from opengme.events import RoomType

APP = "1400000001"
OTHER_APP = "1400000002"


def codes(call) -> ErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(GmeError) as info:
        call()
    return info.value.code


def summary(events: list[RoomEvent]) -> list[tuple[str, str, list[str]]]:
    return [(e.kind, e.member.open_id, sorted(o.open_id for o in e.others)) for e in events]


@pytest.fixture
def reg() -> RoomRegistry:
    return RoomRegistry()


def enter(reg: RoomRegistry, open_id: str, room: str = "r1", room_type: RoomType = RoomType.FLUENCY,
          app: str = APP, now: float = 100.0) -> Member:
    return reg.enter(app, room, open_id, room_type, conn=int(open_id), now=now).member


def test_room_appears_with_first_member_and_vanishes_with_last(reg: RoomRegistry) -> None:
    assert reg.room_count == 0
    a = enter(reg, "10001")
    b = enter(reg, "10002")
    assert reg.room_count == 1 and reg.member_count == 2
    assert list(reg.room(APP, "r1").members) == ["10001", "10002"]
    assert reg.leave(a, 101.0, voluntary=True)
    assert reg.room_count == 1
    assert reg.leave(b, 102.0, voluntary=True)
    assert reg.room_count == 0 and reg.member_count == 0
    assert codes(lambda: reg.room(APP, "r1")) == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST
    assert not reg.leave(b, 103.0, voluntary=True)  # already gone: nothing happens


def test_events_name_who_to_tell(reg: RoomRegistry) -> None:
    a = enter(reg, "10001")
    enter(reg, "10002")
    enter(reg, "10003")
    reg.leave(a, 110.0, voluntary=False)
    events = reg.take_events()
    assert summary(events) == [
        ("enter", "10001", []),
        ("enter", "10002", ["10001"]),
        ("enter", "10003", ["10001", "10002"]),
        ("leave", "10001", ["10002", "10003"]),
    ]
    assert events[-1].at == 110.0 and events[-1].member.entered_at == 100.0
    assert reg.take_events() == []


def test_rooms_are_per_app(reg: RoomRegistry) -> None:
    enter(reg, "10001", app=APP)
    enter(reg, "10001", app=OTHER_APP)  # same openid, other app: no takeover
    assert reg.member_count == 2
    assert [r.app_id for r in reg.rooms(APP)] == [APP]
    assert reg.room(OTHER_APP, "r1").members["10001"].app_id == OTHER_APP


def test_first_members_room_type_is_the_rooms(reg: RoomRegistry) -> None:
    a = enter(reg, "10001", room_type=RoomType.HIGHQUALITY)
    entered = reg.enter(APP, "r1", "10002", RoomType.FLUENCY, "c2", 100.0)
    assert entered.room.room_type is RoomType.HIGHQUALITY  # the joiner learns the room's type
    assert reg.change_room_type(entered.member, RoomType.STANDARD)
    assert reg.room(APP, "r1").room_type is RoomType.STANDARD
    assert not reg.change_room_type(a, RoomType.STANDARD)  # no change, nothing to tell
    reg.leave(a, 101.0, voluntary=True)
    reg.leave(entered.member, 101.0, voluntary=True)
    assert enter(reg, "10003", room_type=RoomType.FLUENCY) and reg.room(APP, "r1").room_type is RoomType.FLUENCY
    assert codes(lambda: reg.change_room_type(a, RoomType.FLUENCY)) == ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM


def test_tinyids_are_unique_nonzero_and_map_both_ways(reg: RoomRegistry) -> None:
    members = [enter(reg, str(10001 + i), room=f"r{i % 3}") for i in range(30)]
    tinyids = [m.tinyid for m in members]
    assert len(set(tinyids)) == 30 and 0 not in tinyids
    m = members[7]
    assert reg.open_id_of(APP, m.tinyid) == m.open_id
    assert reg.tinyid_of(APP, m.open_id) == m.tinyid
    assert reg.open_id_of(OTHER_APP, m.tinyid) is None
    reg.leave(m, 200.0, voluntary=True)
    assert reg.open_id_of(APP, m.tinyid) is None and reg.tinyid_of(APP, m.open_id) is None


def test_tinyid_counter_wraps_without_zero_or_reuse(reg: RoomRegistry) -> None:
    reg._next_tinyid = 2**32 - 1
    a, b = enter(reg, "10001"), enter(reg, "10002")
    assert (a.tinyid, b.tinyid) == (2**32 - 1, 1)
    reg._next_tinyid = 1
    assert enter(reg, "10003").tinyid == 2  # 1 is taken


def test_same_openid_takes_over_in_the_same_room(reg: RoomRegistry) -> None:
    old = enter(reg, "10001")
    enter(reg, "10002")
    reg.take_events()
    entered = reg.enter(APP, "r1", "10001", RoomType.FLUENCY, 7, 105.0)
    assert entered.displaced is old and not reg.is_current(old)
    assert entered.member.conn == 7 and entered.member.tinyid != old.tinyid
    assert reg.member_count == 2
    # the displaced leave is told to 10002 only; the newcomer never hears of its predecessor
    assert summary(reg.take_events()) == [("leave", "10001", ["10002"]), ("enter", "10001", ["10002"])]
    assert not reg.leave(old, 106.0, voluntary=False)  # its socket closing later changes nothing


def test_same_openid_takes_over_from_another_room(reg: RoomRegistry) -> None:
    old = enter(reg, "10001", room="a")
    entered = reg.enter(APP, "b", "10001", RoomType.FLUENCY, "c", 101.0)
    assert entered.displaced is old
    assert [r.room_id for r in reg.rooms(APP)] == ["b"]  # room a vanished with its last member


def test_member_limit_is_10005_and_displaces_nobody() -> None:
    reg = RoomRegistry(max_members_per_room=2)
    a = enter(reg, "10001")
    enter(reg, "10002")
    assert codes(lambda: enter(reg, "10003")) == ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED
    assert reg.member_count == 2
    # a takeover in a full room replaces a member, so it fits
    assert reg.enter(APP, "r1", "10001", RoomType.FLUENCY, "c", 101.0).displaced is a
    # a full room refuses an openid that is elsewhere: it stays where it was
    c = enter(reg, "10003", room="other")
    assert codes(lambda: enter(reg, "10003")) == ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED
    assert reg.is_current(c)


def test_room_limit_is_10005_counts_all_apps_and_frees_with_the_last_member() -> None:
    reg = RoomRegistry(max_rooms=2)
    enter(reg, "10001", room="a")
    b = enter(reg, "10002", room="b", app=OTHER_APP)
    assert codes(lambda: enter(reg, "10003", room="c")) == ErrorCode.AV_ERR_SERVER_ALLOC_RESOURCE_FAILED
    enter(reg, "10003", room="a")  # existing rooms still take members
    # moving the only member of a room to a new room frees a slot on the way
    assert reg.enter(OTHER_APP, "c", "10002", RoomType.FLUENCY, "c", 101.0).displaced is b
    reg.leave(reg.find(OTHER_APP, "10002"), 102.0, voluntary=True)  # type: ignore[arg-type]
    assert enter(reg, "10004", room="d").room_id == "d"


def test_mutes_belong_to_the_room(reg: RoomRegistry) -> None:
    a = enter(reg, "10001")
    enter(reg, "10002")
    assert reg.set_muted(APP, "r1", "10001", True) is a
    assert reg.room(APP, "r1").is_muted("10001")
    assert codes(lambda: reg.set_muted(APP, "r1", "10009", True)) == ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST
    assert codes(lambda: reg.set_muted(APP, "nope", "10001", True)) == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST
    # a dropped connection (or a takeover) keeps the mute: reconnecting does not escape it
    reg.leave(a, 101.0, voluntary=False)
    a2 = enter(reg, "10001")
    assert reg.room(APP, "r1").is_muted("10001")
    reg.enter(APP, "r1", "10001", RoomType.FLUENCY, "c", 102.0)
    assert reg.room(APP, "r1").is_muted("10001")
    # a voluntary exit clears it, as does unmuting
    reg.leave(reg.find(APP, "10001"), 103.0, voluntary=True)  # type: ignore[arg-type]
    assert not reg.room(APP, "r1").is_muted("10001")
    enter(reg, "10001")
    reg.set_muted(APP, "r1", "10001", True)
    reg.set_muted(APP, "r1", "10001", False)
    assert not reg.room(APP, "r1").is_muted("10001")
    assert a2 is not None


def test_switch_moves_with_the_room_type_and_tells_both_rooms(reg: RoomRegistry) -> None:
    a = enter(reg, "10001", room="a", room_type=RoomType.STANDARD)
    enter(reg, "10002", room="a")
    enter(reg, "10003", room="b", room_type=RoomType.HIGHQUALITY)
    reg.take_events()
    result = reg.switch(a, "b", 1, 110.0)
    assert result.error is None and result.entered is not None
    assert result.entered.room.room_type is RoomType.HIGHQUALITY
    assert summary(reg.take_events()) == [("leave", "10001", ["10002"]), ("enter", "10001", ["10003"])]
    # into a new room: the switcher's previous room type carries over
    new = reg.switch(result.entered.member, "c", 1, 111.0)
    assert new.entered is not None and new.entered.room.room_type is RoomType.HIGHQUALITY


def test_switch_2001_changes_nothing(reg: RoomRegistry) -> None:
    a = enter(reg, "10001", room="a")
    reg.take_events()
    assert codes(lambda: reg.switch(a, "a", "c", 101.0)) == ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM
    assert reg.is_current(a) and reg.take_events() == []
    reg.leave(a, 102.0, voluntary=True)
    assert codes(lambda: reg.switch(a, "b", "c", 103.0)) == ErrorCode.QAV_ERR_NOT_TRY_NEW_ROOM


def test_switch_2002_leaves_the_old_room() -> None:
    reg = RoomRegistry(max_members_per_room=1)
    a = enter(reg, "10001", room="a")
    enter(reg, "10002", room="b")
    result = reg.switch(a, "b", "c", 101.0)
    assert result.entered is None and result.error is not None
    assert result.error.code == ErrorCode.QAV_ERR_TRY_NEW_ROOM_FAILED and "full" in result.error.detail
    assert not reg.is_current(a) and [r.room_id for r in reg.rooms(APP)] == ["b"]


def test_dissolve_removes_everyone_without_telling_each_other(reg: RoomRegistry) -> None:
    enter(reg, "10001")
    enter(reg, "10002")
    enter(reg, "10003", room="kept")
    reg.take_events()
    removed = reg.dissolve(APP, "r1", 120.0)
    assert sorted(m.open_id for m in removed) == ["10001", "10002"]
    assert summary(reg.take_events()) == [("leave", "10001", []), ("leave", "10002", [])]
    assert [r.room_id for r in reg.rooms(APP)] == ["kept"]
    assert codes(lambda: reg.dissolve(APP, "r1", 121.0)) == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST


def test_member_lookup_errors(reg: RoomRegistry) -> None:
    enter(reg, "10001")
    assert reg.member(APP, "r1", "10001").open_id == "10001"
    assert codes(lambda: reg.member(APP, "r1", "10002")) == ErrorCode.AV_ERR_SERVER_ENDPOINT_NOT_EXIST
    assert codes(lambda: reg.member(APP, "r2", "10001")) == ErrorCode.AV_ERR_SERVER_ROOM_NOT_EXIST


def test_invitation_accept_and_refuse(reg: RoomRegistry) -> None:
    a = enter(reg, "10001")
    invitation = reg.invite(a, "10002", invitee_online=True, now=100.0)
    assert (invitation.room_id, invitation.from_open_id, invitation.to_open_id) == ("r1", "10001", "10002")
    # only the invitee may answer
    assert codes(lambda: reg.reply_invitation(APP, "10003", invitation.invite_id, True, 101.0)) == \
        ErrorCode.AV_ERR_ACCEPTT_FAILED
    assert reg.reply_invitation(APP, "10002", invitation.invite_id, True, 101.0) is invitation
    # an answered invitation is gone: accepting again is 1802, refusing it 1803
    assert codes(lambda: reg.reply_invitation(APP, "10002", invitation.invite_id, True, 102.0)) == \
        ErrorCode.AV_ERR_ACCEPTT_FAILED
    assert codes(lambda: reg.reply_invitation(APP, "10002", invitation.invite_id, False, 102.0)) == \
        ErrorCode.AV_ERR_REFUSE_FAILED
    second = reg.invite(a, "10002", True, 103.0)
    assert second.invite_id != invitation.invite_id
    assert reg.reply_invitation(APP, "10002", second.invite_id, False, 104.0) is second


def test_invitation_failures(reg: RoomRegistry) -> None:
    a = enter(reg, "10001")
    enter(reg, "10002")
    assert codes(lambda: reg.invite(a, "10003", False, 100.0)) == ErrorCode.AV_ERR_INVITET_FAILED
    assert codes(lambda: reg.invite(a, "10002", True, 100.0)) == ErrorCode.AV_ERR_INVITET_FAILED  # already in
    expiring = reg.invite(a, "10003", True, 100.0)
    assert codes(lambda: reg.reply_invitation(APP, "10003", expiring.invite_id, True, 100.0 + reg.invite_ttl)) == \
        ErrorCode.AV_ERR_ACCEPTT_FAILED
    cancelled = reg.invite(a, "10003", True, 200.0)
    reg.leave(a, 201.0, voluntary=True)  # the inviter left: its invitations are cancelled
    assert codes(lambda: reg.reply_invitation(APP, "10003", cancelled.invite_id, False, 202.0)) == \
        ErrorCode.AV_ERR_REFUSE_FAILED
    assert codes(lambda: reg.invite(a, "10003", True, 203.0)) == ErrorCode.AV_ERR_SERVER_ID_NOT_IN_ROOM
    assert codes(lambda: reg.reply_invitation(OTHER_APP, "10003", "nope", True, 204.0)) == \
        ErrorCode.AV_ERR_ACCEPTT_FAILED


def test_expired_invitations_are_purged(reg: RoomRegistry) -> None:
    a = enter(reg, "10001")
    b = enter(reg, "10003")
    for i in range(50):
        reg.invite(a, "10002", True, float(i))
    alive = reg.invite(b, "10002", True, 1000.0)
    assert reg.expire_invitations(999.0) == 50 and reg.invitation_count == 1
    assert reg.expire_invitations(1000.0) == 0  # alive until its time is over
    assert reg.reply_invitation(APP, "10002", alive.invite_id, True, 1001.0) is alive
    assert reg.invitation_count == 0
    reg.invite(a, "10002", True, 1002.0)
    reg.leave(a, 1003.0, voluntary=True)  # cancelled with its inviter's departure
    assert reg.invitation_count == 0 and reg.expire_invitations(5000.0) == 0
