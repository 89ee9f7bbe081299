"""In-memory market state rebuilt from Kafka: bars by (symbol, window_start), latest bars, alerts.

The consumer thread writes, request and WebSocket threads read; every method
takes `lock` for as long as it touches the dictionaries and no longer. The
hub orders updates against WebSocket snapshots with a lock of its own.
"""
from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from typing import Any

from market import codec
from serving.latest import LatestBoard

Bar = dict[str, Any]
Alert = dict[str, Any]


def bar_version(bar: Bar) -> tuple[int, bool, int]:
    """How new a version of its window `bar` is (DESIGN.md §4): pane_index, then is_final, then tick_count.

    After a pipeline restore a pane may be sent again with the same index and
    other content (an EARLY before the crash, the ON_TIME after): the final
    one, then the one with more ticks, is the bar of record.
    """
    return bar["pane_index"], bool(bar["is_final"]), bar["tick_count"]


def _alert_time(alert: Alert) -> int:
    return alert["detected_at"]


class MarketStore:
    """Bounded state: `bars_per_symbol` windows per symbol and the `alerts_kept` latest alerts."""

    def __init__(self, bars_per_symbol: int, alerts_kept: int) -> None:
        self.lock = threading.RLock()
        self.bars_per_symbol = max(1, bars_per_symbol)
        self.alerts_kept = max(1, alerts_kept)
        self._bars: dict[str, dict[int, Bar]] = {}
        self._starts: dict[str, list[int]] = {}   # sorted window_start per symbol
        self._alerts: OrderedDict[str, Alert] = OrderedDict()  # arrival order
        self._bar_count = 0
        self.board = LatestBoard()   # the latest bar of every symbol, encoded (REST and snapshots)

    # --- writes (consumer thread) ----------------------------------------
    def apply_bar(self, bar: Bar, encoded: bytes | None = None) -> bool:
        """Keep `bar` (checked by serving.records) if it is a new window or a newer version; True if kept.

        `encoded` is the bar's JSON (made here if None): the latest bar of each
        symbol is served from it.
        """
        symbol, start = bar["symbol"].upper(), bar["window_start"]
        with self.lock:
            kept = self._apply_bar(symbol, start, bar)
            if kept:
                self.board.offer(symbol, bar, codec.dumps(bar) if encoded is None else encoded)
            return kept

    def _apply_bar(self, symbol: str, start: int, bar: Bar) -> bool:
        windows = self._bars.setdefault(symbol, {})
        starts = self._starts.setdefault(symbol, [])
        current = windows.get(start)
        if current is not None:
            if bar_version(bar) <= bar_version(current):
                return False  # a replayed, re-sent or out-of-order older version
            windows[start] = bar
            return True
        if len(starts) >= self.bars_per_symbol and start < starts[0]:
            return False  # older than everything the bound keeps
        if not starts or start > starts[-1]:
            starts.append(start)     # the usual case: the next window
        else:
            bisect.insort(starts, start)
        windows[start] = bar
        self._bar_count += 1
        while len(starts) > self.bars_per_symbol:
            del windows[starts.pop(0)]
            self._bar_count -= 1
        return True

    def apply_alert(self, alert: Alert) -> bool:
        """Keep `alert` (checked by serving.records) unless its alert_id was seen; True if kept."""
        ident = alert["alert_id"]
        with self.lock:
            if ident in self._alerts:
                return False
            self._alerts[ident] = alert
            while len(self._alerts) > self.alerts_kept:
                self._alerts.popitem(last=False)
            return True

    # --- reads -------------------------------------------------------------
    def has_symbol(self, symbol: str) -> bool:
        """True if any bar of `symbol` is kept."""
        return self.board.get(symbol.upper()) is not None

    def latest(self, symbols: set[str] | None = None) -> list[Bar]:
        """The latest version of the newest window of each symbol (all, or those in `symbols`), by symbol."""
        return self.board.bars(symbols)

    def symbols(self) -> list[dict[str, Any]]:
        """Summary per symbol: symbol, close, change_pct, window_end of its latest bar."""
        return [{"symbol": b["symbol"].upper(), "close": b.get("close"), "change_pct": b.get("change_pct"),
                 "window_end": b.get("window_end")} for b in self.latest()]

    def bars(self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Bar]:
        """Bars of `symbol` with start_ms <= window_start <= end_ms, oldest first, the newest `limit` of them."""
        symbol = symbol.upper()
        with self.lock:
            starts = self._starts.get(symbol, [])
            lo = 0 if start_ms is None else bisect.bisect_left(starts, start_ms)
            hi = len(starts) if end_ms is None else bisect.bisect_right(starts, end_ms)
            lo = max(lo, hi - limit)
            windows = self._bars[symbol] if starts else {}
            return [windows[s] for s in starts[lo:hi]]

    def alerts(self, symbol: str | None = None, alert_type: str | None = None,
               since_ms: int | None = None, limit: int = 100,
               symbols: set[str] | None = None) -> list[Alert]:
        """Kept alerts newest first (by detected_at), filtered by symbol(s), type and detected_at >= since_ms."""
        with self.lock:
            chosen = []
            for alert in self._alerts.values():
                sym = alert["symbol"].upper()
                if symbol is not None and sym != symbol.upper():
                    continue
                if symbols is not None and sym not in symbols:
                    continue
                if alert_type is not None and alert.get("type") != alert_type:
                    continue
                if since_ms is not None and _alert_time(alert) < since_ms:
                    continue
                chosen.append(alert)
        chosen.sort(key=_alert_time, reverse=True)
        return chosen[:limit]

    def counts(self) -> dict[str, int]:
        """Sizes of the state, for /readyz and logs."""
        with self.lock:
            return {"symbols": len(self.board), "bars": self._bar_count,
                    "alerts": len(self._alerts)}
