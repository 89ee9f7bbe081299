"""Kafka in and out of the market pipeline, through Beam's cross-language KafkaIO.

The transforms know nothing of Kafka; these two composites adapt between
Kafka records and what the transforms take and give. Which expansion service
expands KafkaIO is the runner's business (see `runners.launch`): the code here
is the same on Flink and Dataflow.
"""
from __future__ import annotations

import struct
import typing

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from market import codec, config
from market.kafka_security import KafkaSecurity
from transforms import RecordBatch, SourceRecord

KafkaKV = typing.Tuple[bytes, bytes]

# pipelines/java/.../EventTimeKafkaRead.java: KafkaIO's read with metadata,
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

# pipelines/java/.../KafkaRecordBatchRead.java: the same read, one
# (shard, byte[]) per state shard and batch of records of one partition
# (format in KafkaRecordBatchSource, shard rule in TickShards).
RECORD_BATCH_READ_URN = "beam:transform:market-data:kafka_read_batches:v1"
DEFAULT_MAX_BATCH_RECORDS = 8000
MAX_POLL_RECORDS = 5000

RecordBatchReadSchema = typing.NamedTuple(
    "RecordBatchReadSchema",
    [*EventTimeReadSchema.__annotations__.items(), ("max_batch_records", int), ("shards", int)])

RECORD_BATCH_VERSION = 1
NO_READ_WATERMARK = -(2 ** 63)   # Java's Long.MIN_VALUE: the reader had no watermark yet
_HEADER = struct.Struct(">iqi")          # version, read_watermark_ms, topic length
_PARTITION_COUNT = struct.Struct(">ii")
_RECORD_HEAD = struct.Struct(">qqi")     # offset, timestamp ms, key length
_LENGTH = struct.Struct(">i")


def decode_record_batch(blob: bytes) -> RecordBatch:
    """A batch from the batched Kafka read (KafkaRecordBatchSource's format) as a `RecordBatch`.

    A length of -1 is a null key or value (a tombstone): None in the lists.
    """
    view = memoryview(blob)
    version, read_watermark_ms, topic_length = _HEADER.unpack_from(view, 0)
    if version != RECORD_BATCH_VERSION:
        raise ValueError(f"record batch format version {version}, expected {RECORD_BATCH_VERSION}")
    at = _HEADER.size
    topic = str(view[at:at + topic_length], "utf-8")
    at += topic_length
    partition, count = _PARTITION_COUNT.unpack_from(view, at)
    at += _PARTITION_COUNT.size
    keys: list = [None] * count
    values: list = [None] * count
    offsets: list = [0] * count
    record_head, length = _RECORD_HEAD.unpack_from, _LENGTH.unpack_from
    head_size, length_size = _RECORD_HEAD.size, _LENGTH.size
    for index in range(count):
        offsets[index], _timestamp, key_length = record_head(view, at)
        at += head_size
        if key_length >= 0:
            keys[index] = bytes(view[at:at + key_length])
            at += key_length
        (value_length,) = length(view, at)
        at += length_size
        if value_length >= 0:
            values[index] = bytes(view[at:at + value_length])
            at += value_length
    if at != len(blob):
        raise ValueError(f"record batch of {len(blob)} bytes holds {at} bytes of {count} records")
    return RecordBatch(values=values, keys=keys, topic=topic, partitions=[partition] * count,
                       offsets=offsets,
                       read_watermark_ms=None if read_watermark_ms == NO_READ_WATERMARK else read_watermark_ms)


def to_source_record(row) -> SourceRecord:
    """A KafkaIO metadata row as the `SourceRecord` ParseTicks takes."""
    return SourceRecord(value=row.value, key=row.key, topic=row.topic,
                        partition=row.partition, offset=row.offset)


class ReadTicksFromKafka(beam.PTransform):
    """Raw tick records from Kafka: `(shard, encoded RecordBatch)` pairs, or `SourceRecord`s one by one.

    The producer sets each record's timestamp to the tick's event time, so
    elements get their event time and each partition a watermark: the
    largest timestamp read minus `watermark_delay_ms`, or, once the reader
    has caught up with the partition, the wall clock minus that delay. With
    `event_time_read` (the default) this holds for a partition that has not
    delivered any record yet too, through the project's own KafkaIO read
    (pipelines/java); Beam's stock CreateTime policy (`event_time_read=
    False`, no delay) lets such a partition hold every window open
    (apache/beam#20908). Offsets are committed to `consumer_group` when a
    checkpoint is finalized, so a start without a checkpoint resumes there.

    With `batched` (the default, needs `event_time_read`) the read takes up
    to `max_batch_records` records of one partition at a time and routes each
    to the state shard of its tick's symbol (`transforms.ticks.shard_of`,
    `shards` of them; pipelines/java, TickShards): each element is
    `(shard, batch)`, the batch those records encoded together
    (`decode_record_batch` gives the `RecordBatch`), stamped with its
    earliest record's time (never behind the watermark) and carrying the
    watermark the read had reported before them (what every step downstream
    has seen when the batch arrives). One element per shard and batch
    crosses from the Java read to Python instead of one per record, keyed
    for the bar step (`MarketAnalytics(routed_records=decode_record_batch)`),
    and each partition has its own reader (KafkaRecordBatchSource).
    Otherwise each element is a `SourceRecord` with the record's timestamp.
    """

    def __init__(self, bootstrap_servers: str, topic: str, consumer_group: str,
                 start_offset: str = config.PIPELINE_START_OFFSET, expansion_service=None,
                 max_num_records: int | None = None, watermark_delay_ms: int = config.WATERMARK_DELAY_MS,
                 event_time_read: bool = True, batched: bool = True,
                 max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS, security: KafkaSecurity | None = None,
                 shards: int = config.STATE_SHARDS) -> None:
        super().__init__()
        self._consumer_config = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": consumer_group,
            "auto.offset.reset": start_offset,
            # Offsets are committed when a checkpoint is finalized (commit_offset_in_finalize),
            # so `--no_resume` continues from what a checkpoint covered. The client's
            # auto-commit would commit what was only polled, every 5 s, ahead of any checkpoint.
            "enable.auto.commit": "false",
            # Only read committed records of transactional producers.
            "isolation.level": "read_committed",
            # A backlog comes in reads of up to `max_batch_records` (or 1 MiB) only if
            # one poll can hand that many over (the client's default is 500): the read
            # splits each into a batch per shard, one bar-step call each, so small reads
            # cost a call per shard for a few ticks. 1,000,000 ticks over 5,000 symbols:
            # 13,500 ticks/s with 500 and 2,000, 14,400 with 5,000 and 8,000 (Python
            # 48 -> 43.5 µs per tick).
            "max.poll.records": str(MAX_POLL_RECORDS),
            # DESIGN.md §10: the Java client's security keys.
            **(security or KafkaSecurity()).java(),
        }
        self._topic = topic
        self._expansion_service = expansion_service
        self._max_num_records = max_num_records
        self._watermark_delay_ms = int(watermark_delay_ms)
        self._event_time_read = event_time_read
        self._batched = batched and event_time_read
        self._max_batch_records = int(max_batch_records)
        self._shards = int(shards)
        if self._batched and max_num_records is not None:
            raise ValueError("max_num_records bounds single records: pass batched=False with it")

    def _read(self) -> beam.PTransform:
        if not self._event_time_read:
            return ReadFromKafka(
                consumer_config=self._consumer_config, topics=[self._topic], with_metadata=True,
                timestamp_policy=ReadFromKafka.create_time_policy, commit_offset_in_finalize=True,
                max_num_records=self._max_num_records, expansion_service=self._expansion_service)
        if self._batched:
            return ExternalTransform(
                RECORD_BATCH_READ_URN,
                NamedTupleBasedPayloadBuilder(RecordBatchReadSchema(
                    **self._event_time_read_config()._asdict(),
                    max_batch_records=self._max_batch_records, shards=self._shards)),
                self._expansion_service)
        return ExternalTransform(
            EVENT_TIME_READ_URN, NamedTupleBasedPayloadBuilder(self._event_time_read_config()),
            self._expansion_service)

    def _event_time_read_config(self) -> EventTimeReadSchema:
        return EventTimeReadSchema(
            consumer_config=self._consumer_config, topics=[self._topic],
            key_deserializer=BYTE_ARRAY_DESERIALIZER, value_deserializer=BYTE_ARRAY_DESERIALIZER,
            max_num_records=self._max_num_records, commit_offset_in_finalize=True,
            timestamp_policy=ReadFromKafka.create_time_policy, consumer_polling_timeout=2,
            max_delay_ms=self._watermark_delay_ms)

    def expand(self, pbegin):
        records = pbegin | "ReadFromKafka" >> self._read()
        if self._batched:
            # Decoded by the keyed step that takes them (transforms.ticks.ShardRecords):
            # a decode step here would be a Python stage and a shuffle of its own.
            return records
        return records | "ToSourceRecord" >> beam.Map(to_source_record).with_output_types(SourceRecord)


# pipelines/java/.../KafkaRecordBatchWrite.java: KafkaIO's write fed with
# batches of (key, value) records, one byte[] per batch (format in pack_records).
RECORD_BATCH_WRITE_URN = "beam:transform:market-data:kafka_write_batches:v1"
RECORD_BATCH_WRITE_VERSION = 1
# Records per batch: about 0.5-1 MB of bars, well inside gRPC's message limits.
MAX_WRITE_BATCH_RECORDS = 2000

RecordBatchWriteSchema = typing.NamedTuple(
    "RecordBatchWriteSchema", [("producer_config", typing.Mapping[str, str]), ("topic", str)])

_COUNT = struct.Struct(">ii")   # version, record count


def pack_records(records: list) -> bytes:
    """(key, value) byte pairs as one batch for KafkaRecordBatchWrite; a None key is written as null."""
    parts = [_COUNT.pack(RECORD_BATCH_WRITE_VERSION, len(records))]
    pack_length = _LENGTH.pack
    for key, value in records:
        if key is None:
            parts.append(pack_length(-1))
        else:
            parts.append(pack_length(len(key)))
            parts.append(key)
        parts.append(pack_length(len(value)))
        parts.append(value)
    return b"".join(parts)


class PackRecordsFn(beam.DoFn):
    """(key, value) pairs → batches of up to `max_records`, emitted when full and when the bundle ends.

    The batches leave the window of their records (a sink does not care)
    and carry the earliest record's timestamp.
    """

    def __init__(self, max_records: int = MAX_WRITE_BATCH_RECORDS) -> None:
        self.max_records = int(max_records)

    def start_bundle(self) -> None:
        self._records: list = []
        self._earliest = None

    def process(self, record: KafkaKV, timestamp=beam.DoFn.TimestampParam):
        self._records.append(record)
        if self._earliest is None or timestamp < self._earliest:
            self._earliest = timestamp
        if len(self._records) >= self.max_records:
            yield self._batch()

    def finish_bundle(self):
        if self._records:
            yield self._batch()

    def _batch(self) -> WindowedValue:
        batch = WindowedValue(pack_records(self._records), self._earliest, (GlobalWindow(),))
        self._records, self._earliest = [], None
        return batch


class WriteBatchesToTopic(beam.PTransform):
    """Write (key, value) byte pairs to one Kafka topic in batches, through the project's Java write.

    The same producer as `WriteToTopic`; the records cross from Python to
    Java a batch at a time (pipelines/java, KafkaRecordBatchWrite), so a
    pipeline that writes 10,000 bar versions a second pays a cross-language
    hand-off per bundle, not per bar. Needs the project's jar in the
    expansion service, like the event-time read.
    """

    def __init__(self, bootstrap_servers: str, topic: str, expansion_service=None,
                 security: KafkaSecurity | None = None, max_records: int = MAX_WRITE_BATCH_RECORDS) -> None:
        super().__init__()
        self._producer_config = producer_config(bootstrap_servers, security)
        self._topic = topic
        self._expansion_service = expansion_service
        self._max_records = max_records

    def expand(self, pcoll):
        return (pcoll
                | "PackRecords" >> beam.ParDo(PackRecordsFn(self._max_records)).with_output_types(bytes)
                | "WriteToKafka" >> ExternalTransform(
                    RECORD_BATCH_WRITE_URN,
                    NamedTupleBasedPayloadBuilder(RecordBatchWriteSchema(
                        producer_config=self._producer_config, topic=self._topic)),
                    self._expansion_service))


def keyed_json(key_field: str) -> typing.Callable[[dict], KafkaKV]:
    """(key, JSON) of a message keyed by one of its fields (DESIGN.md §2: the symbol)."""
    def encode(message: dict) -> KafkaKV:
        return str(message[key_field]).encode(), codec.dumps(message)
    return encode


def encode_dead_letter(element: tuple[bytes | None, dict]) -> KafkaKV:
    """Dead letters keep the original record's key (empty when it had none)."""
    key, dead_letter = element
    return key or b"", codec.dumps(dead_letter)


def producer_config(bootstrap_servers: str, security: KafkaSecurity | None = None) -> dict[str, str]:
    """The Java producer's configuration of every write of the pipeline."""
    return {
        "bootstrap.servers": bootstrap_servers,
        # Every acknowledged record is on the broker's log, and a retried
        # send does not duplicate it.
        "acks": "all",
        "enable.idempotence": "true",
        "compression.type": "lz4",
        "linger.ms": "20",
        # DESIGN.md §10: the Java client's security keys.
        **(security or KafkaSecurity()).java(),
    }


class WriteToTopic(beam.PTransform):
    """Write (key, value) byte pairs to one Kafka topic."""

    def __init__(self, bootstrap_servers: str, topic: str, expansion_service=None,
                 security: KafkaSecurity | None = None) -> None:
        super().__init__()
        self._producer_config = producer_config(bootstrap_servers, security)
        self._topic = topic
        self._expansion_service = expansion_service

    def expand(self, pcoll):
        return pcoll | "WriteToKafka" >> WriteToKafka(
            producer_config=self._producer_config, topic=self._topic,
            expansion_service=self._expansion_service)
