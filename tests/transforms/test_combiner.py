"""The bar accumulator's properties: any split and merge order gives the one-pass bar, exactly.

The bar step adds ticks in batches; a Beam CombineFn over the same
functions (below) would lift them before a shuffle and merge partial
results in any order. Both must give the one bar.
"""
from __future__ import annotations

import math
import random
from typing import Iterable

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import window_bar
from transforms.combining import BarStats, add_tick, add_ticks, bar_stats_of, merge_into, new_accumulator
from transforms.tick_row import PRICE, SEQ, TIMESTAMP, VOLUME, tick_row

T0 = 1764063000000


class BarCombineFn(beam.CombineFn):
    """The accumulator above as a Beam CombineFn over tick tuples.

    Constant-size accumulator, exact and order-independent merge: a runner
    may lift it before a shuffle and merge partial results freely.
    """

    def create_accumulator(self) -> list:
        return new_accumulator()

    def add_input(self, acc: list, tick: tuple) -> list:
        return add_tick(acc, tick)

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        merged = new_accumulator()
        for acc in accumulators:
            merge_into(merged, acc)
        return merged

    def extract_output(self, acc: list) -> BarStats | None:
        return bar_stats_of(acc)

    def get_accumulator_coder(self):
        return FastPrimitivesCoder()


def bar_stats(ticks: Iterable[tuple]) -> BarStats | None:
    """One-pass BarStats of tick tuples (price, volume, timestamp_ms, seq, ...)."""
    acc = new_accumulator()
    for tick in ticks:
        add_tick(acc, tick)
    return bar_stats_of(acc)

ticks_strategy = st.lists(
    st.tuples(
        st.floats(min_value=0.0001, max_value=1e6, allow_nan=False, allow_infinity=False),  # price
        st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e7, allow_nan=False)),     # volume
        st.integers(min_value=T0, max_value=T0 + 59_999).map(lambda t: t - t % 997),        # ties likely
        st.one_of(st.none(), st.integers(min_value=0, max_value=50)),                        # seq
    ).map(lambda fields: tick_row(*fields)),
    min_size=1, max_size=60)


def combine_split(ticks: list, rng: random.Random) -> tuple:
    """Split `ticks` into random parts, accumulate each, merge in random nested order."""
    fn = BarCombineFn()
    shuffled = list(ticks)
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(len(shuffled) + 1), k=min(len(shuffled) + 1, rng.randint(1, 6))))
    parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)])]
    accs = []
    for part in parts:
        acc = fn.create_accumulator()
        for tick in part:
            acc = fn.add_input(acc, tick)
        accs.append(acc)
    while len(accs) > 1:
        rng.shuffle(accs)
        take = rng.randint(2, len(accs))
        accs = [fn.merge_accumulators(accs[:take]), *accs[take:]]
    return fn.extract_output(accs[0])


@settings(max_examples=300, deadline=None)
@given(ticks=ticks_strategy, seed=st.integers(0, 2**32 - 1))
def test_any_split_and_merge_order_equals_one_pass(ticks, seed):
    one_pass = bar_stats(ticks)
    assert combine_split(ticks, random.Random(seed)) == one_pass  # bit-for-bit


@settings(max_examples=300, deadline=None)
@given(ticks=ticks_strategy)
def test_one_pass_matches_the_reference(ticks):
    stats = bar_stats(ticks)
    expected = window_bar("X", T0, T0 + 60_000, [("X", t[PRICE], t[VOLUME], t[TIMESTAMP], t[SEQ]) for t in ticks], 2.0)
    for name in ("open", "high", "low", "close", "average_price", "vwap", "volume", "tick_count"):
        assert getattr(stats, name) == expected[name], name


def test_sums_are_exact_where_naive_float_sums_are_not():
    # 1e16 + 1 + 1 - 1e16 is 0 in naive float order, 2 exactly.
    ticks = [(1e16, 0.0, T0, 1, None), (1.0, 0.0, T0 + 1, 2, None), (1.0, 0.0, T0 + 2, 3, None),
             (1e16, 0.0, T0 + 3, 4, None)]
    fn = BarCombineFn()
    a = fn.add_input(fn.add_input(fn.create_accumulator(), ticks[0]), ticks[1])
    b = fn.add_input(fn.add_input(fn.create_accumulator(), ticks[2]), ticks[3])
    stats = fn.extract_output(fn.merge_accumulators([b, a]))
    assert stats.average_price == math.fsum(t[0] for t in ticks) / 4
    assert stats.vwap == stats.average_price  # Σvolume = 0


def test_empty_accumulators_merge_to_nothing():
    fn = BarCombineFn()
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()])) is None


@settings(max_examples=200, deadline=None)
@given(ticks=ticks_strategy, seed=st.integers(0, 2**32 - 1))
def test_batches_added_in_any_order_give_the_one_pass_bar(ticks, seed):
    # What the bar step does: each batch of a window is added at once
    # (min/max/fsum in C). open/close/high/low/count are exact; each batch's
    # sums are rounded once, so the averages agree to far better than 1e-12.
    rng = random.Random(seed)
    shuffled = list(ticks)
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(len(shuffled) + 1), k=min(len(shuffled) + 1, rng.randint(1, 6))))
    acc = new_accumulator()
    for a, b in zip([0, *cuts], [*cuts, len(shuffled)]):
        add_ticks(acc, shuffled[a:b])
    got, want = bar_stats_of(acc), bar_stats(ticks)
    assert (got.open, got.close, got.high, got.low, got.tick_count) == (
        want.open, want.close, want.high, want.low, want.tick_count)
    for name in ("average_price", "vwap", "volume"):
        assert math.isclose(getattr(got, name), getattr(want, name), rel_tol=1e-12, abs_tol=1e-300), name
