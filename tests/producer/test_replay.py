"""CSV replay files: parsing, bad rows skipped with their line number, the shipped sample."""
from __future__ import annotations

import io
import logging
from itertools import islice

import pytest

from market import codec
from producer.replay import SAMPLE_CSV, CsvTicks, write_csv
from producer.simulator import TickSimulator
from tests.producer.reference import classify

GOOD = """symbol,timestamp,price,volume,seq
AAPL,1764063000123,189.23,100,42
msft,2025-11-25T09:30:00.500Z,420.5,3,
BTC-USD,2025-11-25T10:30:01+01:00,95000.5,0.0125,7
"""


def parse(text: str) -> tuple[list[dict], CsvTicks]:
    source = CsvTicks(io.StringIO(text))
    return list(source), source


def test_good_rows_become_design_ticks() -> None:
    ticks, source = parse(GOOD)
    assert ticks == [
        {"symbol": "AAPL", "price": 189.23, "volume": 100, "timestamp": 1764063000123, "seq": 42},
        {"symbol": "MSFT", "price": 420.5, "volume": 3, "timestamp": 1764063000500},
        {"symbol": "BTC-USD", "price": 95000.5, "volume": 0.0125, "timestamp": 1764063001000, "seq": 7},
    ]
    assert source.good_rows == 3 and source.bad_rows == 0
    assert all(classify(codec.dumps(tick)) is None for tick in ticks)


def test_columns_may_come_in_any_order_and_seq_is_optional() -> None:
    ticks, _ = parse("price,volume,symbol,timestamp\n10.5,1,ab,1764063000000\n")
    assert ticks == [{"symbol": "AB", "price": 10.5, "volume": 1, "timestamp": 1764063000000}]


BAD = """symbol,timestamp,price,volume,seq
AAPL,1764063000000,189.23,100,1
AAPL,1764063000001,-1,100,2
AAPL,1764063000002,nan,100,3
AAPL,1764063000003,189.2,-5,4
AAPL,1764063000004,189.2,many,5
AAPL,2025-11-25T09:30:00,189.2,1,6
AAPL,1764063000,189.2,1,7
AAPL,yesterday,189.2,1,8
BAD SYMBOL,1764063000009,189.2,1,9
AAPL,1764063000010,,1,10
AAPL,1764063000011,189.2,1,x
AAPL,1764063000012,189.2,1,12,extra
AAPL,1764063000013
AAPL,17640630000²,189.2,1,15
AAPL,1764063000016,١٨٩,1,16
AAPL,1764063000017,189.2,1,1²
AAPL,1764063000018,189.25,200,18
"""


def test_bad_rows_are_logged_with_their_line_number_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="producer.replay")
    ticks, source = parse(BAD)
    assert [tick["seq"] for tick in ticks] == [1, 18]
    assert source.bad_rows == 15
    skipped = [record.getMessage() for record in caplog.records]
    assert len(skipped) == 15
    # Lines 15-17: str.isdigit() and int() took "²" and Arabic-Indic digits (int("²") raised mid-replay).
    for line, words in zip(range(3, 18), ["price", "price", "volume", "volume", "offset", "years", "timestamp",
                                          "symbol", "price is empty", "seq", "fields", "empty",
                                          "timestamp", "price", "seq"]):
        assert f"line {line} skipped" in skipped[line - 3] and words in skipped[line - 3], skipped[line - 3]


def test_a_header_without_a_required_column_is_refused() -> None:
    with pytest.raises(ValueError, match="price"):
        parse("symbol,timestamp,volume\nAAPL,1764063000000,1\n")
    with pytest.raises(ValueError):
        parse("AAPL,1764063000000,189.23,100\n")  # no header at all


def test_written_ticks_read_back_unchanged() -> None:
    ticks = list(islice(TickSimulator(seed=5, start_ms=1_764_063_000_000), 500))
    buffer = io.StringIO()
    assert write_csv(ticks, buffer) == 500
    buffer.seek(0)
    assert list(CsvTicks(buffer)) == ticks


def test_the_shipped_sample_is_clean_and_spans_several_windows() -> None:
    source = CsvTicks(SAMPLE_CSV)
    ticks = list(source)
    assert source.bad_rows == 0 and len(ticks) >= 1_000
    assert len({tick["symbol"] for tick in ticks}) >= 5
    minutes = {tick["timestamp"] // 60_000 for tick in ticks}
    assert len(minutes) >= 5
    # It is the simulator's output for the command in docs/producer.md.
    regenerated = list(islice(TickSimulator(["AAPL", "MSFT", "NVDA", "TSLA", "BTC-USD"], seed=7,
                                            start_ms=ticks[0]["timestamp"], event_rate=5, jump_rate_per_min=0.2,
                                            seq_base=0),
                              len(ticks)))
    assert regenerated == ticks


def test_replay_skips_what_the_pipeline_would_dead_letter() -> None:
    # Rows the old replay's own checks let through; the pipeline rejects them (DESIGN.md §3 bounds).
    ticks, source = parse("symbol,timestamp,price,volume\nAAPL,1764063000000,1e13,1\n"
                          "AAPL,1764063000001,10,1e16\nAAPL,1764063000002,10,1\n")
    assert [tick["timestamp"] for tick in ticks] == [1764063000002]
    assert source.bad_rows == 2
    assert all(classify(codec.dumps(tick)) is None for tick in ticks)
