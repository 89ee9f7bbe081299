"""Message shapes of DESIGN.md §3–§6: field names, enumerations, reasons.

These tuples are the contract the transforms produce, serving consumes and
the tests check; keep them in the order DESIGN.md lists the fields.
"""
from __future__ import annotations

import re

# §3 Tick -------------------------------------------------------------------
TICK_FIELDS = ("symbol", "price", "volume", "timestamp", "seq")
TICK_REQUIRED = ("symbol", "price", "volume", "timestamp")
# Matched with fullmatch: `$` would also accept a trailing newline ("AAPL\n").
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9.\-_/:=^]{1,16}")
# Numeric bounds: within them no sum, product or log over a window can
# overflow or underflow to zero (DESIGN.md §3).
MIN_PRICE = 1e-12
MAX_PRICE = 1e12
MAX_VOLUME = 1e15
MIN_EVENT_YEAR = 2000
MAX_EVENT_YEAR = 2100
# Epoch-millisecond bounds of the accepted event-time years [2000, 2100].
MIN_EVENT_MS = 946_684_800_000          # 2000-01-01T00:00:00Z
MAX_EVENT_MS = 4_133_980_799_999        # 2100-12-31T23:59:59.999Z

# §4 Bar --------------------------------------------------------------------
BAR_FIELDS = (
    "symbol", "window_start", "window_end",
    "open", "high", "low", "close", "average_price", "vwap", "volume", "tick_count",
    "change_pct", "swing_pct", "is_volatility_anomaly",
    "pane", "pane_index", "is_final",
    "log_return", "return_zscore", "volume_ratio", "sma_fast", "sma_slow", "trend",
    "anomalies", "last_tick_ms", "emitted_at",
)
PANE_EARLY = "EARLY"
PANE_ON_TIME = "ON_TIME"
PANE_LATE = "LATE"
PANES = (PANE_EARLY, PANE_ON_TIME, PANE_LATE)
TREND_UP = "up"
TREND_DOWN = "down"
TREND_FLAT = "flat"
TRENDS = (TREND_UP, TREND_DOWN, TREND_FLAT)

# §5 Alert ------------------------------------------------------------------
ALERT_FIELDS = (
    "alert_id", "symbol", "type", "severity", "window_start", "window_end",
    "value", "threshold", "message", "detected_at",
)
ALERT_VOLATILITY = "volatility"
ALERT_RETURN_ZSCORE = "return_zscore"
ALERT_VOLUME_SPIKE = "volume_spike"
ALERT_TYPES = (ALERT_VOLATILITY, ALERT_RETURN_ZSCORE, ALERT_VOLUME_SPIKE)
SEVERITY_WARNING = "warning"
SEVERITY_CRITICAL = "critical"

# §6 Dead letter ------------------------------------------------------------
DEAD_LETTER_FIELDS = ("reason", "detail", "raw", "source", "rejected_at")
REASON_INVALID_JSON = "invalid_json"
REASON_MISSING_FIELD = "missing_field"
REASON_INVALID_PRICE = "invalid_price"
REASON_INVALID_VOLUME = "invalid_volume"
REASON_INVALID_TIMESTAMP = "invalid_timestamp"
REASON_INVALID_SYMBOL = "invalid_symbol"
REASON_INVALID_SEQ = "invalid_seq"
REASON_NOT_AN_OBJECT = "not_an_object"
REASON_LATE = "late"
# An exact copy of a tick of an open window (same symbol, seq, timestamp,
# price and volume): a producer retry or a replayed feed.
REASON_DUPLICATE = "duplicate"
# An unexpected error while handling one record: the record is set aside
# with the error text instead of failing the pipeline.
REASON_INTERNAL_ERROR = "internal_error"
DEAD_LETTER_REASONS = (
    REASON_INVALID_JSON, REASON_MISSING_FIELD, REASON_INVALID_PRICE,
    REASON_INVALID_VOLUME, REASON_INVALID_TIMESTAMP, REASON_INVALID_SYMBOL,
    REASON_INVALID_SEQ, REASON_NOT_AN_OBJECT, REASON_LATE, REASON_DUPLICATE,
    REASON_INTERNAL_ERROR,
)


def alert_id(symbol: str, window_start: int, alert_type: str) -> str:
    """The identity of an alert (DESIGN.md §5): `symbol:window_start:type`."""
    return f"{symbol}:{window_start}:{alert_type}"
