"""The server's speech endpoints at the HTTP/WebSocket level: signalling stays responsive while
recognition runs in the workers, the streaming socket's limits and refusals, and fuzzed request parsers."""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from opengme.authbuffer import gen_auth_buffer
from opengme.codec import voicefile as vf
from opengme.errors import ErrorCode, GmeError
from opengme.protocol import ptt as proto
from opengme.protocol import stt as sproto
from opengme.server import usage
from support.signal_harness import Running
from support.speech import JOHN, JOHN_WORDS, read_wav, words


def headers(srv: Running, open_id: str = "10001") -> dict[str, str]:
    return proto.auth_headers(srv.app.app_id, open_id, gen_auth_buffer(srv.app.app_id, "", open_id, srv.app.key))


async def upload(srv: Running, data: bytes) -> str:
    async with srv.session.post(srv.url + proto.FILES_PATH, data=data, headers=headers(srv)) as reply:
        assert reply.status == 201
        return str((await reply.json())["file_id"])


async def text_of(srv: Running, file_id: str) -> tuple[int, dict[str, object]]:
    async with srv.session.post(sproto.text_url(file_id), json={"language": "en-US"}, headers=headers(srv)) as reply:
        return reply.status, await reply.json()


@pytest.mark.slow
async def test_signalling_round_trip_stays_short_while_recognition_runs(srv: Running, tmp_path: Path) -> None:
    """The server runs in this test's event loop: four recognitions of 7 s of speech keep both workers
    busy for seconds, and pings on the signalling socket are answered meanwhile as fast as before."""
    data = vf.encode_voice_file(tmp_path / "john.ogg", read_wav(JOHN)).read_bytes()
    ids = [await upload(srv, data) for _ in range(4)]
    member = await srv.member("10002")

    async def round_trips(until: asyncio.Future[object] | None, count: int = 20) -> list[float]:
        times: list[float] = []
        while (until is None and len(times) < count) or (until is not None and not until.done()):
            started = time.perf_counter()
            assert (await member.ping())["type"] == "pong"
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)  # within the ping rate limit (20/s)
        return times

    before = await round_trips(None)
    jobs = asyncio.ensure_future(asyncio.gather(*(text_of(srv, i) for i in ids)))
    during = await round_trips(jobs)
    for status, reply in await jobs:
        assert status == 200 and words(str(reply["text"])) >= JOHN_WORDS
    print(f"signalling round trip: median {statistics.median(before) * 1000:.1f} ms idle, "
          f"{statistics.median(during) * 1000:.1f} ms (max {max(during) * 1000:.1f} ms) over "
          f"{len(during)} pings while recognising")
    assert len(during) >= 10, "recognition took seconds, and pings went on meanwhile"
    assert statistics.median(during) < max(0.02, 5 * statistics.median(before))
    assert max(during) < 0.25


async def stream(srv: Running, **kw: object) -> aiohttp.ClientWebSocketResponse:
    return await srv.session.ws_connect(srv.url + sproto.STREAM_PATH, headers=headers(srv), **kw)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_the_stream_socket_refuses_what_is_not_audio_or_a_command(srv: Running) -> None:
    for bad in (b"x" * 2000, "not json", json.dumps({"type": "attach", "file_id": "x"})):
        ws = await stream(srv)
        await (ws.send_bytes(bad) if isinstance(bad, bytes) else ws.send_str(bad))
        reply = await ws.receive_json(timeout=10)
        assert reply["type"] == "error" and reply["code"] == ErrorCode.AV_ERR_INVALID_ARGUMENT, reply
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()
    async with srv.session.get(srv.url + sproto.STREAM_PATH) as reply:  # no AuthBuffer: before any upgrade
        assert reply.status == 401 and (await reply.json())["code"] == ErrorCode.QAVPTTERROR_S2T_APPINFO_UNSET
    async with srv.session.get(srv.url + sproto.STREAM_PATH + "?language=de-DE", headers=headers(srv)) as reply:
        assert reply.status == 400 and "supported: en-US" in (await reply.json())["message"]


@pytest.mark.slow
async def test_beyond_the_stream_limit_the_upgrade_is_refused_with_32769(tmp_path: Path) -> None:
    from opengme.server import stt as stt_part
    from support.signal_harness import running_server

    async with running_server(tmp_path / "data", stt_max_streams=1) as srv:
        first = await stream(srv)
        async with srv.session.get(srv.url + sproto.STREAM_PATH, headers=headers(srv)) as reply:
            assert reply.status == 429 and (await reply.json())["code"] == ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR
        await first.close()
        quota = stt_part.get(srv.server).quota
        for _ in range(100):  # the server notices the close
            if not quota.running:
                break
            await asyncio.sleep(0.05)
        second = await stream(srv)
        await second.send_str(json.dumps({"type": "end"}))
        assert (await second.receive_json(timeout=30)) == {"type": "final", "text": ""}
        await second.close()


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | st.dictionaries(st.sampled_from(["text", "voice_name", "language", "speaking_rate"]),
                         st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
                         ).map(lambda d: json.dumps(d).encode()))
def test_request_parsers_answer_a_request_or_1004(body: bytes) -> None:
    for parse in (sproto.TextRequest.parse, sproto.SpeechRequest.parse):
        try:
            parsed = parse(body)
        except GmeError as exc:
            assert exc.code == ErrorCode.AV_ERR_INVALID_ARGUMENT and exc.detail
        else:
            assert isinstance(parsed.language, str)


@pytest.mark.slow
async def test_the_relay_stays_fast_while_recognition_runs_and_a_speaker_is_captioned(srv: Running,
                                                                                       tmp_path: Path) -> None:
    """Two members on UDP; the speaker is captioned (its packets go to the relay's tap and are recognised)
    while two file recognitions keep the workers busy: every packet still arrives, within milliseconds."""
    from opengme.codec.opus import FLUENCY, OpusEncoder
    from test_server_media import Rig, next_of

    rig = Rig(srv)
    data = vf.encode_voice_file(tmp_path / "john.ogg", read_wav(JOHN)).read_bytes()
    ids = [await upload(srv, data) for _ in range(2)]
    try:
        a, b = await rig.peer("10001", "cap"), await rig.peer("10002", "cap")
        await a.client.send(sproto.asr_start(a.client.next_id(), "en-US"))
        encoder = OpusEncoder(FLUENCY)
        speech = read_wav(JOHN)
        frames = [encoder.encode(speech[i:i + 320]) for i in range(0, len(speech) - 320, 320)]

        async def relay_times(count: int, until: asyncio.Future[object] | None = None) -> list[float]:
            times: list[float] = []
            for n in range(count):
                if until is not None and until.done() and n >= 100:
                    break
                sent = time.perf_counter()
                await a.say(frames[n % len(frames)])
                await b.hear()
                times.append(time.perf_counter() - sent)
                await asyncio.sleep(max(0.0, sent + 0.02 - time.perf_counter()))
            return times

        before = await relay_times(100)
        jobs = asyncio.ensure_future(asyncio.gather(*(text_of(srv, i) for i in ids)))
        during = await relay_times(1000, jobs)
        assert all(status == 200 for status, _ in await jobs)
        assert rig.media.relay.counters.forwarded >= len(before) + len(during)
        print(f"relay: median {statistics.median(before) * 1000:.2f} ms idle, {statistics.median(during) * 1000:.2f} ms "
              f"(max {max(during) * 1000:.1f} ms) over {len(during)} packets while recognising and captioning")
        assert statistics.median(during) < max(0.005, 5 * statistics.median(before))
        assert max(during) < 0.25
        caption = await next_of(b.client, "realtime_asr", timeout=10)
        while caption["sub_type"] != 1:
            caption = await next_of(b.client, "realtime_asr", timeout=10)
        assert caption["open_id"] == "10001" and caption["text"]  # the tapped stream was recognised
    finally:
        for path in rig.paths:
            path.close()


@pytest.mark.slow
async def test_a_stored_text_goes_with_its_message(srv: Running, tmp_path: Path) -> None:
    from opengme.server import ptt as ptt_part
    from opengme.server import stt as stt_part

    file_id = await upload(srv, vf.encode_voice_file(tmp_path / "john.ogg", read_wav(JOHN)).read_bytes())
    status, reply = await text_of(srv, file_id)
    assert status == 200 and reply["cached"] is False
    assert (await text_of(srv, file_id))[1]["cached"] is True
    # The recognised audio counts once in the app's usage (DescribeAppStatistics), the cached answer not.
    today = usage.day_of(time.time())
    seconds = (await usage.get(srv.server).days(srv.app.app_id, today, today))[today][usage.Usage.STT_SECONDS]
    assert 1.0 < seconds < 30.0
    short_id = file_id.rsplit("/", 1)[1]
    transcripts = stt_part.get(srv.server).transcripts
    assert transcripts.get(short_id, "en-US") == reply["text"]
    ptt = ptt_part.get(srv.server)
    assert ptt.storage.delete(short_id)
    await ptt.retain()
    assert transcripts.get(short_id, "en-US") is None
    status, gone = await text_of(srv, file_id)
    assert status == 404 and gone["code"] == ErrorCode.QAVPTTERROR_S2T_PARAM_NULL
