"""A market of 1,200 symbols through `python -m pipelines.market` on embedded Flink, against the reference.

Every symbol of the universe trades in every window of a backlog (event time
in the past, record timestamp = event time), with exact duplicates and bad
records among the ticks; the pipeline, with its default 32 state shards and
parallelism 2, reads it as a drain. Every final bar (every DESIGN.md §4
field), every alert id and every dead letter must equal the independent
reference (tests/reference.py), and every tick must be in a final bar or a
dead letter: the shards hold many symbols each, and none may lose, mix up
or hold back another's.
"""
from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from tests import reference
from tests.e2e.live import Collector, final_bars
from tests.e2e.pipeline_process import PipelineProcess

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

SYMBOLS = 1_200
WINDOW_S, LATENESS_S = 5, 2
WINDOW_MS = WINDOW_S * 1000
WINDOWS = 6
TICKS_PER_WINDOW = 3
PANE_FIELDS = ("pane", "pane_index", "is_final")
BAD = [b'{"symbol": "X", "price": -1, "volume": 1, "timestamp": 1764063000000}', b"not json"]


def backlog(start_ms: int, seed: int = 5) -> list[tuple[str, bytes, int]]:
    """(key, value, timestamp) in event-time order: every symbol, every window, duplicates and bad records."""
    rng = random.Random(seed)
    names = [f"U{n:04d}" for n in range(SYMBOLS)]
    prices = {name: rng.uniform(5, 500) for name in names}
    records = []
    for window in range(WINDOWS):
        base = start_ms + window * WINDOW_MS
        ticks = []
        for name in names:
            jump = rng.random() < 0.03
            for _ in range(TICKS_PER_WINDOW):
                prices[name] *= 1 + rng.gauss(0, 0.002) + (0.05 if jump else 0)
                jump = False
                ticks.append((base + rng.randrange(WINDOW_MS - 200), name, round(prices[name], 4),
                              rng.choice([1, 10, 100, 250.5])))
        ticks.sort()
        seqs: Counter = Counter()
        for stamp, name, price, volume in ticks:
            seqs[name] += 1
            value = orjson.dumps({"symbol": name, "price": price, "volume": volume, "timestamp": stamp,
                                  "seq": window * 100 + seqs[name]})
            records.append((name, value, stamp))
            if rng.random() < 0.002:
                records.append((name, value, stamp))   # an exact duplicate, right after
            if rng.random() < 0.0005:
                records.append((name, rng.choice(BAD), stamp))
    return records


def test_a_market_of_1200_symbols_matches_the_reference(kafka_bootstrap, flink_jars, topics, tmp_path):
    import time
    now = int(time.time() * 1000)
    start = (now - 10 * 60_000) // WINDOW_MS * WINDOW_MS
    records = backlog(start)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20})
    for key, value, stamp in records:
        producer.produce(topics.ticks, key=key.encode(), value=value, timestamp=stamp)
        producer.poll(0)
    assert producer.flush(60) == 0
    # One batch, before every tick: all on time (each symbol's ticks are in
    # event-time order on its partition, so the pipeline judges none late).
    expected = reference.analyze([reference.Batch(start - 1, [v for _, v, _ in records],
                                                  [k.encode() for k, _, _ in records])],
                                 window_size_s=WINDOW_S, allowed_lateness_s=LATENESS_S)
    want_bars = expected.final_bars
    assert len(want_bars) == SYMBOLS * WINDOWS

    collector = Collector(kafka_bootstrap, topics)
    args = [f"--bootstrap_servers={kafka_bootstrap}", *topics.pipeline_args(),
            f"--window_size_s={WINDOW_S}", f"--allowed_lateness_s={LATENESS_S}",
            f"--consumer_group=e2e-{topics.ticks}", "--parallelism=2", "--no_resume",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"]
    try:
        with PipelineProcess(args, tmp_path / "pipeline.log") as pipeline:
            def complete(bars, alerts, dead_letters) -> bool:
                got = final_bars(bars)
                return (len(dead_letters) >= len(expected.dead_letters)
                        and sum(1 for key, want in want_bars.items()
                                if key in got and got[key]["is_final"]
                                and got[key]["tick_count"] == want["tick_count"]) == len(want_bars))

            if not collector.wait_for(complete, timeout_s=300):
                bars, _, dead_letters = collector.snapshot()
                got = final_bars(bars)
                missing = [key for key, want in want_bars.items()
                           if key not in got or got[key]["tick_count"] != want["tick_count"]]
                raise AssertionError(f"{len(missing)} of {len(want_bars)} final bars missing or short "
                                     f"(e.g. {missing[:5]}), {len(dead_letters)} dead letters; "
                                     f"pipeline log:\n{pipeline.tail(15)}")
            pipeline.assert_running()
        bars, alerts, dead_letters = collector.snapshot()
    finally:
        collector.close()

    got_bars = final_bars(bars)
    assert set(got_bars) == set(want_bars)
    for key, want in want_bars.items():
        got = got_bars[key]
        mismatched = {f: (got[f], want[f]) for f in want
                      if f not in PANE_FIELDS and not reference.close_enough(got[f], want[f])}
        assert not mismatched, f"{key}: {mismatched}"
        assert got["last_tick_ms"] <= got["window_end"] and got["emitted_at"] >= got["last_tick_ms"]
    assert sorted(a["alert_id"] for a in alerts) == sorted(expected.alerts)
    assert len(expected.alerts) >= 20
    got_dead = sorted((key, letter["reason"]) for key, letter in dead_letters)
    assert got_dead == sorted((d.key, d.reason) for d in expected.dead_letters)
    assert {"duplicate", "invalid_json", "invalid_price"} <= {reason for _, reason in got_dead}
    assert sum(bar["tick_count"] for bar in got_bars.values()) + len(dead_letters) == len(records)
