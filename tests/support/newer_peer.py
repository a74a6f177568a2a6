"""A peer from a later release, simulated by rewriting the text frames one side sends: fields this
release does not know (at the top and inside members and ``media``), an ability it does not know,
and (from the server) a push type it does not know before every frame.

The server's frames leave through aiohttp's ``web.WebSocketResponse`` and the SDK's through
``ClientWebSocketResponse``, so patching one class changes one direction only, even with a server
and SDK contexts in the same process.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

EXTRA_FIELDS: dict[str, Any] = {"x_future": {"nested": [1, "two", None]}, "trace_id": "4f1c-9a"}
UNKNOWN_PUSH: dict[str, Any] = {"type": "future_push", "zone": {"x": 1.5, "y": -2}}
UNKNOWN_ABILITY = "holograms"

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


def with_unknowns(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with fields (and, in ``hello``/``hello_ok``, an ability) a current reader does not know."""
    grown = {**message, **EXTRA_FIELDS}
    for member in grown.get("members", []):
        member["team"] = "red"
    if isinstance(grown.get("media"), dict):
        grown["media"]["relay_hint"] = "eu-1"
    if isinstance(grown.get("abilities"), list):
        grown["abilities"] = [*grown["abilities"], UNKNOWN_ABILITY]
    return grown


def newer_client(monkeypatch: pytest.MonkeyPatch, rewrite: Rewrite = with_unknowns) -> None:
    """Every request the SDK sends is rewritten (by default: grown by ``with_unknowns``)."""
    original = aiohttp.ClientWebSocketResponse.send_str

    async def send_str(self: aiohttp.ClientWebSocketResponse, data: str, compress: int | None = None) -> None:
        await original(self, json.dumps(rewrite(json.loads(data))), compress)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "send_str", send_str)


def newer_server(monkeypatch: pytest.MonkeyPatch, rewrite: Rewrite = with_unknowns, unknown_push: bool = True) -> None:
    """Every frame the server sends is rewritten, and preceded by ``UNKNOWN_PUSH`` when asked."""
    original = web.WebSocketResponse.send_str

    async def send_str(self: web.WebSocketResponse, data: str, compress: int | None = None) -> None:
        if unknown_push:
            await original(self, json.dumps(UNKNOWN_PUSH), compress)
        await original(self, json.dumps(rewrite(json.loads(data))), compress)

    monkeypatch.setattr(web.WebSocketResponse, "send_str", send_str)
