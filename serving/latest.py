"""The latest bar of every symbol, kept encoded, from which /trends/latest, /symbols and snapshots are served.

At 10,000 symbols and 10,000 bar versions per second, sorting and encoding
10,000 dicts per request cost ~60 ms and held the store's lock the while
on every request. Here each new version is encoded once when it arrives (the
bytes the WebSocket frame is built from), the symbols are kept sorted as they
appear, and a response is the join of the kept bytes, built at most once per
change generation and shared by every request that sees that generation.
"""
from __future__ import annotations

import bisect
import threading
from typing import Any, NamedTuple

from market import codec

Bar = dict[str, Any]


class Latest(NamedTuple):
    """One symbol's newest window, its latest version: the bar, its JSON and its /symbols summary JSON."""

    window_start: int
    bar: Bar
    encoded: bytes
    summary: bytes


def summary_of(bar: Bar) -> bytes:
    """The /api/v1/symbols entry of `bar`, encoded."""
    return codec.dumps({"symbol": bar["symbol"].upper(), "close": bar["close"], "change_pct": bar["change_pct"],
                        "window_end": bar["window_end"]})


class LatestBoard:
    """Latest bar per symbol; writers call `offer` under their own ordering, readers never wait long.

    `lock` is held for dictionary updates and for taking a list of
    references, never while bytes are joined or sent.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._latest: dict[str, Latest] = {}
        self._symbols: list[str] = []        # sorted, upper case
        self.generation = 0                  # bumped on every change of any symbol's latest bar
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._build_lock = threading.Lock()  # one thread rebuilds a stale response, the others reuse it

    def offer(self, symbol: str, bar: Bar, encoded: bytes) -> bool:
        """Make `bar` (already stored as a new version of its window) the latest of `symbol` if its window
        is the newest; True if it is."""
        start = bar["window_start"]
        with self.lock:
            current = self._latest.get(symbol)
            if current is not None and start < current.window_start:
                return False
            if current is None:
                bisect.insort(self._symbols, symbol)
            self._latest[symbol] = Latest(start, bar, encoded, summary_of(bar))
            self.generation += 1
            return True

    def replace(self, symbol: str, latest: Latest | None) -> None:
        """Set (or with None drop) the latest of `symbol` outright: a window evicted by a bound."""
        with self.lock:
            if latest is None:
                if self._latest.pop(symbol, None) is not None:
                    del self._symbols[bisect.bisect_left(self._symbols, symbol)]
            else:
                if symbol not in self._latest:
                    bisect.insort(self._symbols, symbol)
                self._latest[symbol] = latest
            self.generation += 1

    def get(self, symbol: str) -> Latest | None:
        """The latest of `symbol` (upper case), or None."""
        return self._latest.get(symbol)

    def __len__(self) -> int:
        return len(self._latest)

    def bars(self, symbols: set[str] | None = None) -> list[Bar]:
        """The latest bar of each symbol (all, or those in `symbols`), by symbol."""
        with self.lock:
            return [self._latest[s].bar for s in self._chosen(symbols)]

    def encoded(self, symbols: set[str] | None = None) -> list[bytes]:
        """The latest bars' JSON, by symbol (all, or those in `symbols`)."""
        with self.lock:
            return [self._latest[s].encoded for s in self._chosen(symbols)]

    def _chosen(self, symbols: set[str] | None) -> list[str]:
        if symbols is None:
            return self._symbols
        if len(symbols) < len(self._symbols) // 8:
            return sorted(s for s in symbols if s in self._latest)
        return [s for s in self._symbols if s in symbols]

    # --- whole responses, cached per generation --------------------------------
    def trends_json(self) -> bytes:
        """`{"trends": [latest bar ...]}` by symbol."""
        return self._cached("trends", b'{"trends":[', lambda: self.encoded())

    def symbols_json(self) -> bytes:
        """`{"symbols": [{"symbol", "close", "change_pct", "window_end"} ...]}` by symbol."""
        def parts() -> list[bytes]:
            with self.lock:
                return [self._latest[s].summary for s in self._symbols]
        return self._cached("symbols", b'{"symbols":[', parts)

    def _cached(self, name: str, head: bytes, parts: Any) -> bytes:
        # A body labelled g holds every change up to generation g (g is read
        # before the parts). A request that arrived at generation g0 may be
        # answered with any body labelled >= g0: so concurrent requests share
        # one rebuild instead of each making its own under a busy feed.
        arrived = self.generation
        hit = self._cache.get(name)
        if hit is not None and hit[0] >= arrived:
            return hit[1]
        with self._build_lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] >= arrived:
                return hit[1]    # built by the thread this one waited for
            generation = self.generation
            body = head + b",".join(parts()) + b"]}"
            self._cache[name] = (generation, body)
            return body
