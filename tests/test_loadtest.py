"""``opengme loadtest``: its pure parts (plan, pacing, statistics) directly, and the command against a
real ``opengme serve`` on 127.0.0.1 (members enter through the signalling and talk through the relay)."""
from __future__ import annotations

import asyncio
import math
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opengme.loadtest import baseline
from opengme.loadtest.pacing import Pacer
from opengme.loadtest.plan import MAX_MEMBERS, Plan, PlanError, is_loopback
from opengme.loadtest.runner import Member, Meter
from opengme.loadtest.stats import Sampler, Timeline, Traffic, comparison, ms, percentile, ratio_text
from opengme.protocol.media import MediaCrypto
from opengme.store import AppStore
from support.processes import ServeProcess, opengme_cmd, start_server

LATENCY = re.compile(r"latency p50 ([\d.]+) / p95 ([\d.]+) / p99 ([\d.]+) ms")


# --- pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[1.0], [3.0, 1.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.linspace(0, 7, 101) ** 2)])
@pytest.mark.parametrize("p", [0.0, 50.0, 95.0, 99.0, 100.0])
def test_percentile_interpolates_like_numpy(values: list[float], p: float) -> None:
    assert percentile(sorted(values), p) == pytest.approx(float(np.percentile(values, p)))


def test_percentile_of_nothing_is_nan_and_rejects_bad_ranks() -> None:
    assert math.isnan(percentile([], 50))
    assert ms([math.nan] * 3) == "n/a"
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_sampler_stays_bounded_and_representative() -> None:
    sampler = Sampler(cap=1000)
    for i in range(100_000):
        sampler.add(i / 100_000)
    assert len(sampler.values) < 1000 and sampler.count == 100_000
    p50, p95, p99 = sampler.percentiles()
    assert p50 == pytest.approx(0.5, abs=0.01) and p95 == pytest.approx(0.95, abs=0.01)
    assert p99 == pytest.approx(0.99, abs=0.01)


def test_pacer_spreads_speakers_over_the_period_and_sends_every_frame_once() -> None:
    pacer = Pacer(count=4, frames=10, start=100.0, period=0.02)
    assert list(pacer.due(99.9)) == []
    assert list(pacer.due(100.0)) == [0]  # speaker 0's first frame
    assert pacer.wait(100.0) == pytest.approx(0.005)  # speaker 1 is due a quarter period later
    assert list(pacer.due(100.011)) == [1, 2]
    assert [pacer.speaker(k) for k in (1, 2, 5)] == [(1, 0), (2, 0), (1, 1)]
    sent = [0, 1, 2]
    t = 100.011
    while not pacer.done:
        t += 0.003
        sent += pacer.due(t)
    assert sent == list(range(40)) and pacer.skipped == 0


def test_pacer_skips_what_it_could_not_send_in_time_and_counts_it() -> None:
    pacer = Pacer(count=2, frames=100, start=0.0, period=0.02, backlog=3)
    assert list(pacer.due(0.0)) == [0]
    assert list(pacer.due(0.05)) == [1, 2, 3, 4, 5] and pacer.skipped == 0  # a short stall: burst
    late = pacer.due(0.5)  # stalled: packets 6..50 due, three periods' worth (the newest) sent
    assert list(late) == [45, 46, 47, 48, 49, 50] and pacer.skipped == 39
    assert list(pacer.due(10.0)) == [194, 195, 196, 197, 198, 199] and pacer.done
    assert pacer.skipped == 200 - 18  # every packet was either sent once or counted as skipped


def test_plan_counts_the_traffic_it_should_produce() -> None:
    plan = Plan(rooms=2, members=3, speakers=2, duration=2.0)
    assert (plan.total, plan.frames, plan.speakers_total) == (6, 100, 4)
    assert plan.expected_rate == 4 * 2 * 50  # each speaker to the two others of its room
    assert [plan.room_of(i) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert [plan.speaks(i) for i in range(6)] == [True, True, False] * 2


@pytest.mark.parametrize(("shape", "fragment"), [
    ((0, 3, 1, 1.0), "--rooms"),
    ((1, 0, 0, 1.0), "--members"),
    ((1, 3, 4, 1.0), "--speakers must be 0..--members (3)"),
    ((MAX_MEMBERS, 2, 1, 1.0), f"cap of {MAX_MEMBERS}"),
    ((1, 3, 1, 0.0), "--duration"),
    ((1, 3, 1, 601.0), "at most 600 s"),
])
def test_plan_refuses_what_it_must_not_do(shape: tuple[int, int, int, float], fragment: str) -> None:
    with pytest.raises(PlanError, match=re.escape(fragment)):
        Plan(*shape)


def test_loopback_names() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["10.0.0.1", "example.com", "0.0.0.0", ""]))


def test_timeline_and_traffic_figures() -> None:
    timeline = Timeline(start=10.0, interval=0.5)
    for i in range(100):
        timeline.received(10.0 + i / 100)
        timeline.latency(10.0 + i / 100, 0.001 * (1 + i % 2))
    times, rates, p50, p99 = timeline.series()
    assert times == [0.5, 1.0] and rates == [100.0, 100.0]
    assert p50 == [pytest.approx(1.5)] * 2 and p99 == [pytest.approx(2.0, abs=0.02)] * 2
    relay, bare = Traffic(seconds=2.0, sent=100, expected=400, received=396, cpu_s=0.004), \
        Traffic(seconds=2.0, sent=100, expected=400, received=400, cpu_s=0.001)
    for t in (relay, bare):
        t.latency.add(0.002 if t is relay else 0.001)
    assert relay.rate == 198.0 and relay.loss == pytest.approx(0.01)
    assert relay.cpu_us_per_packet == pytest.approx(10.1, abs=0.05)
    assert comparison(relay, bare) == ["relay / baseline: 4.0× the CPU per forwarded packet",
                                       "relay / baseline: 0.990× the forwarded rate",
                                       "relay / baseline: 2.0× the median latency"]
    assert [ratio_text(x) for x in (0.0214, 0.98, 1.44, 163.4)] == ["0.021×", "0.98×", "1.4×", "163×"]
    bare.skipped = 3
    assert comparison(relay, bare)[0] == "relay / baseline: the load tester fell behind in a run, so these " \
                                         "ratios measure it too"


# --- the command --------------------------------------------------------------------------------------


def loadtest(served: ServeProcess | None, *args: str, data: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    server = ["--server", served.url, "--data-dir", str(served.data_dir)] if served is not None else []
    extra = ["--data-dir", str(data)] if data is not None else []
    return subprocess.run(opengme_cmd("loadtest", *server, *extra, *args), capture_output=True, text=True,
                          timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def forwarded(stdout: str, name: str) -> tuple[int, int, float]:
    """(received, due, loss %) of the ``name`` line."""
    found = re.search(rf"^{name}: forwarded [\d,]+ packets/s \(([\d,]+) of ([\d,]+) due.*loss ([\d.]+)%$",
                      stdout, re.M)
    assert found, stdout
    return int(found[1].replace(",", "")), int(found[2].replace(",", "")), float(found[3])


def test_a_small_run_enters_everyone_and_counts_what_the_relay_forwards(served: ServeProcess) -> None:
    result = loadtest(served, "--rooms", "2", "--members", "3", "--speakers", "2", "--duration", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "entries: 6 of 6 in" in out
    assert LATENCY.search(out.split("relay:")[0]), out  # entry latency percentiles
    received, due, loss = forwarded(out, "relay")
    expected = 2 * 2 * 2 * 50 * 2  # rooms × speakers × listeners × 50/s × 2 s
    assert due == expected and received >= 0.97 * expected and loss <= 3.0
    counted = re.search(r"^relay: the server counted ([\d,]+) forwarded", out, re.M)
    assert counted and int(counted[1].replace(",", "")) == expected, out  # the relay's own count agrees
    latency = LATENCY.search(out.split("relay: end-to-end")[1])
    assert latency and 0 < float(latency[1]) <= float(latency[3]) < 1000
    assert re.search(r"^relay +[\d.]+/2 s: sent [\d,]+, received", result.stderr, re.M), result.stderr  # live line


@pytest.mark.slow
def test_baseline_and_plot(served: ServeProcess, tmp_path: Path) -> None:
    plot = tmp_path / "load.png"
    result = loadtest(served, "--rooms", "3", "--members", "4", "--speakers", "4", "--duration", "2",
                      "--room-type", "2", "--baseline", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    relay, bare = forwarded(result.stdout, "relay"), forwarded(result.stdout, "baseline")
    assert relay[1] == bare[1] == 3 * 4 * 3 * 100 and relay[0] >= 0.95 * relay[1] and bare[0] >= 0.95 * bare[1]
    assert re.search(r"^relay / baseline: [\d.]+× the CPU per forwarded packet$", result.stdout, re.M), result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.slow
def test_members_refused_by_the_per_address_cap_are_reported_with_the_fix(tmp_path: Path) -> None:
    served = start_server(tmp_path / "data", env={"OPENGME_MAX_IP_CONNECTIONS": "8"})
    try:
        result = loadtest(served, "--rooms", "2", "--members", "5", "--speakers", "1", "--duration", "1")
    finally:
        served.stop()
    assert result.returncode == 1
    assert "entries: 8 of 10" in result.stdout, result.stdout
    failed = re.findall(r"^entries: (\d+) failed: signalling \((?:connect|hello)\): the server (?:refused or )?closed "
                        r"the connection", result.stdout, re.M)
    assert sum(map(int, failed)) == 2, result.stdout
    assert "2 of 10 members did not enter" in result.stderr.splitlines()[-1]
    assert "OPENGME_MAX_IP_CONNECTIONS=0" in result.stderr


def free_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    store = AppStore(data)
    store.create("dev")
    store.close()
    return data


def test_no_server_is_one_line_with_the_hint(registry: Path) -> None:
    url = free_url()
    result = loadtest(None, "--server", url, "--rooms", "1", "--members", "2", "--speakers", "1",
                      "--duration", "1", data=registry)
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"opengme loadtest: cannot reach the server at {url}")
    assert line.endswith(f"(is `opengme serve` running at {url}?)")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--rooms", "1", "--members", "3", "--speakers", "4", "--duration", "1"], "--speakers must be 0..--members"),
    (["--rooms", "500", "--members", "5", "--speakers", "1", "--duration", "1"], "above the cap of 2000"),
    (["--rooms", "1", "--members", "3", "--speakers", "1", "--duration", "-1"], "--duration must be above 0"),
    (["--rooms", "x", "--members", "3", "--speakers", "1", "--duration", "1"], "invalid int value: 'x'"),
    (["--members", "3", "--speakers", "1", "--duration", "1"], "the following arguments are required: --rooms"),
    (["--rooms", "1", "--members", "3", "--speakers", "1", "--duration", "1", "--server", "http://10.9.8.7:8090"],
     "10.9.8.7 is not this machine"),
    (["--rooms", "1", "--members", "3", "--speakers", "1", "--duration", "1", "--server",
      "http://127.0.0.1:8090,http://10.9.8.7:8090"], "10.9.8.7 is not this machine"),
    (["--rooms", "1", "--members", "3", "--speakers", "1", "--duration", "1", "--app", "1400000001"],
     "no app with AppID 1400000001"),
])
def test_wrong_input_is_one_line_and_status_2(registry: Path, args: list[str], fragment: str) -> None:
    result = loadtest(None, *args, data=registry)
    assert result.returncode == 2
    assert fragment in one_line(result)
    assert result.stdout == ""


# --- what arrives from the network ----------------------------------------------------------------------


def _member_meets(datagrams: list[bytes]) -> int:
    """Feed datagrams to a relay-mode member on a live loop; how many it counted as forwarded voice."""
    async def run() -> int:
        meter = Meter()
        meter.start(0.0, 1.0)
        member = Member(0, Plan(1, 2, 1, 1.0), meter)
        member.crypto = MediaCrypto.for_client(bytes(32))
        for data in datagrams:
            member.datagram_received(data, ("127.0.0.1", 9))
        return meter.traffic.received

    return asyncio.run(run())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_a_member_survives_any_datagram(datagrams: list[bytes]) -> None:
    counted = _member_meets(datagrams)
    assert counted == sum(1 for d in datagrams if d and d[0] & 0x1F == 1)  # counted by type, opened or not


def test_the_bare_forwarder_survives_garbage_and_still_forwards() -> None:
    """The baseline forwarder process: random datagrams from a joined and an unknown address, then a
    join and a forwarded datagram still work."""
    proc = subprocess.Popen([sys.executable, "-m", "opengme.loadtest.baseline"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        for s in sockets:
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
        a, b, stranger = sockets
        for s in (a, b):
            s.send(baseline.JOIN + baseline.ROOM.pack(7))
            assert s.recv(64) == baseline.JOIN
        rng = random.Random(18)
        for n in range(300):
            garbage = rng.randbytes(rng.randrange(0, 40))
            (stranger if rng.random() < 0.5 else a).send(b"\0" + garbage if rng.random() < 0.5 else garbage)
            if n % 20 == 19:  # still answering (and paced: a burst larger than a socket buffer is dropped)
                stranger.send(baseline.CPU)
                answer = stranger.recv(64)
                while not answer.startswith(baseline.CPU):  # an answer to garbage that joined a room
                    answer = stranger.recv(64)
                assert len(answer) == len(baseline.CPU) + baseline.SECONDS.size
        b.settimeout(0.5)
        try:  # what a forwarded to b (its garbage that did not start with a zero byte)
            while True:
                b.recv(2048)
        except TimeoutError:
            pass
        b.settimeout(5)
        a.send(b"\x41voice")
        assert b.recv(64) == b"\x41voice"
        assert proc.poll() is None
    finally:
        for s in sockets:
            s.close()
        proc.kill()
        proc.wait()


def test_the_open_file_limit_is_raised_for_the_members_within_the_hard_limit() -> None:
    import resource

    from opengme.loadtest.runner import allow_descriptors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        allow_descriptors(600)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (600 if hard == resource.RLIM_INFINITY
                                                                 else min(600, hard))
        allow_descriptors(300)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 300
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_members_keep_their_signalling_alive_through_a_run_longer_than_the_member_timeout(tmp_path: Path) -> None:
    """With a 1.5 s member timeout, a 4 s run only keeps its members (and its voice) by pinging."""
    served = start_server(tmp_path / "data", env={"OPENGME_HEARTBEAT_INTERVAL": "0.5",
                                                  "OPENGME_MEMBER_TIMEOUT": "1.5"})
    try:
        result = loadtest(served, "--rooms", "1", "--members", "3", "--speakers", "1", "--duration", "4")
    finally:
        served.stop()
    assert result.returncode == 0, result.stderr
    received, due, _ = forwarded(result.stdout, "relay")
    assert due == 2 * 50 * 4 and received >= 0.97 * due, result.stdout


@pytest.mark.slow
def test_a_run_spread_over_two_cluster_nodes_follows_redirects(tmp_path: Path) -> None:
    from test_cluster_nodes import cluster

    caps = {"OPENGME_MAX_IP_CONNECTIONS": "0", "OPENGME_MAX_IP_ENTRY_RATE": "0"}
    with cluster(tmp_path, 2, **caps) as (nodes, _, env):
        result = subprocess.run(opengme_cmd("loadtest", "--server", ",".join(n.url for n in nodes), "--data-dir",
                                            str(tmp_path / "tester"), "--rooms", "4", "--members", "3",
                                            "--speakers", "1", "--duration", "2"),
                                capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert re.search(r"^entries: 12 of 12 in .*; \d+ redirected$", result.stdout, re.M), result.stdout
    received, due, loss = forwarded(result.stdout, "relay")
    assert due == 4 * 50 * 2 * 2 and received > 0.95 * due and loss < 5.0  # every room on one node: everyone hears its speaker
