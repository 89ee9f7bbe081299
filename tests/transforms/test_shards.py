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
from transforms import bars
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


class Clock:
    """Processing time as the test sets it (a DoFn reads the wall clock)."""

    def __init__(self, ms: int = 0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return (self.ms + 0.1) / 1000   # seconds, as time.time(); the DoFn truncates to ms


def new_fn(clock: Clock | None = None) -> BuildBarsFn:
    fn = BuildBarsFn(RULES, early_firing_s=1, clock=clock or Clock())
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
    """Calls for one shard: tick batches (some late, some duplicated) at a processing time, watermark firings.

    Processing time moves 400 ms per batch, so a symbol often ticks again
    before its last EARLY pane is a second old (it waits for the timer), and
    sometimes after (it gets its pane at once).
    """
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
        calls.append(("ticks", (batches, 10_000 + second * 80)))
        calls.append(("watermark", now - 2_000))
    calls.append(("watermark", T0 + (minutes + 2) * MINUTE))
    return calls


def play(calls: list, instance_for, clock: Clock, timed: list | None = None) -> list:
    """Run `calls` on one shard; `instance_for(n)` picks the DoFn instance of call n (made with `clock`).

    The EARLY timer fires, as the runner's would, before the first call at
    or after its time. `timed` collects (processing ms, output).
    """
    state, outputs = ShardState(), []
    for n, (kind, arg) in enumerate(calls):
        fn = instance_for(n)
        if kind == "ticks":
            batches, at_ms = arg
            while state.early.at is not None and state.early.at.micros // 1000 <= at_ms:
                fired, state.early.at = state.early.at, None
                clock.ms = fired.micros // 1000
                out = list(fn.on_early(0, fired, state.journal, state.version, state.watermark, state.early))
                outputs += out
                if timed is not None:
                    timed += [(clock.ms, o) for o in out]
            clock.ms = at_ms
            out = list(fn.process((0, batches), state.journal, state.version, state.watermark, state.early))
            outputs += out
            if timed is not None:
                timed += [(clock.ms, o) for o in out]
        else:
            # Every timer due by the watermark fires, as the runner would.
            while state.watermark.at is not None and state.watermark.at.micros // 1000 <= arg:
                fired, state.watermark.at = state.watermark.at, None
                outputs += fn.on_watermark(0, fired, state.journal, state.version, state.watermark, state.early)
    return outputs


def test_a_fresh_instance_continues_from_state_alone():
    calls, clock = workload(seed=1), Clock()
    one = new_fn(clock)
    expected = comparable(play(calls, lambda n: one, clock))
    assert sum(1 for kind, *_ in expected if kind == "bar") > 100
    assert {item[2] for item in expected if item[0] == "dead"} >= {"late", "duplicate"}
    # A new worker instance every 7 calls (a restart, a rescale): same outputs.
    fresh = {}
    restarted = comparable(play(calls, lambda n: fresh.setdefault(n // 7, new_fn(clock)), clock))
    assert restarted == expected


def test_a_stale_instance_rebuilds_instead_of_trusting_its_memory():
    calls, clock = workload(seed=2), Clock()
    one = new_fn(clock)
    expected = comparable(play(calls, lambda n: one, clock))
    # Two instances take turns on the shard: each finds the other wrote last.
    pair = (new_fn(clock), new_fn(clock))
    assert comparable(play(calls, lambda n: pair[(n // 3) % 2], clock)) == expected


def journal_bytes(items: list) -> tuple[int, int]:
    """(bytes of the snapshot, bytes of the tick entries after it) of a journal."""
    assert items[0][0] == bars.SNAPSHOT
    return len(items[0][1]), sum(len(item[1]) for item in items[1:] if item[0] == bars.TICKS)


def test_the_journal_stays_bounded():
    calls = workload(seed=3, minutes=30)
    state_sizes = []
    clock = Clock()
    fn = new_fn(clock)
    state = ShardState()
    for kind, arg in calls:
        if kind == "ticks":
            clock.ms = arg[1]
            list(fn.process((0, arg[0]), state.journal, state.version, state.watermark, state.early))
        state_sizes.append(len(state.journal.items))
        if len(state.journal.items) > bars.COMPACT_MIN:
            snapshot, entries = journal_bytes(state.journal.items)
            # Entries of at most as many bytes as the snapshot, plus the call that crossed it.
            assert entries <= snapshot + max(len(item[1]) for item in state.journal.items[1:])
    assert max(state_sizes) <= bars.COMPACT_AFTER


def test_many_small_calls_are_compacted_by_bytes_not_by_count():
    # One tick per call, as a routed read of many shards gives: a snapshot
    # every COMPACT_AFTER calls would pickle the books for a handful of ticks.
    clock = Clock()
    fn = new_fn(clock)
    state = ShardState()
    snapshots = 0
    for index in range(3000):
        clock.ms = T0 + index * 10
        batch = {f"S{index % 300}": ([tick(f"S{index % 300}", 10.0 + index % 7, T0 + index * 10, index)], None)}
        list(fn.process((0, batch), state.journal, state.version, state.watermark, state.early))
        snapshots += len(state.journal.items) == 1
    assert len(state.journal.items) <= bars.COMPACT_AFTER
    # 9 here; a snapshot every 64 entries, as before, made 46.
    assert snapshots <= 3000 // 64 // 4, snapshots


def panes_of(outputs: list) -> list[dict]:
    """The bar dicts among a call's outputs (alerts and dead letters are tagged)."""
    return [output.value for output in outputs if isinstance(output.value, dict) and "pane" in output.value]


def test_each_symbol_has_at_most_one_early_pane_a_second_and_none_waits_longer():
    # 30 symbols tick at random every 100 ms of processing time into an open window.
    rng, clock = random.Random(4), Clock()
    fn, state = new_fn(clock), ShardState()
    names, seqs, arrivals, panes = [f"S{n}" for n in range(30)], {}, [], []
    for step in range(600):
        now = 10_000 + step * 100
        while state.early.at is not None and state.early.at.micros // 1000 <= now:
            fired, state.early.at = state.early.at, None
            clock.ms = fired.micros // 1000
            out = fn.on_early(0, fired, state.journal, state.version, state.watermark, state.early)
            panes += [(clock.ms, bar) for bar in panes_of(list(out))]
        batch = {}
        for symbol in rng.sample(names, rng.randint(0, 4)):
            seqs[symbol] = seqs.get(symbol, 0) + 1
            batch[symbol] = ([tick(symbol, 10.0 + rng.random(), T0 + 1_000 + step, seqs[symbol])], None)
            arrivals.append((now, symbol, seqs[symbol]))
        clock.ms = now
        out = fn.process((0, batch), state.journal, state.version, state.watermark, state.early)
        panes += [(now, bar) for bar in panes_of(list(out))]
    assert all(bar["pane"] == "EARLY" for _, bar in panes)
    times: dict = {}
    for at_ms, bar in panes:
        times.setdefault(bar["symbol"], []).append((at_ms, bar["tick_count"]))
    at_once = waited = 0
    for at_ms, symbol, count in arrivals:
        # At most one pane a second per symbol ...
        mine = times[symbol]
        assert all(b[0] - a[0] >= 1_000 for a, b in zip(mine, mine[1:])), (symbol, [(a, b) for a, b in zip(mine, mine[1:]) if b[0] - a[0] < 1_000])
        # ... and each tick is in one by its symbol's previous pane + 1 s, or at once.
        before = [t for t, n in mine if n < count]
        due = max(at_ms, before[-1] + 1_000) if before else at_ms
        covering = next((t for t, n in mine if n >= count), None)
        if due > 10_000 + 599 * 100:
            continue   # due after the run
        assert covering is not None and covering <= due, (symbol, count, at_ms, covering, due)
        at_once += covering == at_ms
        waited += covering > at_ms
    assert at_once > 100 and waited > 100


def test_a_quiet_symbol_has_its_early_pane_at_once_and_a_busy_one_waits_for_its_second():
    clock = Clock(10_000)
    fn, state = new_fn(clock), ShardState()

    def ticks_at(at_ms: int, batch: dict) -> list:
        clock.ms = at_ms
        return [(bar["symbol"], bar["pane"], bar["tick_count"]) for bar in
                panes_of(list(fn.process((0, batch), state.journal, state.version, state.watermark, state.early)))]

    assert ticks_at(10_000, {"AAA": ([tick("AAA", 10.0, T0 + 1_000, 1)], None)}) == [("AAA", "EARLY", 1)]
    assert state.early.at is None    # nothing waits
    assert ticks_at(10_300, {"AAA": ([tick("AAA", 10.5, T0 + 2_000, 2)], None)}) == []
    assert state.early.at.micros == 11_000 * 1000
    # Another symbol of the shard is not held back by AAA's second.
    assert ticks_at(10_600, {"BBB": ([tick("BBB", 20.0, T0 + 3_000, 1)], None),
                             "AAA": ([tick("AAA", 10.6, T0 + 3_000, 3)], None)}) == [("BBB", "EARLY", 1)]
    clock.ms = 11_000
    fired, state.early.at = state.early.at, None
    out = list(fn.on_early(0, fired, state.journal, state.version, state.watermark, state.early))
    assert [(bar["symbol"], bar["tick_count"]) for bar in panes_of(out)] == [("AAA", 3)]
    assert state.early.at is None
    # BBB's pane was at 10,600: a tick at 11,100 waits for 11,600, AAA's at 12,500 goes at once.
    assert ticks_at(11_100, {"BBB": ([tick("BBB", 20.5, T0 + 4_000, 2)], None)}) == []
    assert state.early.at.micros == 11_600 * 1000
    assert ticks_at(12_500, {"AAA": ([tick("AAA", 11.0, T0 + 5_000, 4)], None)}) == [("AAA", "EARLY", 4)]


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
    out = list(fn.process((0, batch), state.journal, state.version, state.watermark, state.early))
    # Minute 0 opened past the watermark: its first pane is LATE, and minute 1 has an EARLY one.
    assert [(b.value["window_start"], b.value["pane"]) for b in out] == [(T0, "LATE"), (T0 + MINUTE, "EARLY")]


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


def test_a_window_the_wall_clock_has_passed_waits_for_the_timer():
    # A backlog read at T0 + 10 minutes: its windows closed long ago by the
    # wall clock, and their ON_TIME panes are as near as an EARLY one.
    clock = Clock(T0 + 10 * MINUTE)
    fn, state = new_fn(clock), ShardState()
    out = list(fn.process((0, {"AAA": ([tick("AAA", 10.0, T0 + 1_000, 1)], None)}),
                          state.journal, state.version, state.watermark, state.early))
    assert panes_of(out) == []
    assert state.early.at.micros == (T0 + 10 * MINUTE + 1_000) * 1000
    # More backlog before the timer does not move it.
    clock.ms += 500
    list(fn.process((0, {"AAA": ([tick("AAA", 10.5, T0 + 2_000, 2)], None)}),
                    state.journal, state.version, state.watermark, state.early))
    assert state.early.at.micros == (T0 + 10 * MINUTE + 1_000) * 1000
    clock.ms += 500
    fired, state.early.at = state.early.at, None
    out = list(fn.on_early(0, fired, state.journal, state.version, state.watermark, state.early))
    assert [(bar["pane"], bar["tick_count"]) for bar in panes_of(out)] == [("EARLY", 2)]
