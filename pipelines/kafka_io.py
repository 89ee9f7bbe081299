"""Kafka in and out of the market pipeline, through Beam's cross-language KafkaIO.

The transforms know nothing of Kafka; these two composites adapt between
Kafka records and what the transforms take and give. Which expansion service
expands KafkaIO is the runner's business (see `runners.select`): the code here
is the same on Flink and Dataflow.
"""
from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka

from market import codec
from transforms import SourceRecord

KafkaKV = typing.Tuple[bytes, bytes]


def to_source_record(row) -> SourceRecord:
    """A KafkaIO metadata row as the `SourceRecord` ParseTicks takes."""
    return SourceRecord(value=row.value, key=row.key, topic=row.topic,
                        partition=row.partition, offset=row.offset)


class ReadTicksFromKafka(beam.PTransform):
    """Raw tick records from Kafka, timestamped with the record's CreateTime.

    The producer sets each record's timestamp to the tick's event time, so the
    CreateTime policy gives elements their event time and a watermark per
    partition; when a partition has no backlog KafkaIO advances its watermark
    with processing time, so an idle partition does not hold windows open
    (apache/beam#20908). Offsets are committed to `consumer_group` when a
    checkpoint is finalized, so a start without a checkpoint resumes there.
    """

    def __init__(self, bootstrap_servers: str, topic: str, consumer_group: str,
                 start_offset: str = "earliest", expansion_service=None,
                 max_num_records: int | None = None) -> None:
        super().__init__()
        self._consumer_config = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": consumer_group,
            "auto.offset.reset": start_offset,
            # Only read committed records of transactional producers.
            "isolation.level": "read_committed",
        }
        self._topic = topic
        self._expansion_service = expansion_service
        self._max_num_records = max_num_records

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> ReadFromKafka(
                    consumer_config=self._consumer_config,
                    topics=[self._topic],
                    with_metadata=True,
                    timestamp_policy=ReadFromKafka.create_time_policy,
                    commit_offset_in_finalize=True,
                    max_num_records=self._max_num_records,
                    expansion_service=self._expansion_service)
                | "ToSourceRecord" >> beam.Map(to_source_record).with_output_types(SourceRecord))


def keyed_json(key_field: str) -> typing.Callable[[dict], KafkaKV]:
    """(key, JSON) of a message keyed by one of its fields (DESIGN.md §2: the symbol)."""
    def encode(message: dict) -> KafkaKV:
        return str(message[key_field]).encode(), codec.dumps(message)
    return encode


def encode_dead_letter(element: tuple[bytes | None, dict]) -> KafkaKV:
    """Dead letters keep the original record's key (empty when it had none)."""
    key, dead_letter = element
    return key or b"", codec.dumps(dead_letter)


class WriteToTopic(beam.PTransform):
    """Write (key, value) byte pairs to one Kafka topic."""

    def __init__(self, bootstrap_servers: str, topic: str, expansion_service=None) -> None:
        super().__init__()
        self._producer_config = {
            "bootstrap.servers": bootstrap_servers,
            # Every acknowledged record is on the broker's log, and a retried
            # send does not duplicate it.
            "acks": "all",
            "enable.idempotence": "true",
            "compression.type": "lz4",
            "linger.ms": "20",
        }
        self._topic = topic
        self._expansion_service = expansion_service

    def expand(self, pcoll):
        return pcoll | "WriteToKafka" >> WriteToKafka(
            producer_config=self._producer_config, topic=self._topic,
            expansion_service=self._expansion_service)
