"""Token buckets, as Mumble and LiveKit limit what one client may ask of a server: plain state, the
time passed in (monotonic seconds), O(1) per check.

- ``TokenBucket(rate, burst)``: ``take(now)`` spends one token, refilled at ``rate`` per second up to
  ``burst``; ``wait(now)`` is how long until the next token.
- ``BucketTable(rate, burst, capacity)``: one bucket per key (a peer address, say), created on first
  use; past ``capacity`` keys the least recently used one is forgotten (it was full again by then, or
  the table is being flooded with keys, and forgetting one then only lets that key start afresh).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; one per action."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Spend a token; False (nothing spent) when there is none."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 or self.rate <= 0 else (1.0 - self._tokens) / self.rate


class BucketTable:
    """One ``TokenBucket`` per key, at most ``capacity`` keys (least recently used forgotten)."""

    def __init__(self, rate: float, burst: float, capacity: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: Hashable, now: float, rate: float | None = None, burst: float | None = None) -> TokenBucket:
        """The key's bucket; a new one has ``rate``/``burst`` when given, else the table's."""
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = TokenBucket(self.rate if rate is None else rate,
                                                     self.burst if burst is None else burst, now)
            if len(self._buckets) > self.capacity:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return found
