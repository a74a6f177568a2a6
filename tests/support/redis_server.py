"""The Redis of a cluster test: the one on 127.0.0.1:6379 unless ``TEST_REDIS_URL`` says otherwise,
with a key prefix of the test's own (removed afterwards), so runs sharing one Redis never meet.
Where no Redis answers, the tests that need it skip and say so."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A ``redis_url`` with a fresh ``prefix``; its keys are deleted when the block ends."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); start one or set TEST_REDIS_URL")
    prefix = f"opengme-test-{secrets.token_hex(4)}"
    try:
        yield f"{REDIS_URL}?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
