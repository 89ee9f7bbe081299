"""A simulated market: per-symbol geometric Brownian motion with jumps.

`TickSimulator` yields ticks (DESIGN.md §3 dicts) on a simulated event-time
line, so the same seed and start time give the same ticks on any machine,
whatever the speed at which they are sent.
"""
from __future__ import annotations

import math
import operator
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from market import config

# Seconds in a trading year (252 days of 6.5 h): annual volatilities are
# quoted against it, so a 25 % stock moves about 0.08 % per minute.
TRADING_YEAR_S = 252 * 6.5 * 3600

# After a jump, trading in that symbol picks up: trade sizes are multiplied by
# this factor for this long, so volume spikes come with price jumps.
JUMP_VOLUME_FACTOR = 6.0
JUMP_VOLUME_BURST_S = 45.0

# Jumps draw from a generator of their own (seeded with the seed and this), so
# switching them on or off leaves the rest of the market's draws as they were.
_JUMP_STREAM = 0x6A756D70


class SymbolSpec(NamedTuple):
    """How one instrument trades: start price, volatility, activity, trade size.

    A NamedTuple rather than a dataclass: a universe of a million is made in
    a third of the time.
    """

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


def alias_table(weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of `weights` (Vose's construction): draws by weight in O(1) each.

    Symbol `k = floor(u * n)` is taken if `frac(u * n) < keep[k]`, else
    `alias[k]`; each of the n columns holds mass 1/n, split between at most
    two symbols, so a draw costs the same for 20 symbols as for a million.
    """
    n = len(weights)
    total = float(sum(weights))
    keep = [w * n / total for w in weights]
    alias = list(range(n))
    small = [k for k, p in enumerate(keep) if p < 1.0]
    large = [k for k, p in enumerate(keep) if p >= 1.0]
    while small and large:
        less, more = small.pop(), large[-1]
        alias[less] = more
        keep[more] -= 1.0 - keep[less]
        if keep[more] < 1.0:
            small.append(large.pop())
    for k in small + large:   # what rounding left over is a full column
        keep[k] = 1.0
    return np.asarray(keep), np.asarray(alias, dtype=np.int64)


def wall_clock_seq_base() -> int:
    """The wall clock in microseconds since the epoch: where a new run's seqs start."""
    return time.time_ns() // 1000


class TickSimulator:
    """Deterministic market ticks: GBM per symbol, Poisson jumps, log-normal trade sizes.

    Tick `i` has event time `start_ms + i * 1000 // event_rate`: the simulated
    clock advances by the tick rate, not by the wall clock, so a seed and a
    start time (and `seq_base`) fix every tick. Without a start time it
    starts at the wall clock when the first tick is asked for. Symbols are drawn by their
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

    The cost of a tick does not grow with the number of symbols: ticks are
    made in blocks of `BLOCK` with numpy, the symbol of each drawn from an
    alias table (O(1)), and per-symbol state lives in arrays touched only for
    the symbols a block contains.
    """

    BLOCK = 4096
    """Ticks made at a time."""

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
        # No start time: the simulated clock starts with the wall clock when
        # the first tick is asked for (_generate), not now. A producer makes
        # its simulator, then connects to the broker; anchored here, every tick
        # would carry an event time that much in the past (~0.25 s), and each
        # latency measured from it would include the producer's start-up.
        self._follow_clock = start_ms is None
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.seq_base = wall_clock_seq_base() if seq_base is None else int(seq_base)
        if self.seq_base < 0:
            raise ValueError(f"seq_base must be >= 0, got {seq_base}")
        self.event_rate = float(event_rate)
        self.jump_rate_per_min = jump_rate_per_min
        self.jump_size = jump_size_pct / 100.0
        # numpy draws the per-tick random numbers and does the arithmetic of a
        # block at once; jumps are rare and come from their own generator.
        root = np.random.SeedSequence(seed)   # seed None: fresh entropy
        self._np = np.random.default_rng(root)
        self._jump_rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(_JUMP_STREAM,)))
        names, prices, vols, weights, size_medians, decimals = zip(*specs)
        n = len(specs)
        if min(weights) < 0 or not sum(weights) > 0:
            raise ValueError("symbol weights must be >= 0 with a positive sum")
        self._keep, self._alias = alias_table(weights)
        # numpy sorts 16-bit keys by radix: the block's grouping by symbol in O(BLOCK).
        self._key_type = np.uint16 if len(specs) <= 1 << 16 else np.int64
        self._symbols = np.asarray(names, dtype=object)
        # Per-symbol state: the price (unrounded), seq and event time of the
        # symbol's last tick, the end of its volume burst, its next jump.
        self._prices = np.asarray(prices, dtype=float)
        self._seqs = np.full(n, self.seq_base, dtype=np.int64)
        self._last_ms = np.full(n, self.start_ms, dtype=np.int64)
        self._burst_until = np.full(n, -1.0)
        self._next_jump_ms = (self.start_ms + self._jump_rng.exponential(60_000.0 / jump_rate_per_min, n)
                              if jump_rate_per_min else np.full(n, math.inf))
        self._sigma = np.asarray(vols, dtype=float) / math.sqrt(TRADING_YEAR_S)
        self._log_size = np.log(np.asarray(size_medians, dtype=float))
        places = np.asarray(decimals, dtype=np.int64)
        self._fractional = places > 0
        self._any_fractional = bool(self._fractional.any())
        self._lot_scale = 10.0 ** places
        # The current block's ticks (handed out through a list iterator, whose
        # length hint says how many are left), where it starts, and where its
        # jumps are (stream positions, sorted), so `ticks` and `jumps` count
        # what was handed out, not what was made.
        self._pending: Iterator[dict[str, Any]] = iter(())
        self._block_first = 0
        self._block_size = 0
        self._jumps_before = 0
        self._block_jumps = np.empty(0, dtype=np.int64)
        self._gen = self._generate()

    @property
    def ticks(self) -> int:
        """Number of ticks handed out so far."""
        return self._block_first + self._block_size - operator.length_hint(self._pending)

    @property
    def now_ms(self) -> int:
        """Event time of the next tick."""
        return self.start_ms + int(self.ticks * 1000 // self.event_rate)

    @property
    def jumps(self) -> int:
        """Number of jumps so far (all symbols), in the ticks handed out."""
        return self._jumps_before + int(np.searchsorted(self._block_jumps, self.ticks - self._block_first))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._gen

    def __next__(self) -> dict[str, Any]:
        return next(self._gen)

    def _generate(self) -> Iterator[dict[str, Any]]:
        if self._follow_clock:
            self._shift_clock(int(time.time() * 1000) - self.start_ms)
        while True:
            block = self._block()
            self._pending = iter(block)
            yield from self._pending

    def _shift_clock(self, by_ms: int) -> None:
        """Move the simulated clock, before the first tick, by `by_ms`."""
        self.start_ms += by_ms
        self._last_ms += by_ms
        self._next_jump_ms = self._next_jump_ms + by_ms   # inf (no jumps) stays inf

    def _block(self) -> list[dict[str, Any]]:
        """The next BLOCK ticks; updates the per-symbol state of the symbols among them."""
        size = self.BLOCK
        first = self.ticks
        rng = self._np
        if self.event_rate.is_integer():   # integer division: exact, and ten times faster
            stamps = self.start_ms + np.arange(first, first + size, dtype=np.int64) * 1000 // int(self.event_rate)
        else:
            stamps = self.start_ms + (np.arange(first, first + size, dtype=np.float64) * 1000.0
                                      // self.event_rate).astype(np.int64)
        # One uniform per tick picks a symbol: its integer part (scaled) the
        # alias column, its fraction the side.
        column = rng.random(size) * len(self._keep)
        picks = np.minimum(column.astype(np.int64), len(self._keep) - 1)   # u * n may round up to n
        picks = np.where(column - picks < self._keep[picks], picks, self._alias[picks])
        z_price = rng.standard_normal(size)
        z_size = rng.standard_normal(size)

        # The block's ticks by symbol (in stream order within a symbol): each
        # symbol's ticks are then one run, and the price path a cumulative sum.
        order = np.argsort(picks.astype(self._key_type), kind="stable")
        sym = picks[order]
        ts = stamps[order]
        new_run = np.empty(size, dtype=bool)
        new_run[0] = True
        np.not_equal(sym[1:], sym[:-1], out=new_run[1:])
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], size)
        counts = ends - starts
        run = np.cumsum(new_run) - 1
        owners = sym[starts]
        last = ends - 1

        previous = np.empty(size, dtype=np.int64)
        previous[1:] = ts[:-1]
        previous[starts] = self._last_ms[owners]
        dt_s = (ts - previous) / 1000.0
        # Per-symbol values are read once per symbol of the block, then spread
        # over its run: few reads from the (large) state arrays.
        sigma = self._sigma[owners][run]
        step = sigma * (np.sqrt(dt_s) * z_price[order] - 0.5 * sigma * dt_s)   # log return since the last tick
        burst_until = self._burst_until[owners][run]
        jumps_at = (self._jumps(ts, run, ends, owners, step, burst_until) if self.jump_rate_per_min
                    else np.empty(0, dtype=np.int64))
        path = np.cumsum(step)
        path -= (path[starts] - step[starts])[run]
        price = self._prices[owners][run] * np.exp(path)
        seq = (self._seqs[owners] - starts + 1)[run] + np.arange(size)
        trade = np.exp(self._log_size[owners][run] + z_size[order])
        trade[ts < burst_until] *= JUMP_VOLUME_FACTOR

        self._prices[owners] = price[last]
        self._last_ms[owners] = ts[last]
        self._seqs[owners] += counts
        self._burst_until[owners] = burst_until[last]

        # Back to stream order. Quoted to the cent (4 decimals below $1),
        # never rounded to 0.
        in_stream = np.empty(size, dtype=np.int64)
        in_stream[order] = np.arange(size)
        price = price[in_stream]
        shown = np.where(price >= 1.0, np.floor(price * 100.0 + 0.5) / 100.0,
                         np.maximum(np.floor(price * 10_000.0 + 0.5) / 10_000.0, 0.0001))
        trade = trade[in_stream]
        volumes = np.maximum(trade.astype(np.int64), 1).tolist()   # whole shares
        if self._any_fractional:
            coins = np.flatnonzero(self._fractional[picks])
            scale = self._lot_scale[picks[coins]]
            for k, amount in zip(coins.tolist(), (np.maximum(np.round(trade[coins] * scale), 1.0) / scale).tolist()):
                volumes[k] = amount
        self._jumps_before += len(self._block_jumps)
        self._block_first = first
        self._block_size = size
        self._block_jumps = np.sort(order[jumps_at])
        return [{"symbol": s, "price": p, "volume": v, "timestamp": t, "seq": q}
                for s, p, v, t, q in zip(self._symbols[picks].tolist(), shown.tolist(), volumes,
                                         stamps.tolist(), seq[in_stream].tolist())]

    def _jumps(self, ts: np.ndarray, run: np.ndarray, ends: np.ndarray, owners: np.ndarray, step: np.ndarray,
               burst_until: np.ndarray) -> np.ndarray:
        """Apply the block's jumps to `step` and `burst_until` (by symbol order); returns where they are.

        A symbol jumps at its first tick at or after its next jump time, then
        draws the next one from there, so a block may hold several of its
        jumps: each round takes every symbol's first due tick at once, and
        only ticks due in a round can be due in the next.
        """
        next_jump = self._next_jump_ms[owners][run]
        due = np.flatnonzero(ts >= next_jump)
        if not due.size:
            return due
        rng = self._jump_rng
        burst_ms = JUMP_VOLUME_BURST_S * 1000.0
        mean_gap_ms = 60_000.0 / self.jump_rate_per_min
        rounds = []
        while due.size:
            first = np.empty(due.size, dtype=bool)
            first[0] = True
            np.not_equal(run[due[1:]], run[due[:-1]], out=first[1:])
            at = due[first]
            n = at.size
            z, u = rng.standard_normal(n), rng.random(2 * n)
            size = np.abs(self.jump_size * (1.0 + 0.25 * z))   # ~N(size, size / 4), either way
            step[at] += np.where(u[:n] < 0.5, size, -size)
            when = ts[at]
            following = when - mean_gap_ms * np.log1p(-u[n:])  # Poisson process: exponential gaps
            for k, end, later, burst in zip(at.tolist(), ends[run[at]].tolist(), following.tolist(),
                                            (when + burst_ms).tolist()):
                next_jump[k:end] = later
                burst_until[k:end] = burst
            rounds.append(at)
            due = due[~first]
            due = due[ts[due] >= next_jump[due]]
        jumped = run[np.concatenate(rounds)]
        self._next_jump_ms[owners[jumped]] = next_jump[ends[jumped] - 1]
        return np.concatenate(rounds)
