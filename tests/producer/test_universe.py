"""A whole market (`--symbol_count`): plausible tickers, stable, spread price levels, heavy-tailed activity."""
from __future__ import annotations

import hashlib
import math
import os
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from itertools import islice
from pathlib import Path

import pytest

from market import codec
from producer.simulator import DEFAULT_SYMBOLS, DEFAULT_UNIVERSE, TickSimulator, universe
from producer.universe import MAX_SYMBOL_COUNT, made_up_specs, market_universe
from tests.producer.reference import SYMBOL, classify

ROOT = Path(__file__).resolve().parents[2]
START_MS = 1_764_063_000_000  # 2025-11-25T09:30:00Z
# What a ticker looks like: 1-5 letters, a share class (BRK.B), or a crypto pair (ETH-USD).
TICKER = re.compile(r"[A-Z]{1,5}|[A-Z]{1,4}\.[A-Z]|[A-Z]{3,5}-USD")


@pytest.fixture(scope="module")
def market() -> tuple:
    return market_universe(10_000)


def ticks_of(specs, n: int, **kwargs) -> list[dict]:
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("start_ms", START_MS)
    kwargs.setdefault("seq_base", 0)
    return list(islice(TickSimulator(specs, **kwargs), n))


def test_names_are_distinct_tickers_that_pass_the_design_rule(market) -> None:
    names = [spec.symbol for spec in market]
    assert len(names) == 10_000 and len(set(names)) == 10_000
    assert all(SYMBOL.match(name) and TICKER.fullmatch(name) for name in names), \
        [name for name in names if not TICKER.fullmatch(name)][:5]
    made_up = names[len(DEFAULT_SYMBOLS):]
    assert not set(made_up) & set(DEFAULT_SYMBOLS), "a made-up name borrowed a well-known one"
    lengths = Counter(len(name) for name in made_up if name.isalpha())
    assert lengths[3] + lengths[4] > 0.6 * len(made_up), lengths   # mostly 3 and 4 letters, as listed markets
    assert lengths[1] + lengths[2] < 0.1 * len(made_up) and lengths[5] > 0, lengths
    assert 20 < sum("." in name for name in made_up) < 500        # some share classes,
    assert 20 < sum(name.endswith("-USD") for name in made_up) < 500   # some crypto pairs


def test_the_well_known_symbols_lead_the_market_most_active_first(market) -> None:
    by_activity = [spec.symbol for spec in sorted(DEFAULT_UNIVERSE, key=lambda spec: -spec.weight)]
    assert [spec.symbol for spec in market[:20]] == by_activity
    assert market[0].symbol == "NVDA" and market[0].price == 140.0     # they keep their own price level
    assert [spec.symbol for spec in market_universe(5)] == by_activity[:5]
    weights = [spec.weight for spec in market]
    assert all(a > b for a, b in zip(weights, weights[1:])), "activity falls with rank"


def test_named_symbols_come_first_in_the_order_given() -> None:
    specs = market_universe(100, ["zzz", "AAPL"])
    assert [spec.symbol for spec in specs[:2]] == ["ZZZ", "AAPL"]
    assert specs[0].price == universe(["ZZZ"])[0].price            # the same made-up level as without a count
    assert len(specs) == 100 and len({spec.symbol for spec in specs}) == 100
    assert specs[0].weight > specs[1].weight > specs[2].weight


@pytest.mark.parametrize("count", [0, -1, MAX_SYMBOL_COUNT + 1])
def test_a_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="1..1,000,000"):
        market_universe(count)


def test_more_named_symbols_than_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="--symbol_count 2 is fewer than the 3 symbols"):
        market_universe(2, ["A", "B", "C"])


def test_a_bigger_market_starts_with_the_smaller_one(market) -> None:
    assert market_universe(2_500) == market[:2_500]
    assert market_universe(20_000)[:10_000] == market
    with_named = market_universe(3_000, ["ZZZ", "AAPL"])
    assert market_universe(1_000, ["ZZZ", "AAPL"]) == with_named[:1_000]


def test_the_first_made_up_names_are_fixed() -> None:
    # Renaming the made-up market renames what serving and its users see:
    # change it knowingly, with this list.
    assert [spec.symbol for spec in made_up_specs(8)] == ["UFF", "HEP", "HMNE", "RNAC", "EYNA", "OLOJ", "EGD",
                                                          "WONSR-USD"]


def test_the_same_count_gives_the_same_market_in_another_process(market) -> None:
    code = ("from producer.universe import market_universe; import hashlib; "
            "print(hashlib.sha256(repr(market_universe(10_000)).encode()).hexdigest())")
    here = hashlib.sha256(repr(market).encode()).hexdigest()
    for hash_seed in ("1", "2"):   # set iteration order must not matter
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=hash_seed))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == here


def test_price_levels_spread_from_dollars_to_thousands(market) -> None:
    stocks = sorted(spec.price for spec in market[20:] if not spec.symbol.endswith("-USD"))
    percentile = lambda q: stocks[int(q * (len(stocks) - 1))]   # noqa: E731
    assert 0.5 <= stocks[0] and percentile(0.05) < 8 < 15 < percentile(0.5) < 60 < 150 < percentile(0.95)
    assert 5 <= sum(price > 1_000 for price in stocks) < 0.01 * len(stocks)
    assert stocks[-1] <= 10_000
    # Log-normal: the log of the price is spread symmetrically around the median's.
    logs = [math.log(price) for price in stocks]
    assert abs(statistics.mean(logs) - statistics.median(logs)) < 0.15
    vols = [spec.annual_vol for spec in market[20:]]
    assert 0.08 <= min(vols) and max(vols) <= 2.0 and 0.2 < statistics.median(vols) < 0.45


def test_trade_sizes_fit_the_price(market) -> None:
    stocks = [spec for spec in market[20:] if spec.size_decimals == 0]
    cheap = statistics.median(spec.size_median for spec in stocks if spec.price < 10)
    dear = statistics.median(spec.size_median for spec in stocks if spec.price > 500)
    assert cheap > 30 * dear and dear >= 1     # a $5 stock trades hundreds of shares, a $2,000 one a few
    coins = [spec for spec in market[20:] if spec.symbol.endswith("-USD")]
    assert coins and all(spec.size_decimals >= 2 for spec in coins)
    # In the ticks: whole shares for stocks, fractions for coins.
    ticks = ticks_of(market, 50_000)
    fractional = {spec.symbol for spec in market if spec.size_decimals}
    assert all(isinstance(t["volume"], int) and t["volume"] >= 1 for t in ticks if t["symbol"] not in fractional)
    assert any(not float(t["volume"]).is_integer() for t in ticks if t["symbol"] in fractional)


def test_activity_is_heavy_tailed(market) -> None:
    counts = Counter(tick["symbol"] for tick in ticks_of(market, 300_000))
    ranked = [counts[spec.symbol] for spec in market]
    total = sum(ranked)
    assert sum(ranked[:100]) > 0.3 * total           # the top 1 % of symbols carry a large share,
    assert sum(ranked[5_000:]) < 0.15 * total        # the bottom half little,
    assert max(ranked) < 0.05 * total                # and no single name dominates
    # Activity falls with rank all the way down the tail.
    bands = [sum(ranked[a:b]) / (b - a) for a, b in ((0, 10), (10, 100), (100, 1_000), (1_000, 10_000))]
    assert bands == sorted(bands, reverse=True), bands


def test_every_symbol_trades_eventually() -> None:
    specs = market_universe(2_000)
    seen = {tick["symbol"] for tick in ticks_of(specs, 300_000)}   # the least active expects ~25 ticks
    assert seen == {spec.symbol for spec in specs}


def test_the_universe_does_not_depend_on_the_simulation_seed() -> None:
    # The producer's seed is random by default: a restart must not rename the market.
    a = TickSimulator(market_universe(500), seed=1, start_ms=START_MS)
    b = TickSimulator(market_universe(500), seed=2, start_ms=START_MS)
    assert a.specs == b.specs
    assert list(islice(a, 100)) != list(islice(b, 100))


def test_ticks_of_a_whole_market_are_valid_with_seqs_in_step_and_event_time_as_asked(market) -> None:
    ticks = ticks_of(market, 60_000, event_rate=30_000, seq_base=500)
    last: dict[str, int] = defaultdict(lambda: 500)
    for i, tick in enumerate(ticks):
        assert classify(codec.dumps(tick)) is None, tick
        assert tick["timestamp"] == START_MS + i * 1000 // 30_000
        assert tick["seq"] == last[tick["symbol"]] + 1, tick   # per symbol, by one, never reused
        last[tick["symbol"]] = tick["seq"]
    assert len(last) > 3_000


def test_a_large_market_is_distinct_valid_tickers_too() -> None:
    # 200,000 names fill the 3- and 4-letter spaces of plain tickers well past their middle: collisions
    # must lengthen names, never repeat or break them. (A million, the limit, takes ~6 s of CPU.)
    specs = market_universe(200_000)
    names = [spec.symbol for spec in specs]
    assert len(set(names)) == len(names)
    assert all(TICKER.fullmatch(name) for name in names)
    tick = next(iter(TickSimulator(specs, seed=1, start_ms=START_MS)))
    assert classify(codec.dumps(tick)) is None
