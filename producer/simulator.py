"""A simulated market: per-symbol geometric Brownian motion with jumps.

`TickSimulator` yields ticks (DESIGN.md §3 dicts) on a simulated event-time
line, so the same seed and start time give the same ticks on any machine,
whatever the speed at which they are sent.
"""
from __future__ import annotations

import math
import random
import time
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from market import config

# Seconds in a trading year (252 days of 6.5 h): annual volatilities are
# quoted against it, so a 25 % stock moves about 0.08 % per minute.
TRADING_YEAR_S = 252 * 6.5 * 3600

# After a jump, trading in that symbol picks up: trade sizes are multiplied by
# this factor for this long, so volume spikes come with price jumps.
JUMP_VOLUME_FACTOR = 6.0
JUMP_VOLUME_BURST_S = 45.0


@dataclass(frozen=True)
class SymbolSpec:
    """How one instrument trades: start price, volatility, activity, trade size."""

    symbol: str
    price: float
    annual_vol: float
    weight: float = 1.0          # share of the market's ticks
    size_median: float = 100.0   # median trade size (shares, or coins)
    size_decimals: int = 0       # 0: whole shares (int volume); >0: fractional


# About 20 well-known instruments at realistic late-2025 price levels. The two
# crypto pairs trade fractional sizes, which DESIGN.md §3 allows.
DEFAULT_UNIVERSE: tuple[SymbolSpec, ...] = (
    SymbolSpec("AAPL", 230.0, 0.25, 10), SymbolSpec("MSFT", 420.0, 0.22, 8),
    SymbolSpec("NVDA", 140.0, 0.50, 12), SymbolSpec("AMZN", 200.0, 0.30, 8),
    SymbolSpec("GOOGL", 170.0, 0.28, 7), SymbolSpec("META", 580.0, 0.35, 6),
    SymbolSpec("TSLA", 250.0, 0.60, 10), SymbolSpec("BRK.B", 460.0, 0.15, 2),
    SymbolSpec("JPM", 220.0, 0.22, 4), SymbolSpec("V", 300.0, 0.18, 3),
    SymbolSpec("JNJ", 155.0, 0.15, 2), SymbolSpec("WMT", 85.0, 0.18, 3),
    SymbolSpec("XOM", 115.0, 0.25, 3), SymbolSpec("PG", 165.0, 0.15, 2),
    SymbolSpec("HD", 390.0, 0.22, 2), SymbolSpec("AMD", 150.0, 0.50, 6),
    SymbolSpec("NFLX", 750.0, 0.35, 3), SymbolSpec("SPY", 580.0, 0.15, 8),
    SymbolSpec("BTC-USD", 95_000.0, 0.60, 4, size_median=0.05, size_decimals=6),
    SymbolSpec("ETH-USD", 3_400.0, 0.70, 3, size_median=0.5, size_decimals=5),
)
DEFAULT_SYMBOLS: tuple[str, ...] = tuple(spec.symbol for spec in DEFAULT_UNIVERSE)
_KNOWN = {spec.symbol: spec for spec in DEFAULT_UNIVERSE}


def universe(symbols: Sequence[str] | None = None) -> tuple[SymbolSpec, ...]:
    """Specs for `symbols` (upper-cased); unknown ones get a stable made-up price level.

    The made-up level depends only on the symbol's name, so adding a symbol
    to the list does not change the others.
    """
    if not symbols:
        return DEFAULT_UNIVERSE
    specs = []
    for raw in symbols:
        symbol = raw.strip().upper()
        if not symbol:
            continue
        if symbol in _KNOWN:
            specs.append(_KNOWN[symbol])
            continue
        crc = zlib.crc32(symbol.encode())
        specs.append(SymbolSpec(symbol, price=float(10 + crc % 490), annual_vol=0.2 + (crc >> 9) % 30 / 100))
    if len({s.symbol for s in specs}) != len(specs):
        raise ValueError(f"duplicate symbols in {list(symbols)}")
    return tuple(specs)


class TickSimulator:
    """Deterministic market ticks: GBM per symbol, Poisson jumps, log-normal trade sizes.

    Tick `i` has event time `start_ms + i * 1000 // event_rate`: the simulated
    clock advances by the tick rate, not by the wall clock, so a seed and a
    start time fix every tick. Symbols are drawn by their `weight`; each has
    its own `seq` counter starting at 1. Iterating never ends: bound it with
    `itertools.islice` or a duration.
    """

    def __init__(
        self,
        symbols: Sequence[SymbolSpec] | Sequence[str] | None = None,
        *,
        seed: int = 0,
        start_ms: int | None = None,
        event_rate: float = config.PRODUCER_RATE,
        jump_rate_per_min: float = config.PRODUCER_JUMP_RATE_PER_MIN,
        jump_size_pct: float = config.PRODUCER_JUMP_SIZE_PCT,
    ) -> None:
        if symbols and isinstance(symbols[0], SymbolSpec):
            specs = tuple(symbols)  # type: ignore[arg-type]
        else:
            specs = universe(symbols)  # type: ignore[arg-type]
        if not specs:
            raise ValueError("at least one symbol is needed")
        if event_rate <= 0:
            raise ValueError(f"event_rate must be > 0 ticks per event-time second, got {event_rate}")
        if jump_rate_per_min < 0 or jump_size_pct < 0:
            raise ValueError("jump rate and size must be >= 0")
        self.specs = specs
        self.seed = seed
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.event_rate = float(event_rate)
        self.jump_rate_per_min = jump_rate_per_min
        self.jump_size = jump_size_pct / 100.0
        self.jumps = 0
        """Number of jumps so far (all symbols)."""
        self.ticks = 0
        """Number of ticks generated so far."""
        self._rng = random.Random(seed)
        self._cum_weights = list(accumulate(spec.weight for spec in specs))
        self._prices = [spec.price for spec in specs]
        self._seqs = [0] * len(specs)
        self._last_ms = [self.start_ms] * len(specs)
        self._burst_until = [-1] * len(specs)
        self._sigma = [spec.annual_vol / math.sqrt(TRADING_YEAR_S) for spec in specs]
        self._log_size = [math.log(spec.size_median) for spec in specs]

    @property
    def now_ms(self) -> int:
        """Event time of the next tick."""
        return self.start_ms + int(self.ticks * 1000 // self.event_rate)

    def price(self, symbol: str) -> float:
        """The current (unrounded) price of `symbol`."""
        for i, spec in enumerate(self.specs):
            if spec.symbol == symbol:
                return self._prices[i]
        raise KeyError(symbol)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        rng = self._rng
        ts = self.start_ms + int(self.ticks * 1000 // self.event_rate)
        self.ticks += 1
        i = bisect_right(self._cum_weights, rng.random() * self._cum_weights[-1])
        dt_s = (ts - self._last_ms[i]) / 1000.0
        self._last_ms[i] = ts
        price = self._prices[i]
        if dt_s > 0:
            sigma = self._sigma[i]
            price *= math.exp(-0.5 * sigma * sigma * dt_s + sigma * math.sqrt(dt_s) * rng.gauss(0.0, 1.0))
            # A Poisson process per symbol: P(jump in dt) = 1 - exp(-rate * dt).
            if self.jump_rate_per_min and rng.random() < -math.expm1(-self.jump_rate_per_min * dt_s / 60.0):
                size = abs(rng.gauss(self.jump_size, self.jump_size / 4))
                price *= math.exp(size if rng.random() < 0.5 else -size)
                self.jumps += 1
                self._burst_until[i] = ts + int(JUMP_VOLUME_BURST_S * 1000)
            self._prices[i] = price
        spec = self.specs[i]
        size = math.exp(rng.gauss(self._log_size[i], 1.0))
        if ts < self._burst_until[i]:
            size *= JUMP_VOLUME_FACTOR
        if spec.size_decimals:
            volume: float | int = max(round(size, spec.size_decimals), 10.0 ** -spec.size_decimals)
        else:
            volume = max(int(size), 1)
        self._seqs[i] += 1
        # Quote to the cent (4 decimals below $1); never round a price to 0.
        shown = round(price, 2) if price >= 1.0 else max(round(price, 4), 0.0001)
        return {"symbol": spec.symbol, "price": shown, "volume": volume, "timestamp": ts, "seq": self._seqs[i]}
