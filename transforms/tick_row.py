"""A tick inside the pipeline's bar step: a plain tuple, laid out here and only here.

ParseTicks builds each valid tick with `tick_row()` and the bar step reads it
through the positions below: a plain tuple, not a NamedTuple, because the
tick batches cross a shuffle and Beam's FastPrimitivesCoder encodes a tuple
on its fast path but pickles a NamedTuple's type with every element.
`source`, `key` and `raw` are the original Kafka position, key and value,
kept so a tick rejected after the shuffle is still dead-lettered with what
was received (DESIGN.md §6).
"""
from __future__ import annotations

from typing import Any

PRICE, VOLUME, TIMESTAMP, SEQ, SOURCE, KEY, RAW = range(7)
# A tick without a seq sorts before every real seq (seq >= 0) in the open/close order.
NO_SEQ = -1


def tick_row(price: float, volume: float, timestamp: int, seq: int | None, source: tuple | None = None,
             key: bytes | None = None, raw: Any = None) -> tuple:
    """A tick as the bar step holds it (timestamp in event-time epoch ms)."""
    return (price, volume, timestamp, seq, source, key, raw)
