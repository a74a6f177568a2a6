"""Adaptive jitter buffer for one remote member's 20 ms Opus packets.

Pure: the caller pushes packets with their arrival time and calls :meth:`JitterBuffer.pop` once per
frame period with the current time; nothing here owns a clock, a thread or a socket.

How it plays out
----------------
* Packets are keyed by their sequence number, unwrapped from u16 to an unbounded integer (the RTP
  timestamp, u32 in samples, is unwrapped the same way).
* Each packet's *relative delay* ``d = arrival - timestamp`` (ms) is recorded. The smallest ``d`` in a
  sliding window is the fastest path through the network; ``d - min(d)`` is how much jitter that
  packet saw. The *jitter target* is a high quantile of that jitter over the window, but it grows
  at once to any packet's jitter that exceeds it (spikes) and shrinks slowly (its excess over the
  quantile halves every ``shrink_half_life_s``).
* **FEC headroom**: Opus carries frame k's FEC copy in packet k+1, which arrives a frame later than
  packet k would have; so while losses are seen the **target delay** is the jitter target plus one
  frame, or a loss costs a stretch and a later drop (a time warp) instead of an FEC decode. Losses
  feed a score (+1 per lost slot, capped, halving every ``loss_half_life_s``); the headroom stays
  while it is at least 0.5, so on a clean path it goes away a few seconds after the last loss and the
  next talkspurt starts one frame earlier again. The target never goes below ``min_delay_ms`` (0
  allowed: a clean path then plays a frame at the first pop after it arrived) nor, while losses or
  jitter are seen or the stream is new, below one frame; nor above ``max_delay_ms``; on a path without jitter the headroom costs nothing, since the
  one-frame minimum already has packet k+1 in when slot k is due.
* A talkspurt is *anchored*: its first packet plays when ``now >= ts + min(d) + target``, after which
  one slot is consumed per ``pop``. A timestamp jump with contiguous sequence numbers is a DTX gap:
  the playout goes idle (EMPTY) and the next talkspurt is re-anchored with the then-current target,
  which is where the delay adapts without audible artefacts.
* A missing slot whose successors are buffered is LOST (with the next packet's payload so the caller
  can decode Opus in-band FEC) once the playout runs at least ``target`` behind, or the jitter
  target alone if the next packet is already in (the headroom only waited for it); below that, or
  when the buffer runs dry, the playout *stretches* instead (LOST without advancing: PLC while the
  packet may still come), for at most ``plc_max_ms`` on an empty buffer, then goes idle. So a
  talkspurt's end costs up to ``plc_max_ms`` of fading Opus PLC, as with WebRTC NetEQ's expand.
  A stretch frame played while the slot was already due *stands in* for it: if successors land
  first, the slot is passed without another frame, so a burst loss does not shift the timeline.
* The delay shrinks by dropping a frame when the playout runs more than a frame, plus twice the
  RFC 3550 jitter, above target for a while (a few ms of excess on a noisy path or a loaded host's
  late arrival stamps is noise: a frame shed for it is a time warp for nothing), preferring quiet
  frames (RFC 6464 level from the header): a loud one goes only after a longer hold and never while
  a quiet one is buffered behind it; past ``max_delay_ms`` it drops at once, so the stale audio that
  lands after a network stall is skipped: for voice, being current beats being complete.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

_SEQ_BITS = 16
_TS_BITS = 32
_REESTIMATE_EVERY = 10  # pushes between quantile re-estimates (one sort of the window each)
_SHRINK_HOLD = 10  # pops above target before a quiet frame may be dropped
_LOUD_HOLD = 4 * _SHRINK_HOLD  # ... and before a loud one may be
_SHRINK_NOISE = 2.0  # interarrival jitters of excess over target+frame that are noise, not delay to shed
_QUIET_DBOV = 50  # RFC 6464 level at or below -50 dBov counts as quiet enough to drop
_CONSUMED_WINDOW = 1024  # played/dropped seqs remembered to tell duplicates from late packets
_RESYNC_FRAMES = 1000  # a seq this far from the playout point is a restarted sender ...
_RESYNC_AFTER = 3  # ... once this many such packets arrive in a row
_LOSS_SCORE_ON = 0.5  # loss score at or above which the FEC headroom is kept (a loss < 1 half-life ago)
_JITTERY_MS = 3.0  # RFC 3550 interarrival jitter above which the path is no longer "clean" (see _set_goals)
_CLEAN_AFTER = 10  # packets (200 ms of speech) seen before a path can count as clean
_DUE_EPSILON_S = 1e-6  # start_due's rounding margin, so a pop at exactly that time anchors
_LOSS_SCORE_MAX = 4.0  # cap, so headroom outlives a lossy spell by at most log2(8) = 3 half-lives


def _is_quiet(level: int | None) -> bool:
    """Cheap to drop: RFC 6464 level at or below -50 dBov, or unknown."""
    return level is None or level >= _QUIET_DBOV


def _unwrap(value: int, ref: int | None, bits: int) -> int:
    """Extend a wrapping counter to the integer nearest ``ref`` (RFC 3550 A.1 style)."""
    if ref is None:
        return value
    modulus = 1 << bits
    delta = (value - ref) % modulus
    if delta >= modulus >> 1:
        delta -= modulus
    return ref + delta


class PlayoutKind(Enum):
    """What the caller should render for this frame period."""

    FRAME = "frame"  # decode ``payload``
    LOST = "lost"  # conceal: FEC-decode ``payload`` (the next packet) if given, else PLC
    EMPTY = "empty"  # nothing to play (not started, or idle between talkspurts): silence, no PLC


@dataclass(frozen=True, slots=True)
class PlayoutItem:
    """One playout decision; ``seq`` is the u16 sequence number of the slot (None when EMPTY)."""

    kind: PlayoutKind
    payload: bytes | None = None
    seq: int | None = None


EMPTY = PlayoutItem(PlayoutKind.EMPTY)


@dataclass(frozen=True, slots=True)
class JitterStats:
    """Counters since construction (kept across :meth:`JitterBuffer.reset`) and current delays."""

    delay_ms: float  # how far the last played frame ran behind the fastest packet path
    target_ms: float
    headroom_ms: float  # of the target, on top of the jitter's share: FEC room while losses are seen
    jitter_ms: float  # RFC 3550 interarrival jitter estimate, for reporting
    buffered: int
    late: int  # packets that arrived after their slot was concealed or skipped
    lost: int  # slots that had no packet when they were due
    concealed: int  # LOST items returned (FEC or PLC frames the caller synthesised)
    duplicates: int
    dropped: int  # packets discarded to cut delay, on overflow, or as strays before a resync


class JitterBuffer:
    """Reorders, de-duplicates and times one member's packets; see the module docstring."""

    def __init__(self, frame_ms: int = 20, min_delay_ms: float = 20.0, max_delay_ms: float = 500.0,
                 sample_rate: int = 48000, *, quantile: float = 0.97, window_s: float = 5.0,
                 shrink_half_life_s: float = 2.0, plc_max_ms: float = 100.0,
                 loss_half_life_s: float = 4.0) -> None:
        if frame_ms <= 0 or sample_rate <= 0:
            raise ValueError("frame_ms and sample_rate must be positive")
        if not 0 <= min_delay_ms <= max_delay_ms or max_delay_ms < frame_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms and max_delay_ms >= frame_ms")
        if not 0.0 < quantile <= 1.0 or shrink_half_life_s <= 0 or loss_half_life_s <= 0:
            raise ValueError("need 0 < quantile <= 1 and positive half-lives")
        self.frame_ms = frame_ms
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        self.quantile = quantile
        self.shrink_half_life_s = shrink_half_life_s
        self.plc_max_ms = plc_max_ms
        self.loss_half_life_s = loss_half_life_s
        self._spf = sample_rate * frame_ms // 1000  # samples per frame
        self._ms_per_sample = 1000.0 / sample_rate
        self._window = max(2, round(window_s * 1000 / frame_ms))
        self._capacity = 2 * round(max_delay_ms / frame_ms) + 16
        self._late = self._lost = self._concealed = self._duplicates = self._dropped = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream (buffer, playout point, delay history); counters are kept."""
        self._buf: dict[int, tuple[int, bytes, int | None]] = {}
        self._top_seq: int | None = None
        self._top_ts: int | None = None
        self._next: int | None = None  # next slot to play (extended seq); None until first anchor
        self._play_ts = 0  # extended timestamp expected for slot ``_next`` while anchored
        self._anchored = False
        self._consumed: set[int] = set()
        self._conceal_run = 0
        self._standins = 0  # stretch frames played for the current slot while it was already due
        self._over_run = 0
        self._strays = 0
        self._delays: deque[float] = deque(maxlen=self._window)
        self._min_d = float("inf")
        self._jitter_target = 0.0  # the jitter quantile, raised by spikes; _set_goals adds FEC headroom
        self._goal = self._jitter_goal = self.min_delay_ms  # of the current pop
        self._loss_score = 0.0  # +1 per lost slot, halving every loss_half_life_s
        self._loss_at_ms = 0.0  # playout time the score was last brought up to date
        self._now_ms = 0.0
        self._pushes = 0
        self._last_estimate: float | None = None
        self._prev_d: float | None = None
        self._jitter = 0.0
        self._delay_ms = 0.0  # of the slot being decided
        self._played_delay_ms = 0.0  # of the last frame played (stretching at a talkspurt end aside)

    # ----------------------------------------------------------------------------------- input

    def push(self, seq: int, timestamp: int, payload: bytes, arrival: float,
             level: int | None = None) -> None:
        """Accept a packet (``arrival`` in seconds; ``level`` = header RFC 6464 -dBov, if known)."""
        ext = _unwrap(seq & 0xFFFF, self._top_seq, _SEQ_BITS)
        if self._next is not None and abs(ext - self._next) > _RESYNC_FRAMES:
            self._strays += 1
            if self._strays < _RESYNC_AFTER:
                self._dropped += 1
                return
            self.reset()
            ext = seq & 0xFFFF
        self._strays = 0
        if ext in self._buf or ext in self._consumed:
            self._duplicates += 1
            return
        ts = _unwrap(timestamp & 0xFFFFFFFF, self._top_ts, _TS_BITS)
        self._observe(ts, arrival)  # late packets are the most telling sample of jitter
        if self._next is not None and ext < self._next:
            self._late += 1
            return
        self._buf[ext] = (ts, payload, level)
        if self._top_seq is None or ext > self._top_seq:
            self._top_seq = ext
        if self._top_ts is None or ts > self._top_ts:
            self._top_ts = ts
        if len(self._buf) > self._capacity:
            self._drop(min(self._buf))

    def _observe(self, ts: int, arrival: float) -> None:
        d = arrival * 1000.0 - ts * self._ms_per_sample
        if self._prev_d is not None:
            self._jitter += (abs(d - self._prev_d) - self._jitter) / 16.0
        self._prev_d = d
        self._delays.append(d)
        self._min_d = min(self._min_d, d)
        spike = d - self._min_d
        if spike > self._jitter_target:
            self._jitter_target = min(spike, self.max_delay_ms)
        self._pushes += 1
        if self._pushes % _REESTIMATE_EVERY == 0:
            self._reestimate(arrival)

    def _reestimate(self, arrival: float) -> None:
        """Recompute the window minimum and let the jitter target decay toward the jitter quantile."""
        ordered = sorted(self._delays)
        self._min_d = ordered[0]
        floor = min(ordered[int(self.quantile * (len(ordered) - 1))] - ordered[0], self.max_delay_ms)
        elapsed = 0.0 if self._last_estimate is None else max(0.0, arrival - self._last_estimate)
        self._last_estimate = arrival
        excess = max(0.0, self._jitter_target - floor)
        self._jitter_target = floor + excess * 0.5 ** (elapsed / self.shrink_half_life_s)

    # ------------------------------------------------------------------------------- targets

    def _loss_score_at(self, now_ms: float) -> float:
        decay: float = 0.5 ** (max(0.0, now_ms - self._loss_at_ms) / (1000.0 * self.loss_half_life_s))
        return self._loss_score * decay

    def _note_loss(self, slots: int) -> None:
        self._loss_score = min(self._loss_score_at(self._now_ms) + slots, _LOSS_SCORE_MAX)
        self._loss_at_ms = self._now_ms
        self._set_goals()

    def _headroom_ms(self) -> float:
        """One frame while packets are being lost, so FEC packet k+1 is in when slot k is due."""
        return float(self.frame_ms) if self._loss_score_at(self._now_ms) >= _LOSS_SCORE_ON else 0.0

    def _set_goals(self) -> None:
        """The delays the playout aims at: the jitter's alone, and with FEC headroom (the target).
        While losses or jitter are seen neither goes below one frame, whatever ``min_delay_ms``
        allows on a clean path: the FEC copy of a lost frame must be in when its slot is due, and a
        talkspurt anchored on a jittery path needs that cushion before the jitter estimate catches up
        (so a stream counts as clean only after its first ``_CLEAN_AFTER`` packets)."""
        headroom = self._headroom_ms()
        rough = headroom > 0 or self._jitter > _JITTERY_MS or self._pushes < _CLEAN_AFTER
        floor = max(self.min_delay_ms, float(self.frame_ms)) if rough else self.min_delay_ms

        def clamp(ms: float) -> float:
            return min(max(ms, floor), self.max_delay_ms)

        self._jitter_goal = clamp(self._jitter_target)
        self._goal = clamp(self._jitter_target + headroom)

    # ---------------------------------------------------------------------------------- output

    def pop(self, now: float) -> PlayoutItem:
        """Decide what to play for the frame period starting at ``now`` (seconds)."""
        now_ms = self._now_ms = now * 1000.0
        self._set_goals()
        while True:
            if not self._anchored and not self._try_anchor(now_ms):
                return EMPTY
            slot = self._next
            assert slot is not None  # anchored implies a playout point
            self._delay_ms = now_ms - self._play_ts * self._ms_per_sample - self._min_d
            packet = self._buf.get(slot)
            if packet is None:
                if self._standins and self._buf:  # concealed already while the buffer was dry
                    self._standins -= 1
                    self._pass_lost()
                    continue
                return self._conceal(slot)
            ts, payload, level = packet
            if ts - self._play_ts > self._spf // 2:  # DTX gap: this packet starts a new talkspurt
                self._anchored = False
                continue
            if self._should_drop(level):
                self._drop(slot)
                continue
            del self._buf[slot]
            self._consume(slot)
            self._play_ts = ts
            self._advance()
            self._conceal_run = self._standins = 0
            self._played_delay_ms = self._delay_ms
            return PlayoutItem(PlayoutKind.FRAME, payload, slot & 0xFFFF)

    @property
    def playing(self) -> bool:
        """Inside a talkspurt (anchored): each pop consumes a slot, so its timing is set."""
        return self._anchored

    def start_due(self) -> float | None:
        """When (s) the oldest buffered packet may start a talkspurt: the first ``pop`` at or after it
        anchors there. None while playing or empty. A caller whose output is idle can pop then,
        rather than wait for its next frame period; the target's margin is kept either way."""
        if self._anchored or not self._buf:
            return None
        self._set_goals()
        ts = self._buf[min(self._buf)][0]
        return (ts * self._ms_per_sample + self._min_d + self._goal) / 1000.0 + _DUE_EPSILON_S

    def _try_anchor(self, now_ms: float) -> bool:
        """Start a talkspurt at the oldest buffered packet once its playout time has come."""
        if not self._buf:
            return False
        start = min(self._buf)
        ts = self._buf[start][0]
        if ts * self._ms_per_sample + self._min_d + self._goal > now_ms:
            return False
        self._skip_to(start)
        self._play_ts = ts
        self._anchored = True
        self._conceal_run = self._over_run = self._standins = 0
        return True

    def _conceal(self, slot: int) -> PlayoutItem:
        """The slot's packet is missing: declare it lost, wait for it (stretch), or go idle.

        It is lost once it is due (the target, FEC headroom included, has passed) with successors
        buffered; and as soon as the jitter alone says it is due if its FEC copy is already here,
        since the headroom was only there to wait for that copy."""
        following = self._buf.get(slot + 1)
        due = self._delay_ms >= (self._jitter_goal if following else self._goal)
        if self._buf and due:
            self._pass_lost()
            self._concealed += 1
            self._conceal_run += 1
            return PlayoutItem(PlayoutKind.LOST, following[1] if following else None, slot & 0xFFFF)
        if not self._buf and self._conceal_run * self.frame_ms >= self.plc_max_ms:
            self._anchored = False  # the stream went quiet (DTX or a long stall): stop concealing
            return EMPTY
        # Stretch: conceal without consuming the slot, so its packet can still play when it lands.
        # If it was due, that frame stands in for it: should successors come first, the slot is
        # passed without another one (no time warp); should the packet itself come, it plays late.
        self._standins += int(due)
        self._concealed += 1
        self._conceal_run += 1
        return PlayoutItem(PlayoutKind.LOST, None, slot & 0xFFFF)

    def _should_drop(self, level: int | None) -> bool:
        """Shed one frame of delay: at once past max delay, else after a hold, quiet frames first."""
        if self._delay_ms > self.max_delay_ms + self.frame_ms:
            return True
        if self._delay_ms - self._goal <= self.frame_ms + _SHRINK_NOISE * self._jitter:
            self._over_run = 0
            return False
        self._over_run += 1
        if _is_quiet(level):
            drop = self._over_run >= _SHRINK_HOLD
        else:  # a loud frame only after a long hold, and never while a quiet one waits behind it
            drop = self._over_run >= _LOUD_HOLD and not any(_is_quiet(p[2]) for p in self._buf.values())
        if drop:
            self._over_run = 0
        return drop

    # ------------------------------------------------------------------------------ bookkeeping

    def _consume(self, seq: int) -> None:
        self._consumed.add(seq)
        self._consumed.discard(seq - _CONSUMED_WINDOW)

    def _pass_lost(self) -> None:
        self._lost += 1
        self._note_loss(1)
        self._advance()

    def _advance(self) -> None:
        assert self._next is not None
        self._next += 1
        self._play_ts += self._spf

    def _skip_to(self, seq: int) -> None:
        """Move the playout point forward to ``seq``; every slot passed over had no packet."""
        if self._next is None:
            self._next = seq
        elif seq > self._next:
            self._lost += seq - self._next
            self._note_loss(seq - self._next)
            self._play_ts += (seq - self._next) * self._spf
            self._next = seq

    def _drop(self, seq: int) -> None:
        """Discard a buffered packet unplayed; at the playout point that moves the point on."""
        del self._buf[seq]
        self._consume(seq)
        self._dropped += 1
        self._skip_to(seq)
        if self._next == seq:
            self._advance()

    @property
    def target_ms(self) -> float:
        """The playout delay aimed at (as of the last pop): jitter target + FEC headroom, clamped."""
        return self._goal

    @property
    def stats(self) -> JitterStats:
        return JitterStats(
            delay_ms=self._played_delay_ms, target_ms=self._goal, headroom_ms=self._goal - self._jitter_goal,
            jitter_ms=self._jitter,
            buffered=len(self._buf), late=self._late, lost=self._lost, concealed=self._concealed,
            duplicates=self._duplicates, dropped=self._dropped,
        )
