"""How fast the pipeline's Kafka read hands records to Python on the embedded Flink runner.

    flock /tmp/market-flink.lock .venv/bin/python benchmarks/read_probe.py --records 300000 \\
        --read batches,event_time --parallelism 2

Fills a fresh topic (`--partitions`, default 3) with tick-like JSON records,
then for each `--read` runs `ReadTicksFromKafka` from the beginning into a
Python DoFn that only counts (LOOPBACK: the DoFn runs in this process), and
prints records/s between 10 % and 90 % of the topic plus the count every
`--every_s` seconds, so a read that slows down partway shows. Reads:

* batches: the default, one (shard, encoded RecordBatch) per state shard and
  batch of one partition's records;
* event_time: the project's per-record read (a schema Row per record);
* beam: Beam's stock ReadFromKafka with metadata.

A benchmark, not a test: it prints numbers and asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_counted = 0
_lock = threading.Lock()


def count_records(element) -> None:
    """Count what reached Python: every record of a routed batch, or one record."""
    global _counted
    from pipelines.kafka_io import decode_record_batch

    routed = type(element) is tuple and len(element) == 2   # (shard, batch); a SourceRecord otherwise
    size = len(decode_record_batch(element[1]).values) if routed else 1
    with _lock:
        _counted += size


def counted() -> int:
    with _lock:
        return _counted


def fill(bootstrap: str, topic: str, records: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000,
                         "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    start_ms = int(time.time() * 1000) - 3_600_000
    step = 3_600_000 / records
    for index in range(records):
        stamp = int(start_ms + index * step)
        symbol = f"SYM{index % 20:02d}"
        value = (b'{"symbol":"%s","price":%.2f,"volume":%d,"timestamp":%d,"seq":%d}'
                 % (symbol.encode(), 100 + index % 97 / 10, 1 + index % 50, stamp, index // 20))
        while True:
            try:
                producer.produce(topic, key=symbol.encode(), value=value, timestamp=stamp)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)


def probe(bootstrap: str, topic: str, read: str, records: int, parallelism: int, every_s: float,
          timeout_s: float, extra_args: list[str]) -> None:
    global _counted
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from pipelines import kafka_io
    from runners.args import with_flink_defaults
    from runners.local import beam as local_beam

    with _lock:
        _counted = 0
    expansion = local_beam.expansion_service()
    argv = with_flink_defaults(["--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
                                f"--parallelism={parallelism}", *local_beam.flink_job_server_args(), *extra_args])
    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    with expansion:
        _ = (pipeline
             | "ReadTicks" >> kafka_io.ReadTicksFromKafka(
                 bootstrap, topic, f"probe-{uuid.uuid4().hex[:8]}", expansion_service=expansion,
                 event_time_read=read != "beam", batched=read == "batches")
             | "Count" >> beam.Map(count_records))
        result = pipeline.run()
    submitted = time.monotonic()
    marks: dict[float, float] = {}
    last_print = 0.0
    try:
        while time.monotonic() - submitted < timeout_s:
            now, count = time.monotonic(), counted()
            for fraction in (0.1, 0.9):
                if fraction not in marks and count >= fraction * records:
                    marks[fraction] = now
            if count and now - last_print >= every_s:
                print(f"  {read}: {now - submitted:6.1f} s  {count:8d} records", flush=True)
                last_print = now
            if count >= records:
                break
            time.sleep(0.1)
    finally:
        result.cancel()
    if 0.1 in marks and 0.9 in marks and marks[0.9] > marks[0.1]:
        rate = 0.8 * records / (marks[0.9] - marks[0.1])
        print(f"{read}: {rate:,.0f} records/s (10 %→90 %), all {counted()} of {records} after "
              f"{time.monotonic() - submitted:.1f} s from submission", flush=True)
    else:
        print(f"{read}: only {counted()} of {records} records within {timeout_s} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="localhost:9092")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--read", default="batches,event_time",
                        help="comma-separated: batches, event_time, beam")
    parser.add_argument("--every_s", type=float, default=2.0)
    parser.add_argument("--timeout_s", type=float, default=240.0)
    parser.add_argument("--topic", help=argparse.SUPPRESS)   # set for the per-read child process
    args, extra = parser.parse_known_args()
    if args.topic:
        probe(args.bootstrap, args.topic, args.read, args.records, args.parallelism, args.every_s,
              args.timeout_s, extra)
        return 0

    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    topic = f"read_probe_{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)])[topic].result()
    try:
        started = time.monotonic()
        fill(args.bootstrap, topic, args.records)
        print(f"filled {topic}: {args.records} records, {args.partitions} partitions, "
              f"{time.monotonic() - started:.1f} s; parallelism {args.parallelism} {' '.join(extra)}", flush=True)
        for read in args.read.split(","):
            # Each read in its own process group: Beam starts a job server JVM
            # per run and does not always stop it at exit; the group goes with it.
            child = subprocess.Popen(
                [sys.executable, "-W", "ignore", __file__, f"--bootstrap={args.bootstrap}", f"--topic={topic}",
                 f"--read={read}", f"--records={args.records}", f"--parallelism={args.parallelism}",
                 f"--every_s={args.every_s}", f"--timeout_s={args.timeout_s}", *extra],
                start_new_session=True)
            try:
                child.wait()
            finally:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        admin.delete_topics([topic], operation_timeout=30)
    return 0


if __name__ == "__main__":
    # The DoFn must be pickled by reference to an importable module, so that
    # the LOOPBACK worker (in this process) counts into this module's counter.
    from benchmarks import read_probe

    sys.exit(read_probe.main())
