"""Server settings: embedded defaults < ``opengme.toml`` < ``OPENGME_*`` variables < command-line flags."""
from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

CONFIG_FILE = "opengme.toml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_SERVER_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
"""Where ``opengme serve`` listens on its embedded defaults, and so where clients look first."""
ENV_PREFIX = "OPENGME_"


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
    # Signalling (GME: 30 s entry timeout, 90 s heartbeat loss, 60 min of reconnect attempts).
    entry_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    member_timeout: float = 90.0
    reconnect_give_up: float = 3600.0
    max_rooms: int = 0  # 0 = no limit
    max_members_per_room: int = 0  # 0 = no limit
    max_message_bytes: int = 65536
    # Admin API: how far a signed request's timestamp may be from the server's clock.
    admin_max_skew: float = 300.0
    # Voice messages (PTT): upload limits, retention, signed download links.
    ptt_max_bytes: int = 1_048_576  # an upload above this is refused before it is stored
    ptt_max_duration_ms: int = 58_000  # GME's longest message
    ptt_retention_days: float = 90.0  # GME keeps messages 90 days; 0 keeps them forever
    ptt_cleanup_interval: float = 3600.0  # seconds between retention passes
    ptt_link_ttl: float = 600.0  # lifetime of a signed download link (never past its AuthBuffer's)
    public_url: str = ""  # base of file ids (https://voice.example.com); "" = the URL the client used

    def with_overrides(self, values: Mapping[str, Any], source: str) -> Settings:
        return replace(self, **_coerce_all(values, source))


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    field = _FIELDS.get(name)
    if field is None:
        raise ConfigError(f"{source}: unknown setting {name!r} (known: {', '.join(sorted(_FIELDS))})")
    kind = type(getattr(Settings(), name))
    try:
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(getattr(Settings(), name), Path):
            return Path(value)
        result = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be a {kind.__name__}, got {value!r}") from None
    if isinstance(result, (int, float)) and result < 0:
        raise ConfigError(f"{source}: {name} must not be negative, got {value!r}")
    if name == "port" and result > 65535:
        raise ConfigError(f"{source}: port must be 0-65535, got {value!r}")
    return result


def _coerce_all(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    return {k: _coerce(k, v, source) for k, v in values.items() if v is not None}


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings; ``config_file`` defaults to ``./opengme.toml`` when it exists."""
    settings = Settings()
    path = config_file if config_file is not None else Path(CONFIG_FILE)
    if config_file is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        data = data.get("server", data)  # both top-level keys and a [server] table are accepted
        settings = settings.with_overrides(data, str(path))
    env = os.environ if environ is None else environ
    from_env = {k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    from_env = {k: v for k, v in from_env.items() if k in _FIELDS}
    settings = settings.with_overrides(from_env, "environment")
    if overrides:
        settings = settings.with_overrides(overrides, "command line")
    return settings

