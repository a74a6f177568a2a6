"""The pure parts of speech limits and live captions: per-app quotas and sentence boundaries."""
from __future__ import annotations

import pytest

from opengme.core.captions import GAP, LONGEST, Sentences
from opengme.errors import ErrorCode
from opengme.stt.quota import Kind, Quota, QuotaExceeded


def test_a_quota_counts_per_app_and_kind_and_refuses_beyond_the_limit() -> None:
    quota = Quota({Kind.FILE: 2, Kind.STREAM: 1, Kind.CAPTION: 0})
    quota.acquire("a", Kind.FILE)
    with quota.slot("a", Kind.FILE):
        with pytest.raises(QuotaExceeded) as caught:
            quota.acquire("a", Kind.FILE)
        assert caught.value.code == ErrorCode.QAVPTTERROR_S2T_INTERNAL_ERROR and "app a already runs 2" in caught.value.detail
        quota.acquire("b", Kind.FILE)  # another app has its own
        quota.acquire("a", Kind.STREAM)  # another kind too
    quota.acquire("a", Kind.FILE)  # the slot was given back
    for _ in range(100):
        quota.acquire("a", Kind.CAPTION)  # 0 = no limit
    for app, kind in (("a", Kind.FILE), ("a", Kind.FILE), ("b", Kind.FILE), ("a", Kind.STREAM)):
        quota.release(app, kind)
    assert quota.running == {("a", Kind.CAPTION): 100}


def test_sentences_start_with_voice_and_end_after_a_pause_or_when_too_long() -> None:
    s = Sentences()
    assert not s.heard(0.0, False) and s.sentence_id == 0  # silence before speech belongs to no sentence
    assert s.heard(1.0, True) and s.sentence_id == 1
    assert s.heard(1.0 + GAP / 2, False) and not s.should_end(1.0 + GAP / 2)  # a short pause inside it
    assert s.should_end(1.0 + GAP)
    s.end()
    assert not s.heard(2.0, False) and not s.should_end(5.0)
    t = 10.0
    assert s.heard(t, True) and s.sentence_id == 2
    while t < 10.0 + LONGEST - 0.1:
        t += 0.1
        s.heard(t, True)
        assert not s.should_end(t)
    assert s.should_end(10.0 + LONGEST)  # one long stream of speech is cut into sentences
