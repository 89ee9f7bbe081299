"""What the producer sends: a `Record` (kind, key, value, record timestamp) per Kafka message."""
from __future__ import annotations

from typing import Any, NamedTuple

from market import codec, schema

# The kind of every record the producer can send. Clean ticks are `tick`;
# the injected ones are named after what the pipeline should make of them:
# malformed records and too-late ticks after their dead-letter reason
# (DESIGN.md §6), so counts can be compared with the dead-letter topic.
KIND_TICK = "tick"
KIND_OUT_OF_ORDER = "out_of_order"
KIND_DUPLICATE = "duplicate"
KIND_LATE = schema.REASON_LATE
MALFORMED_KINDS: tuple[str, ...] = (
    schema.REASON_INVALID_JSON,
    schema.REASON_NOT_AN_OBJECT,
    schema.REASON_MISSING_FIELD,
    schema.REASON_INVALID_PRICE,
    schema.REASON_INVALID_VOLUME,
    schema.REASON_INVALID_TIMESTAMP,
    schema.REASON_INVALID_SYMBOL,
    schema.REASON_INVALID_SEQ,
)
KINDS: tuple[str, ...] = (KIND_TICK, KIND_OUT_OF_ORDER, KIND_LATE, KIND_DUPLICATE) + MALFORMED_KINDS
VALID_KINDS: frozenset[str] = frozenset((KIND_TICK, KIND_OUT_OF_ORDER))
"""Kinds that should end up in a bar; duplicates are dropped, the rest dead-lettered."""


class Record(NamedTuple):
    """One Kafka message: `timestamp_ms` is the record timestamp (the tick's event time)."""

    kind: str
    key: bytes | None
    value: bytes
    timestamp_ms: int


def symbol_key(symbol: str) -> bytes:
    """The Kafka key of a symbol: its UTF-8 bytes."""
    return symbol.encode("utf-8")


def tick_record(tick: dict[str, Any], kind: str = KIND_TICK) -> Record:
    """Encode a tick as DESIGN.md §2–§3 say: keyed by symbol, record timestamp = event time."""
    # Encoded each time: a cache of keys costs more than encoding a short
    # ASCII name, and more still for a market of 10,000 names.
    return Record(kind, tick["symbol"].encode("utf-8"), codec.dumps(tick), tick["timestamp"])
