"""Live captions in rooms (GME: StartRealTimeASR / StopRealTimeASR, event 1093; docs/protocol.md
"Live captions").

**Where the audio is recognised: on the server, from the Opus stream it already relays.** The
speaker's client sends nothing extra (no second upload of its mic, no extra bandwidth or battery on
a phone), the audio is what the room hears, and the recogniser, its model and its limits stay in one
place the operator controls. The relay hands the speaker's payloads to a tap (one list append on the
hot path, nothing else); decoding and recognition run in the streaming workers
(:mod:`opengme.stt.streaming`), never on the event loop.

Each captioned speaker has a :class:`Caption`: a task that sends what the tap kept to its worker
every :data:`TICK` seconds at most (batching), and pushes ``realtime_asr`` to every member of the
room: START (0) when captions begin, CONTENT (1) with the sentence so far whenever it changes and
once more with ``final`` when it ends (:class:`~opengme.core.captions.Sentences`), END (2) when they
stop. Every member of a room belongs to the room's app, whose ``stt`` switch (and arrears) is checked
at the start and every :data:`RECHECK` seconds: turned off, the captions end (END to everyone).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from opengme.codec.opus import FRAME_MS
from opengme.core.captions import CONTENT, END, START, Sentences
from opengme.core.rooms import Member, RoomEvent
from opengme.errors import ErrorCode, GmeError
from opengme.logs import fields
from opengme.protocol import signalling as sig_proto
from opengme.protocol import stt as sproto
from opengme.protocol.messages import Json
from opengme.server import media as media_part
from opengme.server import signalling as signalling_part
from opengme.server import stt as stt_part
from opengme.server.ptt import Refused
from opengme.server.usage import Usage, count_usage
from opengme.stt.quota import Kind
from opengme.stt.streaming import LiveStream, StreamWorkers

if TYPE_CHECKING:
    from opengme.server.app import Server

log = logging.getLogger("opengme.captions")

TICK = 0.2  # seconds between two batches of one speaker's audio to its worker
RECHECK = 10.0  # seconds between two reads of the app's switches while captions run
MAX_PENDING = 250  # packets kept for a worker that lags (5 s); older ones are dropped, counted
CAPTIONS = "opengme_stt_captions_total"


def setup(server: Server) -> None:
    """After signalling, media and stt: the core's caption sink, and a listener for departures."""
    captions = Captions(server)
    signalling = signalling_part.get(server)
    signalling.core.captions = captions
    signalling.room_listeners.append(captions.on_room_event)
    server.on_stop.append(captions.stop_all)  # stops run last-first: before the workers close
    server.metrics.describe(CAPTIONS, "counter", "Caption pushes sent (realtime_asr), by sub_type.", ("sub_type",))


class Caption:
    """One captioned speaker."""

    def __init__(self, captions: Captions, member: Member, language: str) -> None:
        self.captions = captions
        self.member = member
        self.language = language
        self.sentences = Sentences()
        self.pending: list[bytes] = []
        self.voiced = False  # a voiced packet arrived since the last tick
        self.dropped = 0
        self.live: LiveStream | None = None
        self.partial = ""
        self.task: asyncio.Task[None] | None = None

    def tap(self, payload: bytes, voiced: bool) -> None:
        """The relay's tap (hot path): keep the payload."""
        if len(self.pending) < MAX_PENDING:
            self.pending.append(payload)
        else:
            self.dropped += 1
        self.voiced = self.voiced or voiced

    async def run(self) -> None:
        checked = time.monotonic()
        try:
            while True:
                await asyncio.sleep(TICK)
                now = time.monotonic()
                await self.step(now)
                if now - checked >= RECHECK:
                    checked = now
                    if not await self.captions.allowed(self.member):
                        log.info("captions stopped: the app's stt switch is off or it is in arrears",
                                 extra=fields(app_id=self.member.app_id, open_id=self.member.open_id))
                        self.captions.drop(self.member)
                        return
        except GmeError as exc:
            log.warning("captions stopped: the recogniser failed", extra=fields(
                app_id=self.member.app_id, open_id=self.member.open_id, code=int(exc.code), detail=exc.detail))
            self.captions.drop(self.member)

    async def step(self, now: float) -> None:
        """Feed what arrived; push a changed partial; end the sentence after a pause."""
        batch, self.pending = self.pending, []
        voiced, self.voiced = self.voiced, False
        if self.sentences.heard(now, voiced) and batch:
            count_usage(self.captions.server, self.member.app_id, Usage.STT_SECONDS, len(batch) * FRAME_MS / 1000)
            if self.live is None:
                self.live = self.captions.streams().open(self.language)
            text = await self.live.feed(batch)
            if text and text != self.partial:
                self.partial = text
                self.captions.push(self.member, CONTENT, self.sentences.sentence_id, text, False)
        if self.sentences.should_end(now):
            await self.end_sentence()

    async def end_sentence(self) -> None:
        live, self.live = self.live, None
        self.sentences.end()
        if live is not None:
            text = await live.finish()
            if text:
                self.captions.push(self.member, CONTENT, self.sentences.sentence_id, text, True)
        self.partial = ""

    async def close(self) -> None:
        """The last sentence as final, then the stream goes back to its worker."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GmeError):
                await self.task
        with contextlib.suppress(GmeError):
            await self.end_sentence()


class Captions:
    """The live captions of a running server: who is captioned, and the pushes to their rooms."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.active: dict[int, Caption] = {}  # by speaker tinyid
        self._tasks: set[asyncio.Task[None]] = set()  # starts and stops under way (kept from the collector)

    def _spawn(self, job: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def streams(self) -> StreamWorkers:
        return stt_part.get(self.server).streams

    # --- the core's sink --------------------------------------------------------------------------

    def start(self, member: Member, request_id: int, language: str) -> None:
        self._spawn(self._start(member, request_id, language or "en-US"))

    def stop(self, member: Member) -> None:
        caption = self.active.pop(member.tinyid, None)
        if caption is not None:
            self._spawn(self._finish(caption, tell_speaker=True))

    # --- the rest ---------------------------------------------------------------------------------

    async def _start(self, member: Member, request_id: int, language: str) -> None:
        speech = stt_part.get(self.server)
        try:
            app = await self.server.run_blocking(self.server.store.get, member.app_id)
            if app is None:
                raise GmeError(ErrorCode.AV_ERR_SERVER_NO_PERMISSION, "the app no longer exists")
            stt_part.check_switches(app)
            tag = speech.streams.resolve(language)
            if member.tinyid not in self.active:
                speech.quota.acquire(member.app_id, Kind.CAPTION)
        except (GmeError, Refused) as exc:
            code, detail = (exc.code, exc.detail) if isinstance(exc, GmeError) else (exc.code, str(exc))
            self._send(member, sig_proto.error(request_id, code, detail))
            return
        if not self._in_room(member):  # it left while the app was read
            speech.quota.release(member.app_id, Kind.CAPTION)
            return
        if member.tinyid not in self.active:
            caption = self.active[member.tinyid] = Caption(self, member, tag)
            media_part.get(self.server).relay.set_voice_tap(member.tinyid, caption.tap)
            caption.task = asyncio.get_running_loop().create_task(caption.run())
            self.push(member, START)
            log.info("captions on", extra=fields(app_id=member.app_id, room_id=member.room_id,
                                                 open_id=member.open_id, language=tag))
        self._send(member, sproto.asr_started(request_id, self.active[member.tinyid].language))

    async def _finish(self, caption: Caption, tell_speaker: bool) -> None:
        member = caption.member
        media_part.get(self.server).relay.set_voice_tap(member.tinyid, None)
        stt_part.get(self.server).quota.release(member.app_id, Kind.CAPTION)
        await caption.close()
        self.push(member, END, skip=None if tell_speaker else member)
        log.info("captions off", extra=fields(app_id=member.app_id, room_id=member.room_id, open_id=member.open_id,
                                              sentences=caption.sentences.sentence_id, dropped=caption.dropped))

    async def allowed(self, member: Member) -> bool:
        """Whether the app still has speech-to-text on and is not in arrears (read off the loop)."""
        app = await self.server.run_blocking(self.server.store.get, member.app_id)
        return app is not None and app.stt and not app.arrears

    def drop(self, member: Member) -> None:
        """End a speaker's captions from inside (its recogniser failed)."""
        caption = self.active.pop(member.tinyid, None)
        if caption is not None:
            caption.task = None
            self._spawn(self._finish(caption, tell_speaker=True))

    def on_room_event(self, event: RoomEvent) -> None:
        if event.kind == "leave":
            caption = self.active.pop(event.member.tinyid, None)
            if caption is not None:
                self._spawn(self._finish(caption, tell_speaker=False))

    async def stop_all(self) -> None:
        for caption in list(self.active.values()):
            await self._finish(caption, tell_speaker=False)
        self.active.clear()

    def _in_room(self, member: Member) -> bool:
        return signalling_part.get(self.server).registry.is_current(member)

    def push(self, speaker: Member, sub_type: int, sentence_id: int = 0, text: str = "", final: bool = False,
             skip: Member | None = None) -> None:
        """``realtime_asr`` to everyone in the speaker's room (the speaker too, unless ``skip``)."""
        message = sproto.realtime_asr(sub_type, speaker.open_id, sentence_id, text, final)
        try:
            room = signalling_part.get(self.server).registry.room(speaker.app_id, speaker.room_id)
        except GmeError:
            return  # the room is gone
        for member in room.members.values():
            if member is not skip:
                self._send(member, message)
        self.server.metrics.inc(CAPTIONS, sub_type=str(sub_type))

    def _send(self, member: Member, message: Json) -> None:
        signalling_part.get(self.server).delivery.send(member.conn, message)
