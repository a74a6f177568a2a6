"""Room placement (``opengme.core.placement``): the rule that puts a room on a relay worker or a
cluster node, and the table that remembers where rooms went."""
from __future__ import annotations

import pytest

from opengme.core.placement import NoTarget, PlacementTable, choose


def test_choose_takes_the_least_loaded_target_and_breaks_ties_by_name() -> None:
    assert choose({"b": 1.0, "a": 2.0, "c": 0.5}) == "c"
    assert choose({"w2": 1.0, "w1": 1.0, "w3": 1.0}) == "w1"  # every caller with this view agrees


def test_choose_weighs_load_by_capacity() -> None:
    loads = {"small": 2.0, "big": 3.0}
    assert choose(loads) == "small"
    assert choose(loads, {"small": 1.0, "big": 4.0}) == "big"  # 3/4 < 2/1
    assert choose(loads, {"small": 0.0}) == "small"  # a zero capacity counts as 1, never divides by 0


def test_choose_without_targets_is_no_target() -> None:
    with pytest.raises(NoTarget):
        choose({})


def test_rooms_spread_and_stay_where_they_were_placed() -> None:
    table = PlacementTable()
    for target in ("w0", "w1"):
        table.add_target(target)
    placed = [table.place(f"room{i}") for i in range(4)]
    assert placed == ["w0", "w1", "w0", "w1"]
    assert table.loads == {"w0": 2.0, "w1": 2.0}
    assert table.place("room1") == "w1" and table.loads["w1"] == 2.0  # sticky, not counted twice
    assert table.owner("room2") == "w0" and table.owner("nowhere") is None


def test_release_frees_the_slot_for_the_next_room() -> None:
    table = PlacementTable()
    table.add_target("w0")
    table.add_target("w1")
    table.place("a")
    table.place("b")
    table.release("a")
    assert table.owner("a") is None and table.loads == {"w0": 0.0, "w1": 1.0}
    assert table.place("c") == "w0"
    table.release("never placed")  # harmless
    assert table.loads == {"w0": 1.0, "w1": 1.0}


def test_a_lost_target_gives_back_its_rooms_which_go_to_the_live_ones() -> None:
    table = PlacementTable()
    for target in ("w0", "w1"):
        table.add_target(target)
    for room in ("a", "b", "c"):
        table.place(room)
    assert sorted(table.lose("w0")) == ["a", "c"]
    assert table.owner("a") is None and table.owner("b") == "w1"
    assert table.place("a") == "w1" and table.place("c") == "w1"
    table.add_target("w0.2")  # the restarted worker takes new rooms from now on
    assert table.place("d") == "w0.2"
    assert table.lose("gone") == []


def test_a_room_whose_target_vanished_is_placed_again() -> None:
    table = PlacementTable()
    table.add_target("w0")
    table.place("a")
    table.loads.pop("w0")  # the target left without ``lose`` (a caller that only rebuilds loads)
    table.add_target("w1")
    assert table.owner("a") is None
    assert table.place("a") == "w1"


def test_no_live_target_is_no_target() -> None:
    table = PlacementTable()
    with pytest.raises(NoTarget):
        table.place("a")
    table.add_target("w0")
    table.lose("w0")
    with pytest.raises(NoTarget):
        table.place("a")
