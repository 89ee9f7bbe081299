"""Hostile input: whatever arrives, parsing gives a tick or a dead letter, and bars stay finite.

Property tests (hypothesis) over any bytes and any JSON value: deep nesting,
extreme and denormal floats, huge integers, odd strings (DESIGN.md §3, §6).
"""
from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market import schema
from tests.transforms.streams import T0
from transforms.anomalies import Thresholds, bar_anomalies, cross_window_fields
from transforms.combining import add_ticks, bar_stats_of, new_accumulator
from transforms.formatting import format_bar
from transforms.tick_row import tick_row
from transforms.ticks import ParseTickFn, TickError, tick_fields

floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([5e-324, 1e-308, 1e-12, 1e12, 1e308, -0.0, 1e15, 1e16, 2.2250738585072014e-308]))
ints = st.one_of(st.integers(min_value=-2 ** 64, max_value=2 ** 64),
                 st.sampled_from([0, -1, 2 ** 63, 2 ** 63 - 1, 2 ** 64 - 1]))
odd_text = st.one_of(st.text(max_size=40), st.sampled_from([
    "AAPL\n", "\u00b2", "AAPL\x00", "𝟘", "A" * 17, "", " AAPL", "2025-11-25T09:30:00", "2025-11-25T09:30:00Z",
    "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00", "1" * 5000]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), floats, ints, odd_text),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20)


def deep(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def tick_like(fields: dict) -> bytes | None:
    """The fields as JSON text, as a hostile producer could write them (orjson cannot write NaN)."""
    try:
        return orjson.dumps(fields, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def assert_tick_or_reason(value) -> None:
    try:
        symbol, price, volume, timestamp, seq = tick_fields(value)
    except TickError as exc:
        assert exc.reason in schema.DEAD_LETTER_REASONS
        assert len(exc.detail) < 1000
        return
    assert schema.SYMBOL_PATTERN.fullmatch(symbol)
    assert schema.MIN_PRICE <= price <= schema.MAX_PRICE
    assert 0 <= volume <= schema.MAX_VOLUME
    assert schema.MIN_EVENT_MS <= timestamp <= schema.MAX_EVENT_MS


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_tick_or_a_dead_letter_reason(value):
    assert_tick_or_reason(value)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol=st.one_of(odd_text, json_values), price=st.one_of(floats, ints, json_values),
       volume=st.one_of(floats, ints, json_values), stamp=st.one_of(ints, floats, odd_text, json_values),
       seq=st.one_of(st.none(), ints, json_values))
def test_any_json_tick_parses_to_a_tick_or_a_dead_letter_reason(symbol, price, volume, stamp, seq):
    value = tick_like({"symbol": symbol, "price": price, "volume": volume, "timestamp": stamp, "seq": seq})
    if value is not None:
        assert_tick_or_reason(value)


def test_deeply_nested_fields_are_dead_letters_not_crashes():
    for field in (b"symbol", b"price", b"volume", b"timestamp", b"seq"):
        for depth in (100, 1000, 100_000):
            value = (b'{"symbol": "AAPL", "price": 1.5, "volume": 1, "timestamp": 1764063000123, "'
                     + field + b'": ' + deep(depth) + b"}")
            assert_tick_or_reason(value)
    assert_tick_or_reason(deep(200_000))


def test_huge_numbers_written_as_text_are_dead_letters_not_crashes():
    huge = b"1" + b"0" * 5000
    for field in (b"price", b"volume", b"timestamp", b"seq"):
        value = b'{"symbol": "AAPL", "price": 1.5, "volume": 1, "timestamp": 1764063000123, "' + field + b'": '
        for number in (huge, b"-" + huge, b"1e400", b"-1e400", b"4.9e-324", b"1" + b"0" * 20):
            assert_tick_or_reason(value + number + b"}")


def test_no_record_raises_out_of_the_parse_step():
    # Whatever the element: a dead letter with a reason, never an exception.
    fn = ParseTickFn()
    fn.start_bundle()
    strange = [None, 42, 3.5, object(), ["a"], {"value": b"x"}, (b"k", None), (b"k", 7),
               (None, deep(5000)), bytearray(b'{"symbol": "A"}'), memoryview(b"\xff"), "\ud800"]
    for element in strange:
        out = list(fn.process(element, win=None))
        assert len(out) == 1, element
        _, letter = out[0].value
        assert letter["reason"] in schema.DEAD_LETTER_REASONS
    assert list(fn.finish_bundle()) == []


bounded_ticks = st.lists(
    st.tuples(
        st.one_of(st.floats(min_value=schema.MIN_PRICE, max_value=schema.MAX_PRICE),
                  st.sampled_from([schema.MIN_PRICE, schema.MAX_PRICE])),
        st.one_of(st.floats(min_value=0, max_value=schema.MAX_VOLUME), st.sampled_from([0.0, schema.MAX_VOLUME])),
        st.integers(min_value=T0, max_value=T0 + 59_999),
        st.one_of(st.none(), st.integers(min_value=0, max_value=2 ** 63 - 1)),
    ).map(lambda fields: tick_row(*fields)),
    min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(windows=st.lists(bounded_ticks, min_size=1, max_size=26))
def test_admitted_ticks_give_finite_bars_and_cross_window_fields(windows):
    history = []
    for index, ticks in enumerate(windows):
        acc = add_ticks(new_accumulator(), ticks)
        stats = bar_stats_of(acc)
        start = T0 + index * 60_000
        bar = format_bar("X", start, start + 60_000, stats, schema.PANE_ON_TIME, 0, 2.0)
        bar.update(cross_window_fields(history, bar["close"], bar["volume"]))
        bar_anomalies(bar, Thresholds())
        for name, value in bar.items():
            if isinstance(value, float):
                assert math.isfinite(value), (name, value)
        # The history entry the analytics step keeps for this window.
        history.append([start, bar["close"], bar["volume"], bar["log_return"]])
