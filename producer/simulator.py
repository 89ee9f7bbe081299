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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def wall_clock_seq_base() -> int:
    """The wall clock in microseconds since the epoch: where a new run's seqs start."""
    return time.time_ns() // 1000


class TickSimulator:
    """Deterministic market ticks: GBM per symbol, Poisson jumps, log-normal trade sizes.

    Tick `i` has event time `start_ms + i * 1000 // event_rate`: the simulated
    clock advances by the tick rate, not by the wall clock, so a seed and a
    start time (and `seq_base`) fix every tick. Symbols are drawn by their
    `weight`; each has its own `seq` counter, counting up by one from
    `seq_base + 1`. Iterating never ends: bound it with `itertools.islice` or
    a duration.

    `seq_base` defaults to the wall clock in microseconds when the simulator
    is made, so a restarted producer continues above every seq an earlier
    run used (DESIGN.md §3: the producer never reuses a seq, and the
    pipeline takes a reused seq with the same content for a duplicate). That
    holds while a run sends fewer than 1,000,000 ticks per second per symbol
    on average, and while the machine's clock does not step back across a
    restart by more than the previous run's seq lead.
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
        seq_base: int | None = None,
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
        self.seq_base = wall_clock_seq_base() if seq_base is None else int(seq_base)
        if self.seq_base < 0:
            raise ValueError(f"seq_base must be >= 0, got {seq_base}")
        self.event_rate = float(event_rate)
        self.jump_rate_per_min = jump_rate_per_min
        self.jump_size = jump_size_pct / 100.0
        self.jumps = 0
        """Number of jumps so far (all symbols)."""
        self.ticks = 0
        """Number of ticks generated so far."""
        # numpy draws the per-tick random numbers in blocks (one Python float
        # each via tolist() is ~20x cheaper than random.gauss); jumps are rare
        # and come from their own generator.
        self._np = np.random.default_rng(seed)
        self._jump_rng = random.Random(f"jumps:{seed}")
        cum = np.cumsum([spec.weight for spec in specs], dtype=float)
        self._cum_weights = cum / cum[-1]
        self._prices = [spec.price for spec in specs]
        self._seqs = [self.seq_base] * len(specs)
        self._last_ms = [self.start_ms] * len(specs)
        self._burst_until = [-1] * len(specs)
        self._sigma = [spec.annual_vol / math.sqrt(TRADING_YEAR_S) for spec in specs]
        self._log_size = np.log([spec.size_median for spec in specs])
        self._next_jump_ms = [self._draw_next_jump(self.start_ms) for _ in specs]
        self._gen = self._generate()

    @property
    def now_ms(self) -> int:
        """Event time of the next tick."""
        return self.start_ms + int(self.ticks * 1000 // self.event_rate)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._gen

    def __next__(self) -> dict[str, Any]:
        return next(self._gen)

    def _draw_next_jump(self, after_ms: int) -> float:
        """Event time of a symbol's next jump: jumps form a Poisson process per symbol."""
        if not self.jump_rate_per_min:
            return math.inf
        return after_ms + self._jump_rng.expovariate(self.jump_rate_per_min) * 60_000.0

    def _jump(self, i: int, ts: int) -> float:
        """Apply a jump to symbol `i` at `ts`; returns the new price."""
        rng = self._jump_rng
        size = abs(rng.gauss(self.jump_size, self.jump_size / 4))
        self._prices[i] *= math.exp(size if rng.random() < 0.5 else -size)
        self.jumps += 1
        self._burst_until[i] = ts + int(JUMP_VOLUME_BURST_S * 1000)
        self._next_jump_ms[i] = self._draw_next_jump(ts)
        return self._prices[i]

    def _generate(self) -> Iterator[dict[str, Any]]:
        block = 4096
        specs, prices, seqs, last_ms = self.specs, self._prices, self._seqs, self._last_ms
        sigmas, burst_until, next_jump = self._sigma, self._burst_until, self._next_jump_ms
        decimals = [spec.size_decimals for spec in specs]
        symbols = [spec.symbol for spec in specs]
        exp, sqrt = math.exp, math.sqrt
        while True:
            first = self.ticks
            timestamps = (self.start_ms + (np.arange(first, first + block, dtype=np.float64) * 1000.0
                                           // self.event_rate).astype(np.int64)).tolist()
            picks = np.searchsorted(self._cum_weights, self._np.random(block), side="right")
            z_price = self._np.standard_normal(block).tolist()
            sizes = np.exp(self._log_size[picks] + self._np.standard_normal(block)).tolist()
            for ts, i, z, size in zip(timestamps, picks.tolist(), z_price, sizes):
                self.ticks += 1
                dt_s = (ts - last_ms[i]) / 1000.0
                price = prices[i]
                if dt_s > 0:
                    last_ms[i] = ts
                    sigma = sigmas[i]
                    price *= exp(sigma * (sqrt(dt_s) * z - 0.5 * sigma * dt_s))
                    prices[i] = price
                    if ts >= next_jump[i]:
                        price = self._jump(i, ts)
                if ts < burst_until[i]:
                    size *= JUMP_VOLUME_FACTOR
                places = decimals[i]
                if places:
                    volume: float | int = max(round(size, places), 10.0 ** -places)
                else:
                    volume = int(size) or 1
                seqs[i] += 1
                # Quoted to the cent (4 decimals below $1), never rounded to 0.
                if price >= 1.0:
                    shown = int(price * 100.0 + 0.5) / 100.0
                else:
                    shown = max(int(price * 10_000.0 + 0.5) / 10_000.0, 0.0001)
                yield {"symbol": symbols[i], "price": shown, "volume": volume, "timestamp": ts, "seq": seqs[i]}
