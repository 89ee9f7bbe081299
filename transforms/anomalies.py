"""Cross-window analytics and alerts (DESIGN.md §4 history fields, §5), as pure functions.

The bar step (transforms/bars.py, per symbol in transforms/book.py) keeps
each symbol's recent history of ON_TIME bars and calls these to fill
`log_return`, `return_zscore`, `volume_ratio`, `sma_fast`, `sma_slow`,
`trend` and `anomalies`, and to build the alerts it emits once per id.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import NamedTuple

from market import config, schema

ALERTS_TAG = "alerts"

# A history entry: [window_start, close, volume, log_return or None].
START, CLOSE, VOLUME, LOG_RETURN = range(4)


def _mean(values: list) -> float:
    return math.fsum(values) / len(values)


class HistorySummary(NamedTuple):
    """What the cross-window fields of any bar after a given history need from it.

    Computed once per history (it changes with each ON_TIME bar), so a pane
    costs a few operations however often its window fires.
    """

    last_close: float | None
    return_mean: float | None      # mean and sample stdev of the previous up-to-20
    return_stdev: float | None     # log returns; None with fewer than 5
    volume_mean: float | None      # mean volume of the previous up-to-20 windows; None with fewer than 5
    closes: tuple                  # the last SMA_SLOW_WINDOWS - 1 closes, oldest first


def summarize_history(history: list) -> HistorySummary:
    """The summary of `history` ([window_start, close, volume, log_return] entries, oldest first)."""
    if not history:
        return _NO_HISTORY
    # Only the first entry of a symbol has no log return, so the last 20
    # returns lie within the last 21 entries.
    recent = history[-(config.HISTORY_WINDOWS + 1):]
    returns = [entry[LOG_RETURN] for entry in recent if entry[LOG_RETURN] is not None][-config.HISTORY_WINDOWS:]
    mean = stdev = None
    if len(returns) >= config.MIN_HISTORY_WINDOWS:
        mean = math.fsum(returns) / len(returns)
        deviations = [r - mean for r in returns]
        stdev = math.sqrt(math.fsum([d * d for d in deviations]) / (len(returns) - 1))
    volume_mean = None
    if len(history) >= config.MIN_HISTORY_WINDOWS:
        volumes = [entry[VOLUME] for entry in history[-config.HISTORY_WINDOWS:]]
        volume_mean = math.fsum(volumes) / len(volumes)
    closes = tuple([entry[CLOSE] for entry in history[-(config.SMA_SLOW_WINDOWS - 1):]])
    return HistorySummary(history[-1][CLOSE], mean, stdev, volume_mean, closes)


_NO_HISTORY = HistorySummary(None, None, None, None, ())


def fields_after(summary: HistorySummary, close: float, volume: float) -> dict:
    """The DESIGN.md §4 history fields of a bar with this close and volume after the summarized history."""
    log_return = math.log(close / summary.last_close) if summary.last_close is not None else None
    zscore = None
    if log_return is not None and summary.return_stdev is not None and summary.return_stdev > 0:
        zscore = (log_return - summary.return_mean) / summary.return_stdev
    ratio = None
    if summary.volume_mean is not None and summary.volume_mean > 0:
        ratio = volume / summary.volume_mean
    closes = summary.closes + (close,)
    fast = closes[-config.SMA_FAST_WINDOWS:]
    sma_fast = math.fsum(fast) / len(fast)
    sma_slow = math.fsum(closes) / len(closes)
    if len(closes) < 2 or sma_fast == sma_slow:
        trend = schema.TREND_FLAT
    else:
        trend = schema.TREND_UP if sma_fast > sma_slow else schema.TREND_DOWN
    return {"log_return": log_return, "return_zscore": zscore, "volume_ratio": ratio,
            "sma_fast": sma_fast, "sma_slow": sma_slow, "trend": trend}


def cross_window_fields(history: list, close: float, volume: float) -> dict:
    """The DESIGN.md §4 history fields of a bar, given the entries before it.

    `history` holds the symbol's earlier windows that had ticks, oldest
    first, as [window_start, close, volume, log_return].
    """
    return fields_after(summarize_history(history), close, volume)


def _window_label(window_ms: int) -> str:
    seconds = window_ms // 1000
    return f"{seconds // 60}-minute" if seconds % 60 == 0 else f"{seconds}-second"


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Thresholds(NamedTuple):
    """The anomaly thresholds of DESIGN.md §5."""

    volatility_pct: float = config.VOLATILITY_THRESHOLD_PCT
    zscore: float = config.ZSCORE_THRESHOLD
    volume_spike_ratio: float = config.VOLUME_SPIKE_RATIO


def bar_anomalies(bar: dict, thresholds: Thresholds) -> list[tuple[str, float, float]]:
    """(type, value, threshold) of each anomaly the bar triggers (DESIGN.md §5)."""
    found = []
    if bar["swing_pct"] > thresholds.volatility_pct:
        found.append((schema.ALERT_VOLATILITY, bar["swing_pct"], thresholds.volatility_pct))
    if bar["is_final"]:
        zscore = bar["return_zscore"]
        if zscore is not None and abs(zscore) > thresholds.zscore:
            found.append((schema.ALERT_RETURN_ZSCORE, zscore, thresholds.zscore))
        ratio = bar["volume_ratio"]
        if ratio is not None and ratio > thresholds.volume_spike_ratio:
            found.append((schema.ALERT_VOLUME_SPIKE, ratio, thresholds.volume_spike_ratio))
    return found


def make_alert(bar: dict, alert_type: str, value: float, threshold: float,
               detected_at: int | None = None) -> dict:
    """A DESIGN.md §5 alert for `bar`; a z-score keeps its sign in `value`."""
    symbol, start, end = bar["symbol"], bar["window_start"], bar["window_end"]
    where = f"the {_window_label(end - start)} bar starting {_iso(start)}"
    if alert_type == schema.ALERT_VOLATILITY:
        message = f"{symbol} swung {value:.2f}% within {where}"
    elif alert_type == schema.ALERT_RETURN_ZSCORE:
        move = "jumped" if value > 0 else "dropped"
        message = f"{symbol} {move}: log return z-score {value:+.2f} (threshold {threshold:g}) in {where}"
    else:
        message = f"{symbol} traded {value:.2f}x its recent average volume in {where}"
    return {
        "alert_id": schema.alert_id(symbol, start, alert_type),
        "symbol": symbol,
        "type": alert_type,
        "severity": schema.SEVERITY_CRITICAL if abs(value) >= 2 * threshold else schema.SEVERITY_WARNING,
        "window_start": start,
        "window_end": end,
        "value": value,
        "threshold": threshold,
        "message": message,
        "detected_at": int(time.time() * 1000) if detected_at is None else detected_at,
    }
