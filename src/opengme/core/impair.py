"""A seeded network impairment model: random loss and random delay for datagrams (pure).

The test hook at the transport: tests and benchmarks pass every datagram through
``Impairment.schedule`` and deliver what it returns at the times it says; the SDK transport does the
same when asked to (``Impairment.parse`` reads the option string, e.g. ``OPENGME_IMPAIR``). Delays are
drawn independently per datagram, so a jitter above the frame interval reorders packets, as a real
path with several queues does. Same seed, same inputs → same schedule.
"""
from __future__ import annotations

import random
from typing import Final

_KEYS: Final = {"loss": "loss", "jitter": "jitter_ms", "delay": "delay_ms", "seed": "seed"}


class Impairment:
    """Drops each datagram with probability ``loss`` and delays the rest by ``delay_ms`` plus a
    uniform random ``0..jitter_ms``."""

    def __init__(self, loss: float = 0.0, jitter_ms: float = 0.0, seed: int = 0, *, delay_ms: float = 0.0) -> None:
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss {loss} outside 0..1")
        if jitter_ms < 0 or delay_ms < 0:
            raise ValueError("jitter_ms and delay_ms must not be negative")
        self.loss = loss
        self.jitter_ms = jitter_ms
        self.delay_ms = delay_ms
        self.seed = seed
        self._rng = random.Random(seed)
        self.sent = 0
        self.dropped = 0

    @classmethod
    def parse(cls, spec: str) -> Impairment:
        """From ``"loss=0.1,jitter=30,delay=20,seed=7"`` (any subset; loss is a fraction, times in ms)."""
        kwargs: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            if not sep or name.strip() not in _KEYS:
                raise ValueError(f"bad impairment option {part!r}; use {', '.join(_KEYS)}=<number>")
            kwargs[_KEYS[name.strip()]] = float(value)
        seed = int(kwargs.pop("seed", 0))
        return cls(seed=seed, **kwargs)

    def schedule(self, datagram: bytes, now: float) -> list[tuple[float, bytes]]:
        """When (seconds, on the caller's clock) to deliver ``datagram``: [] if lost, else one entry."""
        self.sent += 1
        # Draw both numbers for every datagram so the loss pattern does not depend on jitter_ms.
        lost = self._rng.random() < self.loss
        jitter = self._rng.random() * self.jitter_ms
        if lost:
            self.dropped += 1
            return []
        return [(now + (self.delay_ms + jitter) / 1000.0, datagram)]

    def __repr__(self) -> str:
        return (f"Impairment(loss={self.loss}, jitter_ms={self.jitter_ms}, seed={self.seed}, "
                f"delay_ms={self.delay_ms})")
