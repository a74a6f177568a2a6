"""Streaming recognition while recording (GME: StartRecordingWithStreamingRecognition), for ``Ptt``.

:class:`StreamClient` is one recording's WebSocket to the server (``/v1/ptt/stream``, see
``opengme.server.stt_stream``), run by an event loop in a thread of its own: the recorder hands it each
20 ms frame it writes (encoded here to 16 kHz Opus, about 30 kbit/s), partial hypotheses come back in
:attr:`StreamClient.partials` for ``Ptt`` to report as PTT_STREAMINGRECOGNITION_IS_RUNNING (5007).

When the recording stops, :func:`finish_streaming` (a transfer thread) asks for the final text,
uploads the file, attaches the text to the uploaded message on the server and reports
PTT_STREAMINGRECOGNITION_COMPLETE (5006 {result, file_path, text, file_id}):

- 0 with the final text and the file id;
- 32775 when recording and upload succeeded but recognition failed (the server refused the stream,
  the connection broke, the recogniser failed): the file id is there, so ``speech_to_text`` can retry;
- the upload's code (8193–8200, 7005, 7012) when the upload failed; the text may still be there.

A stream that fails while recording goes on is reported at once as a 5007 with 50012 (the recording
continues; its 5006 will carry 32775).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import numpy as np
import numpy.typing as npt

from opengme.codec.opus import FLUENCY, OpusEncoder
from opengme.errors import ErrorCode
from opengme.events import EventType
from opengme.protocol import stt as sproto
from opengme.sdk.ptt_transfer import Outcome
from opengme.sdk.stt import SpeechReport

log = logging.getLogger("opengme.sdk.stt")

CONNECT_TIMEOUT_S: Final = 10.0
FINAL_TIMEOUT_S: Final = 60.0  # the worker may have a backlog of the recording's last seconds
RUNNING, COMPLETE = EventType.PTT_STREAMINGRECOGNITION_IS_RUNNING, EventType.PTT_STREAMINGRECOGNITION_COMPLETE


def stream_url(server_url: str, language: str) -> str:
    parts = urlsplit(server_url.rstrip("/") + sproto.STREAM_PATH)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path, f"language={quote(language)}", ""))


class StreamClient:
    """One streaming recognition: push frames from the owner's thread, read :attr:`partials`."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.partials: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.failure = ""  # why the stream failed ("" while it is fine)
        self.failure_told = False  # the owner reported the failure (5007 with 50012)
        self.final: str | None = None
        self._url = url
        self._headers = headers
        self._encoder = OpusEncoder(FLUENCY)
        self._loop = asyncio.new_event_loop()
        self._outbox: asyncio.Queue[bytes | dict[str, Any] | None] = asyncio.Queue()
        self._got_final = threading.Event()
        self._attached = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opengme-sdk-stt-stream", daemon=True)
        self._thread.start()

    # --- the owner's side -------------------------------------------------------------------------

    def push(self, frame: npt.NDArray[np.int16]) -> None:
        """A 20 ms 16 kHz frame the recorder wrote (dropped once the stream failed)."""
        if not self.failure and not self._ended.is_set():
            self._post(self._encoder.encode(frame.reshape(-1)))

    def _post(self, item: bytes | dict[str, Any] | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop ended: nobody is listening any more
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, item)

    def finish(self, timeout: float = FINAL_TIMEOUT_S) -> str | None:
        """The final text (None when the stream failed; :attr:`failure` says why)."""
        self._post({"type": "end"})
        if not self._got_final.wait(timeout) and not self.failure:
            self.failure = f"no final text within {timeout:g} s"
        return self.final

    def attach(self, file_id: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
        """Store the final text with the uploaded message on the server; True when it was."""
        self._post({"type": "attach", "file_id": file_id})
        return self._attached.wait(timeout)

    def close(self) -> None:
        self._post(None)
        self._thread.join(CONNECT_TIMEOUT_S)

    # --- the stream's thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        try:
            timeout = aiohttp.ClientWSTimeout(ws_close=2.0)
            async with aiohttp.ClientSession(trust_env=False) as session, session.ws_connect(
                    self._url, headers=self._headers, timeout=timeout, max_msg_size=sproto.MAX_BODY,
                    heartbeat=None) as ws:
                sender = asyncio.create_task(self._send(ws))
                try:
                    await self._receive(ws)
                finally:
                    sender.cancel()
        except aiohttp.WSServerHandshakeError as exc:
            self._fail(f"the server refused the stream (HTTP {exc.status})")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._fail(f"no stream to the server: {exc or type(exc).__name__}")
        finally:
            if not self._got_final.is_set() and not self.failure:
                self._fail("the stream closed before its final text")
            for event in (self._got_final, self._attached, self._ended):
                event.set()

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (item := await self._outbox.get()) is not None:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_json(item)
        await ws.close()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "partial":
                self.partials.put(str(data.get("text", "")))
            elif kind == "final":
                self.final = str(data.get("text", ""))
                self._got_final.set()
            elif kind == "attached":
                self._attached.set()
                break
            elif kind == "error":
                self._fail(f"{data.get('code')}: {data.get('message')}")
                break

    def _fail(self, why: str) -> None:
        if not self.failure:
            self.failure = why
            log.info("streaming recognition failed: %s", why)


def finish_streaming(stream: StreamClient, upload: Callable[[], Outcome], path: str) -> SpeechReport:
    """The final text, the upload, the text attached to the message: the 5006 to report."""
    try:
        text = stream.finish()
        uploaded = upload()
        payload = {"result": ErrorCode.AV_OK, "file_path": path, "text": text or "", "file_id": uploaded.file_id}
        if uploaded.code != ErrorCode.AV_OK:
            return SpeechReport(COMPLETE, {**payload, "result": uploaded.code}, uploaded.message)
        if text is None:
            return SpeechReport(COMPLETE, {**payload, "result": ErrorCode.QAVPTTERROR_STREAMIN_RECORD_SUC_REC_FAIL},
                                f"recognition failed ({stream.failure}); the file is uploaded: retry with speech_to_text")
        if not stream.attach(uploaded.file_id):
            log.info("the streamed text was not stored with %s (speech_to_text will recognise it again)",
                     uploaded.file_id)
        return SpeechReport(COMPLETE, payload)
    finally:
        stream.close()
