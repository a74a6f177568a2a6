"""OpenGME: an open, self-hostable game voice engine that behaves like Tencent Cloud GME."""
from __future__ import annotations

__version__ = "0.1.0"
