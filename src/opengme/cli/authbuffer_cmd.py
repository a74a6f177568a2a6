"""``opengme authbuffer``: make and check AuthBuffers with the keys in the app registry.

``gen`` is the development stand-in for a studio's signing backend; ``verify`` answers "why does
this buffer give 7006?" with the same checks the server makes.
"""
from __future__ import annotations

import argparse
import base64
import json

from opengme.authbuffer import (
    DEFAULT_TTL,
    NOT_SIGNED_REASON,
    V1,
    V2,
    AuthClaims,
    decode_auth_buffer,
    gen_auth_buffer,
    peek_app_id,
    verify_auth_buffer,
)
from opengme.cli import CliError, open_registry
from opengme.errors import ErrorCode, GmeError
from opengme.store import App, AppStore

_PRINTED_FIELDS = ("version", "app_id", "open_id", "room_id", "expire")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "authbuffer",
        parents=[common],
        help="generate or check AuthBuffers (error 7006)",
        description="Generate an AuthBuffer with an app's key, or check one the way the server does.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser(
        "gen",
        parents=[common],
        help="print a new AuthBuffer as base64",
        description="Print an AuthBuffer for OPENID in APPID as one line of standard base64 "
        "(decode it before passing it to EnterRoom, as with GME's sample signing server).",
    )
    gen.add_argument("app_id", metavar="APPID")
    gen.add_argument("open_id", metavar="OPENID")
    gen.add_argument("--room", default="", help="room id (default: empty, the voice-message form)")
    gen.add_argument("--ttl", default=str(DEFAULT_TTL), help=f"validity in seconds (default {DEFAULT_TTL})")
    gen.add_argument("--v1", action="store_true", help="GME's TEA format instead of OpenGME's signed v2 token")
    gen.add_argument("--auth-bits", default="0xFFFFFFFF", metavar="MAP",
                     help="privilege map, e.g. 0xFF for a player who may not manage the room (bit 0x100 makes a "
                     "room manager; default 0xFFFFFFFF, GME's: every privilege)")
    gen.set_defaults(func=_gen)
    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="decode and check an AuthBuffer",
        description="Check BUFFER (standard base64, or a v2 token) against the registry's keys. Prints its "
        "fields as JSON (exit 0) or the 7006 error with the reason (exit 1).",
    )
    verify.add_argument("buffer", metavar="BUFFER")
    verify.add_argument("--room", help="room id the entry is for ('' = voice messages); unchecked when omitted")
    verify.add_argument("--openid", help="openid the client initialised with; unchecked when omitted")
    verify.add_argument("--app-id", help="only try this app's key")
    verify.set_defaults(func=_verify)


def _ttl(text: str) -> int:
    """A buffer that is expired when made helps nobody: a positive whole number of seconds only."""
    try:
        ttl = int(text)
    except ValueError:
        ttl = 0
    if ttl <= 0:
        raise CliError(f"--ttl must be a positive whole number of seconds, got {text!r}")
    return ttl


def _auth_bits(text: str) -> int:
    try:
        bits = int(text, 0)
    except ValueError:
        bits = -1
    if not 0 <= bits <= 0xFFFFFFFF:
        raise CliError(f"--auth-bits must be a 32-bit privilege map such as 0xFF, got {text!r}")
    return bits


def _gen(args: argparse.Namespace) -> int:
    ttl = _ttl(args.ttl)
    bits = _auth_bits(args.auth_bits)
    app = open_registry(args).get(args.app_id)
    if app is None:
        raise CliError(f"no app with AppID {args.app_id}; see `opengme app list`")
    try:
        buffer = gen_auth_buffer(
            app.app_id, args.room, args.open_id, app.key, ttl=ttl, version=V1 if args.v1 else V2, auth_bits=bits
        )
    except GmeError as exc:
        raise CliError(str(exc)) from None
    print(base64.b64encode(buffer).decode("ascii"))
    return 0


def _candidates(args: argparse.Namespace, store: AppStore) -> list[App]:
    """Apps whose key may have signed the buffer: the one named, the one a v2 token names, or all."""
    app_id = args.app_id or peek_app_id(args.buffer)
    if app_id is None:
        return store.list()
    app = store.get(app_id)
    if app is None:
        raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, f"AppID {app_id} is not in this server's registry")
    return [app]


def _check(args: argparse.Namespace, store: AppStore) -> AuthClaims:
    apps = _candidates(args, store)
    app = apps[0] if len(apps) == 1 else _app_whose_key_fits(args.buffer, apps)
    return verify_auth_buffer(args.buffer, app.key, app_id=app.app_id, open_id=args.openid, room_id=args.room,
                              allow_v1=app.v1_auth)


def _app_whose_key_fits(buffer: str, apps: list[App]) -> App:
    """A v1 buffer names no app: the first one whose key decodes it."""
    if not apps:
        raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, "the registry has no apps; create one with `opengme app create`")
    reasons = set()
    for app in apps:
        try:
            decode_auth_buffer(buffer, app.key)
        except GmeError as exc:
            reasons.add(exc.detail)
            continue
        return app
    # The same non-key reason from every key is about the buffer itself (e.g. its length): say that.
    reason = reasons.pop() if reasons != {NOT_SIGNED_REASON} and len(reasons) == 1 else (
        "AuthBuffer was not signed with the key of any app in the registry (wrong key or corrupted buffer)"
    )
    raise GmeError(ErrorCode.AV_ERR_AUTH_FIALD, reason)


def _verify(args: argparse.Namespace) -> int:
    try:
        claims = _check(args, open_registry(args))
    except GmeError as exc:
        raise CliError(str(exc), status=1) from None
    data = claims.to_dict()
    print(json.dumps({name: data[name] for name in _PRINTED_FIELDS}))
    return 0
