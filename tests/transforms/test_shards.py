"""The sharded bar step called directly: memory is a cache of state, timers per shard, symbols independent.

BuildBarsFn is driven call by call with in-memory stand-ins for Beam's
state and timers, as a runner would: a new or stale worker instance must
continue exactly where the state says, and one symbol's ticks never move
another's timer.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys

from apache_beam.coders.coders import TimestampCoder
from apache_beam.utils.timestamp import Timestamp

from tests.transforms.streams import MINUTE, T0, tick_json
from transforms.anomalies import Thresholds
from transforms.bars import BuildBarsFn
from transforms.book import BarRules
from transforms.tick_row import tick_row
from transforms.ticks import shard_of

RULES = BarRules.of(60, 30, Thresholds())


class Bag:
    def __init__(self) -> None:
        self.items: list = []

    def read(self):
        return list(self.items)

    def add(self, value) -> None:
        self.items.append(value)

    def clear(self) -> None:
        self.items = []


class Cell:
    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value


class Timer:
    def __init__(self) -> None:
        self.at: Timestamp | None = None

    def set(self, timestamp: Timestamp) -> None:
        # What a portable runner hands back: whole milliseconds.
        coder = TimestampCoder()
        self.at = coder.decode(coder.encode(timestamp))


class ShardState:
    """One shard's state and timers, as the runner keeps them between calls."""

    def __init__(self) -> None:
        self.journal, self.version = Bag(), Cell()
        self.watermark, self.early = Timer(), Timer()


def new_fn() -> BuildBarsFn:
    fn = BuildBarsFn(RULES, early_firing_s=1, clock=lambda: 0.0)
    fn.setup()
    return fn


def tick(symbol: str, price: float, ts: int, seq: int | None, volume: float = 10.0) -> tuple:
    return tick_row(price, volume, ts, seq, ("ticks", 0, seq), symbol.encode(), tick_json(symbol, price, ts, seq, volume))


def comparable(outputs: list) -> list:
    """Outputs without the wall-clock fields, sorted (symbols are independent: their order is free;
    a window's panes carry their pane_index)."""
    found = []
    for output in outputs:
        value = getattr(output, "value", output)
        value = getattr(value, "value", value)
        if isinstance(value, tuple):   # a dead letter: (key, letter)
            key, letter = value
            found.append(("dead", key, letter["reason"], letter["raw"]))
        elif "alert_id" in value:
            found.append(("alert", value["alert_id"], value["value"]))
        else:
            found.append(("bar", tuple(sorted((k, v) for k, v in value.items() if k != "emitted_at"
                                              for v in [tuple(v) if isinstance(v, list) else v]))))
    return sorted(found, key=repr)


def workload(seed: int, symbols: int = 40, minutes: int = 8) -> list:
    """Calls for one shard: tick batches (some late, some duplicated), EARLY and watermark firings."""
    rng = random.Random(seed)
    names = [f"S{n}" for n in range(symbols)]
    seqs = dict.fromkeys(names, 0)
    calls, sent = [], []
    for second in range(0, minutes * 60, 5):
        now = T0 + second * 1000
        batches: dict = {}
        for _ in range(rng.randint(1, 30)):
            symbol = rng.choice(names)
            if sent and rng.random() < 0.05:
                old = rng.choice(sent)          # an exact duplicate, or a tick past its lateness
            else:
                seqs[symbol] += 1
                old = tick(symbol, round(rng.uniform(90, 110), 2), now - rng.randrange(20_000), seqs[symbol],
                           rng.choice([0, 5, 100]))
                sent.append(old)
            batches.setdefault(old[5].decode(), ([], now - 2_000))[0].append(old)
        calls.append(("ticks", batches))
        if second % 10 == 0:
            calls.append(("early", None))
        calls.append(("watermark", now - 2_000))
    calls.append(("watermark", T0 + (minutes + 2) * MINUTE))
    return calls


def play(calls: list, instance_for) -> list:
    """Run `calls` on one shard; `instance_for(n)` picks the DoFn instance of call n."""
    state, outputs = ShardState(), []
    for n, (kind, arg) in enumerate(calls):
        fn = instance_for(n)
        if kind == "ticks":
            outputs += fn.process((0, arg), state.journal, state.version, state.watermark, state.early)
        elif kind == "early":
            outputs += fn.on_early(0, state.journal, state.version, state.watermark, state.early)
        else:
            # Every timer due by the watermark fires, as the runner would.
            while state.watermark.at is not None and state.watermark.at.micros // 1000 <= arg:
                fired, state.watermark.at = state.watermark.at, None
                outputs += fn.on_watermark(0, fired, state.journal, state.version, state.watermark, state.early)
    return outputs


def test_a_fresh_instance_continues_from_state_alone():
    calls = workload(seed=1)
    one = new_fn()
    expected = comparable(play(calls, lambda n: one))
    assert sum(1 for kind, *_ in expected if kind == "bar") > 100
    assert {item[2] for item in expected if item[0] == "dead"} >= {"late", "duplicate"}
    # A new worker instance every 7 calls (a restart, a rescale): same outputs.
    fresh = {}
    restarted = comparable(play(calls, lambda n: fresh.setdefault(n // 7, new_fn())))
    assert restarted == expected


def test_a_stale_instance_rebuilds_instead_of_trusting_its_memory():
    calls = workload(seed=2)
    one = new_fn()
    expected = comparable(play(calls, lambda n: one))
    # Two instances take turns on the shard: each finds the other wrote last.
    pair = (new_fn(), new_fn())
    assert comparable(play(calls, lambda n: pair[(n // 3) % 2])) == expected


def test_the_journal_stays_bounded():
    calls = workload(seed=3, minutes=30)
    state_sizes = []
    fn = new_fn()
    state = ShardState()
    for kind, arg in calls:
        if kind == "ticks":
            list(fn.process((0, arg), state.journal, state.version, state.watermark, state.early))
        state_sizes.append(len(state.journal.items))
    assert max(state_sizes) <= 64


def test_the_watermark_timer_follows_the_earliest_due_window_of_any_symbol():
    fn, state = new_fn(), ShardState()
    # A's window [T0, T0+1m) and B's first tick far in the past, from a
    # source that carries no watermark (it opens a window already due).
    list(fn.process((0, {"AAA": ([tick("AAA", 10.0, T0 + 1_000, 1)], None)}),
                    state.journal, state.version, state.watermark, state.early))
    assert state.watermark.at.micros == (T0 + MINUTE - 1) * 1000   # a whole millisecond, A's last
    list(fn.process((0, {"BBB": ([tick("BBB", 20.0, T0 - 10 * MINUTE, 1)], None)}),
                    state.journal, state.version, state.watermark, state.early))
    fired = state.watermark.at
    assert fired.micros == (T0 - 9 * MINUTE - 1) * 1000
    out = list(fn.on_watermark(0, fired, state.journal, state.version, state.watermark, state.early))
    assert [(b.value["symbol"], b.value["pane"]) for b in out] == [("BBB", "ON_TIME")]
    # A's timer is back at A's own window end: B held nothing.
    assert state.watermark.at.micros == (T0 - 9 * MINUTE + 30_000) * 1000
    fired = state.watermark.at
    list(fn.on_watermark(0, fired, state.journal, state.version, state.watermark, state.early))
    assert state.watermark.at.micros == (T0 + MINUTE - 1) * 1000
    out = list(fn.on_watermark(0, state.watermark.at, state.journal, state.version, state.watermark,
                               state.early))
    assert [(b.value["symbol"], b.value["pane"], b.value["tick_count"]) for b in out] == [("AAA", "ON_TIME", 1)]


def test_early_panes_skip_windows_the_source_watermark_has_reached():
    fn, state = new_fn(), ShardState()
    # Read from a backlog: the source's watermark is already past minute 0.
    batch = {"AAA": ([tick("AAA", 10.0, T0 + 1_000, 1), tick("AAA", 11.0, T0 + MINUTE + 1_000, 2)],
                     T0 + MINUTE + 500)}
    list(fn.process((0, batch), state.journal, state.version, state.watermark, state.early))
    out = list(fn.on_early(0, state.journal, state.version, state.watermark, state.early))
    assert [(b.value["window_start"], b.value["pane"]) for b in out] == [(T0 + MINUTE, "EARLY")]


def test_shards_are_the_same_in_every_process_and_spread():
    symbols = [f"SYM{n}" for n in range(10_000)]
    shards = [shard_of(symbol, 32) for symbol in symbols]
    # Another interpreter with another str hash seed puts each symbol in the same shard.
    script = ("import sys; from transforms.ticks import shard_of; "
              "print(','.join(str(shard_of(f'SYM{n}', 32)) for n in range(10_000)))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONWARNINGS": "ignore"})
    assert other.stdout.strip().split(",") == [str(n) for n in shards]
    counts = [shards.count(n) for n in range(32)]
    assert min(counts) > 10_000 / 32 * 0.8 and max(counts) < 10_000 / 32 * 1.2
