"""Server settings: embedded defaults < ``opengme.toml`` < ``OPENGME_*`` variables < command-line flags.

Every source obeys the same rules, so a value means the same wherever it is written:

- Names: the fields of :class:`Settings`, as TOML keys (top level or a ``[server]`` table, not both
  for one key), as ``OPENGME_<NAME>`` variables and as ``--<name>`` flags. An unknown name is an
  error in the file and in the environment alike (with a "did you mean"); the clients' variables
  (``OPENGME_URL``, ``OPENGME_TEST_IMPAIR``) are known and are not server settings.
- Values: whole numbers for counts and ports (``8095.9`` is refused, not truncated), numbers for
  seconds, one of the listed words for ``log_level``/``log_format``. Text from the environment or
  the command line is parsed; a TOML value must already have the right type.
- Errors name the place to fix: the file and key, the variable, or the flag.
"""
from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONFIG_FILE = "opengme.toml"
SERVER_TABLE = "server"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_SERVER_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
"""Where ``opengme serve`` listens on its embedded defaults, and so where clients look first."""
ENV_PREFIX = "OPENGME_"
URL_VARIABLE = "OPENGME_URL"
CLIENT_VARIABLES = (URL_VARIABLE, "OPENGME_TEST_IMPAIR")
"""``OPENGME_*`` variables that are not server settings (the server the clients and examples talk to;
the SDK's receive-side test impairment): known, so they are not reported as typos."""
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")
DEFAULT_ORIGIN = "default"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and where it came from."""


@dataclass(frozen=True)
class Settings:
    """Everything ``opengme serve`` can be told. GME's documented timings are the defaults."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("opengme-data")
    udp_port: int = 0  # media relay; 0 = the same number as the HTTP port (or any free port)
    log_level: str = "info"
    log_format: str = "json"  # json: one object per line for machines; text: for people
    # Signalling (GME: 30 s entry timeout, 90 s heartbeat loss, 60 min of reconnect attempts).
    entry_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    member_timeout: float = 90.0
    reconnect_give_up: float = 3600.0
    max_rooms: int = 0  # 0 = no limit
    max_members_per_room: int = 0  # 0 = no limit
    max_message_bytes: int = 65536
    # HTTP: a request's headers must arrive within http_header_timeout of the connection opening (or
    # of the previous check, while no request is in progress), an admin body within http_body_timeout.
    # Connection caps in total and per IP address (0 = none).
    http_header_timeout: float = 10.0
    http_body_timeout: float = 10.0
    max_connections: int = 4096
    max_ip_connections: int = 64
    # Signalling rate limits (token buckets; 0 = none): requests per second per connection and type
    # (bursts of 2 s worth); entries (enter, switch) per minute per connection and per IP address.
    max_request_rate: float = 20.0
    max_entry_rate: int = 30
    max_ip_entry_rate: int = 600
    # Admin API: how far a signed request's timestamp may be from the server's clock.
    admin_max_skew: float = 300.0
    # Voice messages (PTT): upload limits, retention, signed download links.
    ptt_max_bytes: int = 1_048_576  # an upload above this is refused before it is stored
    ptt_max_duration_ms: int = 58_000  # GME's longest message
    ptt_retention_days: float = 90.0  # GME keeps messages 90 days; 0 keeps them forever
    ptt_cleanup_interval: float = 3600.0  # seconds between retention passes
    ptt_link_ttl: float = 600.0  # lifetime of a signed download link (never past its AuthBuffer's)
    ptt_upload_timeout: float = 60.0  # a whole upload's body (1 MiB in 60 s is 140 kbit/s)
    # Speech-to-text: recognition worker processes, and jobs at once per app (GME: 10 / 50 / 50; 0 = no limit).
    stt_workers: int = 2
    stt_max_file_jobs: int = 10  # speech_to_text and text_to_speech requests
    stt_max_streams: int = 50  # streaming recognitions while recording
    stt_max_captions: int = 50  # live captions (start_realtime_asr) in rooms
    public_url: str = ""  # base of file ids (https://voice.example.com); "" = the URL the client used
    # Cluster (issue 18): shared durable tables and voice-message storage; "" = the data directory's.
    database_url: str = ""  # postgresql://user@host/db; "" = SQLite opengme.db in data_dir
    storage_url: str = ""  # s3://bucket/prefix?endpoint=URL&region=R; "" = files in data_dir
    # Scale-out (issue 18): relay processes on this machine, and the Redis that several nodes share.
    workers: int = 1  # media relay processes; 1 = the relay in the server's own process; 0 = one per core
    redis_url: str = ""  # redis://host:port/db; "" = one node, live state in this process
    node_url: str = ""  # how clients reach this node (redirects name it); "" = http://<host>:<port>


@dataclass(frozen=True)
class ResolvedSettings:
    """The effective settings, where each came from, and the settings file that was read (if any)."""

    settings: Settings
    origins: Mapping[str, str]
    """Setting name → ``"default"``, ``"<file>"`` / ``"<file> [server]"``, ``"OPENGME_<NAME>"`` or ``"--<name>"``."""
    config_file: Path | None


_DEFAULTS = Settings()
_NAMES = tuple(f.name for f in fields(Settings))
_CHOICES = {"log_level": LOG_LEVELS, "log_format": LOG_FORMATS}
_PORTS = ("port", "udp_port")
_URL_SCHEMES = {"database_url": ("postgresql", "postgres"), "storage_url": ("s3",), "redis_url": ("redis", "rediss"),
                "node_url": ("http", "https")}
"""Settings that are a URL of one of these schemes, or empty for the embedded default (``_EMPTY_MEANS``)."""
_EMPTY_MEANS = {"database_url": "the data directory", "storage_url": "the data directory",
                "redis_url": "one node", "node_url": "this node's host and port"}


def _parse_int(value: object) -> int:
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError


def _parse_float(value: object) -> float:
    if isinstance(value, str):
        result = float(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ValueError
    if not math.isfinite(result):
        raise ValueError
    return result


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value.strip()


def _parse_path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return Path(value.strip())


# Per type of default: the parser and how a refusal names what is wanted.
_KINDS: dict[type, tuple[Callable[[object], Any], str]] = {
    int: (_parse_int, "a whole number"),
    float: (_parse_float, "a number of seconds"),
    str: (_parse_str, "a string"),
}


def _coerce(name: str, value: object, label: str) -> Any:
    """``value`` for setting ``name`` as its type, checked; ``label`` names it in errors."""
    default = getattr(_DEFAULTS, name)
    parse, wanted = (_parse_path, "a directory path") if isinstance(default, Path) else _KINDS[type(default)]
    try:
        result: Any = parse(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be {wanted}, got {value!r}") from None
    if name in _CHOICES:
        result = result.lower()
        if result not in _CHOICES[name]:
            raise ConfigError(f"{label} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    if isinstance(result, (int, float)) and result < 0:
        raise ConfigError(f"{label} must not be negative, got {value!r}")
    if name in _URL_SCHEMES and result and urlsplit(result).scheme not in _URL_SCHEMES[name]:
        schemes = " or ".join(f"{scheme}://" for scheme in _URL_SCHEMES[name])
        raise ConfigError(f"{label} must be empty ({_EMPTY_MEANS[name]}) or a {schemes} URL, got {value!r}")
    if name in _PORTS and result > 65535:
        raise ConfigError(f"{label} must be 0-65535, got {value!r}")
    return result


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, (*_NAMES, SERVER_TABLE), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _from_file(path: Path) -> dict[str, tuple[object, str, str]]:
    """Setting name → (value, label for errors, origin) from a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    table = data.pop(SERVER_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {SERVER_TABLE!r} must be a table ([{SERVER_TABLE}]), got {table!r}")
    found: dict[str, tuple[object, str, str]] = {}
    for values, where in ((data, ""), (table, f" [{SERVER_TABLE}]")):
        for name, value in values.items():
            if name not in _NAMES:
                raise ConfigError(f"{path}{where}: unknown setting {name!r}{_suggest(name)}; "
                                  f"known: {', '.join(_NAMES)}")
            if name in found:
                raise ConfigError(f"{path}: {name} is set both at the top level and in [{SERVER_TABLE}]; keep one")
            found[name] = (value, f"{path}{where}: {name}", f"{path}{where}")
    return found


def _from_environment(environ: Mapping[str, str]) -> dict[str, tuple[object, str, str]]:
    found: dict[str, tuple[object, str, str]] = {}
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in CLIENT_VARIABLES:
            continue
        name = variable[len(ENV_PREFIX):].lower()
        if name not in _NAMES:
            close = difflib.get_close_matches(name, _NAMES, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
            known = ", ".join(ENV_PREFIX + n.upper() for n in _NAMES)
            raise ConfigError(f"{variable} is not a setting{hint}; known: {known}, and the clients' "
                              f"{', '.join(CLIENT_VARIABLES)}")
        found[name] = (value, variable, variable)
    return found


def flag(name: str) -> str:
    """The command-line flag of a setting: ``log_level`` → ``--log-level``."""
    return "--" + name.replace("_", "-")


def resolve_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ResolvedSettings:
    """Build the effective settings and their origins; ``config_file`` defaults to ``./opengme.toml`` when it exists.

    ``overrides`` are command-line values by setting name (None = not given), text or typed.
    """
    path = config_file if config_file is not None else Path(CONFIG_FILE)
    if config_file is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    read = path if path.is_file() else None
    layers = [
        _from_file(path) if read is not None else {},
        _from_environment(os.environ if environ is None else environ),
        {name: (value, flag(name), flag(name)) for name, value in (overrides or {}).items() if value is not None},
    ]
    values: dict[str, Any] = {}
    origins = dict.fromkeys(_NAMES, DEFAULT_ORIGIN)
    for layer in layers:
        for name, (value, label, origin) in layer.items():
            if name not in _NAMES:
                raise ConfigError(f"{label}: unknown setting {name!r}")
            values[name] = _coerce(name, value, label)
            origins[name] = origin
    return ResolvedSettings(Settings(**values), origins, read)


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """The effective settings (see :func:`resolve_settings`)."""
    return resolve_settings(config_file, environ, overrides).settings


def server_url(text: str, label: str) -> str:
    """A client's server address as a base URL: ``HOST:PORT`` means ``http://HOST:PORT``."""
    given = text.strip()
    url = given if "://" in given else f"http://{given}"
    parts = urlsplit(url)
    try:
        port_ok = parts.port is not None or not parts.netloc.endswith(":")  # .port checks the number
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query or parts.fragment:
        raise ConfigError(f"{label} must be a URL like {DEFAULT_SERVER_URL} (or just HOST:PORT), got {text!r}")
    return url.rstrip("/")


def client_server_url(given: str | None, label: str = "--server", environ: Mapping[str, str] | None = None) -> str:
    """The server a client talks to: ``given`` (a flag), else ``OPENGME_URL``, else the default."""
    if given is not None:
        return server_url(given, label)
    env = os.environ if environ is None else environ
    if env.get(URL_VARIABLE):
        return server_url(env[URL_VARIABLE], URL_VARIABLE)
    return DEFAULT_SERVER_URL
