"""OpenGME: an open, self-hostable game voice engine that behaves like Tencent Cloud GME.

The public names are imported lazily at run time, so the CLI does not pay for the SDK's network
stack when it does not use it; type checkers see the real classes (the package ships ``py.typed``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opengme.errors import ErrorCode, GmeError
    from opengme.events import EventType, RoomType
    from opengme.sdk import Context, Room

__version__ = "0.1.0"
__all__ = ["Context", "ErrorCode", "EventType", "GmeError", "Room", "RoomType", "__version__"]

_HOMES = {"Context": "opengme.sdk", "Room": "opengme.sdk", "ErrorCode": "opengme.errors",
          "GmeError": "opengme.errors", "EventType": "opengme.events", "RoomType": "opengme.events"}


def __getattr__(name: str) -> Any:
    """Lazy exports: the module that defines ``name`` is imported on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'opengme' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
