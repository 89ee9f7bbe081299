"""Parsing and validation of raw tick records (DESIGN.md §3, §6).

`ParseTicks` turns what a source gives (a `RecordBatch` of records read
together, a `SourceRecord`, the bare value as bytes or text, or a
`(key, value)` pair as `ReadFromKafka` yields) into per-shard batches of
valid ticks. Every record it rejects goes to the `dead_letters` output as
`(original_key, dead_letter_dict)` with one of the reasons of
market/schema.py, and is counted with a Beam metric. No record can raise out
of this step: an unexpected error while handling one record dead-letters
that record as `internal_error` with the error text.

This step is stateless: duplicates and late ticks are recognised by
`ComputeBars`, which owns the per-symbol state.
"""
from __future__ import annotations

import time
import zlib
from typing import Any, Callable, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from market import codec, config, schema

# The one event-time parser and tick validator (market/ticks.py); TickError
# and parse_timestamp stay importable from here.
from market.ticks import TickError, describe, parse_timestamp, validate  # noqa: F401
from transforms.tick_row import KEY, RAW, SOURCE, tick_row

METRICS_NAMESPACE = "market.transforms"
DEAD_LETTERS_TAG = "dead_letters"

# A dead letter keeps at most this much of the original value, so one huge
# garbage record cannot blow the DLQ's message size limit.
RAW_MAX_CHARS = 65_536
# Symbols whose shard a worker remembers (a whole market several times over).
SHARD_CACHE_SYMBOLS = 100_000


class SourceRecord(NamedTuple):
    """What a Kafka record gives the pipeline; only `value` is required."""

    value: bytes
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class RecordBatch(NamedTuple):
    """Records read together from one partition of a source, columnar.

    `read_watermark_ms` is the source's watermark just before these records
    were read (what it had reported before them), or None if the source
    does not say. No step downstream can see a later watermark before this
    batch arrives, and a tick whose window expired by it arrived after the
    watermark had passed: it is late (DESIGN.md §4).
    """

    values: list
    keys: list
    topic: str | None
    partitions: list
    offsets: list
    read_watermark_ms: int | None = None


def tick_fields(value: bytes | str, latest_ms: int | None = None) -> tuple:
    """(symbol, price, volume, timestamp_ms, seq) of a valid tick value, else TickError.

    `latest_ms`: the latest event time accepted (the wall clock plus `--max_future_s`), None for no bound.
    """
    try:
        data = codec.loads(value)
    except codec.JSONDecodeError as exc:
        raise TickError(schema.REASON_INVALID_JSON, f"not valid JSON: {str(exc)[:200]}") from None
    if type(data) is not dict:
        raise TickError(schema.REASON_NOT_AN_OBJECT, f"a tick is a JSON object, got {describe(data)}")
    return validate(data, latest_ms)


def raw_text(value: Any) -> str:
    """The original value as text for a dead letter; undecodable bytes stay visible."""
    if value is None:
        return ""  # a tombstone: there was no value (the reason says so)
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[:RAW_MAX_CHARS * 4]).decode("utf-8", errors="backslashreplace")
    elif isinstance(value, str):
        text = value
    else:
        text = type(value).__name__
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


def tick_dead_letter(reason: str, detail: str, tick: tuple) -> tuple:
    """(original key, dead letter) of a parsed tick tuple rejected by a later step."""
    return tick[KEY], dead_letter(reason, detail, tick[RAW], tick[SOURCE])


def _error_text(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails too
        text = type(exc).__name__
    return text[:500]


def _unpack(element: Any) -> tuple[Any, bytes | None, tuple | None]:
    """(value, key, source) of a single input element, whatever shape it came in."""
    if isinstance(element, SourceRecord):
        has_source = element.topic is not None or element.partition is not None or element.offset is not None
        source = (element.topic, element.partition, element.offset) if has_source else None
        return element.value, element.key, source
    if isinstance(element, tuple) and len(element) == 2:
        # ReadFromKafka without metadata yields (key, value).
        return element[1], element[0], None
    return element, None, None


def shard_of(symbol: str, shards: int) -> int:
    """The state shard of a symbol: a hash that is the same in every process and run.

    (Python's `hash` of a str is salted per process; a checkpoint restored
    by another worker must find each symbol in the shard that holds it.)
    """
    return zlib.crc32(symbol.encode()) % shards


class TickSorter:
    """Validates raw records and sorts the valid ticks by (window, symbol); a reject becomes a dead letter.

    Shared by the parse step (`ParseTickFn`) and the bar step when it reads
    records itself (`ShardRecords`). Each reject is counted with a Beam
    metric by its reason; no record can raise out of `add`.
    """

    def __init__(self, max_future_s: float | None = config.MAX_FUTURE_S) -> None:
        self.max_future_ms = None if max_future_s is None else int(max_future_s * 1000)
        self.parsed = Metrics.counter(METRICS_NAMESPACE, "ticks_parsed")
        self.rejected = {reason: Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{reason}")
                         for reason in schema.DEAD_LETTER_REASONS}

    def latest_ms(self) -> int | None:
        """The latest event time a tick read now may have (None: no bound)."""
        return None if self.max_future_ms is None else int(time.time() * 1000) + self.max_future_ms

    def add_batch(self, batches: dict, batch: RecordBatch, latest: int | None, win: Any) -> list:
        """Sort the records of `batch` into `batches`; return the dead letters of the others."""
        letters = []
        watermark, topic = batch.read_watermark_ms, batch.topic
        for value, key, partition, offset in zip(batch.values, batch.keys, batch.partitions, batch.offsets):
            letter = self.add(batches, value, key, (topic, partition, offset), latest, watermark, win)
            if letter is not None:
                letters.append(letter)
        return letters

    def add(self, batches: dict, value: Any, key: Any, source: tuple | None, latest: int | None,
            watermark: int | None, win: Any) -> tuple | None:
        """Sort one record's tick into `batches`: (window, symbol) -> [earliest event ms, read watermark, [ticks]].

        Return `(original key, dead letter)` instead if it is not a valid tick.
        """
        try:
            if value is None:
                # A Kafka tombstone: no value at all, still a record we received.
                raise TickError(schema.REASON_MISSING_FIELD, "record has no value (a tombstone)")
            if not isinstance(value, (bytes, str)):
                if not isinstance(value, (bytearray, memoryview)):
                    raise TickError(schema.REASON_INVALID_JSON,
                                    f"record value must be bytes or text, got {type(value).__name__}")
                value = bytes(value)
            symbol, price, volume, timestamp, seq = tick_fields(value, latest)
            batch = batches.get((win, symbol))
            if batch is None:
                batches[(win, symbol)] = batch = [timestamp, watermark, []]
            else:
                if timestamp < batch[0]:
                    batch[0] = timestamp
                # The earliest source watermark of the batches merged here:
                # a tick is never judged against a watermark read after it.
                # None (read before the source reported any watermark, or a
                # source that carries none) is the earliest of all: a
                # reader's first batch of a backlog, merged with its second,
                # would otherwise be judged by the watermark read after it.
                if batch[1] is not None and (watermark is None or watermark < batch[1]):
                    batch[1] = watermark
            batch[2].append(tick_row(price, volume, timestamp, seq, source, key, value))
            return None
        except TickError as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:  # noqa: BLE001 - one record must never fail the pipeline
            reason, detail = schema.REASON_INTERNAL_ERROR, _error_text(exc)
        return self.reject(reason, detail, value, key, source)

    def reject(self, reason: str, detail: str, value: Any, key: Any, source: tuple | None) -> tuple:
        """`(original key, dead letter)` of a record, counted."""
        counter = self.rejected.get(reason)
        if counter is not None:
            counter.inc()
        try:
            letter = dead_letter(reason, detail, value, source)
        except Exception as exc:  # noqa: BLE001 - e.g. a source that is not a triple
            letter = dead_letter(schema.REASON_INTERNAL_ERROR, _error_text(exc), None, None)
        return key if isinstance(key, bytes) else None, letter


class ShardCache:
    """`shard_of` remembered per symbol: one hash per symbol and worker, bounded."""

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = int(shards)
        self._known: dict[str, int] = {}

    def __call__(self, symbol: str) -> int:
        shard = self._known.get(symbol)
        if shard is None:
            if len(self._known) >= SHARD_CACHE_SYMBOLS:
                self._known.clear()   # a flood of made-up symbols must not grow it without bound
            shard = self._known[symbol] = shard_of(symbol, self.shards)
        return shard


class ParseTickFn(beam.DoFn):
    """Validates raw records; rejects to `dead_letters` at once, and emits the
    valid ticks as one `(shard, {symbol: (ticks, read_watermark_ms)})` batch
    per state shard and bundle when the bundle finishes.

    A tick is a `tick_row` (transforms/tick_row.py). Batching by shard is what makes the keyed bar
    step's cost grow with ticks, not with symbols: one element, one state
    access and one timer per shard and bundle, however many symbols it
    holds. The batches are stamped with their earliest tick's event time;
    the runner finishes a bundle before it forwards the watermark past it,
    so a batch is never later than its ticks would have been.
    """

    def __init__(self, max_future_s: float | None = config.MAX_FUTURE_S,
                 shards: int = config.STATE_SHARDS) -> None:
        self.sorter = TickSorter(max_future_s)
        self.shard_of = ShardCache(shards)

    def start_bundle(self) -> None:
        # (window, symbol) -> [earliest event ms, read watermark ms or None, [ticks]]
        self._batches: dict[tuple[Any, str], list] = {}

    def process(self, element: Any, win=beam.DoFn.WindowParam):
        latest = self.sorter.latest_ms()
        if isinstance(element, RecordBatch):
            letters = self.sorter.add_batch(self._batches, element, latest, win)
        else:
            value, key, source = _unpack(element)
            letter = self.sorter.add(self._batches, value, key, source, latest, None, win)
            letters = () if letter is None else (letter,)
        for letter in letters:
            yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, letter)

    def finish_bundle(self):
        batches, self._batches = self._batches, {}
        shard_of = self.shard_of
        # (window, shard) -> [earliest event ms, {symbol: (ticks, read watermark)}]
        by_shard: dict[tuple[Any, int], list] = {}
        parsed = 0
        for (win, symbol), (earliest, watermark, ticks) in batches.items():
            parsed += len(ticks)
            shard = shard_of(symbol)
            entry = by_shard.get((win, shard))
            if entry is None:
                by_shard[(win, shard)] = [earliest, {symbol: (ticks, watermark)}]
            else:
                if earliest < entry[0]:
                    entry[0] = earliest
                entry[1][symbol] = (ticks, watermark)
        self.sorter.parsed.inc(parsed)   # once per bundle: a metric update per tick is a hot-path cost
        for (win, shard), (earliest, symbols) in by_shard.items():
            yield WindowedValue((shard, symbols), Timestamp(micros=earliest * 1000), (win,))


class ShardRecords:
    """The parse of a source that routes each record to its symbol's shard itself.

    Such a source (pipelines/kafka_io.py's batched read) yields
    `(shard, encoded batch)`; the bar step parses each with `parse` as it
    comes, so no parse step, shuffle and bundle wait come before it.
    `decode` turns an encoded batch into a `RecordBatch`. A valid tick
    routed to another shard than its symbol's (the source's rule and
    `shard_of` disagree) is a dead letter (`internal_error`): a symbol's
    ticks never make two books.
    """

    def __init__(self, decode: Callable[[Any], RecordBatch], max_future_s: float | None = config.MAX_FUTURE_S,
                 shards: int = config.STATE_SHARDS) -> None:
        self.decode = decode
        self.sorter = TickSorter(max_future_s)
        self.shard_of = ShardCache(shards)

    def parse(self, shard: int, encoded: Any) -> tuple[dict, list]:
        """({symbol: (ticks, read watermark)}, dead letters) of one routed batch."""
        try:
            batch = self.decode(encoded)
        except Exception as exc:  # noqa: BLE001 - a batch the source wrote wrong: visible, not fatal
            return {}, [self.sorter.reject(schema.REASON_INTERNAL_ERROR, f"undecodable record batch: "
                                           f"{_error_text(exc)}", encoded, None, None)]
        sorted_ticks: dict[tuple[Any, str], list] = {}
        letters = self.sorter.add_batch(sorted_ticks, batch, self.sorter.latest_ms(), None)
        batches = {}
        parsed = 0
        for (_, symbol), (_, watermark, ticks) in sorted_ticks.items():
            own = self.shard_of(symbol)
            if own != shard:
                detail = f"routed to state shard {shard}, its symbol {symbol!r} is in shard {own}"
                letters.extend(self.sorter.reject(schema.REASON_INTERNAL_ERROR, detail,
                                                  tick[RAW], tick[KEY], tick[SOURCE]) for tick in ticks)
                continue
            parsed += len(ticks)
            batches[symbol] = (ticks, watermark)
        if parsed:
            self.sorter.parsed.inc(parsed)
        return batches, letters


class ParsedTicks(NamedTuple):
    """The outputs of `ParseTicks`."""

    ticks: beam.PCollection         # (shard, {symbol: (tick tuples, read_watermark_ms or None)})
    dead_letters: beam.PCollection  # (original key, dead letter dict)


class ParseTicks(beam.PTransform):
    """Raw records → per-shard batches of valid ticks, plus `(key, dead_letter)` rejects."""

    def __init__(self, max_future_s: float | None = config.MAX_FUTURE_S,
                 shards: int = config.STATE_SHARDS) -> None:
        super().__init__()
        self.max_future_s = max_future_s
        self.shards = shards

    def expand(self, records: beam.PCollection) -> ParsedTicks:
        outputs = records | "ValidateTicks" >> beam.ParDo(ParseTickFn(self.max_future_s, self.shards)).with_outputs(
            DEAD_LETTERS_TAG, main="ticks")
        return ParsedTicks(ticks=outputs.ticks, dead_letters=outputs[DEAD_LETTERS_TAG])
