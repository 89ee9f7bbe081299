"""The simulated market: deterministic, plausible, with jumps at the rate asked for."""
from __future__ import annotations

import math
from collections import defaultdict
from itertools import islice

import pytest

from market import codec
from producer.simulator import DEFAULT_SYMBOLS, TickSimulator, universe
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
