"""Bars, alerts and dead letters shaped like DESIGN.md §4–§6, for feeding serving in tests and benchmarks."""
from __future__ import annotations

import math
from typing import Any

from market import codec
from market.schema import ALERT_FIELDS, BAR_FIELDS, DEAD_LETTER_FIELDS, PANE_EARLY, PANE_ON_TIME, alert_id

MINUTE_MS = 60_000
BASE_MS = 1_764_063_000_000   # 2025-11-25T09:30:00Z


def bar(symbol: str = "AAPL", minute: int = 0, close: float = 100.0, pane_index: int = 1,
        base_ms: int = BASE_MS, **overrides: Any) -> dict[str, Any]:
    """A complete bar of `symbol` for window `minute` after `base_ms`; pane 0 is EARLY, later ON_TIME."""
    start = base_ms + minute * MINUTE_MS
    open_ = close * 0.99
    high, low = close * 1.01, open_ * 0.995
    out: dict[str, Any] = {
        "symbol": symbol, "window_start": start, "window_end": start + MINUTE_MS,
        "open": open_, "high": high, "low": low, "close": close, "average_price": (open_ + close) / 2,
        "vwap": (open_ + close) / 2, "volume": 1000.0 + minute, "tick_count": 10,
        "change_pct": (close - open_) / open_ * 100, "swing_pct": (high - low) / low * 100,
        "is_volatility_anomaly": False,
        "pane": PANE_EARLY if pane_index == 0 else PANE_ON_TIME, "pane_index": pane_index,
        "is_final": pane_index > 0, "log_return": None if minute == 0 else math.log(1.001),
        "return_zscore": None, "volume_ratio": None, "sma_fast": close, "sma_slow": close,
        "trend": "flat", "anomalies": [],
        "last_tick_ms": start + MINUTE_MS - 1_500, "emitted_at": start + MINUTE_MS + 2_000,
    }
    out.update(overrides)
    assert tuple(out)[:len(BAR_FIELDS)] == BAR_FIELDS
    return out


def alert(symbol: str = "AAPL", minute: int = 0, alert_type: str = "volatility", value: float = 2.71,
          detected_offset_ms: int = 41_000, base_ms: int = BASE_MS, **overrides: Any) -> dict[str, Any]:
    """A complete alert of `symbol` for window `minute`."""
    start = base_ms + minute * MINUTE_MS
    threshold = 2.0 if alert_type == "volatility" else 3.0
    out: dict[str, Any] = {
        "alert_id": alert_id(symbol, start, alert_type), "symbol": symbol, "type": alert_type,
        "severity": "critical" if value >= 2 * threshold else "warning",
        "window_start": start, "window_end": start + MINUTE_MS, "value": value, "threshold": threshold,
        "message": f"{symbol} {alert_type} {value}", "detected_at": start + detected_offset_ms,
    }
    out.update(overrides)
    assert tuple(out)[:len(ALERT_FIELDS)] == ALERT_FIELDS
    return out


def dead_letter(reason: str = "invalid_price", raw: str = '{"symbol": "AAPL", "price": -3.5}',
                detail: str = "price must be > 0, got -3.5", rejected_at: int = BASE_MS + 999,
                source_offset: int | None = 1234, **overrides: Any) -> dict[str, Any]:
    """A dead letter as the pipeline writes it (DESIGN.md §6)."""
    out: dict[str, Any] = {"reason": reason, "detail": detail, "raw": raw,
                           "source": {"topic": "raw_stock_ticks", "partition": 1, "offset": source_offset},
                           "rejected_at": rejected_at}
    out.update(overrides)
    assert tuple(out)[:len(DEAD_LETTER_FIELDS)] == DEAD_LETTER_FIELDS
    return out


def dead_letter_rows(letters: list[tuple[bytes | None, dict[str, Any]]], topic: str = "raw_stock_ticks_dlq",
                     first_offset: int = 0) -> list[Any]:
    """The store rows of (key, dead letter) pairs read at consecutive offsets of one partition of `topic`."""
    from serving.records import dead_letter_row

    return [dead_letter_row(topic, 0, first_offset + i, key, codec.dumps(letter))
            for i, (key, letter) in enumerate(letters)]
