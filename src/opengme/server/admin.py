"""Placeholder until the admin part lands."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opengme.server.app import Server


def setup(server: "Server") -> None:
    """Attach nothing yet."""
