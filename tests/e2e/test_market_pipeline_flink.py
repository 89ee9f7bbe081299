"""The market pipeline end to end: real Kafka → `python -m pipelines.market` on embedded Flink → Kafka.

A scripted market is published in real time (5 s bars, 2 s lateness, so the
test stays short): five symbols over several windows with a >2 % swing,
out-of-order ticks, a duplicate, a late tick within the lateness, a tick far
too late, and one record of each malformed kind. Every final bar, alert id
and dead letter read back from the output topics is compared with the
independent reference (tests/reference.py), and every input record must be
accounted for: in a final bar's tick_count or on the dead-letter topic.

Ticks keep arriving on every partition, then input stops: the last windows
must still close (idle partitions advance the watermark, apache/beam#20908).
"""
from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from runners.topics import TopicSet
from tests import reference
from tests.e2e.live import Collector, RandomWalk, TickScript, final_bars
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

WINDOW_S, LATENESS_S = 5, 2
WINDOW_MS = WINDOW_S * 1000
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"]
WARMUP = ["WARM0", "WARM1", "WARM2"]   # one per input partition
# No ticks in the last QUIET_MS of a window. When KafkaIO has caught up with a
# partition its watermark is the wall clock (CreateTime policy, no delay), so a
# tick still in flight as its window ends would land in a LATE pane instead of
# the ON_TIME one, and the ON_TIME bar is what the cross-window history uses.
# The quiet gap makes the split into panes deterministic; the one deliberate
# late tick below is built so that it cannot change the history.
QUIET_MS = 600


def in_quiet_gap(now_ms: int) -> bool:
    return now_ms % WINDOW_MS >= WINDOW_MS - QUIET_MS
# Fields that depend on when the runner fired a pane, not on the data.
PANE_FIELDS = ("pane", "pane_index", "is_final")

MALFORMED = [  # (key, value): one record of each bad kind of DESIGN.md §3
    ("AAPL", b'{"symbol": "AAPL", "price": 189.2, "volume": 10, "timestamp": '),            # invalid_json
    ("AAPL", b'{"symbol": "AAPL", "volume": 10, "timestamp": 1764063000123}'),             # missing_field
    ("AAPL", b'{"symbol": "AAPL", "price": -3.5, "volume": 10, "timestamp": 1764063000123}'),  # invalid_price
    ("MSFT", b'{"symbol": "MSFT", "price": 401.0, "volume": "ten", "timestamp": 1764063000123}'),  # invalid_volume
    ("MSFT", b'{"symbol": "MSFT", "price": 401.0, "volume": 5, "timestamp": "yesterday"}'),  # invalid_timestamp
    ("BAD SYMBOL", b'{"symbol": "BAD SYMBOL!", "price": 1.0, "volume": 5, "timestamp": 1764063000123}'),  # invalid_symbol
]


def d_raw_kept(reason: str) -> bool:
    return reason not in ("late", "duplicate")


def pipeline_args(topics: TopicSet, bootstrap: str, tmp_path) -> list[str]:
    return [f"--bootstrap_servers={bootstrap}", *topics.pipeline_args(),
            f"--window_size_s={WINDOW_S}", f"--allowed_lateness_s={LATENESS_S}", "--early_firing_s=1",
            f"--consumer_group=e2e-{topics.ticks}", "--parallelism=2", "--no_resume",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"]


def warm_up(script: TickScript, collector: Collector, pipeline: PipelineProcess, timeout_s: float = 300) -> None:
    """Tick on every partition until the pipeline emits its first bar: it is then reading live."""
    walk = RandomWalk(WARMUP, seed=7)

    def tick_every_partition() -> None:
        pipeline.assert_running()
        if not in_quiet_gap(int(time.time() * 1000)):
            for partition, symbol in enumerate(WARMUP):
                script.tick(symbol, walk.next(symbol), walk.volume(), partition=partition)

    wait_for(lambda: collector.snapshot()[0], timeout_s, lambda: f"a bar after the start:\n{pipeline.tail()}",
             between=tick_every_partition, poll_s=0.25)


def play_market(script: TickScript, windows: int = 4) -> None:
    """Publish SYMBOLS in real time for `windows` whole windows, with the faults of the docstring."""
    walk = RandomWalk(SYMBOLS, seed=42)
    now = time.time() * 1000
    start = (int(now) // WINDOW_MS + 1) * WINDOW_MS     # the next window boundary
    time.sleep(max(0.0, (start - now) / 1000))
    done = {"swing": False, "out_of_order": 0, "duplicate": False, "late_ok": False, "too_late": False}
    malformed = list(MALFORMED)
    end = start + windows * WINDOW_MS
    first_prices: dict[int, float] = {}
    while (now := int(time.time() * 1000)) < end:
        window = (now - start) // WINDOW_MS
        into_window = now % WINDOW_MS
        if in_quiet_gap(now):
            time.sleep(0.05)
            continue
        for symbol in SYMBOLS:
            price = walk.next(symbol)
            if symbol == "AAPL":
                first_prices.setdefault(window, price)
            if symbol == "NVDA" and window == 1 and into_window > 2000 and not done["swing"]:
                price *= 1.03      # a >2 % swing inside one bar
                done["swing"] = True
            value = script.tick(symbol, price, walk.volume())
            if symbol == "MSFT" and window == 1 and not done["duplicate"]:
                script.send("MSFT", value, orjson.loads(value)["timestamp"])   # the same record again
                done["duplicate"] = True
        if 1500 < into_window < 4000 and done["out_of_order"] < 3:
            # Older than ticks already sent, but inside the still-open window.
            script.tick("GOOG", walk.next("GOOG"), walk.volume(), timestamp_ms=now - 700)
            done["out_of_order"] += 1
        if window == 2 and into_window > 800 and not done["late_ok"]:
            # The previous window has closed; this is within the 2 s lateness. Volume 0
            # and an earlier time than its close keep the bar's close and volume
            # (what the cross-window history uses) whichever pane takes it.
            script.tick("AAPL", first_prices[1], 0, timestamp_ms=start + 2 * WINDOW_MS - 1500)
            done["late_ok"] = True
        if window == 3 and not done["too_late"]:
            script.tick("AAPL", first_prices[1], 7, timestamp_ms=now - 20_000)   # far past the lateness
            done["too_late"] = True
        if malformed and window >= 1:
            key, value = malformed.pop()
            script.send(key, value, now)
        time.sleep(0.1)
    script.flush()
    assert all(done.values()) and not malformed, done


def test_market_pipeline_on_embedded_flink(kafka_bootstrap, flink_jars, topics, tmp_path):
    collector = Collector(kafka_bootstrap, topics)
    script = TickScript(Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}), topics.ticks)
    log = tmp_path / "pipeline.log"
    try:
        with PipelineProcess(pipeline_args(topics, kafka_bootstrap, tmp_path), log) as pipeline:
            warm_up(script, collector, pipeline)
            play_market(script)
            expected = reference.analyze(script.batches, window_size_s=WINDOW_S, allowed_lateness_s=LATENESS_S)
            want_bars = expected.final_bars

            def complete(bars, alerts, dead_letters) -> bool:
                got = final_bars(bars)
                return (len(dead_letters) >= len(expected.dead_letters)
                        and all(key in got and got[key]["is_final"]
                                and got[key]["tick_count"] == want["tick_count"]
                                for key, want in want_bars.items()))

            # No tick arrives any more: windows must close on idle partitions.
            if not collector.wait_for(complete, timeout_s=180):
                bars, _, dead_letters = collector.snapshot()
                got = final_bars(bars)
                missing = {key: (got.get(key, {}).get("tick_count"), got.get(key, {}).get("pane"),
                                 want["tick_count"])
                           for key, want in want_bars.items()
                           if key not in got or not got[key]["is_final"]
                           or got[key]["tick_count"] != want["tick_count"]}
                reasons = Counter(letter["reason"] for _, letter in dead_letters)
                raise AssertionError(
                    f"outputs incomplete: {len(dead_letters)}/{len(expected.dead_letters)} dead letters "
                    f"{dict(reasons)}, one detail per reason "
                    f"{ {letter['reason']: letter['detail'] for _, letter in reversed(dead_letters)} }, "
                    f"bars (got tick_count, pane, want tick_count) {missing}; "
                    f"pipeline log:\n{pipeline.tail(15)}")
            time.sleep(3)   # anything after completion would be a stray duplicate
            pipeline.assert_running()
        bars, alerts, dead_letters = collector.snapshot()
    finally:
        collector.close()

    got_bars = final_bars(bars)
    assert set(got_bars) == set(want_bars)
    for key, want in want_bars.items():
        got = got_bars[key]
        assert got["is_final"] is True
        mismatched = {f: (got[f], want[f]) for f in want
                      if f not in PANE_FIELDS and not reference.close_enough(got[f], want[f])}
        assert not mismatched, f"{key}: {mismatched}"

    # Volatility alerts may fire on an EARLY pane with a smaller value than the
    # final bar's, so ids (symbol, window, type) are what must match.
    assert sorted(a["alert_id"] for a in alerts) == sorted(expected.alerts)
    assert any(a["type"] == "volatility" and a["symbol"] == "NVDA" for a in alerts)

    # A rejected record keeps its original text; a late or duplicate tick is
    # re-serialised by the pipeline, so for those the reference gives no text.
    got_dead = sorted((key, letter["reason"], letter["raw"] if d_raw_kept(letter["reason"]) else "")
                      for key, letter in dead_letters)
    want_dead = sorted((d.key, d.reason, d.raw if d_raw_kept(d.reason) else "")
                       for d in expected.dead_letters)
    assert got_dead == want_dead
    assert {"late", "duplicate", "invalid_json", "missing_field", "invalid_price", "invalid_volume",
            "invalid_timestamp", "invalid_symbol"} <= {reason for _, reason, _ in got_dead}
    for _, letter in dead_letters:
        assert letter["source"]["topic"] == topics.ticks or letter["reason"] in ("late", "duplicate")

    # Nothing disappears: every record is in a final bar or a dead letter.
    records = sum(len(batch.values) for batch in script.batches)
    assert sum(bar["tick_count"] for bar in got_bars.values()) + len(dead_letters) == records
