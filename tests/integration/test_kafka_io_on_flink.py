"""The foundation's proof: Beam's cross-language Kafka IO on the embedded Flink runner.

A real broker, the real FlinkRunner (embedded Flink in the job server JVM,
Python LOOPBACK workers), ReadFromKafka → a Python transform → WriteToKafka,
read back with confluent-kafka.
"""
from __future__ import annotations

import time
import typing

import apache_beam as beam
import pytest
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, Producer

from runners.local import beam as local_beam

pytestmark = [pytest.mark.integration, pytest.mark.flink,
              pytest.mark.usefixtures("beam_services_end_with_test")]


def shout(record: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    key, value = record
    return key, value.upper() + b"!"


def test_read_transform_write_on_embedded_flink(kafka_bootstrap, flink_jars, make_topic):
    source, sink = make_topic("proof_in"), make_topic("proof_out")
    sent = {f"sym{i % 7}:{i}".encode(): f"tick-{i}".encode() for i in range(200)}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value in sent.items():
        producer.produce(source, key=key, value=value)
    assert producer.flush(30) == 0

    expansion = local_beam.expansion_service()
    options = PipelineOptions([
        "--runner=FlinkRunner", "--flink_master=[local]", "--environment_type=LOOPBACK",
        "--parallelism=2", *local_beam.flink_job_server_args(),
    ])
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "ReadTicks" >> ReadFromKafka(
                 consumer_config={"bootstrap.servers": kafka_bootstrap, "auto.offset.reset": "earliest"},
                 topics=[source], max_num_records=len(sent), expansion_service=expansion)
             | "Shout" >> beam.Map(shout).with_output_types(typing.Tuple[bytes, bytes])
             | "WriteBack" >> WriteToKafka(
                 producer_config={"bootstrap.servers": kafka_bootstrap}, topic=sink,
                 expansion_service=expansion))

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"proof-{sink}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([sink])
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 60
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            assert msg.key() not in received, f"duplicate record for key {msg.key()!r}"
            received[msg.key()] = msg.value()
    finally:
        consumer.close()
    assert received == {key: value.upper() + b"!" for key, value in sent.items()}
