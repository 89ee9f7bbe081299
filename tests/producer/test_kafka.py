"""The producer against the real broker: what is reported delivered is in the topic, exactly."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition

from market import codec
from producer import FaultInjector, FaultRates, ProducerConfig, TickSimulator, run_producer, tick_record
from producer.cli import main
from producer.replay import SAMPLE_CSV, CsvTicks
from tests.producer.reference import classify

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
START_MS = int(time.time() * 1000) - 600_000  # in the past: brokers refuse timestamps far ahead


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    """Every message of `topic` (all partitions, from the start) once `expected` have arrived or time is up."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error():
                    raise RuntimeError(msg.error())
                messages.append(msg)
        # Anything beyond `expected` would be a duplicate: give it a moment to show.
        messages.extend(m for m in consumer.consume(10_000, timeout=1.0) if not m.error())
        return messages
    finally:
        consumer.close()


def test_ticks_and_faults_arrive_keyed_with_event_time_and_counted_by_kind(
        kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic("producer_ticks", 3)
    ticks = islice(TickSimulator(seed=21, start_ms=START_MS, event_rate=2_000), 20_000)
    rates = FaultRates.spread_malformed(0.02, late=0.005, out_of_order=0.01, duplicate=0.005)
    stats = run_producer(ProducerConfig(bootstrap_servers=kafka_bootstrap, topic=topic),
                         FaultInjector(ticks, rates, seed=21), rate=50_000, stats_interval_s=0)
    assert stats.ok and stats.stopped_by == "exhausted"
    messages = consume_all(kafka_bootstrap, topic, stats.total_delivered)
    assert len(messages) == stats.total_delivered

    seen: Counter[str] = Counter()
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for msg in messages:
        reason = classify(msg.value())
        kind, ts = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        if reason is None:
            tick = codec.loads(msg.value())
            assert msg.key() == tick["symbol"].encode("utf-8")
            assert ts == tick["timestamp"]
            assert set(tick) == {"symbol", "price", "volume", "timestamp", "seq"}
            partitions_of[msg.key()].add(msg.partition())
            reason = "valid"
        seen[reason] += 1
    # One partition per symbol: keys decide the partition.
    assert all(len(parts) == 1 for parts in partitions_of.values())
    assert len({next(iter(p)) for p in partitions_of.values()}) > 1
    valid = sum(stats.delivered[k] for k in ("tick", "out_of_order", "late", "duplicate"))
    assert seen["valid"] == valid
    for kind, count in stats.delivered.items():
        if kind not in ("tick", "out_of_order", "late", "duplicate"):
            assert seen[kind] == count, kind
    assert stats.delivered["late"] > 0 and stats.delivered["invalid_price"] > 0


def test_sigterm_mid_run_loses_nothing_reported_delivered(kafka_bootstrap: str,
                                                          make_topic: Callable[..., str]) -> None:
    topic = make_topic("producer_sigterm", 3)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "--bootstrap_servers", kafka_bootstrap, "--input_topic", topic,
         "--rate", "20000", "--duration_s", "60", "--seed", "5", "--stats_interval_s", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        # Wait for the first stats line: the loop is producing at full speed.
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "actual" in line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    summary = codec.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] == "stopped" and summary["undelivered"] == 0 and summary["failed"] == 0
    delivered = summary["delivered"]
    assert delivered > 5_000
    messages = consume_all(kafka_bootstrap, topic, delivered)
    assert len(messages) == delivered
    # No gaps and no repeats: per symbol, seq runs base+1..base+n.
    seqs: dict[str, list[int]] = defaultdict(list)
    for msg in messages:
        tick = codec.loads(msg.value())
        seqs[tick["symbol"]].append(tick["seq"])
    for symbol, values in seqs.items():
        first = min(values)
        assert sorted(values) == list(range(first, first + len(values))), symbol


def test_cli_replays_the_sample_file(kafka_bootstrap: str, make_topic: Callable[..., str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    topic = make_topic("producer_replay", 3)
    assert main(["--bootstrap_servers", kafka_bootstrap, "--input_topic", topic, "--replay", str(SAMPLE_CSV),
                 "--replay_speed", "0", "--rate", "0", "--stats_interval_s", "0"]) == 0
    summary = codec.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = list(CsvTicks(SAMPLE_CSV))
    assert summary["delivered"] == len(rows)
    messages = consume_all(kafka_bootstrap, topic, len(rows))
    got = sorted((codec.loads(m.value())["symbol"], codec.loads(m.value())["seq"], m.timestamp()[1]) for m in messages)
    assert got == sorted((row["symbol"], row["seq"], row["timestamp"]) for row in rows)


def test_cli_replay_keeps_real_time_times_speed(kafka_bootstrap: str, make_topic: Callable[..., str],
                                                tmp_path: Path) -> None:
    topic = make_topic("producer_replay_speed", 1)
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,timestamp,price,volume\nAAPL,2025-11-25T09:30:00Z,1,1\n"
                    "AAPL,2025-11-25T09:30:01Z,2,1\nAAPL,2025-11-25T09:30:02Z,3,1\n")
    started = time.monotonic()
    assert main(["--bootstrap_servers", kafka_bootstrap, "--input_topic", topic, "--replay", str(path),
                 "--replay_speed", "2", "--stats_interval_s", "0"]) == 0
    assert 1.0 <= time.monotonic() - started < 5
    messages = consume_all(kafka_bootstrap, topic, 3)
    times = [m.timestamp()[1] for m in sorted(messages, key=lambda m: m.offset())]
    assert times == [1764063000000, 1764063001000, 1764063002000]


def test_a_record_the_broker_refuses_is_counted_failed_not_delivered(kafka_bootstrap: str,
                                                                      make_topic: Callable[..., str]) -> None:
    topic = make_topic("producer_refused", 1)
    # librdkafka is allowed to send 3 MB; the broker's limit (1 MB) refuses it.
    cfg = ProducerConfig(bootstrap_servers=kafka_bootstrap, topic=topic, extra={"message.max.bytes": 3_000_000})
    good = tick_record({"symbol": "AAPL", "price": 1.0, "volume": 1, "timestamp": START_MS, "seq": 1})
    # Random bytes, so that lz4 cannot shrink them under the limit.
    huge = good._replace(kind="invalid_json", value=random.Random(1).randbytes(2_000_000))
    stats = run_producer(cfg, [good, huge], stats_interval_s=0)
    assert not stats.ok
    assert stats.delivered["tick"] == 1 and stats.failed["invalid_json"] == 1
    assert stats.first_errors and "MSG_SIZE_TOO_LARGE" in stats.first_errors[0]


def test_a_restarted_producer_never_reuses_a_seq(kafka_bootstrap: str, make_topic: Callable[..., str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # DESIGN.md §3: the pipeline takes a reused (symbol, seq) with the same
    # content for a duplicate. Two runs back to back, same seed: a producer
    # that restarts its seqs would repeat every one of them.
    topic = make_topic("producer_restart", 3)
    for _ in range(2):
        assert main(["--bootstrap_servers", kafka_bootstrap, "--input_topic", topic, "--symbols", "AAPL,MSFT,BTC-USD",
                     "--seed", "3", "--count", "3000", "--rate", "0", "--stats_interval_s", "0"]) == 0
    capsys.readouterr()
    messages = consume_all(kafka_bootstrap, topic, 6_000)
    assert len(messages) == 6_000
    seen = Counter((tick["symbol"], tick["seq"]) for tick in map(codec.loads, (m.value() for m in messages)))
    repeated = {key: n for key, n in seen.items() if n > 1}
    assert not repeated, f"{len(repeated)} (symbol, seq) pairs sent twice, e.g. {list(repeated)[:3]}"


def test_a_whole_market_arrives_keyed_by_symbol_with_every_seq_in_order(
        kafka_bootstrap: str, make_topic: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    topic = make_topic("producer_market", 3)
    assert main(["--bootstrap_servers", kafka_bootstrap, "--input_topic", topic, "--symbol_count", "10000",
                 "--seed", "8", "--count", "40000", "--rate", "0", "--start_time", str(START_MS),
                 "--stats_interval_s", "0"]) == 0
    summary = codec.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["delivered"] == 40_000
    messages = consume_all(kafka_bootstrap, topic, 40_000)
    assert len(messages) == 40_000
    seqs: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for msg in messages:
        tick = codec.loads(msg.value())
        assert classify(msg.value()) is None
        assert msg.key() == tick["symbol"].encode() and msg.timestamp()[1] == tick["timestamp"]
        partition_of[msg.key()].add(msg.partition())
        seqs[tick["symbol"]].append(tick["seq"])
    assert len(seqs) > 4_000                     # thousands of symbols, not the 20 well-known
    assert all(len(parts) == 1 for parts in partition_of.values())
    for symbol, values in seqs.items():           # Kafka keeps a key's order: seqs by one, no gap, no repeat
        assert values == list(range(values[0], values[0] + len(values))), symbol
