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
from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

from market import codec
from transforms import SourceRecord

KafkaKV = typing.Tuple[bytes, bytes]

# runners/local/java/.../EventTimeKafkaRead.java: KafkaIO's read with metadata,
# with a CreateTime watermark that a partition without records does not hold.
EVENT_TIME_READ_URN = "beam:transform:market-data:kafka_read_event_time:v1"
BYTE_ARRAY_DESERIALIZER = "org.apache.kafka.common.serialization.ByteArrayDeserializer"

EventTimeReadSchema = typing.NamedTuple(
    "EventTimeReadSchema",
    [("consumer_config", typing.Mapping[str, str]),
     ("topics", typing.List[str]),
     ("key_deserializer", str),
     ("value_deserializer", str),
     ("max_num_records", typing.Optional[int]),
     ("commit_offset_in_finalize", bool),
     ("timestamp_policy", str),
     ("consumer_polling_timeout", typing.Optional[int]),
     ("max_delay_ms", int)])


def to_source_record(row) -> SourceRecord:
    """A KafkaIO metadata row as the `SourceRecord` ParseTicks takes."""
    return SourceRecord(value=row.value, key=row.key, topic=row.topic,
                        partition=row.partition, offset=row.offset)


class ReadTicksFromKafka(beam.PTransform):
    """Raw tick records from Kafka, timestamped with the record's CreateTime.

    The producer sets each record's timestamp to the tick's event time, so
    elements get their event time and each partition a watermark: the
    largest timestamp read minus `watermark_delay_ms`, or, once the reader
    has caught up with the partition, the wall clock minus that delay. With
    `event_time_read` (the default) this holds for a partition that has not
    delivered any record yet too, through the project's own KafkaIO read
    (runners/local/java); Beam's stock CreateTime policy (`event_time_read=
    False`, no delay) lets such a partition hold every window open
    (apache/beam#20908). Offsets are committed to `consumer_group` when a
    checkpoint is finalized, so a start without a checkpoint resumes there.
    """

    def __init__(self, bootstrap_servers: str, topic: str, consumer_group: str,
                 start_offset: str = "earliest", expansion_service=None,
                 max_num_records: int | None = None, watermark_delay_ms: int = 1000,
                 event_time_read: bool = True) -> None:
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
        self._watermark_delay_ms = int(watermark_delay_ms)
        self._event_time_read = event_time_read

    def _read(self) -> beam.PTransform:
        if not self._event_time_read:
            return ReadFromKafka(
                consumer_config=self._consumer_config, topics=[self._topic], with_metadata=True,
                timestamp_policy=ReadFromKafka.create_time_policy, commit_offset_in_finalize=True,
                max_num_records=self._max_num_records, expansion_service=self._expansion_service)
        return ExternalTransform(
            EVENT_TIME_READ_URN,
            NamedTupleBasedPayloadBuilder(EventTimeReadSchema(
                consumer_config=self._consumer_config, topics=[self._topic],
                key_deserializer=BYTE_ARRAY_DESERIALIZER, value_deserializer=BYTE_ARRAY_DESERIALIZER,
                max_num_records=self._max_num_records, commit_offset_in_finalize=True,
                timestamp_policy=ReadFromKafka.create_time_policy, consumer_polling_timeout=2,
                max_delay_ms=self._watermark_delay_ms)),
            self._expansion_service)

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> self._read()
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
