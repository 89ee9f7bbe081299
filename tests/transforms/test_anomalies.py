"""Cross-window fields and alerts of the bar step: event-time order, history, alerts once."""
from __future__ import annotations

import math

from apache_beam.testing.test_stream import TestStream

from market import schema
from tests.reference import close_enough, history_fields
from tests.transforms.streams import MINUTE, T0, at, record, run, zero_clock
from transforms import ComputeBars, ParseTicks


def ticks(minute: int, close: float, volume: float = 1000.0, high: float | None = None,
          low: float | None = None, symbol: str = "AAPL", seq: int = 0) -> list:
    """Tick records whose window bar has this close, volume, high and low (the close last in time)."""
    start = T0 + minute * MINUTE
    records = []
    if high is not None:
        records.append(record(symbol, high, start + 1_000, seq * 10 + 1, volume=0))
    if low is not None:
        records.append(record(symbol, low, start + 2_000, seq * 10 + 2, volume=0))
    records.append(record(symbol, close, start + 3_000, seq * 10 + 3, volume=volume))
    return records


def analyze(stream: TestStream) -> dict:
    def build(records):
        out = (records | ParseTicks()).ticks | ComputeBars(early_firing_s=5, clock=zero_clock)
        return {"bars": out.bars, "alerts": out.alerts, "dead": out.dead_letters}
    return run(stream, build)


CLOSES = [100.0, 101.0, 99.5, 100.5, 102.0, 101.0, 100.0, 101.5, 102.5, 101.0, 100.5, 91.0]
VOLUMES = [1000.0, 1100.0, 900.0, 1000.0, 1050.0, 950.0, 1000.0, 1000.0, 1020.0, 980.0, 8000.0, 1000.0]


def expected_history_fields() -> list[dict]:
    fields, earlier = [], []
    for close, volume in zip(CLOSES, VOLUMES):
        fields.append(history_fields(earlier, close, volume))
        earlier.append((close, volume, fields[-1]["log_return"]))
    return fields


def test_windows_arriving_out_of_order_are_processed_in_event_time_order():
    # The ticks of all twelve windows reach the bar step in one bundle, newest first.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([r for m in reversed(range(12)) for r in ticks(m, CLOSES[m], VOLUMES[m], seq=m)])
              .advance_watermark_to(at(T0 + 12 * MINUTE))
              .advance_watermark_to_infinity())
    out = analyze(stream)
    # Each window's first tick also gives it an EARLY pane at once: the final panes are the bars.
    got = sorted((b for b in out["bars"] if b["is_final"]), key=lambda b: b["window_start"])
    assert len(got) == 12
    for minute, (actual, expected) in enumerate(zip(got, expected_history_fields())):
        for name, value in expected.items():
            assert close_enough(actual[name], value), (minute, name, actual[name], value)
    assert got[0]["log_return"] is None and got[1]["log_return"] == math.log(101.0 / 100.0)
    # Minute 10: volume 8000 against a ~1000 average; minute 11: a -10 % drop.
    assert got[10]["anomalies"] == [schema.ALERT_VOLUME_SPIKE]
    assert got[11]["anomalies"] == [schema.ALERT_RETURN_ZSCORE]
    assert sorted(a["alert_id"] for a in out["alerts"]) == [
        f"AAPL:{T0 + 10 * MINUTE}:volume_spike", f"AAPL:{T0 + 11 * MINUTE}:return_zscore"]
    spike = next(a for a in out["alerts"] if a["type"] == "volume_spike")
    assert spike["severity"] == "critical" and spike["threshold"] == 3.0
    assert close_enough(spike["value"], expected_history_fields()[10]["volume_ratio"])
    assert set(spike) == set(schema.ALERT_FIELDS)
    assert "2025-11-25T09:40:00Z" in spike["message"]


def test_volatility_alert_fires_once_from_an_early_pane_and_zscore_waits_for_final():
    history = [r for m in range(11) for r in ticks(m, CLOSES[m], VOLUMES[m], seq=m)]
    start = T0 + 11 * MINUTE
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements(history)
              .advance_watermark_to(at(T0 + 11 * MINUTE))
              # Minute 11 crosses 2 % already in its EARLY pane: alert now,
              # and not again for the next EARLY, the ON_TIME and the LATE panes.
              .add_elements([record("AAPL", 100.0, start + 1_000, 111, volume=0),
                             record("AAPL", 91.0, start + 3_000, 113, volume=1000.0)])
              .advance_processing_time(6)
              .add_elements([record("AAPL", 90.0, start + 2_000, 112, volume=0)])
              .advance_processing_time(6)
              .advance_watermark_to(at(T0 + 12 * MINUTE))
              .advance_watermark_to(at(T0 + 12 * MINUTE + 10_000))
              .add_elements([record("AAPL", 89.0, start + 2_500, 114, volume=0),
                             record("AAPL", 92.0, start + 4_000, 115, volume=0)])
              .advance_watermark_to_infinity())
    out = analyze(stream)
    minute11 = sorted((b for b in out["bars"] if b["window_start"] == T0 + 11 * MINUTE),
                      key=lambda b: b["pane_index"])
    assert [(b["pane"], b["anomalies"]) for b in minute11] == [
        ("EARLY", ["volatility"]), ("EARLY", ["volatility"]), ("ON_TIME", ["volatility", "return_zscore"]),
        ("LATE", ["volatility", "return_zscore"])]
    # EARLY panes are computed against the history as if the window closed now.
    assert close_enough(minute11[0]["return_zscore"], expected_history_fields()[11]["return_zscore"])
    alerts = sorted((a for a in out["alerts"] if a["window_start"] == T0 + 11 * MINUTE),
                    key=lambda a: a["type"])
    assert [(a["type"], a["severity"]) for a in alerts] == [("return_zscore", "critical"),
                                                            ("volatility", "critical")]
    volatility = alerts[1]
    assert close_enough(volatility["value"], (100.0 - 91.0) / 91.0 * 100)  # the first crossing pane
    assert "AAPL swung 9.89% within the 1-minute bar starting 2025-11-25T09:41:00Z" == volatility["message"]
    assert alerts[0]["value"] < 0  # the z-score keeps its sign


def test_symbols_have_separate_histories():
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements(ticks(0, 10.0, symbol="AAA") + ticks(0, 500.0, symbol="BBB")
                            + ticks(1, 11.0, symbol="AAA", seq=1) + ticks(1, 450.0, symbol="BBB", seq=1))
              .advance_watermark_to(at(T0 + 2 * MINUTE))
              .advance_watermark_to_infinity())
    out = analyze(stream)
    returns = {(b["symbol"], b["window_start"]): b["log_return"] for b in out["bars"]}
    assert returns == {("AAA", T0): None, ("BBB", T0): None,
                       ("AAA", T0 + MINUTE): math.log(1.1), ("BBB", T0 + MINUTE): math.log(0.9)}
