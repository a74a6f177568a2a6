"""``opengme join``'s game-voice flags: ``--team``, ``--range``, ``--position X,Y,Z`` and ``--3d``.

The team is set before entering (GME's order: SetRangeAudioTeamID, then EnterRoom); range, position
and 3D voice after the entry. Bad values are usage errors (status 2) before anything starts.
Imports nothing heavy.
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from opengme.cli import CliError
from opengme.cli.sdk_calls import check

if TYPE_CHECKING:
    from opengme.sdk import Context

FORWARD, RIGHT, UP = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


def add(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("game voice (range, team and 3D voice; FLUENCY rooms)")
    g.add_argument("--team", type=int, metavar="N", help="your team (SetRangeAudioTeamID; 0 = hears and is heard "
                   "as a host/broadcaster): teammates hear each other anywhere, other teams within range")
    g.add_argument("--range", type=float, metavar="R", dest="recv_range",
                   help="how far you hear other teams, in world units (UpdateAudioRecvRange)")
    g.add_argument("--position", metavar="X,Y,Z", help="where you stand (UpdateSelfPosition), facing +X")
    g.add_argument("--3d", action="store_true", dest="spatial",
                   help="hear voices in 3D around your head (stereo, built-in HRTF); needs --speaker")


def position(text: str | None) -> tuple[float, float, float] | None:
    """``--position`` as a vector; CliError (usage) when it is not three finite numbers."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise CliError(f"--position must be three numbers X,Y,Z (e.g. 10,0,-5), got {text!r}")
    return values[0], values[1], values[2]


def validate(args: argparse.Namespace) -> None:
    """The usage errors, before anything starts."""
    if args.team is not None and not 0 <= args.team <= 2**32 - 1:
        raise CliError("--team must be 0-4294967295")
    if args.recv_range is not None and not (math.isfinite(args.recv_range) and args.recv_range >= 0):
        raise CliError("--range must be a number of at least 0")
    position(args.position)
    if args.spatial and args.speaker is None:
        raise CliError("--3d renders what you hear: give --speaker too")


def before_entry(ctx: Context, args: argparse.Namespace) -> None:
    if args.team is not None:
        check(ctx.set_range_audio_team_id(args.team), "set_range_audio_team_id (--team)")


def in_room(ctx: Context, args: argparse.Namespace) -> None:
    room = ctx.get_room()
    if args.recv_range is not None:
        check(room.update_audio_recv_range(args.recv_range), "update_audio_recv_range (--range needs a FLUENCY room)")
    place = position(args.position)
    if place is not None:
        check(room.update_self_position(place, FORWARD, RIGHT, UP), "update_self_position (--position)")
    if args.spatial:
        ctrl = ctx.get_audio_ctrl()
        check(ctrl.init_spatializer(""), "init_spatializer (--3d)")
        check(ctrl.enable_spatializer(True, False), "enable_spatializer (--3d)")
