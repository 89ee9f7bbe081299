"""ParseTicks: valid ticks in every input shape, each dead-letter reason with a realistic bad record."""
from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from market import schema
from tests.reference import _Invalid, validate
from transforms import ParseTicks, SourceRecord
from transforms.ticks import tick_fields

GOOD = b'{"symbol": "aapl", "price": 189.23, "volume": 100, "timestamp": 1764063000123, "seq": 42}'

BAD_RECORDS = [
    (schema.REASON_INVALID_JSON, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 17640'),
    (schema.REASON_INVALID_JSON, b"\xff\xfe garbage from a misconfigured producer"),
    (schema.REASON_INVALID_JSON, b'{"symbol": "AAPL", "price": NaN, "volume": 1, "timestamp": 1764063000123}'),
    (schema.REASON_NOT_AN_OBJECT, b'["AAPL", 189.23, 100, 1764063000123]'),
    (schema.REASON_MISSING_FIELD, b'{"symbol": "AAPL", "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_MISSING_FIELD, b'{"symbol": "AAPL", "price": null, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": -3.5, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": "189.23", "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": 0, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_JSON, b'{"symbol": "AAPL", "price": 1e999, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_VOLUME, b'{"symbol": "AAPL", "price": 189.23, "volume": -100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_VOLUME, b'{"symbol": "AAPL", "price": 189.23, "volume": true, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_TIMESTAMP, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": "yesterday"}'),
    (schema.REASON_INVALID_TIMESTAMP, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": "2025-11-25T09:30:00"}'),
    (schema.REASON_INVALID_TIMESTAMP, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 1764063000}'),
    (schema.REASON_INVALID_TIMESTAMP, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 4200000000000000}'),
    (schema.REASON_INVALID_SYMBOL, b'{"symbol": "AAPL US EQUITY", "price": 189.23, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_SYMBOL, b'{"symbol": "", "price": 189.23, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_SYMBOL, b'{"symbol": 42, "price": 189.23, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_SEQ, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 1764063000123, "seq": "42"}'),
    (schema.REASON_INVALID_SEQ, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 1764063000123, "seq": -1}'),
    # DESIGN.md §3 bounds: nothing summed or logged over a window can overflow or underflow.
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": 1e308, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": 5e-324, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_VOLUME, b'{"symbol": "AAPL", "price": 1.5, "volume": 1e16, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_SYMBOL, b'{"symbol": "AAPL\\n", "price": 189.23, "volume": 100, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_TIMESTAMP, b'{"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": "1999-12-31T23:59:59Z"}'),
    (schema.REASON_INVALID_PRICE, b'{"symbol": "AAPL", "price": ' + b"[" * 1000 + b"]" * 1000 + b', "volume": 1, "timestamp": 1764063000123}'),
    (schema.REASON_INVALID_SEQ, b'{"symbol": "AAPL", "price": 1.5, "volume": 1, "timestamp": 1764063000123, "seq": 99999999999999999999999}'),
]


@pytest.mark.parametrize("reason, value", BAD_RECORDS)
def test_bad_record_reason_agrees_with_reference(reason, value):
    with pytest.raises(Exception) as raised:
        tick_fields(value)
    assert raised.value.reason == reason
    with pytest.raises(_Invalid) as expected:
        validate(value)
    assert expected.value.reason == reason


@pytest.mark.parametrize("stamp, millis", [
    (1764063000123, 1764063000123),
    (1764063000123.0, 1764063000123),
    ("2025-11-25T09:30:00.123Z", 1764063000123),
    ("2025-11-25T10:30:00.123+01:00", 1764063000123),
])
def test_timestamp_forms(stamp, millis):
    value = f'{{"symbol": "BTC/USD", "price": 1, "volume": 0.5, "timestamp": {stamp!r}}}'.replace("'", '"')
    assert tick_fields(value) == ("BTC/USD", 1.0, 0.5, millis, None)
    assert validate(value)[3] == millis


def test_every_input_shape_and_every_dead_letter_reaches_its_output():
    records = [
        SourceRecord(GOOD, key=b"AAPL", topic="raw_stock_ticks", partition=1, offset=1233),
        GOOD.decode(),
        (b"AAPL", GOOD.replace(b'"seq": 42', b'"seq": 43')),
        *[SourceRecord(value, key=b"AAPL", topic="raw_stock_ticks", partition=2, offset=n)
          for n, (_, value) in enumerate(BAD_RECORDS)],
        SourceRecord(None, key=b"AAPL", topic="raw_stock_ticks", partition=0, offset=7),
    ]
    with TestPipeline() as pipeline:
        parsed = pipeline | beam.Create(records, reshuffle=False) | ParseTicks()
        # One batch per state shard and bundle: (shard, {symbol: (ticks, source watermark)}).
        ticks = parsed.ticks | beam.FlatMap(lambda kv: [
            (symbol, *tick[:6]) for symbol, (batch, _) in kv[1].items() for tick in batch])
        assert_that(ticks, equal_to([
            ("AAPL", 189.23, 100.0, 1764063000123, 42, ("raw_stock_ticks", 1, 1233), b"AAPL"),
            ("AAPL", 189.23, 100.0, 1764063000123, 42, None, None),
            ("AAPL", 189.23, 100.0, 1764063000123, 43, None, b"AAPL"),
        ]), label="Ticks")
        summary = parsed.dead_letters | beam.Map(
            lambda kv: (kv[0], kv[1]["reason"], kv[1]["raw"], kv[1]["source"]["offset"],
                        sorted(kv[1]) == sorted(schema.DEAD_LETTER_FIELDS)
                        and isinstance(kv[1]["rejected_at"], int) and bool(kv[1]["detail"])))
        assert_that(summary, equal_to([
            *[(b"AAPL", reason, value.decode("utf-8", "backslashreplace"), n, True)
              for n, (reason, value) in enumerate(BAD_RECORDS)],
            (b"AAPL", schema.REASON_MISSING_FIELD, "", 7, True),
        ]), label="DeadLetters")


def test_batches_carry_their_earliest_event_time():
    later = GOOD.replace(b"1764063000123", b"1764063000999")
    with TestPipeline() as pipeline:
        stamps = ((pipeline | beam.Create([later, GOOD], reshuffle=False) | ParseTicks()).ticks
                  | beam.Map(lambda batch, ts=beam.DoFn.TimestampParam: (
                      sum(len(ticks) for ticks, _ in batch[1].values()), ts.micros)))
        assert_that(stamps, equal_to([(2, 1764063000123 * 1000)]))


def test_a_tick_from_the_future_is_rejected():
    now = 1764063000000
    future = GOOD.replace(b"1764063000123", str(now + 61_000).encode())
    with pytest.raises(Exception) as raised:
        tick_fields(future, latest_ms=now + 60_000)
    assert raised.value.reason == schema.REASON_INVALID_TIMESTAMP
    assert tick_fields(future, latest_ms=now + 2_000 + 60_000)[3] == now + 61_000
