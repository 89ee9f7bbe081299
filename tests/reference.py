"""Independent reference implementation of the market analytics (DESIGN.md §3-§6).

Plain Python, written from DESIGN.md without importing `transforms`: tests
compare the Beam transforms against it, and the end-to-end test can reuse it
to compute the expected final bars, alerts and dead letters of a tick list.

Arrival model
-------------
Beam decides what is on time or late from the watermark, so the reference
takes the input as an ordered list of `Batch`es: the records that arrive
together, and the input watermark (epoch ms) while they arrive. Watermarks
never go back. For a valid tick of window [start, end) arriving with
watermark W:

* W < end                  → on time: part of the window's ON_TIME bar;
* end <= W < end + lateness → late but allowed: the batch re-fires the
  window as one LATE pane (one pane per batch and window);
* W >= end + lateness       → too late: dead letter `late`.

A tick repeating the symbol, seq, timestamp, price and volume of an
admitted tick whose window is still open (W < its end + lateness) is a dead
letter `duplicate`; checks run in arrival order, `late` first. Dead letters
keep the record's original key.

What the reference deliberately does not model: EARLY panes (they depend on
processing time; the tests that use this reference fire none).

Bars (DESIGN.md §4): ticks of a window are ordered by (event time, seq with
no seq first, price); open is the first, close the last. Sums are exact
(`math.fsum`). The cross-window history of a symbol holds the ON_TIME bar
of each window that had one, in window order; every final pane of a window
is computed against the history entries before it. Alerts (§5) fire on the
first pane (ON_TIME, then the LATE panes in arrival order) that crosses a
threshold; each alert id once.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, NamedTuple

import orjson

from market import config, schema


class Batch(NamedTuple):
    """Records arriving together while the input watermark is `watermark_ms`."""

    watermark_ms: int
    values: list          # raw record values: bytes or str
    keys: list | None = None  # the Kafka keys, parallel to values (None: no keys)


class DeadLetter(NamedTuple):
    """The expected dead letter of one record (without the wall-clock fields)."""

    key: bytes | None
    reason: str
    raw: str


@dataclass
class Expected:
    """What the transforms must produce for a list of batches."""

    final_bars: dict = field(default_factory=dict)   # (symbol, window_start) → last bar
    panes: list = field(default_factory=list)        # every ON_TIME / LATE bar, in emission order
    alerts: dict = field(default_factory=dict)       # alert_id → alert (detected_at omitted)
    dead_letters: list = field(default_factory=list)  # DeadLetter, in arrival order


class _Invalid(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _number(value) -> bool:
    return type(value) in (int, float)


def validate(value) -> tuple:
    """(symbol, price, volume, timestamp_ms, seq) of a valid tick, else raises `_Invalid`."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise _Invalid(schema.REASON_INVALID_JSON) from None
    if type(data) is not dict:
        raise _Invalid(schema.REASON_NOT_AN_OBJECT)
    if any(data.get(name) is None for name in ("symbol", "price", "volume", "timestamp")):
        raise _Invalid(schema.REASON_MISSING_FIELD)
    symbol = data["symbol"]
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_/:=^")
    if type(symbol) is not str or not 1 <= len(symbol) <= 16 or not set(symbol) <= allowed:
        raise _Invalid(schema.REASON_INVALID_SYMBOL)
    price = data["price"]
    if not _number(price) or not 1e-12 <= price <= 1e12:
        raise _Invalid(schema.REASON_INVALID_PRICE)
    volume = data["volume"]
    if not _number(volume) or not 0 <= volume <= 1e15:
        raise _Invalid(schema.REASON_INVALID_VOLUME)
    stamp = data["timestamp"]
    if type(stamp) is str:
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            raise _Invalid(schema.REASON_INVALID_TIMESTAMP) from None
        if moment.utcoffset() is None:
            raise _Invalid(schema.REASON_INVALID_TIMESTAMP)
        delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
        millis = delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
    elif type(stamp) is int or (type(stamp) is float and math.isfinite(stamp) and stamp == int(stamp)):
        millis = int(stamp)
    else:
        raise _Invalid(schema.REASON_INVALID_TIMESTAMP)
    if not datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp() * 1000 <= millis \
            < datetime(2101, 1, 1, tzinfo=timezone.utc).timestamp() * 1000:
        raise _Invalid(schema.REASON_INVALID_TIMESTAMP)
    seq = data.get("seq")
    if seq is not None and (type(seq) is not int or not 0 <= seq < 2 ** 63):
        raise _Invalid(schema.REASON_INVALID_SEQ)
    return symbol.upper(), float(price), float(volume), millis, seq


def window_bar(symbol: str, start: int, end: int, ticks: list, volatility_pct: float) -> dict:
    """The window-local fields of a bar from its ticks (symbol, price, volume, ts, seq)."""
    ordered = sorted(ticks, key=lambda t: (t[3], -1 if t[4] is None else t[4], t[1]))
    prices = [t[1] for t in ticks]
    volume = math.fsum(t[2] for t in ticks)
    average = math.fsum(prices) / len(prices)
    vwap = math.fsum(t[1] * t[2] for t in ticks) / volume if volume else average
    first, last = ordered[0][1], ordered[-1][1]
    high, low = max(prices), min(prices)
    swing = (high - low) / low * 100
    return {
        "symbol": symbol, "window_start": start, "window_end": end,
        "open": first, "high": high, "low": low, "close": last,
        "average_price": average, "vwap": vwap, "volume": volume, "tick_count": len(ticks),
        "change_pct": (last - first) / first * 100, "swing_pct": swing,
        "is_volatility_anomaly": swing > volatility_pct,
        "last_tick_ms": max(t[3] for t in ticks),
    }


def history_fields(earlier: list, close: float, volume: float) -> dict:
    """log_return … trend of a bar, from the earlier ON_TIME (close, volume, log_return)s."""
    log_return = math.log(close / earlier[-1][0]) if earlier else None
    returns = [r for _, _, r in earlier if r is not None][-config.HISTORY_WINDOWS:]
    zscore = None
    if log_return is not None and len(returns) >= config.MIN_HISTORY_WINDOWS:
        spread = statistics.stdev(returns)
        if spread > 0:
            zscore = (log_return - statistics.fmean(returns)) / spread
    volumes = [v for _, v, _ in earlier][-config.HISTORY_WINDOWS:]
    ratio = None
    if len(volumes) >= config.MIN_HISTORY_WINDOWS and statistics.fmean(volumes) > 0:
        ratio = volume / statistics.fmean(volumes)
    closes = [c for c, _, _ in earlier] + [close]
    fast = statistics.fmean(closes[-config.SMA_FAST_WINDOWS:])
    slow = statistics.fmean(closes[-config.SMA_SLOW_WINDOWS:])
    trend = "flat" if len(closes) < 2 or fast == slow else ("up" if fast > slow else "down")
    return {"log_return": log_return, "return_zscore": zscore, "volume_ratio": ratio,
            "sma_fast": fast, "sma_slow": slow, "trend": trend}


def analyze(batches: Iterable[Batch], *,
            window_size_s: int = config.WINDOW_SIZE_S,
            allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
            volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT,
            zscore_threshold: float = config.ZSCORE_THRESHOLD,
            volume_spike_ratio: float = config.VOLUME_SPIKE_RATIO) -> Expected:
    """Expected final bars, panes, alerts and dead letters of `batches` (see module doc)."""
    size, lateness = window_size_s * 1000, allowed_lateness_s * 1000
    expected = Expected()
    on_time = defaultdict(list)          # (symbol, start) → ticks before the watermark passed end
    late_batches = defaultdict(list)     # (symbol, start) → [ticks of one late batch] ...
    open_seqs = defaultdict(dict)        # symbol → (price, volume, time, seq) → window end
    for batch in batches:
        late_here = defaultdict(list)
        keys = batch.keys or [None] * len(batch.values)
        for key, value in zip(keys, batch.values):
            try:
                tick = validate(value)
            except _Invalid as exc:
                text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
                expected.dead_letters.append(DeadLetter(key, exc.reason, text))
                continue
            symbol, _, _, stamp, seq = tick
            start = stamp // size * size
            end = start + size
            if batch.watermark_ms >= end + lateness:
                expected.dead_letters.append(DeadLetter(key, schema.REASON_LATE, ""))
                continue
            if seq is not None:
                seen = open_seqs[symbol]
                identity = tick[1:]
                if seen.get(identity, -math.inf) + lateness > batch.watermark_ms:
                    expected.dead_letters.append(DeadLetter(key, schema.REASON_DUPLICATE, ""))
                    continue
                seen[identity] = end
            if batch.watermark_ms < end:
                on_time[(symbol, start)].append(tick)
            else:
                late_here[(symbol, start)].append(tick)
        for window_key, ticks in late_here.items():
            late_batches[window_key].append(ticks)

    # Cross-window history: the ON_TIME bar of each window, per symbol.
    history = defaultdict(list)  # symbol → [(start, close, volume, log_return)] sorted
    for symbol, start in sorted(on_time, key=lambda k: (k[0], k[1])):
        bar = window_bar(symbol, start, start + size, on_time[(symbol, start)], volatility_threshold_pct)
        entries = history[symbol]
        log_return = math.log(bar["close"] / entries[-1][1]) if entries else None
        entries.append((start, bar["close"], bar["volume"], log_return))

    for symbol, start in sorted(set(on_time) | set(late_batches)):
        earlier = [(c, v, r) for s, c, v, r in history[symbol] if s < start]
        ticks = list(on_time.get((symbol, start), []))
        panes = []
        if ticks:
            panes.append((schema.PANE_ON_TIME, list(ticks)))
        for late in late_batches.get((symbol, start), []):
            ticks += late
            panes.append((schema.PANE_LATE, list(ticks)))
        for index, (pane, pane_ticks) in enumerate(panes):
            bar = window_bar(symbol, start, start + size, pane_ticks, volatility_threshold_pct)
            bar.update(pane=pane, pane_index=index, is_final=True)
            bar.update(history_fields(earlier, bar["close"], bar["volume"]))
            anomalies = []
            if bar["swing_pct"] > volatility_threshold_pct:
                anomalies.append((schema.ALERT_VOLATILITY, bar["swing_pct"], volatility_threshold_pct))
            if bar["return_zscore"] is not None and abs(bar["return_zscore"]) > zscore_threshold:
                anomalies.append((schema.ALERT_RETURN_ZSCORE, bar["return_zscore"], zscore_threshold))
            if bar["volume_ratio"] is not None and bar["volume_ratio"] > volume_spike_ratio:
                anomalies.append((schema.ALERT_VOLUME_SPIKE, bar["volume_ratio"], volume_spike_ratio))
            bar["anomalies"] = [kind for kind, _, _ in anomalies]
            expected.panes.append(bar)
            expected.final_bars[(symbol, start)] = bar
            for kind, value, threshold in anomalies:
                alert_id = f"{symbol}:{start}:{kind}"
                if alert_id not in expected.alerts:
                    expected.alerts[alert_id] = {
                        "alert_id": alert_id, "symbol": symbol, "type": kind,
                        "severity": "critical" if abs(value) >= 2 * threshold else "warning",
                        "window_start": start, "window_end": start + size,
                        "value": value, "threshold": threshold,
                    }
    return expected


def close_enough(actual, expected, rel: float = 1e-9) -> bool:
    """Equal, with floats to `rel` relative tolerance (lists and dicts compared deeply)."""
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12)
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(close_enough(actual[k], expected[k], rel) for k in expected))
    if isinstance(expected, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(close_enough(a, e, rel) for a, e in zip(actual, expected)))
    return actual == expected and type(actual) is type(expected)
