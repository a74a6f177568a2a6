"""``opengme message``: try voice messages from a terminal, through the SDK as an app would.

- ``record OUT.ogg --mic FILE|default [--seconds S]``: record from a file or the sound card until S
  seconds, the end of the file, the 58 s limit or Ctrl-C (no server needed);
- ``send APPID FILE --openid ID``: upload, print the file id to share;
- ``get FILE_ID OUT.ogg --openid ID [--app APPID]``: download by file id (written whole or not at all);
- ``play FILE --speaker OUT.wav|default``: play a message to a file or the sound card.

``send`` and ``get`` sign a room-less AuthBuffer with the app's key from ``--data-dir`` (or take
``--auth-buffer``). A GME error ends a command with one line naming the code and status 1; a usage
error gives status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opengme.authbuffer import gen_auth_buffer
from opengme.cli import CliError, app_or_only, load_app, not_running_hint, server_flag, server_of
from opengme.cli.sdk_calls import DEFAULT_DEVICE, POLL_S, check, failed, select_device
from opengme.config import DEFAULT_SERVER_URL
from opengme.errors import ErrorCode, GmeError
from opengme.events import EventType
from opengme.protocol.signalling import decode_auth_buffer

if TYPE_CHECKING:  # the SDK (aiohttp, PyAV, numpy) is imported only when a command runs
    from opengme.sdk import Context, Ptt

LOCAL_APP_ID = "1400000000"  # record and play talk to no server: any valid AppID will do for init
LOCAL_OPEN_ID = "opengme-cli"
TRANSFER_WAIT_S = 60.0
MAX_SECONDS = 58.0
PTT_LOGGER = "opengme.sdk.ptt"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "message",
        parents=[common],
        help="record, send, get and play a voice message (as an app would)",
        description="Voice messages from the terminal, through the SDK: record one, send it (prints the "
        "file id), get one by file id, play one.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rec = actions.add_parser("record", parents=[common], help="record a message (Ogg/Opus) from a file or the mic")
    rec.add_argument("out", metavar="OUT.ogg")
    rec.add_argument("--mic", required=True, metavar="FILE|default",
                     help="an audio file to record from, or 'default' for the sound card")
    rec.add_argument("--seconds", type=float, metavar="S",
                     help=f"stop after S seconds (default: the end of the file, Ctrl-C or {MAX_SECONDS:g} s)")
    rec.set_defaults(func=_record)
    send = actions.add_parser("send", parents=[common], help="upload a message and print its file id")
    send.add_argument("app_id", metavar="APPID")
    send.add_argument("file", metavar="FILE")
    _identity(send)
    send.set_defaults(func=_send)
    get = actions.add_parser("get", parents=[common], help="download a message by file id")
    get.add_argument("file_id", metavar="FILE_ID")
    get.add_argument("out", metavar="OUT.ogg")
    _identity(get)
    get.add_argument("--app", dest="app_id", metavar="APPID",
                     help="the app the message belongs to (default: the only app in --data-dir)")
    get.set_defaults(func=_get)
    play = actions.add_parser("play", parents=[common], help="play a message to a file or the sound card")
    play.add_argument("file", metavar="FILE")
    play.add_argument("--speaker", required=True, metavar="OUT.wav|default",
                      help="record what is played to a file (.wav, .flac, .mp3, .ogg), or 'default' to hear it")
    play.set_defaults(func=_play)


def _identity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--openid", required=True, help="your openid (as Init)")
    server_flag(parser)
    parser.add_argument("--auth-buffer", metavar="B64",
                        help="a room-less AuthBuffer (base64) from your signing backend, instead of signing "
                        "with the local key")


class _LastWords(logging.Handler):
    """Keeps the SDK's last explanation (its PTT log line), which the one-line error then quotes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


class _Client:
    """One initialised Context, the events its delegate received and the SDK's last explanation."""

    def __init__(self, server: str, app_id: str, open_id: str, *, portaudio: bool = False) -> None:
        from opengme.sdk import Context

        self._words = _LastWords()
        logger = logging.getLogger(PTT_LOGGER)
        logger.addHandler(self._words)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self.ctx: Context = Context(server, portaudio=portaudio)
        self.events: list[tuple[EventType, dict[str, Any]]] = []
        self.ctx.set_delegate(lambda event, data: self.events.append((event, data)))
        check(self.ctx.init(app_id, open_id), "init")
        self.ptt = self.ctx.get_ptt()

    def wait(self, event_type: EventType, timeout: float) -> dict[str, Any] | None:
        """Poll until ``event_type`` arrives (its payload) or ``timeout`` passes (None)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ctx.poll()
            found = next((data for event, data in self.events if event is event_type), None)
            self.events.clear()
            if found is not None:
                return found
            time.sleep(POLL_S)
        return None

    def why(self, what: str) -> str:
        """``what`` with the SDK's reason, and why the sound card is missing when it is."""
        reasons = [self._words.last] if self._words.last else []
        error = self.ctx.get_audio_ctrl().devices.portaudio_error
        if error is not None:
            reasons.append(str(error))
        self._words.last = ""
        return f"{what}: {'; '.join(reasons)}" if reasons else what

    def close(self) -> None:
        self.ctx.uninit()
        logging.getLogger(PTT_LOGGER).removeHandler(self._words)


def _result(client: _Client, data: dict[str, Any] | None, what: str, server: str | None = None) -> dict[str, Any]:
    """The event's payload when it says 0; else one line naming the code (and the server hint)."""
    if data is None:
        raise failed(ErrorCode.AV_ERR_TIMEOUT, f"no answer to {what}" + (f" ({not_running_hint(server)})"
                                                                          if server else ""))
    code = data["result"]
    if code != ErrorCode.AV_OK:
        network = (ErrorCode.QAVPTTERROR_UPLOAD_COS_INTERNAL_FAIL, ErrorCode.QAVPTTERROR_DOWNLOAD_COS_INTERNAL_FAIL)
        hint = f" ({not_running_hint(server)})" if server and code in network else ""
        raise failed(code, client.why(f"{what} failed{hint}"))
    return data


def _record(args: argparse.Namespace) -> int:
    if args.seconds is not None and not 1.0 < args.seconds <= MAX_SECONDS:
        raise CliError(f"--seconds must be more than 1 and at most {MAX_SECONDS:g}")
    client = _Client(DEFAULT_SERVER_URL, LOCAL_APP_ID, LOCAL_OPEN_ID, portaudio=args.mic == DEFAULT_DEVICE)
    try:
        ctrl = client.ctx.get_audio_ctrl()
        select_device(ctrl, args.mic, "mic")
        mic = None if args.mic == DEFAULT_DEVICE else ctrl.devices.mics.current()  # a file: it ends
        check(client.ptt.start_recording(args.out), client.why(f"cannot record {args.out} from {args.mic}"))
        end = time.monotonic() + (args.seconds if args.seconds is not None else MAX_SECONDS + 1)
        done: dict[str, Any] | None = None
        try:
            while done is None and time.monotonic() < end and not (mic is not None and mic.exhausted):
                done = client.wait(EventType.PTT_RECORD_COMPLETE, min(POLL_S, max(0.0, end - time.monotonic())))
        except KeyboardInterrupt:
            pass
        if done is None:
            check(client.ptt.stop_recording(), "stop_recording")
            done = client.wait(EventType.PTT_RECORD_COMPLETE, 5.0)
        _result(client, done, "recording")
        print(f"recorded {args.out}: {_duration(args.out) / 1000:.1f} s, {os.path.getsize(args.out)} bytes")
    finally:
        client.close()
    return 0


def _auth(args: argparse.Namespace) -> bytes | str:
    if args.auth_buffer is not None:
        try:
            return decode_auth_buffer(args.auth_buffer)
        except ValueError:
            raise CliError("--auth-buffer must be standard base64 (as `opengme authbuffer gen` prints)") from None
    app = load_app(args, "pass --data-dir to sign with its key, or --auth-buffer")
    return gen_auth_buffer(app.app_id, "", args.openid, app.key)


def _transfer(args: argparse.Namespace, start: Callable[[Ptt], ErrorCode], done: EventType,
              what: str) -> dict[str, Any]:
    """Sign (or take) the AuthBuffer, start the upload or download and wait for its event."""
    server = server_of(args)
    auth = _auth(args)
    client = _Client(server, args.app_id, args.openid)
    try:
        check(client.ptt.apply_ptt_auth_buffer(auth), "apply_ptt_auth_buffer")
        check(start(client.ptt), what)
        return _result(client, client.wait(done, TRANSFER_WAIT_S), what, server)
    finally:
        client.close()


def _send(args: argparse.Namespace) -> int:
    sent = _transfer(args, lambda ptt: ptt.upload_recorded_file(args.file), EventType.PTT_UPLOAD_COMPLETE,
                     f"sending {args.file}")
    print(sent["file_id"])
    return 0


def _get(args: argparse.Namespace) -> int:
    if args.app_id is None:
        args.app_id = app_or_only(args).app_id
    _transfer(args, lambda ptt: ptt.download_recorded_file(args.file_id, args.out), EventType.PTT_DOWNLOAD_COMPLETE,
              f"getting {args.file_id}")
    print(f"got {args.out}: {_duration(args.out) / 1000:.1f} s")
    return 0


def _duration(path: str) -> int:
    """The message's duration in ms, read as GME's GetVoiceFileDuration does (7010/7011 on failure)."""
    from opengme.codec.voicefile import voice_file_duration_ms

    try:
        return voice_file_duration_ms(path)
    except GmeError as exc:
        raise failed(exc.code, exc.detail) from None


def _play(args: argparse.Namespace) -> int:
    client = _Client(DEFAULT_SERVER_URL, LOCAL_APP_ID, LOCAL_OPEN_ID, portaudio=args.speaker == DEFAULT_DEVICE)
    try:
        ctrl = client.ctx.get_audio_ctrl()
        select_device(ctrl, args.speaker, "speaker")
        duration = _duration(args.file)
        check(client.ptt.play_recorded_file(args.file), client.why(f"cannot play {args.file}"))
        try:
            done = client.wait(EventType.PTT_PLAY_COMPLETE, duration / 1000 + 10)
        except KeyboardInterrupt:
            client.ptt.stop_play_file()
            done = client.wait(EventType.PTT_PLAY_COMPLETE, 5.0)
        _result(client, done, "playback")
        print(f"played {args.file} ({duration / 1000:.1f} s)" +
              ("" if args.speaker == DEFAULT_DEVICE else f" into {args.speaker}"))
    finally:
        client.close()  # a file speaker is complete once the playback closed it
    return 0
