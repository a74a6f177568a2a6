"""OpenGME: an open, self-hostable game voice engine that behaves like Tencent Cloud GME."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Context", "ErrorCode", "EventType", "Room", "RoomType", "__version__"]


def __getattr__(name: str) -> Any:
    """Lazy exports, so the CLI does not pay for the SDK's network stack when it does not use it."""
    if name in ("Context", "Room"):
        from opengme import sdk

        return getattr(sdk, name)
    if name == "ErrorCode":
        from opengme.errors import ErrorCode

        return ErrorCode
    if name in ("EventType", "RoomType"):
        from opengme import events

        return getattr(events, name)
    raise AttributeError(f"module 'opengme' has no attribute {name!r}")
