"""Streaming recognition of a voice message while it is recorded: ``GET /v1/ptt/stream`` (WebSocket).

The upgrade is authorised like every speech request (AuthBuffer headers, switches, the app's
``stt_max_streams``); a refusal is an ordinary HTTP reply with the JSON refusal body. Then:

- client → binary message: one Opus packet (20 ms, any Opus rate; the SDK sends 16 kHz);
- client → ``{"type": "end"}``: the recording ended; the server answers ``{"type": "final", "text"}``;
- client → ``{"type": "attach", "file_id"}`` after uploading the recording: the final text is stored
  as the text of that message (the caller's own), so ``speech_to_text`` on it answers the same text
  at once; the server answers ``{"type": "attached"}`` and closes;
- server → ``{"type": "partial", "text"}`` whenever the hypothesis changes;
- server → ``{"type": "error", "code", "message"}``, then it closes.

Limits: packets of at most 1275 bytes, at most ``ptt_max_duration_ms`` of audio, and a connection
that sends nothing for ``IDLE_TIMEOUT`` seconds is closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from opengme.codec.opus import FRAME_MS
from opengme.errors import ErrorCode, GmeError
from opengme.server.ptt import Caller, Refused
from opengme.server.usage import Usage, count_usage
from opengme.stt.streaming import MAX_PACKET, LiveStream

if TYPE_CHECKING:
    from opengme.server.stt import Speech

IDLE_TIMEOUT = 30.0
MAX_TEXT_MESSAGE = 4096


class StreamSession:
    """One streaming recognition over one WebSocket."""

    def __init__(self, speech: Speech, caller: Caller, live: LiveStream, ws: web.WebSocketResponse) -> None:
        self.speech = speech
        self.caller = caller
        self.live = live
        self.ws = ws
        self.pending: list[bytes] = []
        self.packets = 0
        self.max_packets = speech.server.settings.ptt_max_duration_ms // FRAME_MS + 50
        self.partial = ""
        self.final: str | None = None
        self._feeding: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while not self.ws.closed:
                msg = await self.ws.receive(timeout=IDLE_TIMEOUT)
                if msg.type == WSMsgType.BINARY:
                    self._packet(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if await self._command(msg.data):
                        break
                else:
                    break
        except (GmeError, Refused) as exc:
            await self._fail(exc)
        except TimeoutError:
            await self._fail(GmeError(ErrorCode.QAVPTTERROR_ERR_VOICE_STREAMING_ASR_ERROR,
                                      f"nothing arrived for {IDLE_TIMEOUT:g} s"))
        finally:
            if self._feeding is not None:
                self._feeding.cancel()
            await self.ws.close()
            count_usage(self.speech.server, self.caller.app.app_id, Usage.STT_SECONDS, self.packets * FRAME_MS / 1000)

    def _packet(self, data: bytes) -> None:
        if self.final is not None:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, "audio after the end of the recording")
        if not data or len(data) > MAX_PACKET:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, f"an audio message is one Opus packet (1–{MAX_PACKET} bytes)")
        self.packets += 1
        if self.packets > self.max_packets:
            raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, "the recording is longer than a voice message may be")
        self.pending.append(data)
        if self._feeding is None or self._feeding.done():
            self._feeding = asyncio.create_task(self._feed())

    async def _feed(self) -> None:
        """Send what has arrived to the worker, one batch at a time; report a changed hypothesis."""
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                text = await self.live.feed(batch)
                if text != self.partial and not self.ws.closed:
                    self.partial = text
                    await self.ws.send_json({"type": "partial", "text": text})
        except GmeError as exc:
            await self._fail(exc)

    async def _command(self, data: str) -> bool:
        """Handle a JSON command; True when the session is over."""
        try:
            command = json.loads(data) if len(data) <= MAX_TEXT_MESSAGE else None
        except ValueError:
            command = None
        kind = command.get("type") if isinstance(command, dict) else None
        if kind == "end" and self.final is None:
            if self._feeding is not None:
                await self._feeding
            if self.pending:
                await self._feed()
            self.final = await self.live.finish()
            await self.ws.send_json({"type": "final", "text": self.final})
            return False
        if kind == "attach" and self.final is not None and isinstance(command, dict):
            await self._attach(str(command.get("file_id", "")))
            return True
        raise GmeError(ErrorCode.AV_ERR_INVALID_ARGUMENT, "commands are {type: end} then {type: attach, file_id}")

    async def _attach(self, file_id: str) -> None:
        assert self.final is not None
        speech = self.speech
        message = await asyncio.to_thread(speech.ptt.message, self.caller.app, file_id.split("?")[0].rsplit("/", 1)[-1])
        if message.open_id != self.caller.open_id:
            raise GmeError(ErrorCode.QAVPTTERROR_S2T_PARAM_NULL, "only the recording's own uploader can attach its text")
        await asyncio.to_thread(speech.transcripts.put, message.file_id, self.live.language, self.final, time.time())
        await self.ws.send_json({"type": "attached"})

    async def _fail(self, exc: GmeError | Refused) -> None:
        code, message = (exc.code, exc.detail) if isinstance(exc, GmeError) else (exc.code, str(exc))
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not self.ws.closed:
                await self.ws.send_json({"type": "error", "code": int(code), "message": message})
        await self.ws.close()
