"""Cross-window analytics and alerts (DESIGN.md §4 history fields, §5).

`DetectAnomalies` keys bars by symbol and runs `AnalyzeBarsFn`, a stateful
DoFn in the global window that keeps the symbol's recent history of final
bars, fills `log_return`, `return_zscore`, `volume_ratio`, `sma_fast`,
`sma_slow`, `trend` and `anomalies`, and emits each alert id at most once.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from market import config, schema
from transforms.ticks import METRICS_NAMESPACE

ALERTS_TAG = "alerts"

# A history entry: [window_start, close, volume, log_return or None].
START, CLOSE, VOLUME, LOG_RETURN = range(4)


def _mean(values: list) -> float:
    return math.fsum(values) / len(values)


def cross_window_fields(history: list, close: float, volume: float) -> dict:
    """The DESIGN.md §4 history fields of a bar, given the entries before it.

    `history` holds the symbol's earlier windows that had ticks, oldest
    first, as [window_start, close, volume, log_return].
    """
    log_return = math.log(close / history[-1][CLOSE]) if history else None
    returns = [entry[LOG_RETURN] for entry in history
               if entry[LOG_RETURN] is not None][-config.HISTORY_WINDOWS:]
    zscore = None
    if log_return is not None and len(returns) >= config.MIN_HISTORY_WINDOWS:
        mean = _mean(returns)
        stdev = math.sqrt(math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1))
        if stdev > 0:
            zscore = (log_return - mean) / stdev
    volumes = [entry[VOLUME] for entry in history[-config.HISTORY_WINDOWS:]]
    ratio = None
    if len(volumes) >= config.MIN_HISTORY_WINDOWS:
        mean_volume = _mean(volumes)
        if mean_volume > 0:
            ratio = volume / mean_volume
    closes = [entry[CLOSE] for entry in history[-(config.SMA_SLOW_WINDOWS - 1):]] + [close]
    sma_fast = _mean(closes[-config.SMA_FAST_WINDOWS:])
    sma_slow = _mean(closes[-config.SMA_SLOW_WINDOWS:])
    if len(closes) < 2 or sma_fast == sma_slow:
        trend = schema.TREND_FLAT
    else:
        trend = schema.TREND_UP if sma_fast > sma_slow else schema.TREND_DOWN
    return {"log_return": log_return, "return_zscore": zscore, "volume_ratio": ratio,
            "sma_fast": sma_fast, "sma_slow": sma_slow, "trend": trend}


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


def _with_pending(history: list, pending: list, before: int) -> list:
    """History entries before window `before`, extended by buffered ON_TIME bars.

    The buffered bars are the ones whose flush timer has not fired yet; they
    are final, so a LATE or EARLY pane must see them as history, in order.
    """
    entries = [entry for entry in history if entry[START] < before]
    last = entries[-1][START] if entries else None
    for bar in sorted(pending, key=lambda b: b["window_start"]):
        start = bar["window_start"]
        if start >= before:
            break
        if last is not None and start <= last:
            continue
        log_return = math.log(bar["close"] / entries[-1][CLOSE]) if entries else None
        entries.append([start, bar["close"], bar["volume"], log_return])
        last = start
    return entries


def _flush_ms(window_end_ms: int) -> int:
    """When the ON_TIME bar of the window ending at `window_end_ms` is processed.

    The last millisecond of the window. Not its last microsecond (end - 1 µs,
    the bar's own timestamp): the Fn API carries timer timestamps in whole
    milliseconds, so on a portable runner (Flink) a timer set at end - 1 µs
    fires with timestamp end - 1 ms, and a comparison in microseconds would
    never find the bar ready. A whole-millisecond timer is the same on every
    runner. Firing 1 ms early is safe: every earlier window's ON_TIME bar has a
    timestamp at or before this window's start, so it has arrived already.
    """
    return window_end_ms - 1


def _flush_time(window_end_ms: int) -> Timestamp:
    return Timestamp(micros=_flush_ms(window_end_ms) * 1000)


class AnalyzeBarsFn(beam.DoFn):
    """Keyed by symbol: fills the cross-window fields and emits alerts once.

    * ON_TIME bars are buffered (`PENDING`) and processed by an event-time
      timer (`FLUSH`, at the last millisecond of the oldest buffered window)
      in window order, so the history is built in event-time order even when
      bars reach this step out of order.
    * EARLY and LATE bars are processed at once, against the history of the
      windows before theirs (with the buffered ON_TIME bars), "as if the
      window closed now". They do not change the history: it holds the ON_TIME
      bar of each window, so every final bar is a deterministic function of
      the on-time data.
    * `ALERTED` remembers the alert ids already emitted for windows that can
      still fire panes, so each id is published at most once.

    State per symbol is bounded: at most `history_limit` history entries,
    the ON_TIME bars not yet flushed, and the alert keys of windows still
    within their lateness.
    """

    HISTORY = userstate.ReadModifyWriteStateSpec("history", FastPrimitivesCoder())
    PENDING = userstate.BagStateSpec("pending", FastPrimitivesCoder())
    ALERTED = userstate.ReadModifyWriteStateSpec("alerted", FastPrimitivesCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, window_size_s: int, allowed_lateness_s: int, thresholds: Thresholds) -> None:
        self.size_ms = int(window_size_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self.thresholds = thresholds
        # Enough entries for the 20-return z-score of a window that is still
        # taking LATE panes (for up to the allowed lateness) while the
        # windows after it are already in.
        self.history_limit = (config.HISTORY_WINDOWS + 2
                              + math.ceil(self.lateness_ms / self.size_ms) + 1)
        # Alert keys are kept as long as their window may fire panes.
        self.alert_horizon_ms = self.lateness_ms + self.size_ms
        self.alerts_emitted = Metrics.counter(METRICS_NAMESPACE, "alerts")

    def process(self, element: tuple,
                history_state=beam.DoFn.StateParam(HISTORY),
                pending_state=beam.DoFn.StateParam(PENDING),
                alerted_state=beam.DoFn.StateParam(ALERTED),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, bar = element
        if bar["pane"] == schema.PANE_ON_TIME:
            pending_state.add(bar)
            flush.set(_flush_time(min(b["window_end"] for b in pending_state.read())))
            return
        history = _with_pending(history_state.read() or [], list(pending_state.read()),
                                bar["window_start"])
        yield from self._emit(bar, history, alerted_state)

    @userstate.on_timer(FLUSH)
    def flush_on_time(self,
                      fired_at=beam.DoFn.TimestampParam,
                      history_state=beam.DoFn.StateParam(HISTORY),
                      pending_state=beam.DoFn.StateParam(PENDING),
                      alerted_state=beam.DoFn.StateParam(ALERTED),
                      flush=beam.DoFn.TimerParam(FLUSH)):
        pending = list(pending_state.read())
        fired_ms = fired_at.micros // 1000
        ready = sorted((b for b in pending if _flush_ms(b["window_end"]) <= fired_ms),
                       key=lambda b: b["window_start"])
        waiting = [b for b in pending if _flush_ms(b["window_end"]) > fired_ms]
        history = history_state.read() or []
        for bar in ready:
            start = bar["window_start"]
            before = [entry for entry in history if entry[START] < start]
            log_return = math.log(bar["close"] / before[-1][CLOSE]) if before else None
            yield from self._emit(bar, before, alerted_state)
            entry = [start, bar["close"], bar["volume"], log_return]
            # Insert in window order; an ON_TIME bar older than the newest
            # entry cannot happen on a correct runner, but keep order anyway.
            history = before + [entry] + [e for e in history if e[START] > start]
        history_state.write(history[-self.history_limit:])
        pending_state.clear()
        for bar in waiting:
            pending_state.add(bar)
        if waiting:
            flush.set(_flush_time(min(b["window_end"] for b in waiting)))
        alerted = alerted_state.read()
        if alerted:
            horizon = fired_ms - self.alert_horizon_ms
            kept = [key for key in alerted if key[0] >= horizon]
            if len(kept) != len(alerted):
                alerted_state.write(kept)

    def _emit(self, bar: dict, history: list, alerted_state):
        bar = dict(bar)  # inputs are immutable in Beam; fill a copy
        bar.update(cross_window_fields(history, bar["close"], bar["volume"]))
        found = bar_anomalies(bar, self.thresholds)
        bar["anomalies"] = [alert_type for alert_type, _, _ in found]
        yield bar
        if not found:
            return
        alerted = alerted_state.read() or []
        emitted = {(start, alert_type) for start, alert_type in alerted}
        added = False
        for alert_type, value, threshold in found:
            key = (bar["window_start"], alert_type)
            if key in emitted:
                continue
            alerted.append(list(key))
            emitted.add(key)
            added = True
            self.alerts_emitted.inc()
            yield pvalue.TaggedOutput(ALERTS_TAG, make_alert(bar, alert_type, value, threshold))
        if added:
            alerted_state.write(alerted)


class AnalyzedBars(NamedTuple):
    """The outputs of `DetectAnomalies`."""

    bars: beam.PCollection
    alerts: beam.PCollection


def _by_symbol(bar: dict) -> tuple[str, dict]:
    return bar["symbol"], bar


class DetectAnomalies(beam.PTransform):
    """Bar panes → the same panes with cross-window fields, plus alerts."""

    def __init__(self,
                 window_size_s: int = config.WINDOW_SIZE_S,
                 allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
                 volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT,
                 zscore_threshold: float = config.ZSCORE_THRESHOLD,
                 volume_spike_ratio: float = config.VOLUME_SPIKE_RATIO) -> None:
        super().__init__()
        self.window_size_s = int(window_size_s)
        self.allowed_lateness_s = int(allowed_lateness_s)
        self.thresholds = Thresholds(float(volatility_threshold_pct), float(zscore_threshold),
                                     float(volume_spike_ratio))

    def expand(self, bars: beam.PCollection) -> AnalyzedBars:
        outputs = (
            bars
            | "KeyBySymbol" >> beam.Map(_by_symbol).with_output_types(beam.typehints.KV[str, Any])
            # The history spans windows: one global window per symbol.
            | "AcrossWindows" >> beam.WindowInto(window.GlobalWindows())
            | "AddHistory" >> beam.ParDo(AnalyzeBarsFn(
                self.window_size_s, self.allowed_lateness_s, self.thresholds)).with_outputs(
                    ALERTS_TAG, main="bars"))
        return AnalyzedBars(bars=outputs.bars, alerts=outputs[ALERTS_TAG])
