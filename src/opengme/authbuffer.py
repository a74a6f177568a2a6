"""AuthBuffer: the ticket a client shows to enter a room (or, with an empty room id, to use voice messages).

Two formats, both carrying the same claims (app id, openid, room id, expiry, auth bits):

* **v1**, GME's own, so buffers from existing GME signing backends keep working (unless the app's
  ``v1_auth`` switch is off: ``allow_v1=False``). A big-endian record (GME key docs §2.2) encrypted
  with Tencent's "OI" TEA (16 rounds, CBC over 8-byte blocks with a zero IV; framing ``[(rand & 0xF8) | padLen][padLen random][2 salt][body][7 zero bytes]``).
  The key is the 16-character console key used as the TEA key (GME's Go/C samples); the
  ``md5(key)`` variant the docs describe is accepted when decoding. The format has no MAC: its
  integrity rests on the zero tail and on the fixed fields, which decoding therefore checks strictly.
  That is not enough: CBC lets whoever holds a buffer XOR chosen bytes into its second plaintext
  block by editing the first ciphertext block, which turns the first block into noise that passes
  whenever its 3 pad-length bits come out unchanged (1 try in 8). When the openid starts in the
  second block, a player can so change the first characters of its openid without the key.
* **v2**, OpenGME's default: ``OGME2.<base64url(JSON claims)>.<base64url(HMAC-SHA256)>`` keyed by
  the app key. The app id is readable without the key (:func:`peek_app_id`) so a server knows which
  key to check with.

Accepted input forms, tried in this order (the detection rule):

1. text (``str``, or ``bytes`` with surrounding ASCII whitespace removed) starting ``OGME2.``: a v2 token;
2. text that is strict, canonical standard base64 (what GME sample signing servers return): its decoding,
   which is then a v2 token if it starts ``OGME2.`` and v1 binary otherwise;
3. anything else: raw v1 binary.

A raw v1 buffer is taken for base64 only if all of its bytes are base64 characters, which happens
with probability 4**-len, below 2**-80 since the shortest v1 buffer is 40 bytes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from opengme.errors import ErrorCode, GmeError
from opengme.ids import IdError, validate_app_id, validate_key

V1 = 1
V2 = 2
AUTH_BITS_ALL = 0xFFFFFFFF  # GME's "dwReserved2": every privilege bit set
MAX_ID_BYTES = 127  # GME's limit for openid and room id
DEFAULT_TTL = 300  # GME's recommended validity, seconds
MAX_BUFFER_BYTES = 4096  # the largest possible (v2, 127 emoji room id, as base64) is ~3.7 kB; bounds garbage work
V2_PREFIX = b"OGME2."

_U32 = 0xFFFFFFFF
_TEA_DELTA = 0x9E3779B9
_TEA_ROUNDS = 16
_TEA_SUM_END = (_TEA_DELTA * _TEA_ROUNDS) & _U32
_BLOCK = 8
_SALT_LEN = 2
_ZERO_LEN = 7
_MIN_CIPHER = 16
_V1_FIXED = struct.Struct(">IIIIIH")  # appid, reserved1, expiry, auth bits, reserved3, room id length
_B64_STD = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_B64_URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_V1_BODY = 3 + MAX_ID_BYTES + _V1_FIXED.size + 4 * MAX_ID_BYTES  # openid bytes; room id: 127 chars of UTF-8
MAX_V1_BYTES = -(-(1 + _SALT_LEN + _MAX_V1_BODY + _ZERO_LEN) // _BLOCK) * _BLOCK
"""The longest v1 buffer GME's format can produce (672): anything longer is refused undecrypted."""
_V2_FIELDS = {"version": int, "app_id": str, "open_id": str, "room_id": str, "expire": int, "auth_bits": int}

Rng = Callable[[int], bytes]


@dataclass(frozen=True)
class AuthClaims:
    """What an authentic AuthBuffer says; :func:`check_claims` decides whether it admits an entry."""

    version: int
    app_id: str
    open_id: str
    room_id: str  # "" = voice-message form
    expire: int  # unix seconds
    auth_bits: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --- TEA ("OI" variant: 16 rounds, big-endian words) ---------------------------------------------


def _key_words(key: bytes) -> tuple[int, int, int, int]:
    if len(key) != 16:
        raise ValueError("a TEA key is 16 bytes")
    a, b, c, d = struct.unpack(">4I", key)
    return a, b, c, d


def _encrypt_int(v: int, k: tuple[int, int, int, int]) -> int:
    y, z = v >> 32, v & _U32
    k0, k1, k2, k3 = k
    s = 0
    for _ in range(_TEA_ROUNDS):
        s = (s + _TEA_DELTA) & _U32
        y = (y + (((z << 4) + k0) ^ (z + s) ^ ((z >> 5) + k1))) & _U32
        z = (z + (((y << 4) + k2) ^ (y + s) ^ ((y >> 5) + k3))) & _U32
    return (y << 32) | z


def _decrypt_int(v: int, k: tuple[int, int, int, int]) -> int:
    y, z = v >> 32, v & _U32
    k0, k1, k2, k3 = k
    s = _TEA_SUM_END
    for _ in range(_TEA_ROUNDS):
        z = (z - (((y << 4) + k2) ^ (y + s) ^ ((y >> 5) + k3))) & _U32
        y = (y - (((z << 4) + k0) ^ (z + s) ^ ((z >> 5) + k1))) & _U32
        s = (s - _TEA_DELTA) & _U32
    return (y << 32) | z


def tea_encrypt_block(block: bytes, key: bytes) -> bytes:
    """One 8-byte block through 16-round TEA (Tencent's ``OI_TeaEncryptECB``)."""
    if len(block) != _BLOCK:
        raise ValueError("a TEA block is 8 bytes")
    return _encrypt_int(int.from_bytes(block), _key_words(key)).to_bytes(_BLOCK)


def tea_decrypt_block(block: bytes, key: bytes) -> bytes:
    """Inverse of :func:`tea_encrypt_block`."""
    if len(block) != _BLOCK:
        raise ValueError("a TEA block is 8 bytes")
    return _decrypt_int(int.from_bytes(block), _key_words(key)).to_bytes(_BLOCK)


def symmetry_encrypt(body: bytes, key: bytes, rng: Rng = os.urandom) -> bytes:
    """Tencent's ``symmetry_encrypt``: frame ``body`` and TEA-CBC it (zero IV).

    ``rng`` is called once for ``1 + padLen + 2`` bytes: the header byte's high 5 bits, the
    padding, then the salt, in the order GME's samples draw them.
    """
    k = _key_words(key)
    pad_len = -(len(body) + 1 + _SALT_LEN + _ZERO_LEN) % _BLOCK
    noise = rng(1 + pad_len + _SALT_LEN)
    if len(noise) != 1 + pad_len + _SALT_LEN:
        raise ValueError(f"rng returned {len(noise)} bytes, {1 + pad_len + _SALT_LEN} were asked for")
    framed = bytes([(noise[0] & 0xF8) | pad_len]) + noise[1:] + body + bytes(_ZERO_LEN)
    out = bytearray()
    prev = 0
    for i in range(0, len(framed), _BLOCK):
        prev = _encrypt_int(int.from_bytes(framed[i : i + _BLOCK]) ^ prev, k)
        out += prev.to_bytes(_BLOCK)
    return bytes(out)


def symmetry_decrypt(cipher: bytes, key: bytes) -> bytes | None:
    """Tencent's ``symmetry_decrypt``: the body, or None when the length, padding or zero tail is wrong.

    The last block is opened first: its low 7 bytes must be the zero tail, which garbage or a wrong
    key misses with probability 1 - 2**-56, so refusing costs one block, not the whole buffer.
    """
    if len(cipher) % _BLOCK or len(cipher) < _MIN_CIPHER:
        return None
    k = _key_words(key)
    last = _decrypt_int(int.from_bytes(cipher[-_BLOCK:]), k) ^ int.from_bytes(cipher[-2 * _BLOCK : -_BLOCK])
    if last & ((1 << (8 * _ZERO_LEN)) - 1):
        return None
    plain = bytearray()
    prev = 0
    for i in range(0, len(cipher), _BLOCK):
        c = int.from_bytes(cipher[i : i + _BLOCK])
        plain += (_decrypt_int(c, k) ^ prev).to_bytes(_BLOCK)
        prev = c
    start = 1 + (plain[0] & 0x07) + _SALT_LEN
    end = len(plain) - _ZERO_LEN
    if end < start or any(plain[end:]):
        return None
    return bytes(plain[start:end])


# --- generation ---------------------------------------------------------------------------------


def _invalid(why: str) -> GmeError:
    return GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, why)


def _auth_failed(why: str) -> GmeError:
    return GmeError(ErrorCode.AV_ERR_AUTH_FIALD, why)


def _app_id_text(app_id: str | int) -> str:
    if isinstance(app_id, bool) or not isinstance(app_id, (str, int)):
        raise _invalid(f"AppID must be a number or a numeric string, got {type(app_id).__name__}")
    try:
        return validate_app_id(str(app_id))
    except IdError as exc:
        raise _invalid(str(exc)) from None


def _checked_key(key: str) -> str:
    try:
        return validate_key(key)
    except IdError as exc:
        raise _invalid(str(exc)) from None


def _checked_ids(open_id: str, room_id: str) -> tuple[bytes, bytes]:
    if not isinstance(open_id, str) or not open_id:
        raise _invalid("openid must be a non-empty string")
    if not isinstance(room_id, str):
        raise _invalid("room id must be a string ('' for voice messages)")
    try:
        open_raw, room_raw = open_id.encode("utf-8"), room_id.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("openid and room id must be valid Unicode text (no lone surrogates)") from None
    if len(open_raw) > MAX_ID_BYTES:
        raise _invalid(f"openid is {len(open_raw)} bytes; GME allows at most {MAX_ID_BYTES}")
    if len(room_id) > MAX_ID_BYTES:
        raise _invalid(f"room id is {len(room_id)} characters; GME allows at most {MAX_ID_BYTES}")
    return open_raw, room_raw


def gen_auth_buffer(
    app_id: str | int,
    room_id: str,
    open_id: str,
    key: str,
    expire_at: int | None = None,
    *,
    ttl: int = DEFAULT_TTL,
    version: int = V2,
    rng: Rng = os.urandom,
    now: float | None = None,
    auth_bits: int = AUTH_BITS_ALL,
) -> bytes:
    """An AuthBuffer for ``open_id`` entering ``room_id`` ("" = voice messages) of ``app_id``.

    Expires at ``expire_at`` (unix s) or else ``ttl`` seconds after ``now`` (default: the clock).
    v1 returns GME's raw binary; v2 the ASCII token. ``rng`` feeds v1's padding and salt.
    ``auth_bits`` is the privilege map (GME's default: all bits; bit 0x100 makes a room manager,
    see ``opengme.core.room_manager``); v1 carries only the default.
    """
    if isinstance(auth_bits, bool) or not isinstance(auth_bits, int) or not 0 <= auth_bits <= _U32:
        raise _invalid(f"auth_bits must be a u32 privilege map, got {auth_bits!r}")
    if version == V1 and auth_bits != AUTH_BITS_ALL:  # decoding insists on it: v1 has no MAC to protect others
        raise _invalid("GME's v1 format carries only the full privilege map 0xFFFFFFFF; use v2 for another")
    app_text = _app_id_text(app_id)
    key = _checked_key(key)
    open_raw, room_raw = _checked_ids(open_id, room_id)
    if expire_at is None:
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise _invalid("ttl must be a whole number of seconds")
        expire_at = int(time.time() if now is None else now) + ttl
    if isinstance(expire_at, bool) or not isinstance(expire_at, int) or not 0 <= expire_at <= _U32:
        raise _invalid(f"expiry must be a unix time between 0 and {_U32}, got {expire_at!r}")
    if version == V1:
        body = (
            struct.pack(">BH", V1, len(open_raw))
            + open_raw
            + _V1_FIXED.pack(int(app_text), 0, expire_at, auth_bits, 0, len(room_raw))
            + room_raw
        )
        return symmetry_encrypt(body, key.encode("ascii"), rng)
    if version == V2:
        claims = AuthClaims(V2, app_text, open_id, room_id, expire_at, auth_bits)
        payload = json.dumps(claims.to_dict(), separators=(",", ":"), sort_keys=True).encode("utf-8")
        signing_input = V2_PREFIX + _b64url(payload)
        return signing_input + b"." + _b64url(_v2_mac(signing_input, key))
    raise _invalid(f"AuthBuffer version must be {V1} or {V2}, got {version!r}")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64url_decode(text: str) -> bytes | None:
    """Strict, canonical base64url without padding, so one token has exactly one spelling."""
    if not _B64_URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if _b64url(data).decode("ascii") == text else None


def _v2_mac(signing_input: bytes, key: str) -> bytes:
    return hmac.new(key.encode("ascii"), signing_input, hashlib.sha256).digest()


# --- decoding -----------------------------------------------------------------------------------


def _normalize(buffer: bytes | str) -> bytes:
    """Apply the module's detection rule: the v2 token or the raw v1 bytes inside ``buffer``."""
    if isinstance(buffer, str):
        if not buffer.isascii():
            raise _auth_failed("AuthBuffer text must be ASCII (a v2 token or base64)")
        buffer = buffer.encode("ascii")
    elif isinstance(buffer, (bytearray, memoryview)):
        buffer = bytes(buffer)
    elif not isinstance(buffer, bytes):
        raise _auth_failed(f"AuthBuffer must be bytes or text, got {type(buffer).__name__}")
    if len(buffer) > MAX_BUFFER_BYTES:
        raise _auth_failed(f"AuthBuffer is {len(buffer)} bytes; real ones are far below {MAX_BUFFER_BYTES}")
    text = buffer.strip()
    if text.startswith(V2_PREFIX):
        return text
    if len(text) % 4 == 0 and _B64_STD.fullmatch(text):
        decoded = base64.b64decode(text, validate=True)
        if base64.b64encode(decoded) == text:  # canonical only: one spelling per buffer
            token = decoded.strip()
            return token if token.startswith(V2_PREFIX) else decoded
    return buffer


def _v2_parts(token: bytes) -> tuple[bytes, dict[str, object], bytes] | None:
    """(signing input, claims JSON object, mac) of a well-formed token, else None; no key needed."""
    parts = token.split(b".")
    if len(parts) != 3 or not token.isascii():
        return None
    payload = _b64url_decode(parts[1].decode("ascii"))
    mac = _b64url_decode(parts[2].decode("ascii"))
    if payload is None or mac is None:
        return None
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        return None
    if not isinstance(fields, dict):
        return None
    return token[: len(parts[0]) + 1 + len(parts[1])], fields, mac


def peek_app_id(buffer: bytes | str) -> str | None:
    """The AppID a v2 token claims, read without the key (not yet authentic); None for v1 or garbage."""
    try:
        data = _normalize(buffer)
    except GmeError:
        return None
    parts = _v2_parts(data) if data.startswith(V2_PREFIX) else None
    app_id = parts[1].get("app_id") if parts else None
    if not isinstance(app_id, str):
        return None
    try:
        return validate_app_id(app_id)
    except IdError:
        return None


NOT_SIGNED_REASON = "AuthBuffer was not signed with this app's key (wrong key or corrupted buffer)"


def _decode_v2(token: bytes, key: str) -> AuthClaims:
    parts = _v2_parts(token)
    if parts is None:
        raise _auth_failed("AuthBuffer looks like an OpenGME v2 token but is malformed (truncated or edited?)")
    signing_input, fields, mac = parts
    if not hmac.compare_digest(mac, _v2_mac(signing_input, key)):
        raise _auth_failed(NOT_SIGNED_REASON)
    if set(fields) != set(_V2_FIELDS) or any(
        type(fields[name]) is not kind for name, kind in _V2_FIELDS.items()
    ):
        raise _auth_failed(f"AuthBuffer v2 claims must be exactly {sorted(_V2_FIELDS)} with the right types")
    claims = AuthClaims(**fields)  # type: ignore[arg-type]
    if claims.version != V2 or not 0 <= claims.expire <= _U32 or not 0 <= claims.auth_bits <= _U32:
        raise _auth_failed("AuthBuffer v2 claims are out of range")
    return claims


def _parse_v1(body: bytes) -> AuthClaims | None:
    """GME's plaintext record, or None unless it is exactly one well-formed version-1 record."""
    if len(body) < 3 or body[0] != V1:
        return None
    (open_len,) = struct.unpack_from(">H", body, 1)
    fixed_at = 3 + open_len
    if len(body) < fixed_at + _V1_FIXED.size:
        return None
    open_raw = body[3:fixed_at]
    app_id, reserved1, expire, auth_bits, reserved3, room_len = _V1_FIXED.unpack_from(body, fixed_at)
    room_raw = body[fixed_at + _V1_FIXED.size :]
    if len(room_raw) != room_len or (reserved1, auth_bits, reserved3) != (0, AUTH_BITS_ALL, 0):
        return None
    try:
        open_id, room_id = open_raw.decode("utf-8"), room_raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return AuthClaims(V1, str(app_id), open_id, room_id, expire, auth_bits)


def _decode_v1(data: bytes, key: str) -> AuthClaims:
    if len(data) > MAX_V1_BYTES:
        raise _auth_failed(
            f"AuthBuffer is {len(data)} bytes; a GME AuthBuffer is at most {MAX_V1_BYTES} "
            "(pass the binary buffer, its base64 text, or an OpenGME v2 token)"
        )
    if len(data) % _BLOCK or len(data) < _MIN_CIPHER:
        raise _auth_failed(
            f"AuthBuffer is {len(data)} bytes; a GME AuthBuffer is a multiple of 8 bytes, at least 16 "
            "(pass the binary buffer, its base64 text, or an OpenGME v2 token)"
        )
    raw_key = key.encode("ascii")
    for tea_key in (raw_key, hashlib.md5(raw_key).digest()):
        body = symmetry_decrypt(data, tea_key)
        if body is not None:
            claims = _parse_v1(body)
            if claims is not None:
                return claims
    raise _auth_failed(NOT_SIGNED_REASON)


V1_OFF_REASON = (
    "AuthBuffer is in GME's v1 format, which is turned off for this app (v1 has no MAC, so whoever holds a "
    "buffer can edit its openid; `opengme app set APPID --v1-auth on` allows it again): sign v2 tokens "
    "instead, gen_auth_buffer(..., version=2)"
)


def decode_auth_buffer(buffer: bytes | str, key: str, *, allow_v1: bool = True) -> AuthClaims:
    """The claims of an authentic buffer (any accepted form); 7006 when the key does not fit or the
    buffer is malformed, 1004 when ``key`` is not a permission key at all (16 printable ASCII chars).

    ``allow_v1=False`` (the app's ``v1_auth`` switch off) refuses every v1 buffer with 7006 before
    decrypting it: v1 has no MAC, so a player can edit the openid of a buffer it was given."""
    key = _checked_key(key)
    data = _normalize(buffer)
    if data.startswith(V2_PREFIX):
        return _decode_v2(data, key)
    if not allow_v1:
        raise _auth_failed(V1_OFF_REASON)
    return _decode_v1(data, key)


# --- verification -------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _room_phrase(room_id: str) -> str:
    return f"room {room_id!r}" if room_id else "voice messages (empty room id)"


def check_claims(
    claims: AuthClaims,
    *,
    app_id: str | int,
    open_id: str | None = None,
    room_id: str | None = None,
    now: float | None = None,
) -> AuthClaims:
    """Whether authentic ``claims`` admit this entry: app id, openid and room (when given), expiry."""
    expected_app = _app_id_text(app_id)
    if claims.app_id != expected_app:
        raise _auth_failed(f"AuthBuffer is for AppID {claims.app_id}, not {expected_app}")
    if open_id is not None and claims.open_id != open_id:
        raise _auth_failed(
            f"AuthBuffer is for openid {claims.open_id!r}, not {open_id!r} (use the openid passed to Init)"
        )
    if room_id is not None and claims.room_id != room_id:
        raise _auth_failed(
            f"AuthBuffer was made for {_room_phrase(claims.room_id)} but the entry is for {_room_phrase(room_id)}"
        )
    current = time.time() if now is None else now
    if current >= claims.expire:
        raise _auth_failed(
            f"AuthBuffer expired at {_utc(claims.expire)} (now {_utc(current)}); ask the backend for a new one"
        )
    return claims


def verify_auth_buffer(
    buffer: bytes | str,
    key: str,
    *,
    app_id: str | int,
    open_id: str | None = None,
    room_id: str | None = None,
    now: float | None = None,
    allow_v1: bool = True,
) -> AuthClaims:
    """Authenticity, then :func:`check_claims`; every refusal is GmeError(AV_ERR_AUTH_FIALD, reason).
    Callers pass the app's ``v1_auth`` switch as ``allow_v1`` (see :func:`decode_auth_buffer`)."""
    expected_app = _app_id_text(app_id)
    claimed_app = peek_app_id(buffer)
    if claimed_app is not None and claimed_app != expected_app:
        # Said before the MAC check: "not signed with this key" would hide the actual mix-up.
        raise _auth_failed(f"AuthBuffer is for AppID {claimed_app}, not {expected_app}")
    claims = decode_auth_buffer(buffer, key, allow_v1=allow_v1)
    return check_claims(claims, app_id=expected_app, open_id=open_id, room_id=room_id, now=now)
