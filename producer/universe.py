"""A whole market: N made-up but plausible instruments after the named ones (`--symbol_count`).

`market_universe(count, symbols)` gives `count` `SymbolSpec`s, most active
first: the symbols named (by default the 20 well-known ones, most active
first), then made-up tickers. Activity follows a Zipf-Mandelbrot law by
rank (the instrument of rank r = 1, 2, ... has weight 1 / (r + 5)), so a few
names carry much of the market's ticks and a long tail trades rarely, as in
real markets: at 10,000 symbols the top 1 % carry ~40 % of the ticks, the
most active name ~2 %, the least active one a tick in 75,000.

The made-up instruments are a function of their place in one fixed stream,
not of the simulation's seed: a restarted producer (whose seed is random by
default) simulates the same market, serving's history stays that of the same
names, and the first K instruments of a universe of N are those of a
universe of K.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from producer.simulator import DEFAULT_SYMBOLS, DEFAULT_UNIVERSE, SymbolSpec, universe

MAX_SYMBOL_COUNT = 1_000_000
"""Above this a universe is a typo, not a market (a million names take a few seconds to make)."""

# Activity: the instrument of rank r (1-based) weighs (r + ZIPF_OFFSET) ** -ZIPF_EXPONENT. The offset
# keeps the head plausible: with 1 / r the top name of 10,000 would print one tick in ten.
ZIPF_EXPONENT = 1.0
ZIPF_OFFSET = 5.0

# The made-up instruments come from this stream, in blocks of candidates;
# changing either constant renames every made-up instrument.
_STREAM_SEED = 0x5EED_0018
_BLOCK = 4096

# Letters: a consonant or a vowel by a two-state chain (tickers are mostly
# abbreviations: consonant clusters like MSFT are common, vowel runs are not),
# each drawn by English frequency blended with uniform (few Q, X, Z).
_VOWELS = np.frombuffer(b"AEIOU", dtype=np.uint8)
_VOWEL_P = np.array([8.2, 12.7, 7.0, 7.5, 2.8])
_CONSONANTS = np.frombuffer(b"BCDFGHJKLMNPQRSTVWXYZ", dtype=np.uint8)
_CONSONANT_P = np.array([1.5, 2.8, 4.3, 2.2, 2.0, 6.1, 0.15, 0.77, 4.0, 2.4, 6.7, 1.9, 0.095, 6.0, 6.3,
                         9.1, 0.98, 2.4, 0.15, 2.0, 0.074])
_VOWEL_FIRST, _VOWEL_AFTER_VOWEL, _VOWEL_AFTER_CONSONANT = 0.3, 0.1, 0.35
# Ticker lengths 1..5 as listed markets have them: mostly 3 and 4 letters.
_LENGTH_P = np.array([0.004, 0.04, 0.30, 0.52, 0.136])
# Share of candidates that are a crypto pair (XYZ-USD) or a share class (BRK.B style).
_CRYPTO_SHARE = 0.02
_CLASS_SHARE = 0.025
_CLASSES = ".A", ".B"

# Price levels (USD): $0.50 plus a log-normal (median, log-stdev), capped. For
# stocks ~90 % fall between $4 and $230 and ~0.3 % above $1,000.
_STOCK_PRICE = (0.5, 30.0, 1.25, 10_000.0)
_CRYPTO_PRICE = (0.5, 8.0, 1.8, 100_000.0)
# Annual volatility: median, log-stdev, bounds; cheap stocks swing more.
_STOCK_VOL = (0.30, 0.4, 0.08, 1.5)
_CRYPTO_VOL = (0.75, 0.3, 0.30, 2.0)
# Median trade size is a notional (USD) over the price: a $5 stock trades
# ~800 shares a print, a $2,000 one 2; coins trade in fractions.
_STOCK_NOTIONAL, _STOCK_SIZE_BOUNDS = 4_000.0, (1.0, 2_000.0)
_CRYPTO_NOTIONAL = 1_500.0


def zipf_weights(first_rank: int, count: int) -> list[float]:
    """Activity weights of the instruments of 0-based ranks first_rank.. (relative, not normalised)."""
    return ((np.arange(first_rank, first_rank + count) + 1.0 + ZIPF_OFFSET) ** -ZIPF_EXPONENT).tolist()


class _Block(NamedTuple):
    """One block of candidate instruments: a ticker is a prefix of `words` plus `suffixes`."""

    words: list[str]          # 5 letters each
    lengths: list[int]        # 1..5
    suffixes: list[str]       # "", "-USD" or a share class
    prices: np.ndarray
    vols: np.ndarray
    size_medians: np.ndarray
    size_decimals: np.ndarray


def _words(rng: np.random.Generator) -> list[str]:
    u = rng.random((_BLOCK, 5))
    vowel = np.empty((_BLOCK, 5), dtype=bool)
    vowel[:, 0] = u[:, 0] < _VOWEL_FIRST
    for k in range(1, 5):
        vowel[:, k] = u[:, k] < np.where(vowel[:, k - 1], _VOWEL_AFTER_VOWEL, _VOWEL_AFTER_CONSONANT)
    v = _VOWELS[rng.choice(len(_VOWELS), size=(_BLOCK, 5), p=_VOWEL_P / _VOWEL_P.sum())]
    p = 0.6 * _CONSONANT_P / _CONSONANT_P.sum() + 0.4 / len(_CONSONANTS)
    c = _CONSONANTS[rng.choice(len(_CONSONANTS), size=(_BLOCK, 5), p=p)]
    chars = np.ascontiguousarray(np.where(vowel, v, c))
    return chars.view("S5").ravel().astype("U5").tolist()


def _shifted_lognormal(z: np.ndarray, law: tuple[float, float, float, float]) -> np.ndarray:
    floor, median, sigma, cap = law
    return np.minimum(floor + median * np.exp(sigma * z), cap)


def _bounded_lognormal(z: np.ndarray, law: tuple[float, float, float, float]) -> np.ndarray:
    median, sigma, low, high = law
    return np.clip(median * np.exp(sigma * z), low, high)


def _block(index: int) -> _Block:
    """Block `index` of the endless candidate stream (its own generator: any block can be made alone)."""
    rng = np.random.default_rng([_STREAM_SEED, index])
    words = _words(rng)
    lengths = rng.choice(5, size=_BLOCK, p=_LENGTH_P) + 1
    kind = rng.random(_BLOCK)
    share_class = rng.integers(0, len(_CLASSES), size=_BLOCK)
    z_price, z_vol, z_size = rng.standard_normal((3, _BLOCK))
    crypto = kind < _CRYPTO_SHARE
    share = ~crypto & (kind < _CRYPTO_SHARE + _CLASS_SHARE)
    suffixes = np.where(crypto, "-USD", np.where(share, np.array(_CLASSES)[share_class], ""))
    # A crypto base has 3-5 letters (ETH, DOGE), a share class's 1-4 (BRK.B).
    lengths = np.where(crypto, np.maximum(lengths, 3), np.where(share, np.minimum(lengths, 4), lengths))
    prices = np.round(np.where(crypto, _shifted_lognormal(z_price, _CRYPTO_PRICE),
                               _shifted_lognormal(z_price, _STOCK_PRICE)), 2)
    stock_vol = np.clip(_bounded_lognormal(z_vol, _STOCK_VOL) * (prices / _STOCK_PRICE[1]) ** -0.12,
                        *_STOCK_VOL[2:])
    vols = np.round(np.where(crypto, _bounded_lognormal(z_vol, _CRYPTO_VOL), stock_vol), 3)
    jitter = np.exp(0.5 * z_size)
    coins = _CRYPTO_NOTIONAL / prices * jitter
    # Enough decimals that the smallest lot is far below a typical trade.
    coin_decimals = np.clip(3 - np.floor(np.log10(coins)), 2, 8).astype(np.int64)
    shares = np.round(np.clip(_STOCK_NOTIONAL / prices * jitter, *_STOCK_SIZE_BOUNDS))
    return _Block(words, lengths.tolist(), suffixes.tolist(), prices, vols,
                  np.where(crypto, coins, shares), np.where(crypto, coin_decimals, 0))


def _longer(word: str, suffix: str, length: int, taken: set[str]) -> str | None:
    """A taken candidate's name with more of its letters, if one is free: a collision renames
    this candidate alone and leaves every later one as it was."""
    longest = 4 if suffix in _CLASSES else 5
    for n in range(length + 1, longest + 1):
        name = word[:n] + suffix
        if name not in taken:
            return name
    return None


def made_up_specs(count: int, taken: Iterable[str] = (), first_rank: int = 0) -> list[SymbolSpec]:
    """`count` made-up instruments whose names are not in `taken`, weighted from rank `first_rank` on.

    The well-known symbols are always taken: a made-up instrument never
    borrows the name of one the simulator knows.
    """
    seen = set(taken) | set(DEFAULT_SYMBOLS)
    specs: list[SymbolSpec] = []
    index = 0
    while len(specs) < count:
        block = _block(index)
        index += 1
        names: list[str] = []
        chosen: list[int] = []
        want = count - len(specs)
        for i, (word, suffix, length) in enumerate(zip(block.words, block.suffixes, block.lengths)):
            name = word[:length] + suffix
            if name in seen:
                name = _longer(word, suffix, length, seen)
                if name is None:
                    continue
            seen.add(name)
            names.append(name)
            chosen.append(i)
            if len(names) == want:
                break
        weights = zipf_weights(first_rank + len(specs), len(names))
        specs.extend(map(SymbolSpec, names, block.prices[chosen].tolist(), block.vols[chosen].tolist(), weights,
                         block.size_medians[chosen].tolist(), block.size_decimals[chosen].tolist()))
    return specs


def market_universe(count: int, symbols: Sequence[str] | None = None) -> tuple[SymbolSpec, ...]:
    """`count` instruments, most active first: `symbols` (default: the well-known ones), then made-up ones.

    Without `symbols` the well-known instruments come first, most active
    first, and a `count` below their number keeps that many of them. Named
    symbols keep their own price level, volatility and trade size; every
    instrument's weight is the Zipf-Mandelbrot law's of its rank. Raises ValueError if `count`
    is out of 1..MAX_SYMBOL_COUNT or smaller than the number of `symbols`.
    """
    if not 1 <= count <= MAX_SYMBOL_COUNT:
        raise ValueError(f"the symbol count must be within 1..{MAX_SYMBOL_COUNT:,}, got {count}")
    if symbols:
        named = list(universe(symbols))
        if len(named) > count:
            raise ValueError(f"--symbol_count {count} is fewer than the {len(named)} symbols --symbols names; "
                             f"give at least {len(named)}, or fewer symbols")
    else:
        named = sorted(DEFAULT_UNIVERSE, key=lambda spec: -spec.weight)[:count]
    lead = [spec._replace(weight=weight) for spec, weight in zip(named, zipf_weights(0, len(named)))]
    return tuple(lead + made_up_specs(count - len(lead), (spec.symbol for spec in lead), first_rank=len(lead)))
