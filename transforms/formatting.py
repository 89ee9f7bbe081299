"""A bar dict with every DESIGN.md §4 field, from a window's statistics and its pane."""
from __future__ import annotations

from market import schema
from transforms.combining import BarStats


def window_fields(stats: BarStats, volatility_threshold_pct: float) -> dict:
    """The window-local derived fields of DESIGN.md §4."""
    swing = (stats.high - stats.low) / stats.low * 100.0
    return {
        "change_pct": (stats.close - stats.open) / stats.open * 100.0,
        "swing_pct": swing,
        "is_volatility_anomaly": swing > volatility_threshold_pct,
    }


def format_bar(symbol: str, window_start_ms: int, window_end_ms: int, stats: BarStats,
               pane: str, pane_index: int, volatility_threshold_pct: float,
               last_tick_ms: int | None = None, emitted_at: int | None = None) -> dict:
    """The bar of one pane; the cross-window fields stay empty (the bar step fills them).

    `last_tick_ms` is the newest tick's event time, `emitted_at` the wall
    clock when the pane is emitted (DESIGN.md §4).
    """
    return {
        "symbol": symbol,
        "window_start": window_start_ms,
        "window_end": window_end_ms,
        "open": stats.open,
        "high": stats.high,
        "low": stats.low,
        "close": stats.close,
        "average_price": stats.average_price,
        "vwap": stats.vwap,
        "volume": stats.volume,
        "tick_count": stats.tick_count,
        **window_fields(stats, volatility_threshold_pct),
        "pane": pane,
        "pane_index": pane_index,
        "is_final": pane != schema.PANE_EARLY,
        "log_return": None,
        "return_zscore": None,
        "volume_ratio": None,
        "sma_fast": None,
        "sma_slow": None,
        "trend": schema.TREND_FLAT,
        "anomalies": [],
        "last_tick_ms": last_tick_ms,
        "emitted_at": emitted_at,
    }
