"""The batched Kafka read restored from a checkpoint taken while batches of a read still wait.

A read of one partition is split into one batch per state shard, and the
batches go out one per advance(): a checkpoint can come between two of them.
Its mark must then hold the batches not emitted yet (the Kafka offsets it
restores from are past them), a reader started from it must emit them first,
and the offset committed to the consumer group must be that of the first
record not emitted. A real broker and the read's own classes, driven by
tests/integration/java/.../ReaderRestoreProbe.java: every record exactly
once across the two readers, each in its symbol's shard.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipelines.kafka_io import decode_record_batch
from runners.local import fetch
from tests.conftest import committed_offsets
from transforms.ticks import shard_of

pytestmark = [pytest.mark.integration, pytest.mark.flink]

PROBE = Path(__file__).parent / "java" / "org" / "apache" / "beam" / "sdk" / "io" / "kafka" / "ReaderRestoreProbe.java"
RECORDS = 3000
SHARDS = 8


def run_probe(tmp_path: Path, bootstrap: str, topic: str, group: str) -> list[str]:
    if shutil.which("javac") is None:
        pytest.fail("javac is required (a JDK): the project's set-up checks for it")
    class_path = f"{fetch.current_event_time_read()}:{fetch.beam_lib()}/*"
    classes = tmp_path / "classes"
    subprocess.run(["javac", "-nowarn", "--release", "11", "-d", str(classes), "-cp", class_path, str(PROBE)],
                   check=True, capture_output=True, timeout=180)
    result = subprocess.run(["java", "-cp", f"{classes}:{class_path}", "org.apache.beam.sdk.io.kafka.ReaderRestoreProbe",
                             bootstrap, topic, group, str(RECORDS), str(SHARDS)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_a_restore_emits_the_waiting_batches_first_and_loses_nothing(kafka_bootstrap, flink_jars, make_topic, tmp_path):
    topic = make_topic("batch_read_restore", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    values = {}
    for index in range(RECORDS):
        value = json.dumps({"symbol": f"S{index % 50}", "price": 1 + index, "volume": 1,
                            "timestamp": 1764063000000 + index}).encode()
        producer.produce(topic, value=value, key=f"S{index % 50}".encode())
        values[index] = value
    assert producer.flush(30) == 0

    group = f"restore-{topic}"
    lines = run_probe(tmp_path, kafka_bootstrap, topic, group)
    [waiting] = [int(line.split()[1]) for line in lines if line.startswith("waiting ")]
    emitted = []   # (reader, shard, [offsets])
    for line in lines:
        reader, *fields = line.split()
        if reader in ("first", "second"):
            shard, encoded = fields
            batch = decode_record_batch(base64.b64decode(encoded))
            for value, offset in zip(batch.values, batch.offsets):
                assert value == values[offset]
                assert int(shard) == shard_of(json.loads(value)["symbol"], SHARDS), (shard, value)
            emitted.append((reader, int(shard), batch.offsets))

    offsets = [offset for _, _, batch in emitted for offset in batch]
    assert sorted(offsets) == list(range(RECORDS)), "a record lost or read twice"
    assert waiting > 0, "the checkpoint did not come between the batches of a read"
    first = [batch for reader, _, batch in emitted if reader == "first"]
    second = [batch for reader, _, batch in emitted if reader == "second"]
    assert first and second
    # The restored reader emits the waiting batches before anything it reads itself.
    held = second[:waiting]
    read_after = [offset for batch in second[waiting:] for offset in batch]
    assert all(offset < min(read_after) for batch in held for offset in batch)
    assert max(offset for batch in first for offset in batch) < max(offset for batch in held for offset in batch)
    # The group's offset is the first record not emitted before the checkpoint.
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == [min(offset for batch in held for offset in batch)]
