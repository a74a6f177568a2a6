"""`opengme say TEXT OUT.ogg`: offline text-to-speech (eSpeak NG) into an Ogg/Opus voice message.

Heavy modules are imported inside :func:`run`, so ``opengme --help`` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from opengme.cli import CliError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "say", parents=[common], help="text-to-speech into an Ogg/Opus voice message, offline",
        description="Synthesise TEXT with eSpeak NG (bundled, offline) and write it to OUT as an Ogg/Opus "
        "voice message, the format the server stores and players download.",
    )
    p.add_argument("text", metavar="TEXT", help="what to say (at most 5000 characters)")
    p.add_argument("out", type=Path, metavar="OUT.ogg", help="the voice file to write")
    p.add_argument("--language", default="en-US", help="voice language, BCP-47 (en-US or en-GB)")
    p.add_argument("--rate", type=float, default=1.0, help="speaking rate, 0.6 to 1.5 (default 1.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opengme.codec.voicefile import encode_voice_file
    from opengme.errors import GmeError
    from opengme.stt.tts import synthesize

    try:
        encode_voice_file(args.out, synthesize(args.text, args.language, args.rate))
    except GmeError as exc:
        raise CliError(exc.detail or str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}", status=1) from None
    return 0
