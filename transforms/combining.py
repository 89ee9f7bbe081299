"""The bar accumulator: open/high/low/close/average/VWAP/volume of a window's ticks.

Pure functions over a small list: the stateful bar step keeps one
accumulator per open window (transforms/book.py). Sums are exact: partial sums are kept as non-overlapping
floats (Shewchuk), so adding and merging in any order gives one value,
rounded once when the bar is read.
"""
from __future__ import annotations

import math
from operator import mul
from typing import NamedTuple

from transforms.tick_row import NO_SEQ, PRICE, SEQ, TIMESTAMP, VOLUME

# Accumulator: [count, open key, close key, high, low, Σprice, Σprice·volume, Σvolume].
COUNT, OPEN, CLOSE, HIGH, LOW, SUM_PRICE, SUM_PV, SUM_VOLUME = range(8)
# An order key (`order_key`): (event time, seq, price).
ORDER_TIME, ORDER_SEQ, ORDER_PRICE = range(3)


class BarStats(NamedTuple):
    """The window-local statistics of one bar."""

    open: float
    high: float
    low: float
    close: float
    average_price: float
    vwap: float
    volume: float
    tick_count: int


def exact_add(partials: list, x: float) -> None:
    """Add `x` to the exact sum held as non-overlapping `partials` (in place).

    Shewchuk's algorithm, the one behind `math.fsum`: the partials represent
    the sum with no rounding at all, so adding and merging in any order gives
    the same exact value, and `math.fsum(partials)` rounds it once.
    """
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


def order_key(tick: tuple) -> tuple:
    """Where a tick sits in a window's open→close order.

    Event time, then seq (a larger seq is later; no seq sorts first), then
    price: arrival order is not observable in a mergeable accumulator, so
    the price is the deterministic last resort (of otherwise tied ticks the
    open is the lowest price and the close the highest).
    """
    seq = tick[SEQ]
    return (tick[TIMESTAMP], NO_SEQ if seq is None else seq, tick[PRICE])


def new_accumulator() -> list:
    return [0, None, None, -math.inf, math.inf, [], [], []]


def add_tick(acc: list, tick: tuple) -> list:
    """Add one tick (exactly); returns `acc`."""
    price = tick[PRICE]
    key = order_key(tick)
    if acc[COUNT] == 0:
        acc[OPEN] = acc[CLOSE] = key
    elif key < acc[OPEN]:
        acc[OPEN] = key
    elif key > acc[CLOSE]:
        acc[CLOSE] = key
    acc[COUNT] += 1
    if price > acc[HIGH]:
        acc[HIGH] = price
    if price < acc[LOW]:
        acc[LOW] = price
    exact_add(acc[SUM_PRICE], price)
    exact_add(acc[SUM_PV], price * tick[VOLUME])
    exact_add(acc[SUM_VOLUME], tick[VOLUME])
    return acc


def add_ticks(acc: list, ticks: list) -> list:
    """Add a batch of ticks; returns `acc`.

    The per-tick work runs in C (min, max, fsum): each batch's sums are
    rounded once by `math.fsum` and then added exactly, so a bar differs
    from the exact sum by at most half an ulp per batch (far inside the
    1e-9 the reference tests allow), and is the same for any batch order.
    """
    if not ticks:
        return acc
    if len(ticks) == 1:
        return add_tick(acc, ticks[0])
    prices = [tick[PRICE] for tick in ticks]
    volumes = [tick[VOLUME] for tick in ticks]
    first = min(ticks, key=order_key)
    last = max(ticks, key=order_key)
    first_key, last_key = order_key(first), order_key(last)
    if acc[COUNT] == 0:
        acc[OPEN], acc[CLOSE] = first_key, last_key
    else:
        if first_key < acc[OPEN]:
            acc[OPEN] = first_key
        if last_key > acc[CLOSE]:
            acc[CLOSE] = last_key
    acc[COUNT] += len(ticks)
    high, low = max(prices), min(prices)
    if high > acc[HIGH]:
        acc[HIGH] = high
    if low < acc[LOW]:
        acc[LOW] = low
    exact_add(acc[SUM_PRICE], math.fsum(prices))
    exact_add(acc[SUM_PV], math.fsum(map(mul, prices, volumes)))
    exact_add(acc[SUM_VOLUME], math.fsum(volumes))
    return acc


def merge_into(merged: list, acc: list) -> list:
    """Merge accumulator `acc` into `merged` (in place), exactly."""
    if acc[COUNT] == 0:
        return merged
    if merged[COUNT] == 0:
        merged[OPEN], merged[CLOSE] = acc[OPEN], acc[CLOSE]
    else:
        merged[OPEN] = min(merged[OPEN], acc[OPEN])
        merged[CLOSE] = max(merged[CLOSE], acc[CLOSE])
    merged[COUNT] += acc[COUNT]
    merged[HIGH] = max(merged[HIGH], acc[HIGH])
    merged[LOW] = min(merged[LOW], acc[LOW])
    for index in (SUM_PRICE, SUM_PV, SUM_VOLUME):
        for part in acc[index]:
            exact_add(merged[index], part)
    return merged


def bar_stats_of(acc: list) -> BarStats | None:
    """The bar an accumulator holds, None if it holds no tick."""
    count = acc[COUNT]
    if count == 0:
        return None
    average = math.fsum(acc[SUM_PRICE]) / count
    volume = math.fsum(acc[SUM_VOLUME])
    vwap = math.fsum(acc[SUM_PV]) / volume if volume > 0 else average
    return BarStats(open=acc[OPEN][ORDER_PRICE], high=acc[HIGH], low=acc[LOW], close=acc[CLOSE][ORDER_PRICE],
                    average_price=average, vwap=vwap, volume=volume, tick_count=count)
