"""ComputeBars on TestStream scripts: panes, lateness, ordering, duplicates.

Expected bars come from tests/reference.py's `window_bar` (written from
DESIGN.md) or from numbers worked out by hand in the test.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue

from market import schema
from tests.reference import close_enough, window_bar
from tests.transforms.streams import MINUTE, T0, at, record, run, streaming_options, zero_clock
from transforms import ComputeBars, ParseTicks, RecordBatch


def bars_and_dead_letters(early_firing_s: float = 5):
    def build(records):
        bars = (records | ParseTicks()).ticks | ComputeBars(early_firing_s=early_firing_s, clock=zero_clock)
        return {"bars": bars.bars, "dead": bars.dead_letters}
    return build


def window_fields_ok(bar: dict, symbol: str, start: int, ticks: list) -> None:
    """`bar` has the window-local values the reference computes from `ticks`."""
    expected = window_bar(symbol, start, start + MINUTE,
                          [(symbol, p, v, ts, seq) for p, v, ts, seq in ticks], 2.0)
    for name, value in expected.items():
        assert close_enough(bar[name], value), (name, bar[name], value)


def panes_of(bars: list, symbol: str, start: int) -> list:
    return sorted((b for b in bars if b["symbol"] == symbol and b["window_start"] == start),
                  key=lambda b: b["pane_index"])


def test_early_on_time_and_late_panes_and_too_late_dead_letter():
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("AAPL", 100.0, T0 + 1_000, 1), record("AAPL", 101.0, T0 + 2_000, 2)])
              .advance_processing_time(6)        # early firing: a partial bar
              .add_elements([record("AAPL", 103.0, T0 + 3_000, 3)])
              .advance_processing_time(6)        # second early firing, accumulating
              .advance_watermark_to(at(T0 + MINUTE))   # ON_TIME pane
              .add_elements([record("AAPL", 98.0, T0 + 4_000, 4, volume=50)])  # late, within 30 s
              .advance_watermark_to(at(T0 + MINUTE + 30_000))  # window expired
              .add_elements([record("AAPL", 50.0, T0 + 5_000, 5)])  # too late
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters())
    panes = panes_of(out["bars"], "AAPL", T0)
    assert [(b["pane"], b["pane_index"], b["is_final"], b["tick_count"]) for b in panes] == [
        ("EARLY", 0, False, 2), ("EARLY", 1, False, 3), ("ON_TIME", 2, True, 3), ("LATE", 3, True, 4)]
    assert all(set(b) == set(schema.BAR_FIELDS) for b in panes)
    window_fields_ok(panes[2], "AAPL", T0, [(100.0, 100, T0 + 1_000, 1), (101.0, 100, T0 + 2_000, 2),
                                            (103.0, 100, T0 + 3_000, 3)])
    # The late tick is the latest in event time: it becomes the close.
    window_fields_ok(panes[3], "AAPL", T0, [(100.0, 100, T0 + 1_000, 1), (101.0, 100, T0 + 2_000, 2),
                                            (103.0, 100, T0 + 3_000, 3), (98.0, 50, T0 + 4_000, 4)])
    assert panes[3]["close"] == 98.0 and panes[3]["low"] == 98.0
    assert panes[3]["vwap"] == (100 * 100 + 101 * 100 + 103 * 100 + 98 * 50) / 350
    # The dead letter keeps the record's original key (none here) and text.
    assert [(key, letter["reason"]) for key, letter in out["dead"]] == [(None, "late")]
    assert out["dead"][0][1]["raw"] == record("AAPL", 50.0, T0 + 5_000, 5).value.decode()


def test_on_time_pane_is_complete_without_early_firings():
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("MSFT", 400.0, T0 + 10_000, 7), record("MSFT", 404.0, T0 + 50_000, 8)])
              .advance_watermark_to(at(T0 + MINUTE))
              .advance_watermark_to_infinity())
    # equal_to_per_window checks the bars stay in their event-time window.
    with beam.Pipeline(options=streaming_options()) as p:
        bars = ((p | stream | ParseTicks()).ticks | ComputeBars(early_firing_s=0)).bars
        summary = bars | beam.Map(lambda b: (b["pane"], b["open"], b["close"], b["tick_count"]))
        assert_that(summary, equal_to_per_window({
            IntervalWindow(at(T0), at(T0 + MINUTE)): [("ON_TIME", 400.0, 404.0, 2)]}),
            reify_windows=True)


def test_out_of_order_ticks_inside_a_window():
    # Arrival order is the reverse of event time; open/close follow event time,
    # and ties on event time go to the larger seq as the later tick.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("IBM", 130.0, T0 + 50_000, 13)])
              .add_elements([record("IBM", 125.0, T0 + 20_000, 12)])
              .add_elements([record("IBM", 121.0, T0 + 5_000, 11), record("IBM", 120.0, T0 + 5_000, 10)])
              .advance_watermark_to(at(T0 + MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    [bar] = out["bars"]
    assert (bar["open"], bar["close"], bar["high"], bar["low"]) == (120.0, 130.0, 130.0, 120.0)
    window_fields_ok(bar, "IBM", T0, [(130.0, 100, T0 + 50_000, 13), (125.0, 100, T0 + 20_000, 12),
                                      (121.0, 100, T0 + 5_000, 11), (120.0, 100, T0 + 5_000, 10)])


def test_interleaved_symbols_and_an_empty_window():
    # AAA ticks in minutes 0 and 2, not in minute 1: no bar for minute 1.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("AAA", 10.0, T0 + 1_000, 1), record("bbb", 20.0, T0 + 2_000, 1),
                             record("AAA", 11.0, T0 + 3_000, 2), record("BBB", 21.0, T0 + 4_000, 2)])
              .advance_watermark_to(at(T0 + MINUTE))
              .add_elements([record("BBB", 22.0, T0 + MINUTE + 1_000, 3)])
              .advance_watermark_to(at(T0 + 2 * MINUTE))
              .add_elements([record("AAA", 12.0, T0 + 2 * MINUTE + 1_000, 3)])
              .advance_watermark_to(at(T0 + 3 * MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    got = sorted((b["symbol"], (b["window_start"] - T0) // MINUTE, b["pane"], b["tick_count"], b["close"])
                 for b in out["bars"])
    assert got == [("AAA", 0, "ON_TIME", 2, 11.0), ("AAA", 2, "ON_TIME", 1, 12.0),
                   ("BBB", 0, "ON_TIME", 2, 21.0), ("BBB", 1, "ON_TIME", 1, 22.0)]
    assert out["dead"] == []


def test_duplicates_are_dropped_once_and_reported():
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("ETH-USD", 3000.0, T0 + 1_000, 41), record("ETH-USD", 3010.0, T0 + 2_000, 42)])
              .add_elements([record("ETH-USD", 3010.0, T0 + 2_000, 42)])   # producer retry
              .add_elements([record("ETH-USD", 3010.0, T0 + 2_000, 42),    # and again
                             record("ETH-USD", 2990.0, T0 + 3_000)])       # no seq: never a duplicate
              .add_elements([record("ETH-USD", 2990.0, T0 + 3_000)])
              .advance_watermark_to(at(T0 + MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    [bar] = out["bars"]
    assert bar["tick_count"] == 4 and bar["volume"] == 400
    assert sorted((key, letter["reason"]) for key, letter in out["dead"]) == [
        (None, "duplicate"), (None, "duplicate")]
    assert all('"seq": 42' in letter["raw"] for _, letter in out["dead"])


def test_late_tick_for_a_quiet_window_of_a_ticking_symbol_is_judged():
    # The symbol keeps ticking in later windows, so its clock knows that
    # minute 1 (which had no tick) expired: the straggler is a dead letter.
    stream = TestStream().advance_watermark_to(at(T0))
    for minute in (0, 2, 3, 4):
        stream = (stream.add_elements([record("SPY", 500.0 + minute, T0 + minute * MINUTE + 1_000, minute)])
                  .advance_watermark_to(at(T0 + (minute + 1) * MINUTE)))
    stream = (stream
              .add_elements([record("SPY", 499.0, T0 + MINUTE + 5_000, 99)])
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    assert sorted((b["window_start"] - T0) // MINUTE for b in out["bars"]) == [0, 2, 3, 4]
    assert [(key, letter["reason"]) for key, letter in out["dead"]] == [(None, "late")]


def batch(values: list, watermark_ms: int, keys: list | None = None) -> TimestampedValue:
    """Records read together while the source's watermark was `watermark_ms` (as the Kafka read gives them)."""
    n = len(values)
    return TimestampedValue(RecordBatch(values, keys or [None] * n, "raw_stock_ticks", [0] * n,
                                        list(range(n)), watermark_ms), at(watermark_ms))


def test_a_backlog_read_before_any_watermark_is_not_judged_by_the_next_batch():
    # A reader starting on a backlog (a pipeline started after its producer):
    # its first batch goes out before it has reported any watermark, the
    # second carries the watermark reported after the first, minutes past
    # the backlog's oldest windows. Both land in one bundle; the first
    # batch's ticks are on time and must end in bars, not in `late` dead
    # letters (they once did, in CI: the merged batch took the later
    # watermark).
    backlog = [record("WARM", 50.0 + i, T0 + i * 20_000, i).value for i in range(9)]   # 3 minutes
    then = [record("WARM", 60.0, T0 + 3 * MINUTE + 1_000, 9).value]
    first = TimestampedValue(RecordBatch(backlog, [None] * 9, "raw_stock_ticks", [0] * 9, list(range(9)), None),
                             at(T0))
    second = TimestampedValue(RecordBatch(then, [None], "raw_stock_ticks", [0], [9], T0 + 3 * MINUTE - 1_000),
                              at(T0 + 3 * MINUTE - 1_000))
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([first, second])
              .advance_watermark_to(at(T0 + 5 * MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    assert out["dead"] == []
    assert sorted(((b["window_start"] - T0) // MINUTE, b["tick_count"]) for b in out["bars"]
                  if b["is_final"]) == [(0, 3), (1, 3), (2, 3), (3, 1)]


def test_too_late_first_tick_of_an_unseen_symbol_is_a_late_dead_letter():
    # The source's watermark says the new symbol's first tick is past its
    # window's lateness: a dead letter with the original key and text, and
    # the other symbol's bar is unaffected.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([batch([record("AAA", 10.0, T0 + 1_000, 1).value], T0)])
              .advance_watermark_to(at(T0 + MINUTE + 40_000))
              .add_elements([batch([record("NEW", 7.0, T0 + 2_000, 1).value], T0 + MINUTE + 40_000, [b"new"])])
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    assert [(b["symbol"], b["pane"], b["tick_count"]) for b in out["bars"]] == [("AAA", "ON_TIME", 1)]
    assert [(key, letter["reason"], letter["raw"]) for key, letter in out["dead"]] == [
        (b"new", "late", record("NEW", 7.0, T0 + 2_000, 1).value.decode())]


def test_old_first_tick_of_a_new_symbol_does_not_hold_back_other_symbols():
    # Years-old first tick, then current ticks of the same symbol: the old
    # one is late, and the other symbol's next windows close on time.
    old = T0 - 3 * 365 * 24 * 3600 * 1000
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([batch([record("OLD", 5.0, old, 1).value, record("OLD", 6.0, T0 + 1_000, 2).value,
                                    record("SPY", 500.0, T0 + 2_000, 1).value], T0)])
              .advance_watermark_to(at(T0 + MINUTE))
              .add_elements([batch([record("SPY", 501.0, T0 + MINUTE + 1_000, 2).value], T0 + MINUTE)])
              .advance_watermark_to(at(T0 + 2 * MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    got = sorted((b["symbol"], (b["window_start"] - T0) // MINUTE, b["pane"], b["tick_count"]) for b in out["bars"])
    assert got == [("OLD", 0, "ON_TIME", 1), ("SPY", 0, "ON_TIME", 1), ("SPY", 1, "ON_TIME", 1)]
    assert [letter["reason"] for _, letter in out["dead"]] == ["late"]


def test_first_tick_of_a_window_already_past_its_end_is_a_late_pane():
    # Within the allowed lateness, but the source's watermark had passed the
    # window's end before the window's first tick: its first pane is LATE.
    stream = (TestStream()
              .advance_watermark_to(at(T0 + MINUTE + 10_000))
              .add_elements([batch([record("IBM", 130.0, T0 + 50_000, 1).value], T0 + MINUTE + 10_000)])
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    assert [(b["pane"], b["pane_index"], b["is_final"], b["tick_count"]) for b in out["bars"]] == [
        ("LATE", 0, True, 1)]


def test_exact_duplicates_only_a_reused_seq_with_other_content_is_processed():
    # A restarted source reusing seq 1 and 2 with other prices loses nothing;
    # an exact copy is a duplicate.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("BTC-USD", 90000.0, T0 + 1_000, 1), record("BTC-USD", 90010.0, T0 + 2_000, 2)])
              .add_elements([record("BTC-USD", 90020.0, T0 + 3_000, 1), record("BTC-USD", 90030.0, T0 + 4_000, 2),
                             record("BTC-USD", 90010.0, T0 + 2_000, 2)])
              .advance_watermark_to(at(T0 + MINUTE))
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    [bar] = out["bars"]
    assert (bar["tick_count"], bar["close"]) == (4, 90030.0)
    assert [letter["reason"] for _, letter in out["dead"]] == ["duplicate"]


def test_plain_records_without_a_source_watermark_end_in_a_bar_not_in_silence():
    # The documented limit: a plain record (no RecordBatch, so no source
    # watermark) whose window no timer of its symbol has closed cannot be
    # proved late; it ends in a bar of its own.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([record("AAA", 10.0, T0 + 1_000, 1)])
              .advance_watermark_to(at(T0 + MINUTE + 40_000))
              .add_elements([record("NEW", 7.0, T0 + 2_000, 1)])
              .advance_watermark_to_infinity())
    out = run(stream, bars_and_dead_letters(early_firing_s=0))
    new = [(b["pane"], b["tick_count"]) for b in out["bars"] if b["symbol"] == "NEW"]
    assert new == [("ON_TIME", 1)] and out["dead"] == []
