"""Members around the real relay core in memory: Uplink -> Relay -> Downlink with the real codec and
crypto on a simulated clock, optionally through an ``Impairment``; and the voice-quality measure
(PESQ-WB, longest gap, playout delay) the quality tests and bench/bench_client_cpu.py share.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from itertools import count
from typing import NamedTuple

import numpy as np
from pesq import pesq

from opengme.codec.opus import profile_for
from opengme.core.apm import Switches
from opengme.core.downlink import MIN_DELAY_MS, Downlink
from opengme.core.impair import Impairment
from opengme.core.relay import Relay
from opengme.core.uplink import Uplink
from opengme.events import RoomType
from opengme.protocol.media import MediaCrypto, PacketType
from opengme.sdk.render_clock import RenderClock
from support.audio import OUT_RATE, align, frames_of, resample, speech

TICK = 0.02
START = 10.0  # simulated clock origin (s)


@dataclass
class SimClient:
    """A member's codec pipelines and its crypto, at a made-up address."""

    tinyid: int
    crypto: MediaCrypto
    uplink: Uplink
    downlink: Downlink
    addr: tuple[str, int]


@dataclass
class SimRoom:
    """Members around a real Relay; datagrams to listeners pass through ``impairment`` if given."""

    room_type: RoomType
    tinyids: tuple[int, ...]
    impairment: Impairment | None = None
    noise_suppression: bool | None = None
    switches: Switches | None = None
    min_delay_ms: float = MIN_DELAY_MS
    relay: Relay = field(default_factory=Relay)
    clients: dict[int, SimClient] = field(default_factory=dict)
    _queue: list[tuple[float, int, int, bytes]] = field(default_factory=list)
    _order: count[int] = field(default_factory=count)

    def __post_init__(self) -> None:
        for tinyid in self.tinyids:
            key = os.urandom(32)
            session = self.relay.add_member("room", tinyid, key)  # the uplink header names it
            crypto = MediaCrypto.for_client(key)  # one object for both directions, as a client has
            self.clients[tinyid] = SimClient(
                tinyid, crypto,
                Uplink(self.room_type, session, crypto, noise_suppression=self.noise_suppression,
                       switches=self.switches),
                Downlink(self.room_type, crypto, min_delay_ms=self.min_delay_ms), ("127.0.0.1", 40_000 + tinyid))
        for client in self.clients.values():  # bind each member's address; the relay acknowledges
            for datagram, _ in self.relay.handle_datagram(client.crypto.seal_bind(client.uplink.session_id),
                                                          client.addr, START):
                assert client.downlink.receive(datagram, START) is PacketType.BIND

    def send(self, tinyid: int, datagram: bytes, now: float) -> None:
        """One uplink datagram through the relay and the impairment into the listeners' queues."""
        by_addr = {c.addr: c.tinyid for c in self.clients.values()}
        for out, addr in self.relay.handle_datagram(datagram, self.clients[tinyid].addr, now):
            path = [(now, out)] if self.impairment is None else self.impairment.schedule(out, now)
            for at, data in path:
                heapq.heappush(self._queue, (at, next(self._order), by_addr[addr], data))

    def deliver(self, now: float) -> None:
        while self._queue and self._queue[0][0] <= now:
            at, _, tinyid, data = heapq.heappop(self._queue)
            self.clients[tinyid].downlink.receive(data, at)

    def tick(self, k: int, frames: dict[int, np.ndarray], listeners: tuple[int, ...]) -> dict[int, np.ndarray]:
        """Frame period ``k``: talkers process their frame, packets arrive, listeners render."""
        now = START + k * TICK
        for tinyid, frame in frames.items():
            datagram = self.clients[tinyid].uplink.process(frame, now)
            if datagram is not None:
                self.send(tinyid, datagram, now)
        self.deliver(now)
        return {t: self.clients[t].downlink.render(now) for t in listeners}

    def run(self, sources: dict[int, np.ndarray], listener: int, tail_s: float = 0.5,
            first_tick: int = 0) -> np.ndarray:
        """Everything each talker says (at the uplink rate), then ``tail_s`` of silence; the
        listener's output at the downlink rate."""
        n = profile_for(self.room_type).frame_samples
        per_talker = {t: frames_of(pcm, n) for t, pcm in sources.items()}
        total = max(len(f) for f in per_talker.values()) + round(tail_s / TICK)
        silence = np.zeros(n, dtype=np.int16)
        out = []
        for k in range(total):
            frames = {t: f[k] if k < len(f) else silence for t, f in per_talker.items()}
            out.append(self.tick(first_tick + k, frames, (listener,))[listener])
        return np.concatenate(out)


# --- voice quality ---------------------------------------------------------------------------------

FRAME_16K = 320
GAP_FRAME_DB = 20.0  # an output frame this far below the input's is "not heard"
SPEECH_FLOOR_DB = 35.0  # input frames within this of the loudest frame count as speech
TAIL_S = 0.5


class Heard(NamedTuple):
    """What member 2 heard of the clip, in the figures the quality tests assert and the bench prints."""

    pesq: float  # PESQ-WB of the whole clip
    gap_ms: float  # longest stretch of speech not heard
    delay_ms: float  # listener's mean jitter-buffer playout delay while the clip played


def longest_gap_ms(said: np.ndarray, heard: np.ndarray) -> float:
    """Longest run of speech frames (20 ms) whose aligned output is ``GAP_FRAME_DB`` below the input."""
    n = min(len(said), len(heard)) // FRAME_16K * FRAME_16K
    energy_in = (said[:n].astype(np.float64).reshape(-1, FRAME_16K) ** 2).mean(axis=1) + 1.0
    energy_out = (heard[:n].astype(np.float64).reshape(-1, FRAME_16K) ** 2).mean(axis=1) + 1.0
    db_in, db_out = 10 * np.log10(energy_in), 10 * np.log10(energy_out)
    gap = (db_in > db_in.max() - SPEECH_FLOOR_DB) & (db_out < db_in - GAP_FRAME_DB)
    longest = run = 0
    for frame_is_gap in gap:
        run = run + 1 if frame_is_gap else 0
        longest = max(longest, run)
    return longest * 20.0


def measure(room_type: RoomType, impairment: Impairment | None = None, *, clip: np.ndarray | None = None,
            sent: np.ndarray | None = None, switches: Switches | None = None) -> Heard:
    """A speech clip (16 kHz; the espeak-ng one by default) sent by member 1 and heard by member 2,
    tick by tick so the listener's playout delay can be sampled as it plays. ``sent`` is what the
    mic picks up when it is not the clean clip (speech in noise): PESQ is still against ``clip``."""
    said = speech(16_000) if clip is None else clip
    mic = said if sent is None else sent
    room = SimRoom(room_type, (1, 2), impairment=impairment, switches=switches)
    profile = profile_for(room_type)
    frames = frames_of(resample(mic, 16_000, profile.sample_rate), profile.frame_samples)
    frames += [np.zeros(profile.frame_samples, dtype=np.int16)] * round(TAIL_S / TICK)
    down = room.clients[2].downlink
    out, delays = [], []
    for k, frame in enumerate(frames):
        out.append(room.tick(k, {1: frame}, (2,))[2])
        if (delay := down.stats().delay_ms) > 0:  # 0 until the first frame plays
            delays.append(delay)
    heard = resample(np.concatenate(out), OUT_RATE, 16_000)
    _, cut = align(heard, said, max_lag=16 * 300)
    return Heard(float(pesq(16_000, said, cut, "wb")), longest_gap_ms(said, cut), float(np.mean(delays)))


# --- mouth-to-ear on the simulated clock -----------------------------------------------------------

CHIRP_PERIOD_S = 0.4


def chirp_train(rate: int, seconds: float) -> np.ndarray:
    """20 ms chirps (400 Hz → 4 kHz, Hann-windowed) every ``CHIRP_PERIOD_S``: sharp correlation peaks."""
    t = np.arange(int(0.02 * rate)) / rate
    click = 12_000 * np.sin(2 * np.pi * (400 * t + 3600 / 0.04 * t ** 2)) * np.hanning(t.size)
    out = np.zeros(int(seconds * rate))
    for start in range(int(0.1 * rate), out.size - t.size, int(CHIRP_PERIOD_S * rate)):
        out[start:start + t.size] = click
    return out.astype(np.int16)


def mouth_to_ear_ms(room_type: RoomType, phase_s: float, seconds: float = 4.0,
                    min_delay_ms: float = MIN_DELAY_MS, *, aligned: bool = False) -> float:
    """Median delay from a chirp's capture to its playout when the listener's render periods start
    ``phase_s`` after the talker's ticks (0 ≤ phase < one frame), on loopback: frame k is complete
    (and sent) at T_k, its first sample was captured a frame earlier; a frame the listener renders at
    t plays over [t, t + 20 ms). The listener's periods run on the SDK's ``RenderClock``; with
    ``aligned`` it moves them to a waiting talkspurt's start, as the SDK engine does with a virtual
    speaker. Device buffers are not included."""
    room = SimRoom(room_type, (1, 2), min_delay_ms=min_delay_ms)
    talker, listener = room.clients[1].uplink, room.clients[2].downlink
    profile = profile_for(room_type)
    rate, n = profile.sample_rate, profile.frame_samples
    said = chirp_train(rate, seconds)
    frames = frames_of(said, n)
    clock = RenderClock(TICK, 5)
    clock.start(START + phase_s)
    rendered: list[tuple[float, np.ndarray]] = []
    k = 0
    while clock.next is not None and clock.next < START + len(frames) * TICK:
        if k < len(frames) and START + k * TICK <= clock.next:
            now = START + k * TICK
            datagram = talker.process(frames[k], now)
            if datagram is not None:
                room.send(1, datagram, now)
            room.deliver(now)
            k += 1
        else:
            now = clock.next
            rendered += [(now, listener.render(now)) for _ in range(clock.take(now))]
        if aligned:
            clock.align(listener.start_due())
    heard = resample(np.concatenate([frame for _, frame in rendered]), OUT_RATE, rate).astype(np.float64)
    play_at = np.repeat([at for at, _ in rendered], n) + np.tile(np.arange(n) / rate, len(rendered))
    period = int(CHIRP_PERIOD_S * rate)
    click = said[int(0.1 * rate):int(0.12 * rate)].astype(np.float64)
    delays = []
    for start in range(int(0.1 * rate), said.size - period, period):
        mouth = START + (start // n - 1) * TICK + (start % n) / rate
        window = np.nonzero((play_at >= mouth) & (play_at < mouth + CHIRP_PERIOD_S))[0]
        lag = int(np.argmax(np.correlate(heard[window[0]:window[-1] + 1], click, "valid")))
        delays.append(play_at[window[0] + lag] - mouth)
    return float(np.median(delays) * 1000)
