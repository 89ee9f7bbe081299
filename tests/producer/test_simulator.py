"""The simulated market: deterministic, plausible, with jumps at the rate asked for."""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from itertools import islice

import pytest

from market import codec
from producer.simulator import DEFAULT_SYMBOLS, DEFAULT_UNIVERSE, TRADING_YEAR_S, SymbolSpec, TickSimulator, universe
from producer.universe import market_universe
from tests.producer.reference import classify

START_MS = 1_764_063_000_000  # 2025-11-25T09:30:00Z


def take(n: int, **kwargs) -> list[dict]:
    kwargs.setdefault("start_ms", START_MS)
    kwargs.setdefault("seq_base", 0)
    return list(islice(TickSimulator(**kwargs), n))


def test_same_seed_same_ticks_other_seed_other_ticks() -> None:
    assert take(5_000, seed=11) == take(5_000, seed=11)
    assert take(5_000, seed=11) != take(5_000, seed=12)


def test_default_universe_is_about_twenty_known_symbols() -> None:
    assert 18 <= len(DEFAULT_SYMBOLS) <= 25
    assert {"AAPL", "MSFT", "NVDA"} <= set(DEFAULT_SYMBOLS)
    seen = {tick["symbol"] for tick in take(20_000, seed=1)}
    assert seen == set(DEFAULT_SYMBOLS)


def test_every_tick_is_valid_per_design() -> None:
    for tick in take(20_000, seed=2):
        assert classify(codec.dumps(tick)) is None, tick
        assert list(tick) == ["symbol", "price", "volume", "timestamp", "seq"]


def test_event_time_follows_the_event_rate() -> None:
    ticks = take(3_001, seed=3, event_rate=1_000)
    assert ticks[0]["timestamp"] == START_MS
    assert ticks[-1]["timestamp"] == START_MS + 3_000
    assert all(a["timestamp"] <= b["timestamp"] for a, b in zip(ticks, ticks[1:]))


def test_without_a_start_time_the_clock_starts_with_the_first_tick_not_with_the_simulator() -> None:
    """A producer makes its simulator, then connects: its first ticks must not be stamped in the past."""
    import time
    simulator = TickSimulator(seed=3, seq_base=0, jump_rate_per_min=1.0)
    time.sleep(0.3)
    asked_ms = int(time.time() * 1000)
    first = next(iter(simulator))
    assert asked_ms - 20 <= first["timestamp"] <= int(time.time() * 1000)
    later = list(islice(simulator, 9_999))
    assert later[-1]["timestamp"] - first["timestamp"] == pytest.approx(1_000, abs=2), "still paced by the rate"
    assert all(tick["timestamp"] >= first["timestamp"] for tick in later)


def test_seq_increases_by_one_per_symbol() -> None:
    last: dict[str, int] = defaultdict(int)
    for tick in take(30_000, seed=4):
        assert tick["seq"] == last[tick["symbol"]] + 1
        last[tick["symbol"]] = tick["seq"]


def test_prices_stay_positive_even_when_wild() -> None:
    # 300 % volatility and frequent 30 % jumps, over a simulated hour of a few symbols.
    sim = TickSimulator(universe(["PENNY", "WILD"]), seed=5, start_ms=START_MS, event_rate=20,
                        jump_rate_per_min=2.0, jump_size_pct=30.0)
    for tick in islice(sim, 72_000):
        assert tick["price"] > 0 and math.isfinite(tick["price"])
    assert sim.jumps > 100


def test_jump_frequency_matches_the_setting() -> None:
    # 20 symbols x 120 simulated minutes x 0.05 jumps/min = 120 expected jumps (Poisson).
    sim = TickSimulator(seed=6, start_ms=START_MS, event_rate=50, jump_rate_per_min=0.05, jump_size_pct=3.0)
    ticks = list(islice(sim, 50 * 60 * 120))
    expected = 20 * 120 * 0.05
    assert abs(sim.jumps - expected) < 4 * math.sqrt(expected), sim.jumps
    # The jumps are visible in the prices: normal moves between two ticks are
    # far below 1 %, a jump of ~3 % is not.
    last: dict[str, float] = {}
    big_moves = 0
    for tick in ticks:
        previous = last.get(tick["symbol"])
        if previous is not None and abs(math.log(tick["price"] / previous)) > 0.01:
            big_moves += 1
        last[tick["symbol"]] = tick["price"]
    assert abs(big_moves - sim.jumps) <= 3


def test_no_jumps_when_switched_off() -> None:
    sim = TickSimulator(seed=7, start_ms=START_MS, event_rate=50, jump_rate_per_min=0.0)
    list(islice(sim, 50 * 600))
    assert sim.jumps == 0


def test_one_minute_bars_show_volatility_and_volume_anomalies() -> None:
    """With the defaults, bars with a >2 % swing and a volume spike appear within an hour."""
    bars: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for tick in take(50 * 3600, seed=8, event_rate=50):
        bars[(tick["symbol"], tick["timestamp"] // 60_000)].append(tick)
    swings = [max(t["price"] for t in ticks) / min(t["price"] for t in ticks) - 1 for ticks in bars.values()]
    assert sum(1 for swing in swings if swing > 0.02) >= 5
    # Quiet bars are quiet: most swing far less than the 2 % threshold.
    assert sorted(swings)[len(swings) // 2] < 0.005
    volumes: dict[str, list[float]] = defaultdict(list)
    for (symbol, _), ticks in sorted(bars.items()):
        volumes[symbol].append(sum(t["volume"] for t in ticks))
    spikes = sum(1 for series in volumes.values() for i in range(20, len(series))
                 if series[i] > 3 * sum(series[i - 20:i]) / 20)
    assert spikes >= 3


def test_trade_sizes_are_log_normal_whole_shares_or_fractional_coins() -> None:
    ticks = take(40_000, seed=9)
    stock = [t["volume"] for t in ticks if t["symbol"] == "AAPL"]
    coin = [t["volume"] for t in ticks if t["symbol"] == "BTC-USD"]
    assert all(isinstance(v, int) and v >= 1 for v in stock)
    assert any(not float(v).is_integer() for v in coin)
    logs = sorted(math.log(v) for v in stock)
    median = logs[len(logs) // 2]
    assert math.log(60) < median < math.log(160)  # median trade ~100 shares
    assert max(stock) > 20 * math.exp(median)      # with a long right tail


def test_unknown_symbols_get_a_stable_price_level() -> None:
    first = universe(["zzz", "AAPL"])
    assert [spec.symbol for spec in first] == ["ZZZ", "AAPL"]
    assert universe(["ZZZ"])[0] == first[0]
    assert 10 <= first[0].price < 500
    with pytest.raises(ValueError):
        universe(["AAPL", "aapl"])


def normalised_returns(ticks: list[dict], specs) -> dict[str, list[float]]:
    """Per symbol, ln(p / previous p) / (sigma * sqrt(dt)) of each tick, from its start price at START_MS."""
    sigma = {spec.symbol: spec.annual_vol / math.sqrt(TRADING_YEAR_S) for spec in specs}
    last = {spec.symbol: (spec.price, START_MS) for spec in specs}
    out: dict[str, list[float]] = defaultdict(list)
    for tick in ticks:
        symbol = tick["symbol"]
        price, when = last[symbol]
        if tick["timestamp"] > when:
            dt_s = (tick["timestamp"] - when) / 1000.0
            out[symbol].append(math.log(tick["price"] / price) / (sigma[symbol] * math.sqrt(dt_s)))
            last[symbol] = (tick["price"], tick["timestamp"])
    return out


def test_each_symbol_moves_with_its_own_volatility() -> None:
    # Prices of 10,000 make the cent negligible; without jumps a tick's log
    # return over dt seconds is N(0, sigma^2 dt), whatever the other symbols do.
    specs = [spec._replace(price=10_000.0) for spec in DEFAULT_UNIVERSE]
    returns = normalised_returns(take(100_000, symbols=specs, seed=10, event_rate=10, jump_rate_per_min=0), specs)
    assert set(returns) == set(DEFAULT_SYMBOLS)
    for symbol, values in returns.items():
        assert abs(statistics.pstdev(values) - 1.0) < 0.06, symbol
        assert abs(statistics.fmean(values)) < 0.1, symbol


def test_a_whole_market_keeps_every_symbols_path_across_blocks() -> None:
    # 2,000 symbols with volatilities from 10 % to 100 %, most of them ticking
    # a few times per block of 4,096: each tick continues its symbol's path.
    specs = market_universe(2_000)
    specs = [spec._replace(price=10_000.0, annual_vol=0.1 + 0.9 * (i % 10) / 9) for i, spec in enumerate(specs)]
    returns = normalised_returns(take(200_000, symbols=specs, seed=11, event_rate=20, jump_rate_per_min=0), specs)
    pooled = [value for values in returns.values() for value in values]
    assert len(returns) > 1_900
    assert abs(statistics.pstdev(pooled) - 1.0) < 0.02
    tail = [value for spec in specs[1_000:] for value in returns.get(spec.symbol, [])]   # long gaps between ticks
    assert abs(statistics.pstdev(tail) - 1.0) < 0.05


def test_symbols_are_drawn_by_weight() -> None:
    specs = [SymbolSpec(name, 100.0, 0.2, weight) for name, weight in (("NONE", 0.0), ("A", 1.0), ("B", 3.0),
                                                                        ("C", 6.0))]
    counts = Counter(tick["symbol"] for tick in take(200_000, symbols=specs, seed=12))
    assert counts["NONE"] == 0
    for name, share in (("A", 0.1), ("B", 0.3), ("C", 0.6)):
        assert abs(counts[name] / 200_000 - share) < 0.006, counts


def test_jumps_across_a_whole_market_are_as_frequent_as_asked_and_show_in_prices() -> None:
    # 1,000 symbols x 60 simulated minutes x 0.05 jumps/min: about 3,000 jumps,
    # several per block, each one big move of its symbol and nothing else.
    specs = market_universe(1_000)
    sim = TickSimulator(specs, seed=13, start_ms=START_MS, event_rate=100, jump_rate_per_min=0.05, seq_base=0)
    ticks = list(islice(sim, 100 * 3600))
    assert abs(sim.jumps - 3_000) < 5 * math.sqrt(3_000), sim.jumps
    last = {spec.symbol: spec.price for spec in specs}
    big_moves = 0
    for tick in ticks:
        if abs(math.log(tick["price"] / last[tick["symbol"]])) > 0.01:
            big_moves += 1
        last[tick["symbol"]] = tick["price"]
    assert abs(big_moves - sim.jumps) <= 0.01 * sim.jumps


def test_ticks_and_jumps_count_what_was_handed_out() -> None:
    sim = TickSimulator(seed=14, start_ms=START_MS, event_rate=20, jump_rate_per_min=2.0, seq_base=0)
    counted = []
    for n in (1, 999, 5_000, 10_000):   # stops inside blocks
        list(islice(sim, n - sim.ticks))
        counted.append((sim.ticks, sim.jumps, sim.now_ms))
    assert [ticks for ticks, _, _ in counted] == [1, 999, 5_000, 10_000]
    assert [now for _, _, now in counted] == [START_MS + ticks * 50 for ticks, _, _ in counted]
    jumps = [jumps for _, jumps, _ in counted]
    assert jumps == sorted(jumps) and jumps[0] <= 1 < jumps[-1]
