"""DetectAnomalies: event-time order at the stateful step, history fields, alerts once."""
from __future__ import annotations

import math

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from market import schema
from tests.reference import close_enough, history_fields
from tests.transforms.streams import MINUTE, T0, at, run
from transforms import DetectAnomalies


def bar(minute: int, close: float, volume: float = 1000.0, pane: str = "ON_TIME", index: int = 0,
        high: float | None = None, low: float | None = None, symbol: str = "AAPL") -> TimestampedValue:
    """A WindowedBars-shaped bar, stamped like a pane of its window (end - 1 µs)."""
    start = T0 + minute * MINUTE
    high = close if high is None else high
    low = close if low is None else low
    swing = (high - low) / low * 100
    value = {
        "symbol": symbol, "window_start": start, "window_end": start + MINUTE,
        "open": close, "high": high, "low": low, "close": close, "average_price": close,
        "vwap": close, "volume": volume, "tick_count": 10, "change_pct": 0.0, "swing_pct": swing,
        "is_volatility_anomaly": swing > 2.0, "pane": pane, "pane_index": index,
        "is_final": pane != "EARLY", "log_return": None, "return_zscore": None,
        "volume_ratio": None, "sma_fast": None, "sma_slow": None, "trend": "flat", "anomalies": [],
    }
    return TimestampedValue(value, Timestamp(micros=(start + MINUTE) * 1000 - 1))


def analyze(stream: TestStream) -> dict:
    def build(bars):
        out = bars | DetectAnomalies()
        return {"bars": out.bars, "alerts": out.alerts}
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
    # All twelve ON_TIME bars reach the stateful step in one bundle, newest first.
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements([bar(m, CLOSES[m], VOLUMES[m]) for m in reversed(range(12))])
              .advance_watermark_to(at(T0 + 12 * MINUTE))
              .advance_watermark_to_infinity())
    out = analyze(stream)
    got = sorted(out["bars"], key=lambda b: b["window_start"])
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
    history = [bar(m, CLOSES[m], VOLUMES[m]) for m in range(11)]
    stream = (TestStream()
              .advance_watermark_to(at(T0))
              .add_elements(history)
              .advance_watermark_to(at(T0 + 11 * MINUTE))
              # Minute 11 crosses 2 % already in its EARLY pane: alert now,
              # and not again for the ON_TIME and LATE panes.
              .add_elements([bar(11, 91.0, pane="EARLY", index=0, high=100.0, low=91.0)])
              .add_elements([bar(11, 91.0, pane="EARLY", index=1, high=100.0, low=90.0)])
              .advance_watermark_to(at(T0 + 12 * MINUTE))
              .add_elements([bar(11, 91.0, pane="ON_TIME", index=2, high=100.0, low=90.0)])
              .advance_watermark_to(at(T0 + 12 * MINUTE + 10_000))
              .add_elements([bar(11, 92.0, pane="LATE", index=3, high=100.0, low=89.0)])
              .advance_watermark_to_infinity())
    out = analyze(stream)
    minute11 = sorted((b for b in out["bars"] if b["window_start"] == T0 + 11 * MINUTE),
                      key=lambda b: b["pane_index"])
    assert [b["anomalies"] for b in minute11] == [
        ["volatility"], ["volatility"], ["volatility", "return_zscore"], ["volatility", "return_zscore"]]
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
              .add_elements([bar(0, 10.0, symbol="AAA"), bar(0, 500.0, symbol="BBB"),
                             bar(1, 11.0, symbol="AAA"), bar(1, 450.0, symbol="BBB")])
              .advance_watermark_to(at(T0 + 2 * MINUTE))
              .advance_watermark_to_infinity())
    out = analyze(stream)
    returns = {(b["symbol"], b["window_start"]): b["log_return"] for b in out["bars"]}
    assert returns == {("AAA", T0): None, ("BBB", T0): None,
                       ("AAA", T0 + MINUTE): math.log(1.1), ("BBB", T0 + MINUTE): math.log(0.9)}


class _Value:
    """A stand-in for ReadModifyWriteState and BagState (direct DoFn calls)."""

    def __init__(self) -> None:
        self.value = None
        self.bag: list = []

    def read(self):
        return self.value if self.value is not None else self.bag

    def write(self, value) -> None:
        self.value = value

    def add(self, value) -> None:
        self.bag.append(value)

    def clear(self) -> None:
        self.value, self.bag = None, []


class _Timer:
    def __init__(self) -> None:
        self.at = None

    def set(self, timestamp) -> None:
        self.at = timestamp


def test_flush_timer_survives_the_fn_api_millisecond_timestamps():
    # A portable runner (Flink) carries timer timestamps in whole milliseconds:
    # the timer must be set on a millisecond and still find its bar when it
    # fires with the timestamp the Fn API's coder hands back.
    from apache_beam.coders.coders import TimestampCoder
    from transforms.anomalies import AnalyzeBarsFn, Thresholds

    fn = AnalyzeBarsFn(60, 30, Thresholds())
    history, pending, alerted, timer = _Value(), _Value(), _Value(), _Timer()
    for minute in (1, 0):
        on_time = bar(minute, CLOSES[minute], VOLUMES[minute]).value
        assert list(fn.process(("AAPL", on_time), history, pending, alerted, timer)) == []
    assert timer.at.micros % 1000 == 0 and timer.at.micros // 1000 < T0 + MINUTE
    coder = TimestampCoder()
    fired = coder.decode(coder.encode(timer.at))
    out = list(fn.flush_on_time(fired, history, pending, alerted, timer))
    assert [(b["window_start"], b["log_return"]) for b in out] == [(T0, None)]
    assert [b["window_start"] for b in pending.read()] == [T0 + MINUTE]
    fired = coder.decode(coder.encode(timer.at))
    out = list(fn.flush_on_time(fired, history, pending, alerted, timer))
    assert [(b["window_start"], b["log_return"]) for b in out] == [
        (T0 + MINUTE, math.log(CLOSES[1] / CLOSES[0]))]
    assert list(pending.read()) == []
