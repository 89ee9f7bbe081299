"""What REST and WebSocket snapshots read: the live state in memory over the database of record.

Memory holds what is live, bounded by symbols, not history: the latest bar
of every symbol (serving.latest, encoded), the last few windows of each
symbol as last seen (open windows' EARLY versions are only here: the
database keeps bars of record), and the most recent alerts. History comes
from the database (serving.database). serving.updates applies a batch here
under the hub's lock, then writes its bars of record to the database in
groups: the newest windows are read from memory, so a group not written yet
is never missing from an answer.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from market import codec
from serving.database import BarDatabase, Rollup
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


# A dead-letter summary counts every row of its range: ~1.5 s for 600,000 (a minute of a 10,000/s flood) on
# SQLite. Answers are shared for this long by every request with the same `from` (the dashboard rounds it).
SUMMARY_TTL_S = 3.0
SUMMARIES_KEPT = 16


class MarketStore:
    """The last `windows_per_symbol` windows of each symbol and the `alerts_kept` latest alerts, over `db`."""

    def __init__(self, db: BarDatabase, windows_per_symbol: int, alerts_kept: int) -> None:
        self.db = db
        self.lock = threading.RLock()
        self.windows_per_symbol = max(2, windows_per_symbol)
        self.alerts_kept = max(1, alerts_kept)
        self._windows: dict[str, dict[int, Bar]] = {}     # symbol -> window_start -> latest version seen
        self._alerts: OrderedDict[str, Alert] = OrderedDict()  # arrival order
        self.board = LatestBoard()   # the latest bar of every symbol, encoded (REST and snapshots)
        self._summaries: OrderedDict[int | None, tuple[float, dict[str, Any]]] = OrderedDict()
        self._summary_lock = threading.Lock()   # one count at a time: concurrent askers wait and share it

    def load(self) -> int:
        """Start from the database: the newest stored window of every symbol and the latest alerts."""
        latest = self.db.latest_bars()
        with self.lock:
            for bar in latest:
                symbol = bar["symbol"].upper()
                self._windows.setdefault(symbol, {})[bar["window_start"]] = bar
                self.board.offer(symbol, bar, codec.dumps(bar))
            for alert in reversed(self.db.alerts(limit=self.alerts_kept)):
                self._alerts[alert["alert_id"]] = alert
        return len(latest)

    # --- writes (serving.updates, under the hub's lock) ---------------------------------
    def apply_bar(self, bar: Bar, encoded: bytes | None = None) -> bool:
        """Keep `bar` (checked by serving.records) if it is a new window or a newer version; True if kept.

        `encoded` is the bar's JSON (made here if None): the latest bar of each
        symbol is served from it. A window older than those kept is "new" here
        (the database, not memory, decides whether it replaces a stored one).
        """
        symbol, start = bar["symbol"].upper(), bar["window_start"]
        with self.lock:
            windows = self._windows.setdefault(symbol, {})
            current = windows.get(start)
            if current is not None and bar_version(bar) <= bar_version(current):
                return False  # a replayed, re-sent or out-of-order older version
            if current is None and len(windows) >= self.windows_per_symbol and start < min(windows):
                return True   # older than memory keeps: stored (if final) and pushed, not kept here
            windows[start] = bar
            while len(windows) > self.windows_per_symbol:
                del windows[min(windows)]
            self.board.offer(symbol, bar, codec.dumps(bar) if encoded is None else encoded)
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
        """True if any bar of `symbol` is kept or stored."""
        symbol = symbol.upper()
        return self.board.get(symbol) is not None or self.db.has_symbol(symbol)

    def latest(self, symbols: set[str] | None = None) -> list[Bar]:
        """The latest version of the newest window of each symbol (all, or those in `symbols`), by symbol."""
        return self.board.bars(symbols)

    def symbols(self) -> list[dict[str, Any]]:
        """Summary per symbol: symbol, close, change_pct, window_end of its latest bar."""
        return [{"symbol": b["symbol"].upper(), "close": b.get("close"), "change_pct": b.get("change_pct"),
                 "window_end": b.get("window_end")} for b in self.latest()]

    def _live(self, symbol: str, start_ms: int | None, end_ms: int | None) -> list[Bar]:
        with self.lock:
            windows = self._windows.get(symbol, {})
            return [b for s, b in windows.items()
                    if (start_ms is None or s >= start_ms) and (end_ms is None or s <= end_ms)]

    def bars(self, symbol: str, start_ms: int | None, end_ms: int | None, limit: int) -> list[Bar]:
        """Bars of `symbol` with start_ms <= window_start <= end_ms, oldest first, the newest `limit` of them:
        the stored bars of record, and the latest version of the windows still open."""
        symbol = symbol.upper()
        live = self._live(symbol, start_ms, end_ms)
        merged = {b["window_start"]: b for b in self.db.bars(symbol, start_ms, end_ms, limit)}
        for bar in live:
            kept = merged.get(bar["window_start"])
            if kept is None or bar_version(bar) > bar_version(kept):
                merged[bar["window_start"]] = bar
        return [merged[s] for s in sorted(merged)[-limit:]]

    def rollups(self, symbol: str, interval_ms: int, start_ms: int | None, end_ms: int | None,
                limit: int) -> list[Bar]:
        """Bars of `interval_ms` (a multiple of the window) rolled up per DESIGN.md §7, oldest first, the newest
        `limit` whose start is within [start_ms, end_ms]: the database sums the bars of record, and the
        still-open interval includes the latest version of its open windows."""
        symbol = symbol.upper()
        lo = -(2**62) if start_ms is None else -(-start_ms // interval_ms) * interval_ms     # first whole interval
        hi = 2**62 if end_ms is None else (end_ms // interval_ms) * interval_ms + interval_ms
        if lo >= hi:
            return []
        intervals = {r.start: r for r in self.db.rollups(symbol, interval_ms, lo, hi, limit)}
        stored_up_to = max((r.last for r in intervals.values()), default=-1)
        for bar in sorted(self._live(symbol, lo, hi - 1), key=lambda b: b["window_start"]):
            # Only windows the database does not hold yet, newer than every stored one: the open
            # windows, and a final one whose group is not written yet (serving.updates).
            if bar["window_start"] <= stored_up_to:
                continue
            start = bar["window_start"] // interval_ms * interval_ms
            rollup = intervals.get(start)
            if rollup is None:
                rollup = intervals[start] = Rollup(symbol, start, start + interval_ms)
            rollup.add(bar)
        return [intervals[s].bar() for s in sorted(intervals)[-limit:]]

    def alerts(self, symbol: str | None = None, alert_type: str | None = None,
               since_ms: int | None = None, limit: int = 100,
               symbols: set[str] | None = None) -> list[Alert]:
        """Alerts newest first (by detected_at, then id), filtered by symbol(s), type and detected_at >=
        since_ms: the database's and the recent ones in memory (`symbols`, WebSocket snapshots: memory only)."""
        wanted = {symbol.upper()} if symbols is None and symbol is not None else symbols
        with self.lock:
            # The recent ones: a group serving.updates has not written yet is here.
            chosen = {a["alert_id"]: a for a in self._alerts.values()
                      if (wanted is None or a["symbol"].upper() in wanted)
                      and (alert_type is None or a.get("type") == alert_type)
                      and (since_ms is None or _alert_time(a) >= since_ms)}
        if symbols is None:
            for a in self.db.alerts(symbol, alert_type, since_ms, limit):
                chosen.setdefault(a["alert_id"], a)
        return sorted(chosen.values(), key=lambda a: (-_alert_time(a), a["alert_id"]))[:limit]

    def recent_alerts(self, limit: int) -> list[Alert]:
        """The latest alerts in memory, newest first (WebSocket snapshots of "*")."""
        with self.lock:
            chosen = list(self._alerts.values())
        chosen.sort(key=_alert_time, reverse=True)
        return chosen[:limit]

    def dead_letter_summary(self, start_ms: int | None) -> dict[str, Any]:
        """The store's dead-letter summary since `start_ms` (serving.database), at most SUMMARY_TTL_S old."""
        with self._summary_lock:
            hit = self._summaries.get(start_ms)
            if hit is not None and time.monotonic() - hit[0] < SUMMARY_TTL_S:
                return hit[1]
            summary = self.db.dead_letter_summary(start_ms)
            self._summaries[start_ms] = (time.monotonic(), summary)
            self._summaries.move_to_end(start_ms)
            while len(self._summaries) > SUMMARIES_KEPT:
                self._summaries.popitem(last=False)
            return summary

    def counts(self) -> dict[str, int]:
        """Sizes of the state, for /readyz and logs."""
        with self.lock:
            live = {"symbols": len(self.board), "bars": sum(len(w) for w in self._windows.values()),
                    "alerts": len(self._alerts)}
        return live
