"""The batched Kafka read (pipelines/java, KafkaRecordBatchSource) on embedded Flink.

A 3-partition topic, parallelism 2 (so one subtask runs two partition
readers), `ReadTicksFromKafka`'s default read into a Python DoFn that
reports every record it got, through a second topic read back with
confluent-kafka: each record arrives exactly once with its key, value,
partition and offset, in the state shard of its tick's symbol (by offset
when it is not a tick); tombstones, null keys and bytes that are not UTF-8
come through as they were; the read watermark a batch carries (the one the
reader had reported before it) never goes down along a partition, and a
batch is stamped with its earliest record unless that is behind it.
"""
from __future__ import annotations

import json
import time
import typing

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from confluent_kafka import OFFSET_INVALID, Consumer, Producer

from pipelines import kafka_io
from runners.local import beam as local_beam
from tests.conftest import committed_offsets
from transforms import RecordBatch
from transforms.ticks import shard_of

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e,
              pytest.mark.usefixtures("beam_services_end_with_test")]

PARTITIONS = 3
RECORDS = 3000
SHARDS = 16


def record_reports(routed: tuple[int, bytes], timestamp=beam.DoFn.TimestampParam) -> typing.Iterator[tuple[bytes, bytes]]:
    """One (partition:offset, JSON) report per record of a routed batch, with what the batch carried."""
    shard, encoded = routed
    batch: RecordBatch = kafka_io.decode_record_batch(encoded)
    first_offset = batch.offsets[0] if batch.offsets else None
    for key, value, partition, offset in zip(batch.keys, batch.values, batch.partitions, batch.offsets):
        report = {"key": None if key is None else key.hex(), "value": None if value is None else value.hex(),
                  "topic": batch.topic, "partition": partition, "offset": offset,
                  "batch_first_offset": first_offset, "batch_size": len(batch.offsets),
                  "read_watermark_ms": batch.read_watermark_ms, "batch_timestamp_ms": timestamp.micros // 1000,
                  "shard": shard}
        yield f"{partition}:{offset}".encode(), json.dumps(report).encode()


def sent_record(index: int) -> tuple[bytes | None, bytes | None]:
    """Key and value of the index-th record: some tombstones, null keys and non-UTF-8 values."""
    key = None if index % 11 == 0 else f"SYM{index % 7}".encode()
    if index % 13 == 0:
        return key, None                                   # a tombstone
    if index % 5 == 0:
        return key, b"\xff\xfe\x00" + index.to_bytes(4, "big")   # not UTF-8, with a NUL
    return key, json.dumps({"symbol": f"SYM{index % 7}", "i": index}).encode()


def test_every_record_once_through_batches(kafka_bootstrap, flink_jars, make_topic):
    source, sink = make_topic("batch_read_in", PARTITIONS), make_topic("batch_read_out", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    start_ms = int(time.time() * 1000) - 120_000
    sent: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
    stamps: dict[tuple[int, int], int] = {}

    def delivered(err, msg) -> None:
        assert err is None, err
        sent[(msg.partition(), msg.offset())] = (msg.key(), msg.value())
        stamps[(msg.partition(), msg.offset())] = msg.timestamp()[1]

    def produce(indexes: range) -> None:
        for index in indexes:
            key, value = sent_record(index)
            producer.produce(source, key=key, value=value, partition=index % PARTITIONS,
                             timestamp=start_ms + index * 10, on_delivery=delivered)
            producer.poll(0)
        assert producer.flush(30) == 0

    # Half as a backlog, half once the pipeline runs (read after watermarks were reported).
    produce(range(RECORDS // 2))

    expansion = local_beam.expansion_service()
    options = PipelineOptions([
        "--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
        "--parallelism=2", *local_beam.flink_job_server_args(),
    ])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    with expansion:
        _ = (pipeline
             | "ReadTicks" >> kafka_io.ReadTicksFromKafka(
                 kafka_bootstrap, source, f"batch-read-{source}", expansion_service=expansion,
                 max_batch_records=400, shards=SHARDS)
             | "ReportRecords" >> beam.FlatMap(record_reports).with_output_types(typing.Tuple[bytes, bytes])
             | "WriteReports" >> kafka_io.WriteToTopic(kafka_bootstrap, sink, expansion))
        result = pipeline.run()

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{sink}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([sink])
    reports: list[dict] = []
    try:
        deadline = time.monotonic() + 240
        while len(reports) < RECORDS and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                if not reports:
                    produce(range(RECORDS // 2, RECORDS))
                reports.append(json.loads(msg.value()))
        settle = time.monotonic() + 5                      # duplicates would come after the last one
        while time.monotonic() < settle:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                reports.append(json.loads(msg.value()))
        # No checkpoint completes in this job (checkpointing is off), so the
        # group has no committed offset: the read commits only at checkpoints,
        # never what it merely polled (the client's auto-commit, every 5 s).
        committed = committed_offsets(kafka_bootstrap, f"batch-read-{source}", source, PARTITIONS)
        assert committed == [OFFSET_INVALID] * PARTITIONS, committed
    finally:
        consumer.close()
        result.cancel()

    assert len(sent) == RECORDS
    got: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
    duplicates = []
    for report in reports:
        where = (report["partition"], report["offset"])
        if where in got:
            duplicates.append(where)
        got[where] = (None if report["key"] is None else bytes.fromhex(report["key"]),
                      None if report["value"] is None else bytes.fromhex(report["value"]))
    assert not duplicates, f"{len(duplicates)} records twice, e.g. {duplicates[:5]}"
    missing = sorted(set(sent) - set(got))
    assert not missing, f"{len(missing)} of {RECORDS} records never arrived, e.g. {missing[:5]}"
    assert got == sent
    assert {report["topic"] for report in reports} == {source}
    for report in reports:
        value = got[(report["partition"], report["offset"])][1]
        try:
            want = shard_of(json.loads(value)["symbol"].upper(), SHARDS)
        except (TypeError, ValueError):
            want = report["offset"] % SHARDS      # not a tick: spread by offset
        assert report["shard"] == want, report
    assert len({report["shard"] for report in reports}) > 7, "records of no tick were spread"

    batches = {(r["partition"], r["batch_first_offset"]): r for r in reports}
    assert len(batches) < RECORDS / 2, "records did not travel in batches"
    assert all(r["batch_size"] <= 400 for r in batches.values())
    for partition in range(PARTITIONS):
        along = [batches[key] for key in sorted(k for k in batches if k[0] == partition)]
        watermarks = [b["read_watermark_ms"] for b in along]
        # None until the reader first reported a watermark (every 200 ms), a number from then on.
        known = watermarks[watermarks.count(None):]
        assert None not in known and known, f"partition {partition}: {watermarks}"
        assert known == sorted(known), f"read watermark went down on partition {partition}: {known}"
    for (partition, first), batch in batches.items():
        earliest = min(stamps[(partition, r["offset"])] for r in reports
                       if r["partition"] == partition and r["batch_first_offset"] == first)
        # A batch is stamped with its earliest record, or later only to keep up with the watermark.
        assert batch["batch_timestamp_ms"] == max(earliest, batch["read_watermark_ms"] or earliest)
