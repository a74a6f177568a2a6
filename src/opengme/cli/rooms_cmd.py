"""``opengme rooms``, ``opengme kick``, ``opengme mute``: the admin API of a running server, signed with
the app's permission key read from the data directory (the key never leaves this machine)."""
from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from opengme.cli import CliError, load_app, not_running_hint, server_flag, server_of
from opengme.errors import ErrorCode
from opengme.events import RoomType
from opengme.protocol.admin import signed_headers
from opengme.store import App

TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    server = argparse.ArgumentParser(add_help=False)
    server_flag(server)
    server.add_argument("--json", action="store_true", help="print the server's JSON reply")
    parents = [common, server]

    rooms = sub.add_parser("rooms", parents=parents, help="list an app's rooms, or one room's members",
                           description="List the rooms of APPID on a running server, or the members of ROOM.")
    rooms.add_argument("app_id", metavar="APPID")
    rooms.add_argument("room_id", metavar="ROOM", nargs="?")
    rooms.set_defaults(func=_rooms)

    kick = sub.add_parser("kick", parents=parents, help="remove a member from a room (it gets ROOM_DISCONNECT 10003)",
                          description="Remove OPENID from ROOM (GME DeleteRoomMember).")
    kick.add_argument("app_id", metavar="APPID")
    kick.add_argument("room_id", metavar="ROOM")
    kick.add_argument("open_id", metavar="OPENID")
    kick.add_argument("--reason", default=None, help="text the client receives with the disconnect")
    kick.set_defaults(func=_kick)

    mute = sub.add_parser("mute", parents=parents, help="server-mute a member's microphone (or unmute with --off)",
                          description="Server-mute OPENID in ROOM (GME ModifyUserMicStatus): its enable_mic then "
                          "fails with 7009 until it is unmuted or leaves the room.")
    mute.add_argument("app_id", metavar="APPID")
    mute.add_argument("room_id", metavar="ROOM")
    mute.add_argument("open_id", metavar="OPENID")
    mute.add_argument("--off", action="store_true", help="unmute instead")
    mute.set_defaults(func=_mute)


def _room_path(room_id: str, action: str = "") -> str:
    path = f"/v1/admin/rooms/{urllib.parse.quote(room_id, safe='')}"
    return f"{path}/{action}" if action else path


def call(server: str, app: App, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One signed admin request; the reply's JSON when its code is 0, else CliError (status 1)."""
    data = json.dumps(body).encode("utf-8") if body is not None else b""
    headers = signed_headers(app.app_id, app.key, method, path, data)
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(server.rstrip("/") + path, data=data or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reply = json.loads(exc.read())
        except ValueError:
            raise CliError(f"{server} answered HTTP {exc.code} {exc.reason}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the server at {server}: {reason} ({not_running_hint(server)})", 1) from None
    if not isinstance(reply, dict):
        raise CliError(f"{server} answered something that is not an OpenGME reply", 1)
    if reply.get("code") != 0:
        raise CliError(_code_text(reply.get("code"), str(reply.get("message", ""))), 1)
    return reply


def _code_text(code: object, message: str) -> str:
    try:
        name = ErrorCode(code).name  # type: ignore[arg-type]
    except (ValueError, TypeError):
        name = "unknown error"
    return f"{name} ({code}): {message}" if message else f"{name} ({code})"


def _type_name(room_type: int) -> str:
    try:
        return RoomType(room_type).name
    except ValueError:
        return str(room_type)


def _rooms(args: argparse.Namespace) -> int:
    server, app = server_of(args), load_app(args)
    if args.room_id is None:
        reply = call(server, app, "GET", "/v1/admin/rooms")
        if args.json:
            print(json.dumps(reply, indent=2, ensure_ascii=False))
            return 0
        print(f"{'ROOM':<32} {'TYPE':<12} MEMBERS")
        for room in reply["rooms"]:
            print(f"{room['room_id']:<32} {_type_name(room['room_type']):<12} {room['members']}")
        return 0
    reply = call(server, app, "GET", _room_path(args.room_id))
    if args.json:
        print(json.dumps(reply, indent=2, ensure_ascii=False))
        return 0
    members = reply["members"]
    print(f"room {reply['room_id']} ({_type_name(reply['room_type'])}), {len(members)} member(s)")
    game = any("team" in m for m in members)  # the room uses range/team voice
    print(f"{'OPENID':<24} {'TINYID':>8}  {'ENTERED (UTC)':<20} MUTED" + ("  TEAM  MODE   RANGE  POSITION" if game else ""))
    for m in members:
        entered = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m["entered_at"]))
        line = f"{m['open_id']:<24} {m['tinyid']:>8}  {entered:<20} {'yes' if m['muted'] else 'no':<5}"
        print((line + (_game_columns(m) if game else "")).rstrip())
    return 0


def _game_columns(member: dict[str, Any]) -> str:
    """TEAM, MODE, RANGE and POSITION of a member of a game-voice room."""
    if "team" not in member:
        return ""
    position = member.get("position")
    where = ",".join(f"{v:g}" for v in position) if position else "-"
    mode = "TEAM" if member.get("mode") == 1 else "WORLD"
    return f"  {member['team']:>4}  {mode:<5} {member['range']:>6g}  {where}"


def _member_action(args: argparse.Namespace, action: str, body: dict[str, Any], done: str) -> int:
    reply = call(server_of(args), load_app(args), "POST", _room_path(args.room_id, action), body)
    if args.json:
        print(json.dumps(reply, indent=2, ensure_ascii=False))
    code = reply["results"][0]["code"]
    if code != 0:
        raise CliError(_code_text(code, f"openid {args.open_id} is not in room {args.room_id}"), 1)
    if not args.json:
        print(f"{done} {args.open_id} in room {args.room_id}")
    return 0


def _kick(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"open_ids": [args.open_id]}
    if args.reason is not None:
        body["reason"] = args.reason
    return _member_action(args, "kick", body, "kicked")


def _mute(args: argparse.Namespace) -> int:
    return _member_action(args, "mute", {"open_ids": [args.open_id], "muted": not args.off},
                          "unmuted" if args.off else "muted")
