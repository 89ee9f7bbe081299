"""How many ticks/s the market pipeline keeps up with on the embedded Flink runner, and how fast.

    .venv/bin/python benchmarks/pipeline_bench.py --rates 1000,2000,5000,10000 --step_s 40

Starts `python -m pipelines.market --runner=FlinkRunner` on fresh topics,
publishes ticks at each rate in turn (20 symbols, event time = now), and
reads the bar topic. A tick counts as processed when a bar version of its
(symbol, window) covers it (`tick_count` reached its position, in
publication order: one symbol lives on one partition). It prints per rate:

* delivered ticks/s, processed ticks/s, and the backlog (published − processed)
  at the start and end of the step: a backlog that grows means the pipeline
  does not keep up;
* p50/p95/p99 of the latency from a tick's event time to the first bar
  version on `analyzed_market_trends` that includes it (EARLY panes every
  --early_firing_s bound it from below).

With `--backlog N` it first publishes N ticks as fast as it can, then starts
the pipeline and prints how fast it drains them (ticks/s between 10 % and
90 % processed): the most the pipeline can sustain, with the producer out of
the way.

A benchmark, not a test: it prints numbers and asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from benchmarks.stats import percentile
from runners.topics import TopicSet
from tests.e2e.pipeline_process import PipelineProcess

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]


class Published:
    """Publication times per (symbol, window), in order."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.times: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.count = 0
        # Per-symbol seq across every publish() call of the run: a seq used
        # twice is a duplicate the pipeline rejects, never processed.
        self.seq: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def add(self, symbol: str, stamp: int) -> None:
        with self.lock:
            self.times[(symbol, stamp // self.window_ms * self.window_ms)].append(stamp)
            self.count += 1


class Progress:
    """Latest tick_count per (symbol, window) and per-tick latencies."""

    def __init__(self, published: Published) -> None:
        self.published = published
        self.covered: dict[tuple[str, int], int] = defaultdict(int)
        self.latencies: list[tuple[int, int]] = []   # (received_ms, latency_ms)
        self.processed = 0
        self.lock = threading.Lock()

    def on_bar(self, bar: dict, received_ms: int) -> None:
        key = (bar["symbol"], bar["window_start"])
        with self.lock:
            before = self.covered[key]
            if bar["tick_count"] <= before:
                return
            stamps = self.published.times.get(key, [])[before:bar["tick_count"]]
            self.latencies.extend((received_ms, received_ms - stamp) for stamp in stamps)
            self.processed += bar["tick_count"] - before
            self.covered[key] = bar["tick_count"]


def consume(bootstrap: str, topic: str, progress: Progress, stop: threading.Event) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        while not stop.is_set():
            for msg in consumer.consume(500, 0.2):
                if not msg.error():
                    progress.on_bar(orjson.loads(msg.value()), int(time.time() * 1000))
    finally:
        consumer.close()


def publish(producer: Producer, topic: str, published: Published, rate: int, seconds: float) -> None:
    """Publish at `rate` ticks/s in 10 ms slices (no per-tick sleep)."""
    start = time.monotonic()
    sent, seq = 0, published.seq
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            symbol = SYMBOLS[sent % len(SYMBOLS)]
            stamp = int(time.time() * 1000)
            seq[symbol] += 1
            value = orjson.dumps({"symbol": symbol, "price": 100.0 + (sent % 50) * 0.01,
                                  "volume": 1 + sent % 9, "timestamp": stamp, "seq": seq[symbol]})
            try:
                producer.produce(topic, key=symbol.encode(), value=value, timestamp=stamp)
            except BufferError:
                producer.poll(0.05)
                continue
            published.add(symbol, stamp)
            sent += 1
        producer.poll(0)
        time.sleep(0.01)
    producer.flush(30)


def dead_letter_count(bootstrap: str, topic: str) -> int:
    """Records on the dead-letter topic: a clean benchmark run has none."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-dlq"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(high - low for low, high in
                   (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions))
    finally:
        consumer.close()


def drain(count: int, producer: Producer, topic: str, published: Published, progress: Progress,
          pipeline: PipelineProcess) -> int:
    """Publish `count` ticks, start the pipeline, print its drain rate."""
    t0 = time.monotonic()
    publish(producer, topic, published, 100_000, count / 100_000)
    print(f"published {published.count} ticks in {time.monotonic() - t0:.1f}s", flush=True)
    pipeline.start()
    marks = {}
    deadline = time.monotonic() + 1800
    while progress.processed < 0.9 * published.count and time.monotonic() < deadline:
        pipeline.assert_running()
        for fraction in (0.1, 0.9):
            if fraction not in marks and progress.processed >= fraction * published.count:
                marks[fraction] = (time.monotonic(), progress.processed)
        time.sleep(0.2)
    marks.setdefault(0.9, (time.monotonic(), progress.processed))
    (t10, n10), (t90, n90) = marks.get(0.1, marks[0.9]), marks[0.9]
    rate = (n90 - n10) / (t90 - t10) if t90 > t10 else float("nan")
    print(f"drained {n90 - n10} ticks in {t90 - t10:.1f}s: {rate:.0f} ticks/s", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default="localhost:9092")
    parser.add_argument("--rates", default="1000,2000,5000,10000")
    parser.add_argument("--step_s", type=float, default=40)
    parser.add_argument("--window_size_s", type=int, default=60)
    parser.add_argument("--early_firing_s", type=int, default=1)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=0,
                        help="publish this many ticks first, then measure how fast the pipeline drains them")
    parser.add_argument("--pipeline_arg", action="append", default=[],
                        help="extra pipeline flag, e.g. --pipeline_arg=--max_bundle_size=5000")
    args = parser.parse_args()

    topics = TopicSet.create(args.bootstrap_servers, "bench" + uuid.uuid4().hex[:6])
    published = Published(args.window_size_s * 1000)
    progress = Progress(published)
    stop = threading.Event()
    reader = threading.Thread(target=consume, args=(args.bootstrap_servers, topics.trends, progress, stop))
    reader.start()
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 20,
                         "compression.type": "lz4", "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1_000_000})
    pipeline = PipelineProcess([f"--bootstrap_servers={args.bootstrap_servers}", *topics.pipeline_args(),
                                f"--window_size_s={args.window_size_s}",
                                f"--early_firing_s={args.early_firing_s}",
                                f"--parallelism={args.parallelism}", "--no_resume",
                                f"--consumer_group=bench-{topics.ticks}",
                                f"--state_backend_storage_path=file:///tmp/{topics.ticks}-checkpoints",
                                *args.pipeline_arg],
                               Path(f"/tmp/{topics.ticks}-pipeline.log"))
    try:
        if args.backlog:
            return drain(args.backlog, producer, topics.ticks, published, progress, pipeline)
        pipeline.start()
        t0 = time.monotonic()
        while progress.processed == 0:   # warm up: wait for the first bar
            pipeline.assert_running()
            publish(producer, topics.ticks, published, 200, 1)
        print(f"pipeline live after {time.monotonic() - t0:.0f}s", flush=True)
        print(f"{'rate':>7} {'published/s':>12} {'processed/s':>12} {'backlog start':>14} "
              f"{'backlog end':>12} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}", flush=True)
        for rate in (int(r) for r in args.rates.split(",")):
            start_ms = int(time.time() * 1000)
            backlog_start = published.count - progress.processed
            processed_start, published_start = progress.processed, published.count
            t_start = time.monotonic()
            publish(producer, topics.ticks, published, rate, args.step_s)
            elapsed = time.monotonic() - t_start
            backlog_end = published.count - progress.processed
            with progress.lock:
                lat = [l for received, l in progress.latencies if received >= start_ms]
            print(f"{rate:>7} {(published.count - published_start) / elapsed:>12.0f} "
                  f"{(progress.processed - processed_start) / elapsed:>12.0f} {backlog_start:>14} "
                  f"{backlog_end:>12} {percentile(lat, 50):>8.0f} {percentile(lat, 95):>8.0f} "
                  f"{percentile(lat, 99):>8.0f}", flush=True)
    finally:
        print(f"dead letters: {dead_letter_count(args.bootstrap_servers, topics.dlq)}", flush=True)
        pipeline.stop()
        stop.set()
        reader.join(10)
        topics.delete(args.bootstrap_servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
