"""Fault injection: each defect at its rate, each malformed record rejected for the right reason."""
from __future__ import annotations

import math
import random
from collections import Counter
from itertools import islice

import pytest

from market import codec, config
from producer.faults import FaultInjector, FaultRates, malformed_record
from producer.records import KIND_TICK, MALFORMED_KINDS, VALID_KINDS
from producer.simulator import TickSimulator
from tests.producer.reference import classify

START_MS = 1_764_063_000_000
N = 100_000


def records(rates: FaultRates | None, n: int = N, seed: int = 1) -> list:
    ticks = islice(TickSimulator(seed=seed, start_ms=START_MS, event_rate=1_000, seq_base=0), n)
    return list(FaultInjector(ticks, rates, seed=seed))


def within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


def test_without_faults_every_record_is_a_clean_keyed_tick() -> None:
    out = records(None, 5_000)
    assert {r.kind for r in out} == {KIND_TICK}
    for record in out:
        tick = codec.loads(record.value)
        assert record.key == tick["symbol"].encode()
        assert record.timestamp_ms == tick["timestamp"]
        assert classify(record.value) is None


def test_faults_appear_at_their_rates() -> None:
    rates = FaultRates.spread_malformed(0.04, out_of_order=0.02, late=0.01, duplicate=0.015)
    counts = Counter(r.kind for r in records(rates))
    assert within_binomial(counts["out_of_order"], N, 0.02), counts
    assert within_binomial(counts["late"], N, 0.01), counts
    assert within_binomial(counts["duplicate"], N, 0.015), counts
    for kind in MALFORMED_KINDS:
        assert within_binomial(counts[kind], N, 0.005), (kind, counts)
    # Late and out-of-order ticks replace clean ones; the rest are extra records.
    assert counts["tick"] + counts["out_of_order"] + counts["late"] == N


def test_each_malformed_kind_is_rejected_for_its_own_reason() -> None:
    rng = random.Random(3)
    ticks = list(islice(TickSimulator(seed=3, start_ms=START_MS), 300))
    for kind in MALFORMED_KINDS:
        seen_values = set()
        for tick in ticks:
            record = malformed_record(kind, tick, rng)
            assert classify(record.value) == kind, (kind, record.value)
            assert record.timestamp_ms == tick["timestamp"]
            seen_values.add(record.value)
        assert len(seen_values) > 3  # several variants of each defect


def test_malformed_kinds_cover_the_design_reasons() -> None:
    assert {"invalid_json", "missing_field", "invalid_price", "invalid_volume", "invalid_timestamp",
            "invalid_symbol"} <= set(MALFORMED_KINDS)


def test_a_nan_price_is_among_the_invalid_prices() -> None:
    rng = random.Random(0)
    tick = {"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": START_MS, "seq": 1}
    prices = {codec.dumps(codec.loads(malformed_record("invalid_price", tick, rng).value)["price"])
              for _ in range(60)}
    assert prices == {b"-189.23", b"0", b'"NaN"'}


def test_late_and_out_of_order_ticks_carry_their_old_event_time() -> None:
    rates = FaultRates(out_of_order=0.05, late=0.05)
    out = records(rates, 20_000)
    newest = 0
    late_by_ms = config.PRODUCER_LATE_BY_S * 1000
    for record in out:
        tick = codec.loads(record.value)
        assert record.timestamp_ms == tick["timestamp"]  # the watermark sees the old time too
        if record.kind == "late":
            assert late_by_ms <= newest - tick["timestamp"] + 1 <= late_by_ms * 4 / 3 + 1_000
        elif record.kind == "out_of_order":
            back = newest - tick["timestamp"]
            assert -1 <= back <= config.PRODUCER_OUT_OF_ORDER_MAX_S * 1000
            assert back < (config.ALLOWED_LATENESS_S * 1000)
        else:
            newest = max(newest, tick["timestamp"])
        assert classify(record.value) is None


def test_duplicates_repeat_the_previous_tick_exactly() -> None:
    out = records(FaultRates(duplicate=0.05), 5_000)
    for previous, record in zip(out, out[1:]):
        if record.kind == "duplicate":
            assert (record.key, record.value, record.timestamp_ms) == (
                previous.key, previous.value, previous.timestamp_ms)


def test_faults_do_not_change_the_market() -> None:
    clean = [codec.loads(r.value) for r in records(None, 10_000)]
    faulty = [codec.loads(r.value) for r in records(FaultRates.spread_malformed(0.1, late=0.05, out_of_order=0.05,
                                                                                duplicate=0.05), 10_000)
              if r.kind in VALID_KINDS or r.kind == "late"]
    assert len(faulty) == len(clean)
    for a, b in zip(clean, faulty):
        assert (a["symbol"], a["price"], a["volume"], a["seq"]) == (b["symbol"], b["price"], b["volume"], b["seq"])


def test_same_seed_same_faults() -> None:
    rates = FaultRates.spread_malformed(0.05, late=0.01, duplicate=0.01)
    assert records(rates, 5_000, seed=4) == records(rates, 5_000, seed=4)


@pytest.mark.parametrize("kwargs", [
    {"late": 1.5}, {"duplicate": -0.1}, {"late": 0.6, "out_of_order": 0.6},
    {"malformed": {"bogus": 0.1}}, {"malformed": {"invalid_json": 0.7, "invalid_seq": 0.7}},
])
def test_impossible_rates_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FaultRates(**kwargs)
