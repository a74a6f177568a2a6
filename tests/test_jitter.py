"""JitterBuffer under simulated networks: a sender emits one 20 ms packet per period, the network
delays (or loses, reorders, duplicates) each one, and the receiver pops every 20 ms."""
from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.core.jitter import JitterBuffer, PlayoutItem, PlayoutKind

FRAME = 0.02
SPF = 960  # samples per 20 ms frame at 48 kHz


def payload(k: int) -> bytes:
    return k.to_bytes(4, "big")


@dataclass
class Run:
    jb: JitterBuffer
    items: list[PlayoutItem]
    times: list[float]

    def frames(self) -> list[int]:
        """Sender frame indices played, in playout order (payload carries the index)."""
        return [int.from_bytes(i.payload, "big") for i in self.items
                if i.kind is PlayoutKind.FRAME and i.payload is not None]

    def first_frame_time(self, k: int) -> float:
        return next(t for t, i in zip(self.times, self.items, strict=False)
                    if i.kind is PlayoutKind.FRAME and i.payload == payload(k))


def simulate(packets: Iterable[tuple[float, int]], *, start_seq: int = 0, ts0: int = 0,
             ts_of: Callable[[int], int] = lambda k: k * SPF, until: float | None = None,
             start: float = 0.007, jb: JitterBuffer | None = None,
             level_of: Callable[[int], int | None] = lambda k: None) -> Run:
    """Deliver ``(arrival_s, k)`` packets (k = sender frame index) and pop every 20 ms from ``start``."""
    arrivals = sorted(packets)
    jb = jb or JitterBuffer()
    end = until if until is not None else arrivals[-1][0] + 1.0
    items: list[PlayoutItem] = []
    times: list[float] = []
    i, t = 0, start
    while t < end:
        while i < len(arrivals) and arrivals[i][0] <= t:
            arrival, k = arrivals[i]
            jb.push((start_seq + k) & 0xFFFF, (ts0 + ts_of(k)) & 0xFFFFFFFF, payload(k), arrival,
                    level_of(k))
            i += 1
        items.append(jb.pop(t))
        times.append(t)
        t += FRAME
    return Run(jb, items, times)


def steady(n: int, delay: Callable[[int], float] = lambda k: 0.05,
           lost: Iterable[int] = ()) -> list[tuple[float, int]]:
    skip = set(lost)
    return [(k * FRAME + delay(k), k) for k in range(n) if k not in skip]


def stall(k: int) -> float:
    """40 ms path; packets 100..109 are held by a 200 ms stall and then land together."""
    return 0.04 + (0.2 - (k - 100) * FRAME if 100 <= k < 110 else 0.0)


def test_in_order_stream_plays_every_frame_in_order_one_frame_behind() -> None:
    run = simulate(steady(200))
    assert run.frames() == list(range(200))
    s = run.jb.stats
    assert (s.lost, s.late, s.dropped, s.duplicates) == (0, 0, 0, 0)
    assert s.target_ms == 20.0
    # Minimum one frame of delay: the first frame plays in the first pop at least 20 ms after it landed.
    assert 0.05 + 0.02 <= run.first_frame_time(0) < 0.05 + 0.04
    # Before that nothing is buffered long enough: silence without concealment.
    assert run.items[0].kind is PlayoutKind.EMPTY


def test_reordered_pairs_are_put_back_in_order() -> None:
    swapped = {k for k in range(10, 300, 10)}  # packet k lands 25 ms late, after k+1
    run = simulate(steady(300, delay=lambda k: 0.05 + (0.025 if k in swapped else 0.0)))
    played = run.frames()
    assert played == sorted(played)
    s = run.jb.stats
    assert s.late <= 1  # at most the first swap, before the target grew to cover it
    assert len(played) + s.late == 300
    assert s.target_ms >= 25.0


def test_random_loss_conceals_each_gap_and_offers_the_next_packet_for_fec() -> None:
    rng = random.Random(7)
    lost = {k for k in range(1, 500) if rng.random() < 0.10}
    run = simulate(steady(500, lost=lost))
    s = run.jb.stats
    played = run.frames()
    assert played == sorted(played) and lost.isdisjoint(played)
    assert s.lost == len(lost) and s.late == 0
    assert len(played) + s.dropped + len(lost) == 500
    concealed = [i for i in run.items if i.kind is PlayoutKind.LOST]
    # Every isolated loss k gets a LOST item carrying packet k+1 for Opus in-band FEC.
    fec = {i.seq: i.payload for i in concealed if i.payload is not None}
    isolated = [k for k in lost if k + 1 not in lost]
    assert all(fec[k] == payload(k + 1) for k in isolated)
    assert s.concealed == len(concealed) >= len(lost)


def test_30ms_jitter_adapts_target_and_keeps_late_packets_rare() -> None:
    rng = random.Random(3)
    delays = [0.04 + rng.uniform(0.0, 0.03) for _ in range(1000)]
    run = simulate(steady(1000, delay=lambda k: delays[k]))
    played = run.frames()
    s = run.jb.stats
    assert played == sorted(played)
    assert s.late <= 10  # < 1 %
    assert 20.0 <= s.target_ms <= 35.0  # the jitter, not the 40 ms of base latency
    assert len(played) + s.late + s.dropped == 1000
    assert abs(s.jitter_ms - 10.0) < 4.0  # RFC 3550 estimate of uniform 0..30 ms is about 10


def test_delay_spike_grows_target_at_once_and_shrinks_slowly() -> None:
    jb = JitterBuffer()
    first = simulate(steady(120, delay=stall), until=2.44, jb=jb)
    assert jb.target_ms >= 180.0  # grew on the spike
    assert first.frames() == sorted(first.frames()) and jb.stats.late == 0
    # The stream goes on over a clean path; a second later the target is still high (slow) ...
    later = simulate(steady(170, delay=lambda k: 0.04)[120:], start=2.447, until=3.44, jb=jb)
    assert jb.target_ms >= 110.0
    # ... and ten seconds later it is back near one frame, the playout delay with it.
    simulate(steady(670, delay=lambda k: 0.04)[170:], start=3.447, until=13.44, jb=jb)
    assert jb.target_ms <= 30.0
    assert jb.stats.delay_ms <= 50.0
    assert later.frames() == sorted(later.frames())
    assert jb.stats.late == jb.stats.lost == 0  # the extra delay was shed by dropping, not losing


def test_sequence_and_timestamp_wraparound() -> None:
    run = simulate(steady(200), start_seq=65_500, ts0=2**32 - 50 * SPF)
    assert run.frames() == list(range(200))
    seqs = [i.seq for i in run.items if i.kind is PlayoutKind.FRAME]
    assert seqs[35] == 65_535 and seqs[36] == 0
    assert run.jb.stats.lost == 0 and run.jb.stats.late == 0


def test_long_silence_then_resume_goes_idle_and_reanchors_the_next_talkspurt() -> None:
    # Talkspurt A: frames 0..49. DTX: the sender sends nothing for 3 s (sequence numbers continue,
    # timestamps jump). Talkspurt B: seq 50..99 with timestamps 150 frames further on.
    def ts_of(k: int) -> int:
        return k * SPF if k < 50 else (k + 150) * SPF

    packets = [(k * FRAME + 0.05, k) for k in range(50)]
    packets += [((k + 150) * FRAME + 0.05, k) for k in range(50, 100)]
    run = simulate(packets, ts_of=ts_of)
    assert run.frames() == list(range(100))
    s = run.jb.stats
    assert s.lost == 0 and s.late == 0 and s.dropped == 0
    kinds = [i.kind for i in run.items]
    end_a = run.items.index(next(i for i in run.items if i.payload == payload(49)))
    start_b = run.items.index(next(i for i in run.items if i.payload == payload(50)))
    gap = kinds[end_a + 1:start_b]
    plc = [k for k in gap if k is PlayoutKind.LOST]
    assert len(plc) <= 5 and gap[: len(plc)] == plc  # a short PLC tail, then ...
    assert gap.count(PlayoutKind.EMPTY) >= 140  # ... idle silence without concealment
    # B is re-anchored: its first frame waits one frame behind its own arrival, like a new stream.
    arrival_b = 200 * FRAME + 0.05
    assert arrival_b + 0.02 <= run.times[start_b] < arrival_b + 0.04


def test_short_pause_keeps_the_next_talkspurt_on_its_own_timing() -> None:
    # A 60 ms DTX pause: shorter than the PLC tail, so the next talkspurt lands while the playout
    # is still concealing. It must wait for its own playout time, not be played on arrival.
    def ts_of(k: int) -> int:
        return k * SPF if k < 50 else (k + 3) * SPF

    packets = [(ts_of(k) / 48000 + 0.05, k) for k in range(100)]
    run = simulate(packets, ts_of=ts_of)
    assert run.frames() == list(range(100))
    start_b = run.first_frame_time(50)
    assert start_b >= ts_of(50) / 48000 + 0.05 + 0.02  # one frame behind its arrival, as A was
    after = run.items[run.times.index(start_b):]
    assert [i.kind for i in after[:50]] == [PlayoutKind.FRAME] * 50  # and then no underruns
    assert run.jb.stats.late == 0


def test_buffer_stretches_to_wait_for_a_reordered_packet_once_target_has_grown() -> None:
    # Every 20th packet (5 %, above the 3 % late budget) takes an 80 ms detour and lands three
    # frames after its successors.
    detour = set(range(50, 1000, 20))
    run = simulate(steady(1000, delay=lambda k: 0.05 + (0.08 if k in detour else 0.0)))
    s = run.jb.stats
    late = set(range(1000)) - set(run.frames())
    # Only the detours of the first seconds are late, while the window learns that they are
    # common (5 %); then the playout waits for each one instead of concealing it.
    assert late <= detour and max(late) < 200 and s.late == len(late)
    assert s.target_ms >= 80.0
    assert len(run.frames()) + s.late + s.dropped == 1000


def test_duplicates_and_late_packets_are_counted_and_never_played() -> None:
    jb = JitterBuffer()
    jb.push(0, 0, payload(0), 0.0)
    jb.push(0, 0, payload(0), 0.001)  # duplicate while buffered
    assert jb.pop(0.0).kind is PlayoutKind.EMPTY
    assert jb.pop(0.02) == PlayoutItem(PlayoutKind.FRAME, payload(0), 0)
    jb.push(0, 0, payload(0), 0.021)  # duplicate after it played
    jb.push(2, 2 * SPF, payload(2), 0.035)
    lost = jb.pop(0.04)  # slot 1 is missing and 2 is here: conceal 1 with FEC from 2
    assert lost == PlayoutItem(PlayoutKind.LOST, payload(2), 1)
    jb.push(1, SPF, payload(1), 0.05)  # too late
    assert jb.pop(0.06) == PlayoutItem(PlayoutKind.FRAME, payload(2), 2)
    s = jb.stats
    assert (s.duplicates, s.late, s.lost, s.concealed) == (2, 1, 1, 1)


def test_network_stall_drops_stale_audio_instead_of_piling_up_delay() -> None:
    # Frames 50..149 are all held until t = 3.05 s (a 2 s outage), then the path is clean again.
    def delay(k: int) -> float:
        return max(0.05, 3.05 - k * FRAME) if 50 <= k < 150 else 0.05

    run = simulate(steady(300, delay=delay))
    s = run.jb.stats
    played = run.frames()
    assert played == sorted(played)
    assert s.dropped > 50  # most of the stale second was skipped
    assert s.target_ms <= run.jb.max_delay_ms
    # After the outage the playout never runs more than max delay (+ one pop) behind.
    assert run.first_frame_time(299) - (299 * FRAME + 0.05) <= (run.jb.max_delay_ms + 40) / 1000


def test_reset_and_a_restarted_sender_start_a_fresh_stream() -> None:
    jb = JitterBuffer()
    run = simulate(steady(50), jb=jb)
    assert len(run.frames()) == 50
    # The sender restarts with a random sequence base far away: after a few strays it resyncs.
    restart = simulate([(2.0 + k * FRAME, k) for k in range(50)], start_seq=40_000, ts0=123_456, jb=jb)
    assert restart.frames() == list(range(2, 50))
    assert jb.stats.dropped == 2
    jb.reset()
    again = simulate([(5.0 + k * FRAME, k) for k in range(20)], start_seq=7, jb=jb)
    assert again.frames() == list(range(20))
    assert jb.stats.buffered == 0


@pytest.mark.parametrize("loud_run", [7, 41, 10_000])
def test_delay_is_cut_by_dropping_quiet_frames_first(loud_run: int) -> None:
    # After the stall the target decays and the playout sheds the extra delay frame by frame.
    # Speech: runs of ``loud_run`` loud frames (-10 dBov) between single quiet ones (-90 dBov).
    def level(k: int) -> int:
        return 90 if k % (loud_run + 1) == loud_run else 10

    run = simulate(steady(1000, delay=stall), level_of=level)
    s = run.jb.stats
    played = run.frames()
    assert played == sorted(played) and s.late == 0 and s.lost == 0
    dropped = set(range(1000)) - set(played)
    assert len(dropped) == s.dropped >= 5
    assert s.delay_ms - s.target_ms <= 20.0  # the extra delay is gone
    if loud_run < 10_000:  # 41 outlasts the loud hold, but a quiet frame is always buffered behind
        assert all(level(k) == 90 for k in dropped)  # only quiet frames were sacrificed
    else:
        assert all(level(k) == 10 for k in dropped)  # no quiet frame came: loud ones, but later


@pytest.mark.parametrize("kwargs", [
    {"frame_ms": 0}, {"min_delay_ms": -1}, {"min_delay_ms": 600}, {"max_delay_ms": 10}, {"quantile": 0.0},
])
def test_invalid_configuration_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.25), st.booleans(), st.booleans()), min_size=1, max_size=120),
       st.integers(0, 65_535))
def test_every_packet_is_accounted_for_and_playout_is_monotonic(
        net: list[tuple[float, bool, bool]], start_seq: int) -> None:
    """Whatever the network does: played + late + dropped + buffered + duplicates == pushes."""
    packets: list[tuple[float, int]] = []
    for k, (extra, lose, duplicate) in enumerate(net):
        if not lose:
            packets.append((k * FRAME + extra, k))
            if duplicate:
                packets.append((k * FRAME + extra + 0.013, k))
    if not packets:
        return
    run = simulate(packets, start_seq=start_seq)
    s = run.jb.stats
    played = run.frames()
    assert played == sorted(set(played))
    assert len(played) + s.late + s.dropped + s.buffered + s.duplicates == len(packets)
    assert s.lost + len(played) + s.dropped <= len(net)


# ------------------------------------------------------------------------------- FEC headroom


def lossy_jittery(n: int, seed: int, loss: float = 0.1, jitter: float = 0.03) -> tuple[list[tuple[float, int]], set[int]]:
    rng = random.Random(seed)
    lost = {k for k in range(5, n) if rng.random() < loss}
    return [(k * FRAME + 0.04 + rng.uniform(0, jitter), k) for k in range(n) if k not in lost], lost


def test_losses_add_one_frame_of_headroom_so_the_fec_packet_is_in_time() -> None:
    packets, lost = lossy_jittery(1500, seed=11)
    run = simulate(packets)
    s = run.jb.stats
    assert s.headroom_ms == pytest.approx(20.0) and 45.0 <= s.target_ms <= 55.0  # 30 ms jitter + a frame
    # After the first seconds (learning the jitter), every isolated loss is recovered from the FEC
    # copy in the next packet, and the timeline never warps (nothing dropped, nothing late).
    fec = {i.seq for i in run.items if i.kind is PlayoutKind.LOST and i.payload is not None}
    isolated = {k for k in lost if k > 250 and k + 1 not in lost}
    assert isolated <= fec
    assert s.dropped == 0 and s.late == 0 and s.lost == len(lost)


def test_without_loss_the_same_jitter_gets_no_headroom() -> None:
    packets, lost = lossy_jittery(1500, seed=11, loss=0.0)
    s = simulate(packets).jb.stats
    assert not lost and s.headroom_ms == 0.0 and 20.0 <= s.target_ms <= 35.0


def test_headroom_is_free_on_a_path_without_jitter() -> None:
    # The one-frame minimum already has packet k+1 in when slot k is due.
    lost = set(range(20, 1000, 9))
    run = simulate(steady(1000, lost=lost))
    s = run.jb.stats
    assert s.target_ms == pytest.approx(20.0) and s.delay_ms < 40.0  # pops run 17 ms out of phase
    fec = {i.seq: i.payload for i in run.items if i.kind is PlayoutKind.LOST}
    assert all(fec[k] == payload(k + 1) for k in lost)


def test_headroom_decays_on_a_clean_path_and_the_next_talkspurt_starts_a_frame_earlier() -> None:
    # 6 s of a lossy, jittery talkspurt, then talkspurts of 1 s with 0.4 s DTX pauses, clean.
    lossy, _ = lossy_jittery(300, seed=4)
    jb = JitterBuffer()
    simulate(lossy, until=6.0, jb=jb)
    before = jb.stats
    assert before.headroom_ms == pytest.approx(20.0)

    def ts_of(k: int) -> int:  # talkspurts of 50 frames, 20 frames of DTX between them
        return (k + 20 * ((k - 300) // 50)) * SPF

    rng = random.Random(5)
    clean = [(ts_of(k) / 48000 + 0.04 + rng.uniform(0, 0.03), k) for k in range(300, 1300)]
    run = simulate(clean, ts_of=ts_of, start=6.007, jb=jb)
    s = jb.stats
    assert s.headroom_ms == 0.0 and s.target_ms <= 35.0
    # Re-anchored with the lower target (pops are out of phase with packets, so up to a frame above).
    assert s.target_ms <= s.delay_ms < s.target_ms + 20.0 and s.delay_ms <= before.delay_ms - 15.0
    assert s.dropped <= before.dropped + 1 and s.late == 0  # re-anchoring did it, a drop at most
    assert run.frames() == sorted(run.frames()) and len(set(range(300, 1300)) - set(run.frames())) <= 1


def test_a_frame_concealed_while_the_buffer_ran_dry_keeps_the_timeline() -> None:
    # No jitter, one-frame delay: 100 and 101 are lost, so when slot 100 is due nothing is buffered
    # (102 is a frame away). That PLC frame stands in for 100: when 102 lands, 101 is recovered from
    # its FEC copy and 102 plays on time; no frame is added to the timeline nor dropped later.
    run = simulate(steady(300, lost={100, 101}))
    around = [(i.kind, i.seq, i.payload) for i in run.items if i.seq is not None and 99 <= i.seq <= 102]
    assert around == [(PlayoutKind.FRAME, 99, payload(99)), (PlayoutKind.LOST, 100, None),
                      (PlayoutKind.LOST, 101, payload(102)), (PlayoutKind.FRAME, 102, payload(102))]
    assert run.first_frame_time(102) - run.first_frame_time(99) == pytest.approx(3 * FRAME)
    s = run.jb.stats
    assert (s.lost, s.dropped, s.late) == (2, 0, 0) and s.delay_ms < 40.0
    assert run.frames() == [k for k in range(300) if k not in {100, 101}]


def test_no_frame_is_shed_for_an_excess_within_the_arrival_noise() -> None:
    """The first packets come 2 ms slow, so the playout anchors 19.5 ms above target and sits 1.5 ms
    beyond target + one frame once the fastest path is known: noise when arrivals jitter by 3 ms
    (as on a loaded host), so no frame is shed; excess delay on a steady path, so one is."""
    def run(jitter_ms: float) -> JitterBuffer:
        jb = JitterBuffer(sample_rate=16_000)
        for k in range(150):
            late_ms = 2.0 if k < 5 else (jitter_ms if k % 2 else 0.0)
            jb.push(k, k * 320, b"x", k * 0.02 + 0.001 + late_ms / 1000, level=90)
            jb.pop(k * 0.02 + 0.0225)
        assert jb.stats.lost == jb.stats.late == 0
        return jb

    assert run(3.0).stats.dropped == 0
    assert run(0.0).stats.dropped == 1


def test_start_due_is_when_a_pop_anchors_the_waiting_talkspurt_and_none_while_playing() -> None:
    # 12 packets on a clean 5 ms path with a little jitter, pops every 20 ms out of phase with them.
    jb = JitterBuffer(min_delay_ms=0.0)
    run = simulate([(k * FRAME + 0.005 + (0.002 if k % 3 else 0.0), k) for k in range(12)], jb=jb, until=0.4)
    assert jb.start_due() is None and not jb.playing  # played out, idle, nothing waiting
    # A new talkspurt (DTX gap: timestamps jump) lands at 1.0 s; the fastest path is 5 ms.
    ts = 50 * SPF
    jb.push(12, ts, payload(12), ts / 48000 + 0.005)
    due = jb.start_due()
    assert due is not None and due == pytest.approx(ts / 48000 + 0.005 + jb.target_ms / 1000, abs=1e-5)
    assert jb.target_ms == pytest.approx(2.0)  # the jitter's quantile is kept as the margin
    assert jb.pop(due - 0.0005).kind is PlayoutKind.EMPTY  # a hair earlier: not yet
    assert jb.pop(due).kind is PlayoutKind.FRAME and jb.playing
    assert jb.start_due() is None  # inside a talkspurt the pops' timing is set
    assert run.frames() == list(range(12))
