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
# The rule in words, for every error message that refuses a symbol.
SYMBOL_RULE = "1-16 characters of A-Z a-z 0-9 . - _ / : = ^"
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

# Field kinds: what a field's value may be. Serving's record checks
# (serving/records.py) and its OpenAPI schemas (serving/openapi.py) are
# derived from the kinds below, so a field added here is checked and
# described everywhere or fails serving's tests.
SYMBOL = "symbol"                  # SYMBOL_PATTERN
EPOCH_MS = "epoch_ms"              # integer epoch ms within the accepted event-time years
EPOCH_MS_OR_NULL = "epoch_ms_or_null"   # integer epoch ms >= 0 (a wall clock), or null
NUMBER = "number"                  # finite
NUMBER_OR_NULL = "number_or_null"
NON_NEGATIVE = "non_negative"      # finite, >= 0
COUNT = "count"                    # integer >= 0
PANE_INDEX = "pane_index"          # integer >= 0
BOOLEAN = "boolean"
PANE = "pane"                      # one of PANES
TREND = "trend"                    # one of TRENDS
ANOMALIES = "anomalies"            # a list of ALERT_TYPES
TEXT = "text"                      # a non-empty string
ALERT_TYPE = "alert_type"          # one of ALERT_TYPES
SEVERITY = "severity"              # one of SEVERITIES

# §4 Bar --------------------------------------------------------------------
BAR_FIELD_KINDS: dict[str, str] = {
    "symbol": SYMBOL, "window_start": EPOCH_MS, "window_end": EPOCH_MS,
    "open": NUMBER, "high": NUMBER, "low": NUMBER, "close": NUMBER, "average_price": NUMBER, "vwap": NUMBER,
    "volume": NON_NEGATIVE, "tick_count": COUNT,
    "change_pct": NUMBER, "swing_pct": NUMBER, "is_volatility_anomaly": BOOLEAN,
    "pane": PANE, "pane_index": PANE_INDEX, "is_final": BOOLEAN,
    "log_return": NUMBER_OR_NULL, "return_zscore": NUMBER_OR_NULL, "volume_ratio": NUMBER_OR_NULL,
    "sma_fast": NUMBER_OR_NULL, "sma_slow": NUMBER_OR_NULL, "trend": TREND,
    "anomalies": ANOMALIES, "last_tick_ms": EPOCH_MS_OR_NULL, "emitted_at": EPOCH_MS_OR_NULL,
}
BAR_FIELDS = tuple(BAR_FIELD_KINDS)
PANE_EARLY = "EARLY"
PANE_ON_TIME = "ON_TIME"
PANE_LATE = "LATE"
PANES = (PANE_EARLY, PANE_ON_TIME, PANE_LATE)
TREND_UP = "up"
TREND_DOWN = "down"
TREND_FLAT = "flat"
TRENDS = (TREND_UP, TREND_DOWN, TREND_FLAT)

# §5 Alert ------------------------------------------------------------------
ALERT_FIELD_KINDS: dict[str, str] = {
    "alert_id": TEXT, "symbol": SYMBOL, "type": ALERT_TYPE, "severity": SEVERITY,
    "window_start": EPOCH_MS, "window_end": EPOCH_MS, "value": NUMBER, "threshold": NUMBER,
    "message": TEXT, "detected_at": EPOCH_MS,
}
ALERT_FIELDS = tuple(ALERT_FIELD_KINDS)
ALERT_VOLATILITY = "volatility"
ALERT_RETURN_ZSCORE = "return_zscore"
ALERT_VOLUME_SPIKE = "volume_spike"
ALERT_TYPES = (ALERT_VOLATILITY, ALERT_RETURN_ZSCORE, ALERT_VOLUME_SPIKE)
SEVERITY_WARNING = "warning"
SEVERITY_CRITICAL = "critical"
SEVERITIES = (SEVERITY_WARNING, SEVERITY_CRITICAL)

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
