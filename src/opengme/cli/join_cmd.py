"""``opengme join``: take part in a room from the command line (a voice bot, a smoke test, a listener).

It checks the mic and speaker files first (so a wrong path costs no entry and leaves no file), signs
its own AuthBuffer with the app's key from ``--data-dir`` (unless ``--auth-buffer`` is given), enters,
opens the mic (a file, or the system default) and the speaker (a file in the format its suffix names,
or the default),
and shows who is in the room and who is speaking: one line redrawn in place on a terminal, a new plain
line whenever it changes otherwise. It leaves by itself after ``--duration`` seconds with status 0.
A GME error ends it with one line naming the code and status 1; a usage error gives status 2.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from opengme.authbuffer import gen_auth_buffer
from opengme.cli import CliError, game_voice_flags, load_app, not_running_hint, server_flag, server_of
from opengme.cli.sdk_calls import DEFAULT_DEVICE, POLL_S, check, failed, select_device
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType, RoomType, UserUpdateEvent

if TYPE_CHECKING:  # the SDK (aiohttp, PyAV, numpy) is imported only when `join` runs
    from opengme.sdk import Context
    from opengme.sdk.audio_ctrl import AudioCtrl

PROBE_RATE = 48000  # any valid format will do to see whether a mic file opens
EXIT_WAIT_S = 5.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "join",
        parents=[common],
        help="enter a room and talk and/or listen (files or sound card)",
        description="Enter ROOM of APPID as --openid, speak from --mic and play to --speaker, showing "
        "members and who speaks. Leaves after --duration seconds (status 0), or on Ctrl-C.",
    )
    p.add_argument("app_id", metavar="APPID")
    p.add_argument("room_id", metavar="ROOM")
    p.add_argument("--openid", required=True, help="your openid (as Init)")
    p.add_argument("--mic", metavar="FILE|default",
                   help="speak from an audio file, or 'default' for the sound card (omit: listen only)")
    p.add_argument("--speaker", metavar="OUT|default",
                   help="record what you hear to a file (.wav, .flac, .mp3, .ogg or .opus: the suffix picks "
                   "the format), or 'default' to play it (omit: do not play)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="leave after S seconds (default: stay until Ctrl-C)")
    p.add_argument("--room-type", type=int, default=RoomType.FLUENCY, choices=[int(t) for t in RoomType],
                   help="1 FLUENCY (default), 2 STANDARD, 3 HIGHQUALITY")
    p.add_argument("--voice-type", type=int, default=0, choices=range(13), metavar="N",
                   help="voice changer: GME 2.x voice type 0-12 (1 LOLITA, 2 UNCLE, 12 HUANG …; default 0, none)")
    p.add_argument("--accompany", metavar="FILE",
                   help="play an audio file (m4a, wav, mp3, ogg) into your voice, looping; needs --mic")
    server_flag(p)
    p.add_argument("--auth-buffer", metavar="B64",
                   help="an AuthBuffer (base64) from your signing backend, instead of signing with the local key")
    game_voice_flags.add(p)
    p.set_defaults(func=run)


@dataclass
class LiveView:
    """Room members and who speaks, from the SDK's events (pure: fed events, asked for a line)."""

    open_id: str
    room_id: str
    members: list[str] = field(default_factory=list)
    speaking: set[str] = field(default_factory=set)
    quality: int = 0

    def apply(self, event: EventType, data: dict[str, Any]) -> None:
        if event is EventType.USER_UPDATE:
            users = data["user_list"]
            match data["event_id"]:
                case UserUpdateEvent.ENTER:
                    self.members += [u for u in users if u not in self.members and u != self.open_id]
                case UserUpdateEvent.EXIT:
                    self.members = [m for m in self.members if m not in users]
                    self.speaking.difference_update(users)
                case UserUpdateEvent.HAS_AUDIO:
                    self.speaking.update(users)
                case UserUpdateEvent.NO_AUDIO:
                    self.speaking.difference_update(users)
        elif event is EventType.CHANGE_ROOM_QUALITY:
            self.quality = int(data["weight"])

    def state(self) -> str:
        """What changes the plain (non-terminal) output: members and speakers."""
        talking = ", ".join(sorted(self.speaking)) or "nobody"
        return f"room {self.room_id}: {len(self.members) + 1} in the room (you: {self.open_id}; " \
               f"others: {', '.join(self.members) or 'none'}); speaking: {talking}"

    def line(self, ctrl: AudioCtrl) -> str:
        """The terminal line: the state plus the meters, redrawn in place."""
        return f"{self.state()} | mic {ctrl.get_mic_level():3d} speaker {ctrl.get_speaker_level():3d} " \
               f"quality {self.quality:2d}"


def _auth(args: argparse.Namespace) -> bytes:
    if args.auth_buffer is not None:
        try:
            return base64.b64decode(args.auth_buffer, validate=True)
        except (binascii.Error, ValueError):
            raise CliError("--auth-buffer must be standard base64 (as `opengme authbuffer gen` prints)") from None
    app = load_app(args, "pass --data-dir to sign with its key, or --auth-buffer")
    return gen_auth_buffer(app.app_id, args.room_id, args.openid, app.key)


def _check_files(args: argparse.Namespace) -> None:
    """Open the mic file and check the speaker path as the devices will, before entering: a wrong
    path then costs no entry, and its error names the path, the reason and the flag."""
    from opengme.devices import FileMic, FileSpeaker

    try:
        if args.mic not in (None, DEFAULT_DEVICE):
            flag = "--mic"
            with FileMic(args.mic) as mic:
                mic.open(PROBE_RATE, PROBE_RATE // 50)
        if args.speaker not in (None, DEFAULT_DEVICE):
            flag = "--speaker"
            FileSpeaker(args.speaker).check()
    except GmeError as exc:
        raise failed(exc.code, f"{exc.detail} ({flag})") from None


def _start_effects(ctx: Context, args: argparse.Namespace) -> None:
    """--voice-type and --accompany, once in the room (GME's effect calls need one)."""
    effects = ctx.get_audio_effect_ctrl()
    if args.voice_type:
        check(effects.set_voice_type(args.voice_type), "set_voice_type")
    if args.accompany is not None:
        check(effects.start_accompany(args.accompany, True, -1), f"start_accompany {args.accompany}")


def _check_device(ctrl: AudioCtrl, code: ErrorCode, what: str) -> None:
    """Like check, naming why the sound card is missing when that is the cause."""
    error = ctrl.devices.portaudio_error
    check(code, f"{what} ({error})" if error is not None and code == ErrorCode.AV_ERR_DEVICE_NOT_EXIST else what)


class _Session:
    """One run: the context, the event queue it fills, the view and the output."""

    def __init__(self, args: argparse.Namespace, server: str, out: TextIO) -> None:
        from opengme.sdk import Context

        self.args = args
        self.server = server
        self.out = out
        self.tty = out.isatty()
        self.ctx = Context(server, portaudio=DEFAULT_DEVICE in (args.mic, args.speaker))
        self.events: list[tuple[EventType, dict[str, Any]]] = []
        self.view = LiveView(args.openid, args.room_id)
        self._shown = ""
        self.ctx.set_delegate(lambda event, data: self.events.append((event, data)))

    def pump(self, seconds: float) -> None:
        """Poll for ``seconds``, applying events; ROOM_DISCONNECT ends the run with its code."""
        end = time.monotonic() + seconds
        while True:
            self.ctx.poll()
            for event, data in self.events:
                if event is EventType.ROOM_DISCONNECT:
                    raise failed(data["result"], data["error_info"])
                self.view.apply(event, data)
            self.events.clear()
            self.show()
            if time.monotonic() >= end:
                return
            time.sleep(min(POLL_S, max(0.0, end - time.monotonic())))

    def wait_for(self, event_type: EventType, timeout: float) -> dict[str, Any] | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ctx.poll()
            found = next((data for event, data in self.events if event is event_type), None)
            for event, data in self.events:
                self.view.apply(event, data)
            self.events.clear()
            if found is not None:
                return found
            time.sleep(POLL_S)
        return None

    def show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + self.view.line(self.ctx.get_audio_ctrl()))
            self.out.flush()
        elif (state := self.view.state()) != self._shown:
            self._shown = state
            print(state, file=self.out, flush=True)

    def run(self, auth: bytes) -> int:
        args = self.args
        check(self.ctx.init(args.app_id, args.openid), "init")
        try:
            ctrl = self.ctx.get_audio_ctrl()
            for choice, kind in ((args.mic, "mic"), (args.speaker, "speaker")):
                if choice is not None:
                    select_device(ctrl, choice, kind)
            game_voice_flags.before_entry(self.ctx, args)
            check(self.ctx.enter_room(args.room_id, args.room_type, auth), "enter_room")
            entered = self.wait_for(EventType.ENTER_ROOM, self.ctx.entry_timeout + 1)
            if entered is None:
                raise failed(ErrorCode.AV_ERR_TIMEOUT, f"no answer to enter_room ({not_running_hint(self.server)})")
            if entered["result"] == ErrorCode.AV_ERR_NET_REQUEST_FALLED:
                raise failed(entered["result"], f"{entered['error_info']} ({not_running_hint(self.server)})")
            if entered["result"] != ErrorCode.AV_OK:
                raise failed(entered["result"], entered["error_info"])
            try:
                if args.speaker is not None:
                    _check_device(ctrl, ctrl.enable_speaker(True), "enable_speaker")
                if args.mic is not None:
                    _check_device(ctrl, ctrl.enable_mic(True), "enable_mic")
                _start_effects(self.ctx, args)
                game_voice_flags.in_room(self.ctx, args)
                self.pump(args.duration if args.duration is not None else float("inf"))
            finally:
                if self.ctx.exit_room() == ErrorCode.AV_OK:
                    self.wait_for(EventType.EXIT_ROOM, EXIT_WAIT_S)
                if self.tty:
                    self.out.write("\n")
        finally:
            self.ctx.uninit()  # joins the threads; the speaker file was finished on exit
        return 0


def run(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise CliError("--duration must be positive")
    game_voice_flags.validate(args)
    server = server_of(args)
    if args.accompany is not None and args.mic is None:
        raise CliError("--accompany plays into your voice: give --mic too (a file, or default)")
    _check_files(args)
    auth = _auth(args)
    return _Session(args, server, sys.stdout).run(auth)
