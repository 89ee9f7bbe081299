"""Parsing and validation of raw tick records (DESIGN.md §3, §6).

`ParseTicks` turns what a Kafka record gives (a `SourceRecord`, or the bare
value as bytes or text, or a `(key, value)` pair as `ReadFromKafka` yields)
into `Tick`s stamped with their event time. Every record it rejects goes to
the `dead_letters` output as `(original_key, dead_letter_dict)` with one of
the reasons of market/schema.py, and is counted with a Beam metric.

This step is stateless: duplicates and late ticks are recognised by the
screening step of `WindowedBars`, which owns the per-symbol state.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from market import codec, schema

METRICS_NAMESPACE = "market.transforms"
DEAD_LETTERS_TAG = "dead_letters"

# A dead letter keeps at most this much of the original value, so one huge
# garbage record cannot blow the DLQ's message size limit.
RAW_MAX_CHARS = 65_536

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


class SourceRecord(NamedTuple):
    """What a Kafka record gives the pipeline; only `value` is required."""

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class RecordBatch(NamedTuple):
    """Records read together from one partition of a source, columnar.

    `read_watermark_ms` is the source's watermark right after these records
    were read, or None if the source does not say: no step downstream can
    see a later watermark before this batch arrives, so a tick whose window
    expired by then is provably late (DESIGN.md §4).
    """

    values: list
    keys: list
    topic: str | None
    partitions: list
    offsets: list
    read_watermark_ms: int | None = None


class Tick(NamedTuple):
    """A validated tick (DESIGN.md §3) with the symbol in upper case.

    `timestamp` is the event time in epoch milliseconds; `source` is
    `(topic, partition, offset)` of the record it came from, or None.
    """

    symbol: str
    price: float
    volume: float
    timestamp: int
    seq: int | None = None
    source: tuple[str | None, int | None, int | None] | None = None


class TickError(ValueError):
    """A record that is not a valid tick; `reason` is a DESIGN.md §6 word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `"price": true` is a producer bug.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_timestamp(value: Any) -> int:
    """Event time in epoch ms from an int (epoch ms) or an ISO-8601 string with offset."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise TickError(schema.REASON_INVALID_TIMESTAMP,
                            f"timestamp is not ISO-8601: {value[:64]!r}") from None
        if parsed.tzinfo is None:
            raise TickError(schema.REASON_INVALID_TIMESTAMP,
                            f"timestamp needs a UTC offset: {value[:64]!r}")
        millis = (parsed - _EPOCH) // _ONE_MS
    elif _is_number(value):
        # JSON encoders sometimes write 1.764e12 for an integral value: accept
        # that, reject a fractional millisecond count rather than guess.
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise TickError(schema.REASON_INVALID_TIMESTAMP,
                            f"timestamp must be integral epoch ms, got {value!r}")
        millis = int(value)
    else:
        raise TickError(schema.REASON_INVALID_TIMESTAMP,
                        f"timestamp must be epoch ms or an ISO-8601 string, got {type(value).__name__}")
    if not schema.MIN_EVENT_MS <= millis <= schema.MAX_EVENT_MS:
        raise TickError(schema.REASON_INVALID_TIMESTAMP,
                        f"timestamp {value!r} is outside the years "
                        f"{schema.MIN_EVENT_YEAR}-{schema.MAX_EVENT_YEAR}")
    return millis


def parse_tick(value: bytes | str, source: tuple | None = None) -> Tick:
    """Validate one raw tick value; raises `TickError` with the dead-letter reason."""
    try:
        data = codec.loads(value)
    except codec.JSONDecodeError as exc:
        raise TickError(schema.REASON_INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TickError(schema.REASON_NOT_AN_OBJECT,
                        f"a tick is a JSON object, got {type(data).__name__}")
    for field in schema.TICK_REQUIRED:
        if data.get(field) is None:
            raise TickError(schema.REASON_MISSING_FIELD, f"missing field {field!r}")

    symbol = data["symbol"]
    if not isinstance(symbol, str) or not schema.SYMBOL_PATTERN.match(symbol):
        raise TickError(schema.REASON_INVALID_SYMBOL,
                        f"symbol must be 1-16 chars of A-Z a-z 0-9 . - _ / : = ^, got {symbol!r:.64}")

    price = data["price"]
    if not _is_number(price) or not math.isfinite(price) or price <= 0:
        raise TickError(schema.REASON_INVALID_PRICE, f"price must be a finite number > 0, got {price!r:.64}")

    volume = data["volume"]
    if not _is_number(volume) or not math.isfinite(volume) or volume < 0:
        raise TickError(schema.REASON_INVALID_VOLUME, f"volume must be a finite number >= 0, got {volume!r:.64}")
    if not math.isfinite(price * volume):
        # price·volume feeds the VWAP sum; an overflow would poison the bar.
        raise TickError(schema.REASON_INVALID_VOLUME, f"price x volume overflows: {price!r} x {volume!r}")

    timestamp = parse_timestamp(data["timestamp"])

    seq = data.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        raise TickError(schema.REASON_INVALID_SEQ, f"seq must be an integer >= 0, got {seq!r:.64}")

    return Tick(symbol.upper(), float(price), float(volume), timestamp, seq, source)


def raw_text(value: Any) -> str:
    """The original value as text for a dead letter; undecodable bytes stay visible."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", errors="backslashreplace")
    elif isinstance(value, str):
        text = value
    else:
        text = repr(value)
    return text[:RAW_MAX_CHARS]


def dead_letter(reason: str, detail: str, raw: Any,
                source: tuple | None = None, rejected_at: int | None = None) -> dict:
    """A DESIGN.md §6 dead-letter record."""
    topic, partition, offset = source if source else (None, None, None)
    return {
        "reason": reason,
        "detail": detail,
        "raw": raw_text(raw),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "rejected_at": int(time.time() * 1000) if rejected_at is None else rejected_at,
    }


def tick_json(tick: Tick) -> bytes:
    """The tick as DESIGN.md §3 JSON (used as `raw` once the original bytes are gone)."""
    data = {"symbol": tick.symbol, "price": tick.price, "volume": tick.volume,
            "timestamp": tick.timestamp}
    if tick.seq is not None:
        data["seq"] = tick.seq
    return codec.dumps(data)


def _unpack(element: Any) -> tuple[Any, bytes | None, tuple | None]:
    """(value, key, source) of an input element, whatever shape it came in."""
    if isinstance(element, SourceRecord):
        has_source = element.topic is not None or element.partition is not None or element.offset is not None
        source = (element.topic, element.partition, element.offset) if has_source else None
        return element.value, element.key, source
    if isinstance(element, tuple) and len(element) == 2:
        # ReadFromKafka without metadata yields (key, value).
        return element[1], element[0], None
    return element, None, None


class ParseTickFn(beam.DoFn):
    """Validates raw records; emits timestamped `Tick`s, rejects to `dead_letters`."""

    def __init__(self) -> None:
        self.parsed = Metrics.counter(METRICS_NAMESPACE, "ticks_parsed")
        self.rejected = {reason: Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{reason}")
                         for reason in schema.DEAD_LETTER_REASONS}

    def process(self, element: Any):
        value, key, source = _unpack(element)
        if value is None:
            # A Kafka tombstone: no value at all, still a record we received.
            error = TickError(schema.REASON_MISSING_FIELD, "record has no value")
        elif not isinstance(value, (bytes, bytearray, memoryview, str)):
            error = TickError(schema.REASON_INVALID_JSON,
                              f"record value must be bytes or text, got {type(value).__name__}")
        else:
            if isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            try:
                tick = parse_tick(value, source)
            except TickError as exc:
                error = exc
            else:
                self.parsed.inc()
                yield TimestampedValue(tick, tick.timestamp / 1000.0)
                return
        counter = self.rejected.get(error.reason)
        if counter is not None:
            counter.inc()
        yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, (key, dead_letter(error.reason, error.detail, value, source)))


class ParsedTicks(NamedTuple):
    """The outputs of `ParseTicks`."""

    ticks: beam.PCollection
    dead_letters: beam.PCollection


class ParseTicks(beam.PTransform):
    """Raw records → event-timestamped `Tick`s, plus `(key, dead_letter)` rejects."""

    def expand(self, records: beam.PCollection) -> ParsedTicks:
        outputs = records | "ValidateTicks" >> beam.ParDo(ParseTickFn()).with_outputs(
            DEAD_LETTERS_TAG, main="ticks")
        return ParsedTicks(ticks=outputs.ticks, dead_letters=outputs[DEAD_LETTERS_TAG])

