"""Rate control and replay pacing, driven through the real produce loop on a fake clock."""
from __future__ import annotations

import random
import re
import threading
from bisect import bisect_left
from collections.abc import Callable
from itertools import islice
from typing import Any

import pytest

from producer.faults import FaultInjector
from producer.pacing import ReplayPacer, TokenBucket
from producer.publisher import ProducerConfig, run_producer
from producer.records import Record
from producer.simulator import TickSimulator

START_MS = 1_764_063_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    """Stands in for confluent_kafka.Producer in unit tests of the loop: costs time on the fake clock.

    Each produce costs `produce_s`; a poll with a timeout sleeps that long
    plus a random oversleep, like a real OS timer, and delivers everything.
    """

    def __init__(self, clock: FakeClock, produce_s: float = 3e-6, oversleep_s: float = 0.002,
                 on_produce: Callable[[int], None] | None = None) -> None:
        self.clock = clock
        self.produce_s = produce_s
        self.oversleep_s = oversleep_s
        self.rng = random.Random(0)
        self.pending: list[Any] = []
        self.sent: list[tuple[bytes | None, bytes, int, float]] = []
        self.on_produce = on_produce

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery: Any = None,
                timestamp: int = 0) -> None:
        self.clock.now += self.produce_s
        self.sent.append((key, value, timestamp, self.clock.now))
        self.pending.append(on_delivery)
        if self.on_produce:
            self.on_produce(len(self.sent))

    def poll(self, timeout: float = 0) -> int:
        if timeout > 0:
            self.clock.now += timeout + self.rng.uniform(0, self.oversleep_s)
        delivered, self.pending = self.pending, []
        for callback in delivered:
            callback(None, None)
        return len(delivered)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return 0

    def __len__(self) -> int:
        return len(self.pending)


def endless_records() -> FaultInjector:
    return FaultInjector(TickSimulator(seed=1, start_ms=START_MS))


@pytest.mark.parametrize("rate", [10_000, 50_000])
@pytest.mark.parametrize("oversleep_s", [0.0, 0.004])
def test_produce_loop_holds_the_rate_within_5_percent(rate: int, oversleep_s: float) -> None:
    clock = FakeClock()
    producer = FakeProducer(clock, oversleep_s=oversleep_s)
    stats = run_producer(ProducerConfig(), endless_records(), rate=rate, duration_s=2.0,
                         producer=producer, clock=clock, stats_interval_s=0)
    assert stats.stopped_by == "duration"
    assert stats.total_delivered == len(producer.sent)
    achieved = len(producer.sent) / 2.0
    assert abs(achieved / rate - 1) < 0.05, achieved
    # No half second may run ahead of the rate: the bucket starts empty and its burst is bounded.
    sent_at = [at - 1_000.0 for *_, at in producer.sent]
    per_half = [bisect_left(sent_at, start + 0.5) - bisect_left(sent_at, start) for start in (0.0, 0.5, 1.0, 1.5)]
    assert max(per_half) <= rate * 0.5 * 1.05, per_half


def test_a_slow_producer_sends_what_it_can_and_does_not_burst_after_a_stall() -> None:
    clock = FakeClock()
    stalled = []

    def stall_once(n: int) -> None:
        if n == 1_000 and not stalled:  # the broker blocks us for 2 s once
            stalled.append(n)
            clock.now += 2.0

    producer = FakeProducer(clock, oversleep_s=0.0, on_produce=stall_once)
    run_producer(ProducerConfig(), endless_records(), rate=10_000, duration_s=4.0,
                 producer=producer, clock=clock, stats_interval_s=0)
    sent_at = [at for *_, at in producer.sent]
    resumed = next(i for i, at in enumerate(sent_at) if at >= 1_000.0 + 2.1) if stalled else 0
    burst = sum(1 for at in sent_at[resumed:] if at < sent_at[resumed] + 0.05)
    assert burst <= 10_000 * 0.2 + 500 + 10_000 * 0.05  # a bucket's worth (+ a batch), not the 20,000 missed
    assert burst > 10_000 * 0.05 * 2  # but it does catch up a little
    assert len(sent_at) < 10_000 * 4


def test_token_bucket_grants_by_elapsed_time() -> None:
    bucket = TokenBucket(1_000, burst_s=0.1)
    assert bucket.take(50, now=0.0) == 0           # starts empty: no burst at start
    assert bucket.wait_s(0.0) == pytest.approx(0.001)
    assert bucket.take(50, now=0.010) == 10
    assert bucket.take(50, now=0.010) == 0
    assert bucket.take(500, now=10.0) == 100       # capped at burst_s worth
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_stop_ends_the_loop_and_flushes() -> None:
    clock = FakeClock()
    stop = threading.Event()
    producer = FakeProducer(clock, on_produce=lambda n: stop.set() if n == 2_000 else None)
    stats = run_producer(ProducerConfig(), endless_records(), rate=10_000, stop=stop,
                         producer=producer, clock=clock, stats_interval_s=0)
    assert stats.stopped_by == "stopped"
    assert stats.ok and 2_000 <= stats.total_delivered <= 2_500


def records_at(offsets_ms: list[int]) -> list[Record]:
    return [Record("tick", b"X", b"{}", START_MS + offset) for offset in offsets_ms]


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_replay_sends_each_record_at_its_event_time_over_speed(speed: float) -> None:
    offsets = [0, 0, 500, 1_000, 1_000, 4_000, 2_000, 10_000]  # one out of order
    clock = FakeClock()
    producer = FakeProducer(clock, oversleep_s=0.001)
    pacer = ReplayPacer(records_at(offsets), speed)
    stats = run_producer(ProducerConfig(), pacer, pacer=pacer, producer=producer, clock=clock, stats_interval_s=0)
    assert stats.stopped_by == "exhausted" and stats.total_delivered == len(offsets)
    start = producer.sent[0][3]
    for k, ((_, _, ts, at), offset) in enumerate(zip(producer.sent, offsets)):
        # Sent in file order, so a record earlier than one before it goes at once.
        due_s = max(offsets[: k + 1]) / 1000 / speed
        assert ts == START_MS + offset
        assert due_s - 1e-9 <= at - start <= due_s + 0.01


def test_rate_limits_a_bounded_source_and_stops_when_it_runs_out() -> None:
    clock = FakeClock()
    producer = FakeProducer(clock)
    ticks = islice(TickSimulator(seed=2, start_ms=START_MS), 25_000)
    stats = run_producer(ProducerConfig(), FaultInjector(ticks), rate=10_000, producer=producer, clock=clock,
                         stats_interval_s=0)
    assert stats.stopped_by == "exhausted" and stats.total_delivered == 25_000
    assert 2.4 <= producer.sent[-1][3] - 1_000.0 <= 2.6


def test_stats_line_reports_target_actual_delivered_failed_and_queue(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="producer.publisher")
    clock = FakeClock()
    run_producer(ProducerConfig(), endless_records(), rate=10_000, duration_s=3.0, producer=FakeProducer(clock),
                 clock=clock, stats_interval_s=1.0)
    lines = [r.getMessage() for r in caplog.records if "actual" in r.getMessage()]
    assert len(lines) >= 3
    match = re.search(r"target 10000/s actual (\d+)/s produced \d+ delivered (\d+) failed 0 queued \d+", lines[1])
    assert match and abs(int(match.group(1)) - 10_000) < 500
