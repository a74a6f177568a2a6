"""Recognition in worker processes: results, the concurrency limit, and an event loop that stays
responsive while a recording is being recognised."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from opengme.errors import ErrorCode, GmeError
from opengme.stt.base import UnsupportedLanguage
from opengme.stt.pool import PoolBusy, RecognitionPool
from support.speech import JOHN, JOHN_WORDS, read_wav, words

pytestmark = pytest.mark.slow  # starts worker processes that load the model


@pytest.fixture(scope="module")
def pool() -> Iterator[RecognitionPool]:
    pool = RecognitionPool(workers=2, limit=2)
    yield pool
    pool.close()


async def test_a_recording_is_transcribed_in_a_worker_while_the_loop_stays_responsive(pool: RecognitionPool) -> None:
    pcm = read_wav(JOHN)
    job = asyncio.create_task(pool.transcribe(pcm, "en-us"))
    gaps, last = [], time.monotonic()
    while not job.done():
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    assert words(await job) >= JOHN_WORDS
    assert len(gaps) > 20 and max(gaps) < 0.5, "the event loop kept ticking while recognition ran"
    assert pool.running == 0


@pytest.mark.public_surface
async def test_beyond_the_limit_a_job_is_refused_at_once(pool: RecognitionPool) -> None:
    pcm = read_wav(JOHN)
    jobs = [asyncio.create_task(pool.transcribe(pcm)) for _ in range(pool.limit)]
    await asyncio.sleep(0)
    assert pool.running == pool.limit
    with pytest.raises(PoolBusy) as caught:
        await pool.transcribe(pcm)
    assert caught.value.code == ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR and "already running" in caught.value.detail
    for text in await asyncio.gather(*jobs):
        assert words(text) >= JOHN_WORDS
    assert pool.running == 0


async def test_an_unsupported_language_is_refused_before_any_work(pool: RecognitionPool) -> None:
    with pytest.raises(UnsupportedLanguage):
        await pool.transcribe(read_wav(JOHN), "de-DE")
    assert pool.languages == {"en-US"}


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(GmeError) as caught:
        RecognitionPool(workers=0)
    assert caught.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT


async def test_text_to_speech_runs_in_a_worker_and_is_recognised_back(pool: RecognitionPool) -> None:
    pcm = await pool.synthesize("The soldiers walked to the castle in the morning.", "en-US", 1.0)
    assert {"soldiers", "castle"} <= words(await pool.transcribe(pcm))
    with pytest.raises(GmeError) as caught:
        await pool.synthesize("hello", "en-US", 2.0)
    assert caught.value.code == ErrorCode.AV_ERR_INVALID_ARGUMENT and pool.running == 0
