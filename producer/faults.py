"""Fault injection: turn a stream of clean ticks into Kafka records with realistic defects.

Rates are per clean tick. Late and out-of-order ticks are clean ticks whose
event time is moved back (a trade reported late): they keep their place in
the stream and their `seq`, and their Kafka record timestamp is the old event
time too, because the pipeline takes its watermark from record timestamps.
Duplicates and malformed records are extra records inserted after a tick.
Faults draw from their own random generator, so the clean market is the same
with or without them.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from market import codec, config, schema

from producer.records import (
    KIND_DUPLICATE, KIND_LATE, KIND_OUT_OF_ORDER, KIND_TICK, MALFORMED_KINDS, Record, symbol_key, tick_record,
)


@dataclass(frozen=True)
class FaultRates:
    """Probability per clean tick of each defect (0 disables it)."""

    out_of_order: float = 0.0
    late: float = 0.0
    duplicate: float = 0.0
    malformed: Mapping[str, float] = field(default_factory=dict)
    """Rate per malformed kind (keys from `records.MALFORMED_KINDS`)."""
    out_of_order_max_s: float = config.PRODUCER_OUT_OF_ORDER_MAX_S
    late_by_s: float = config.PRODUCER_LATE_BY_S

    def __post_init__(self) -> None:
        unknown = set(self.malformed) - set(MALFORMED_KINDS)
        if unknown:
            raise ValueError(f"unknown malformed kinds {sorted(unknown)}; known: {', '.join(MALFORMED_KINDS)}")
        for name, rate in (("out_of_order", self.out_of_order), ("late", self.late),
                           ("duplicate", self.duplicate), *self.malformed.items()):
            if not 0.0 <= rate <= 1.0 or math.isnan(rate):
                raise ValueError(f"{name} rate must be within [0, 1], got {rate}")
        if self.out_of_order + self.late > 1.0:
            raise ValueError("out_of_order + late rates exceed 1")
        if sum(self.malformed.values()) > 1.0:
            raise ValueError("the malformed rates add up to more than 1")
        if not 0 < self.out_of_order_max_s or self.late_by_s <= 0:
            raise ValueError("out_of_order_max_s and late_by_s must be > 0")

    @classmethod
    def spread_malformed(cls, total: float, **kwargs: Any) -> FaultRates:
        """Rates with `total` malformed records per tick, shared equally by all malformed kinds."""
        share = total / len(MALFORMED_KINDS)
        return cls(malformed={kind: share for kind in MALFORMED_KINDS}, **kwargs)

    @property
    def any(self) -> bool:
        """True if some fault is switched on."""
        return bool(self.out_of_order or self.late or self.duplicate or any(self.malformed.values()))


class FaultInjector:
    """Iterate `Record`s for `ticks`, with the faults of `rates` mixed in deterministically from `seed`."""

    def __init__(self, ticks: Iterable[dict[str, Any]], rates: FaultRates | None = None, *, seed: int = 0) -> None:
        self._ticks = iter(ticks)
        self.rates = rates or FaultRates()
        # A string seed is hashed with SHA-512 by `random`: stable across runs
        # and independent of the market generator seeded with the int.
        self._rng = random.Random(f"faults:{seed}")
        self._pending: list[Record] = []
        self._malformed = [(kind, rate) for kind, rate in self.rates.malformed.items() if rate > 0]
        self._malformed_total = sum(rate for _, rate in self._malformed)

    def __iter__(self) -> Iterator[Record]:
        if not self.rates.any:
            # The fast path of the benchmark: no random draws at all.
            return (tick_record(tick) for tick in self._ticks)
        return self._with_faults()

    def _with_faults(self) -> Iterator[Record]:
        rng = self._rng
        rates = self.rates
        late_ms = int(rates.late_by_s * 1000)
        out_of_order_ms = max(int(rates.out_of_order_max_s * 1000), 1)
        for tick in self._ticks:
            draw = rng.random()
            if draw < rates.late:
                # Back-dated by late_by plus up to a third more, so that late
                # ticks do not all land in the same old window.
                back_ms = late_ms + rng.randrange(late_ms // 3 + 1)
                record = tick_record(dict(tick, timestamp=tick["timestamp"] - back_ms), KIND_LATE)
            elif draw < rates.late + rates.out_of_order:
                back_ms = rng.randint(1, out_of_order_ms)
                record = tick_record(dict(tick, timestamp=tick["timestamp"] - back_ms), KIND_OUT_OF_ORDER)
            else:
                record = tick_record(tick, KIND_TICK)
            yield record
            if rates.duplicate and rng.random() < rates.duplicate:
                yield record._replace(kind=KIND_DUPLICATE)
            if self._malformed_total:
                draw = rng.random()
                if draw < self._malformed_total:
                    for kind, rate in self._malformed:
                        if draw < rate:
                            yield malformed_record(kind, tick, rng)
                            break
                        draw -= rate


def malformed_record(kind: str, tick: dict[str, Any], rng: random.Random) -> Record:
    """A record with exactly one defect of `kind`, modelled on `tick` (DESIGN.md §3).

    Everything but the defect is valid, so a validator must give `kind` as the
    reason. The record timestamp is the tick's event time, and the record has
    no `seq`, so it can never collide with a real tick's `seq`.
    """
    base = {"symbol": tick["symbol"], "price": tick["price"], "volume": tick["volume"],
            "timestamp": tick["timestamp"]}
    key = symbol_key(tick["symbol"])
    variant = rng.randrange(3)
    if kind == schema.REASON_INVALID_JSON:
        text = codec.dumps(base)
        # Truncated, not JSON at all, or the NaN literal that Python's json
        # module writes and strict parsers (orjson) reject.
        value = (text[: len(text) // 2], b"tick " + text,
                 text.replace(b'"price":' + codec.dumps(tick["price"]), b'"price":NaN'))[variant]
        return Record(kind, key, value, tick["timestamp"])
    if kind == schema.REASON_NOT_AN_OBJECT:
        value = codec.dumps((list(base.values()), tick["symbol"], tick["price"])[variant])
        return Record(kind, key, value, tick["timestamp"])
    if kind == schema.REASON_MISSING_FIELD:
        del base[schema.TICK_REQUIRED[rng.randrange(len(schema.TICK_REQUIRED))]]
        if "symbol" not in base:
            key = None
    elif kind == schema.REASON_INVALID_PRICE:
        # NaN cannot be written as JSON number; "NaN" is how it arrives as text.
        base["price"] = (-round(tick["price"], 2), 0, "NaN")[variant]
    elif kind == schema.REASON_INVALID_VOLUME:
        base["volume"] = (-abs(tick["volume"]) - 1, "lots", "Infinity")[variant]
    elif kind == schema.REASON_INVALID_TIMESTAMP:
        # Before 2000 (epoch seconds mistaken for ms), after 2100, or not a time.
        base["timestamp"] = (tick["timestamp"] // 1000, schema.MAX_EVENT_MS + 86_400_000, "yesterday")[variant]
    elif kind == schema.REASON_INVALID_SYMBOL:
        symbol = ("BAD SYMBOL", "A" * (len(tick["symbol"]) + 17), "AAPL$")[variant]
        base["symbol"] = symbol
        key = symbol_key(symbol)
    elif kind == schema.REASON_INVALID_SEQ:
        base["seq"] = ("seven", 1.5, [7])[variant]
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return Record(kind, key, codec.dumps(base), tick["timestamp"])
