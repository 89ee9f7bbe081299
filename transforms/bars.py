"""Event-time bars per symbol with their cross-window fields and alerts: `ComputeBars`.

One stateful step, keyed by *shard* of symbols (transforms/ticks.py
`shard_of`), owns the open windows and the history of every symbol of its
shard. Per symbol it does what DESIGN.md §3-§5 ask, in transforms/book.py:
screens each batch of ticks (late ticks and exact duplicates to the dead
letters), adds the admitted ones to their window's accumulator, fills the
cross-window fields and emits each alert once, and fires the panes itself:

* EARLY: at once, in the call that brings a symbol ticks, when its last
  EARLY pane is `early_firing_s` old or it has none, and its newest window
  is still open by the wall clock (a quiet symbol's live tick is not kept
  waiting for a timer); else from the shard's processing-time timer, at its
  last EARLY pane + `early_firing_s`, or `early_firing_s` after the tick
  for a window the wall clock has passed (a backlog: by then the watermark
  has usually passed it too, and its ON_TIME pane makes an EARLY one
  pointless). Either way a symbol gets at most one EARLY pane per
  `early_firing_s` (DESIGN.md §4), of each of its windows that took ticks
  since its last pane;
* ON_TIME: an event-time timer of the shard at the earliest last
  millisecond (or close time) of its open windows fires the ON_TIME pane of
  every window the watermark has reached, symbol by symbol;
* LATE: at once, for each batch that adds ticks to a window past its
  ON_TIME pane (or to a window opened after the source's watermark had
  already passed its end);
* a window is closed, and its state dropped, at window end + allowed
  lateness.

Why shards, not a key per symbol: on a portable runner every key a bundle
touches costs Fn API round trips (state reads and writes, timers), so with
a key per symbol the cost grew with the universe (a 5,000-symbol drain ran
at 330 ticks/s, docs/performance.md). A shard's state is read once per
bundle, each symbol's change is appended as a small delta, and there are
two timers per shard, whatever the number of symbols.

Symbols stay independent inside a shard: a timer fires what is due for each
symbol on its own (nothing waits for another symbol's window), and the
event-time timer is set at the earliest due time of the shard, so no
symbol's old or odd tick holds back the watermark longer than the next pane
of one of its own open windows.

Why not `WindowInto` + a trigger + a combiner: a portable runner (Flink)
does not lift combiners in streaming, so an accumulating window keeps every
input in runner state and re-sends all of it at each early firing; a window
step drops data past its allowed lateness without a trace; and a separate
history step would be a second shuffle and a second bundle wait.

State of a shard: a journal and a version.

* `JOURNAL`, a bag: a snapshot of the shard's books (and the seen tick
  identities of open windows), then one small entry per call since: the
  ticks each book took (packed, 32 bytes a tick) with the call's processing
  time (its EARLY decisions depend on it), or that an EARLY or a watermark
  timer fired at a given time. Every call is a deterministic
  function of the books and its entry, so replaying the entries on the
  snapshot gives the books again, pane indexes, histories and alert marks
  included. Once the entries hold as many bytes as the snapshot (or after
  `COMPACT_AFTER` of them) the journal is rewritten as one
  snapshot. A call thus writes what it was given, not the books it touched:
  a tick costs 32 bytes of state, not a re-encoded book.
* `VERSION`, (writer, counter, entries): which write the state holds.

Each worker keeps the shards it serves decoded in memory, tagged with the
version it wrote last. A call whose `VERSION` is another (a restore from a
checkpoint, a retried bundle, another worker that served the shard in
between) rebuilds the shard from the journal first, so memory is only ever
a cache of state.
"""
from __future__ import annotations

import gc
import math
import pickle
import time
import uuid
from typing import Any, Callable, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import GlobalWindow, IntervalWindow
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from market import config, schema
from transforms.anomalies import ALERTS_TAG, Thresholds
from transforms.book import FINAL, BarRules, Book, Outcome, unpack_ticks
from transforms.ticks import DEAD_LETTERS_TAG, METRICS_NAMESPACE, ShardRecords

# When a shard's journal is rewritten as one snapshot: once the entries
# since the last snapshot hold as many bytes as it did (each snapshot, a
# pickle of the shard's books, is then paid for by as many bytes of ticks,
# whether they came in few calls or many small ones), and at the latest
# after COMPACT_AFTER entries (a rebuild replays at most that many). Not
# before COMPACT_MIN entries: a shard of few quiet symbols has a small
# snapshot. An entry that is not ticks counts ENTRY_BYTES.
COMPACT_AFTER = 512
COMPACT_MIN = 16
ENTRY_BYTES = 64
PICKLE_PROTOCOL = 5
GC_THRESHOLD = 50_000

_GLOBAL = (GlobalWindow(),)


class Shard:
    """A shard's books decoded in a worker's memory, with what its timers need."""

    __slots__ = ("version", "counter", "entries", "entry_bytes", "snapshot_bytes", "books", "on_time", "closing",
                 "dirty", "settled",
                 "event_at", "early_at", "early_last", "next_early", "clock_ms")

    def __init__(self, counter: int = 0) -> None:
        self.version: tuple | None = None   # (writer, counter) of the state this memory equals
        self.counter = counter
        self.entries = 0                    # entries in the journal
        self.entry_bytes = 0                # bytes of the entries since the snapshot (ENTRY_BYTES a timer)
        self.snapshot_bytes = 0             # bytes of the journal's snapshot (0: none)
        self.books: dict[str, Book] = {}
        # Window end ms -> symbols: windows awaiting their ON_TIME pane, and
        # final windows awaiting their close (end + allowed lateness).
        self.on_time: dict[int, set] = {}
        self.closing: dict[int, set] = {}
        self.dirty: dict[str, int] = {}     # symbols with ticks waiting for the EARLY timer -> due ms
        self.settled: int | None = None     # the newest source watermark of the shard's ticks
        self.event_at: float | None = None  # the event-time timer as set (None: unknown)
        self.early_at = 0                   # the processing-time timer as set (0: none)
        # Symbol -> processing time (ms) of its last EARLY pane, for those
        # with one in the last `early_firing_s` or so (older: pruned).
        self.early_last: dict[str, int] = {}
        self.next_early = 0                 # at most the earliest due of `dirty` (0: none)
        self.clock_ms = 0                   # the newest processing time a call has journaled

    def expect(self, symbol: str, end: int, final: bool) -> None:
        """Index an open window for the timer: its ON_TIME pane, or its close once final."""
        (self.closing if final else self.on_time).setdefault(end, set()).add(symbol)

    def next_due(self, lateness_ms: int) -> float:
        """The event time of the shard's next pane or close."""
        return min(min(self.on_time, default=math.inf) - 1, min(self.closing, default=math.inf) + lateness_ms)


# Journal entry kinds (the first item of each entry).
SNAPSHOT, TICKS, EARLY_FIRED, WATERMARK_FIRED = "snapshot", "ticks", "early", "watermark"


def entry_size(entry: tuple) -> int:
    """What a journal entry counts towards compaction: a TICKS entry its pickled bytes, a timer's ENTRY_BYTES."""
    return len(entry[1]) if entry[0] == TICKS else ENTRY_BYTES


class BuildBarsFn(beam.DoFn):
    """Keyed by shard: screens each symbol's ticks, fires the panes of its windows, adds history and alerts."""

    JOURNAL = userstate.BagStateSpec("journal", FastPrimitivesCoder())
    VERSION = userstate.ReadModifyWriteStateSpec("version", FastPrimitivesCoder())
    WATERMARK = userstate.TimerSpec("watermark", TimeDomain.WATERMARK)
    EARLY = userstate.TimerSpec("early", TimeDomain.REAL_TIME)

    def __init__(self, rules: BarRules, early_firing_s: float, clock: Callable[[], float] = time.time,
                 records: ShardRecords | None = None) -> None:
        self.rules = rules
        # With `records` the input is routed raw records, parsed here (ShardRecords).
        self.records = records
        self.early_ms = int(early_firing_s * 1000)
        # Processing time for the EARLY timer. A DoFn cannot read its
        # runner's processing-time clock; tests on TestStream pass its clock.
        self.clock = clock
        self.late = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_LATE}")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_DUPLICATE}")
        self.panes = Metrics.counter(METRICS_NAMESPACE, "bar_panes")
        self.alerts = Metrics.counter(METRICS_NAMESPACE, "alerts")
        self.rebuilds = Metrics.counter(METRICS_NAMESPACE, "shard_rebuilds")
        self.batch_symbols = Metrics.distribution(METRICS_NAMESPACE, "symbols_per_shard_batch")

    def setup(self) -> None:
        # The books are many long-lived objects and every pane allocates a
        # few dozen short-lived ones: with Python's default first-generation
        # threshold (700 allocations) the collector walks the young books
        # hundreds of times a second. A larger one cut this step's CPU per
        # tick by a fifth at 5,000 symbols (docs/performance.md). It only
        # ever raises the threshold, for the whole worker process.
        threshold = gc.get_threshold()
        if threshold[0] < GC_THRESHOLD:
            gc.set_threshold(GC_THRESHOLD, *threshold[1:])
        self._writer = uuid.uuid4().hex     # this instance's mark on the versions it writes
        self._shards: dict[Any, Shard] = {}
        self._windows: dict[int, tuple] = {}   # window end ms -> (pane timestamp, (window,))

    # --- ticks ------------------------------------------------------------
    def process(self, element: tuple,
                journal=beam.DoFn.StateParam(JOURNAL),
                version=beam.DoFn.StateParam(VERSION),
                watermark_timer=beam.DoFn.TimerParam(WATERMARK),
                early_timer=beam.DoFn.TimerParam(EARLY)):
        key, batches = element
        if self.records is not None:
            batches, letters = self.records.parse(key, batches)
            for letter in letters:
                yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, letter)
            if not batches:
                return
        shard = self._load(key, journal, version)
        out = Outcome()
        now = int(self.clock() * 1000)
        self._take(shard, batches.items(), now, out)
        self.batch_symbols.update(len(batches))
        if out.admitted:
            self._commit(shard, (TICKS, out.admitted, now), journal, version)
        else:
            self._commit(shard, None, journal, version)
        self._set_timers(shard, watermark_timer, early_timer)
        yield from self._emit(out)

    def _take(self, shard: Shard, batches, now: int, out: Outcome) -> None:
        """Add each symbol's ticks to its book; an EARLY pane at once for a symbol that may have one."""
        rules, early_ms, admitted = self.rules, self.early_ms, out.admitted
        if now > shard.clock_ms:
            shard.clock_ms = now
        for symbol, (ticks, read_watermark) in batches:
            book = shard.books.get(symbol)
            if book is None:
                book = shard.books[symbol] = Book()
            if read_watermark is not None and (shard.settled is None or read_watermark > shard.settled):
                shard.settled = read_watermark
            taken = len(admitted)
            rules.add(symbol, book, ticks, read_watermark, out)
            if early_ms <= 0 or len(admitted) == taken:
                continue
            last = shard.early_last.get(symbol)
            if last is None or now - last >= early_ms:
                if max(book.windows, default=0) > now:
                    # Live, and its last EARLY pane is old enough: no need to wait for a timer.
                    shard.dirty.pop(symbol, None)
                    if rules.fire_early(symbol, book, shard.settled, out):
                        shard.early_last[symbol] = now
                    continue
                due = now + early_ms
            else:
                due = last + early_ms
            waiting = shard.dirty.get(symbol)
            if waiting is not None and waiting <= due:
                continue
            shard.dirty[symbol] = due
            if not shard.next_early or due < shard.next_early:
                shard.next_early = due
        for symbol, end, final in out.opened:
            shard.expect(symbol, end, final)
        out.opened.clear()

    # --- timers -----------------------------------------------------------
    @userstate.on_timer(WATERMARK)
    def on_watermark(self,
                     key=beam.DoFn.KeyParam,
                     fired_at=beam.DoFn.TimestampParam,
                     journal=beam.DoFn.StateParam(JOURNAL),
                     version=beam.DoFn.StateParam(VERSION),
                     watermark_timer=beam.DoFn.TimerParam(WATERMARK),
                     early_timer=beam.DoFn.TimerParam(EARLY)):
        shard = self._load(key, journal, version)
        now = fired_at.micros // 1000   # the watermark is at least this
        out = Outcome()
        self._fire_watermark(shard, now, out)
        shard.event_at = None   # this timer has fired: whatever is due next must be set again
        self._commit(shard, (WATERMARK_FIRED, now), journal, version)
        self._set_timers(shard, watermark_timer, early_timer)
        yield from self._emit(out)

    def _fire_watermark(self, shard: Shard, now: int, out: Outcome) -> None:
        """ON_TIME panes of the windows the watermark `now` has reached, in window order; then closes.

        Symbols are independent, so the order among them does not matter.
        """
        rules, books, closing = self.rules, shard.books, shard.closing
        for end in sorted(end for end in shard.on_time if end - 1 <= now):
            symbols = shard.on_time.pop(end)
            for symbol in symbols:
                rules.fire_on_time(symbol, books[symbol], end, out)
            closing.setdefault(end, set()).update(symbols)
        lateness = rules.lateness_ms
        for end in sorted(end for end in closing if end + lateness <= now):
            for symbol in closing.pop(end):
                rules.close(books[symbol], end)

    @userstate.on_timer(EARLY)
    def on_early(self,
                 key=beam.DoFn.KeyParam,
                 fired_at=beam.DoFn.TimestampParam,
                 journal=beam.DoFn.StateParam(JOURNAL),
                 version=beam.DoFn.StateParam(VERSION),
                 watermark_timer=beam.DoFn.TimerParam(WATERMARK),
                 early_timer=beam.DoFn.TimerParam(EARLY)):
        shard = self._load(key, journal, version)
        out = Outcome()
        # The timer fires at or after the time it was set for (a test's clock may stand still).
        now = max(int(self.clock() * 1000), fired_at.micros // 1000)
        self._fire_early(shard, now, out)
        shard.early_at = 0
        self._commit(shard, (EARLY_FIRED, now), journal, version)
        self._set_timers(shard, watermark_timer, early_timer)
        yield from self._emit(out)

    def _fire_early(self, shard: Shard, now: int, out: Outcome) -> None:
        """The EARLY panes of the waiting symbols that are due at `now`; the others wait on."""
        early_last, books = shard.early_last, shard.books
        if now > shard.clock_ms:
            shard.clock_ms = now
        waiting: dict[str, int] = {}
        next_early = 0
        for symbol, due in shard.dirty.items():
            if due > now:
                waiting[symbol] = due
                if not next_early or due < next_early:
                    next_early = due
            elif self.rules.fire_early(symbol, books[symbol], shard.settled, out):
                early_last[symbol] = now
        shard.dirty = waiting
        shard.next_early = next_early

    # --- state ------------------------------------------------------------
    def _load(self, key: Any, journal, version) -> Shard:
        """The shard as state holds it: from memory if memory is what was written last."""
        stored = version.read()
        shard = self._shards.get(key)
        if shard is None or stored is None or shard.version != tuple(stored[:2]):
            shard = self._shards[key] = self._rebuild(stored, journal)
        # Until this call commits, memory is ahead of state: a failure in
        # between must make the next call rebuild.
        shard.version = None
        return shard

    def _rebuild(self, stored: tuple | None, journal) -> Shard:
        """The shard replayed from its journal: the snapshot, then every call since, outputs dropped."""
        shard = Shard(counter=0 if stored is None else stored[1])
        if stored is None:
            return shard
        self.rebuilds.inc()
        scratch = Outcome()
        for entry in journal.read():
            shard.entries += 1
            kind = entry[0]
            if kind == SNAPSHOT:
                self._restore_snapshot(shard, pickle.loads(entry[1]))
                shard.snapshot_bytes, shard.entry_bytes = len(entry[1]), 0
            else:
                shard.entry_bytes += entry_size(entry)
            if kind == TICKS:
                self._take(shard, ((symbol, (unpack_ticks(packed), watermark))
                                   for symbol, watermark, packed in pickle.loads(entry[1])), entry[2], scratch)
            elif kind == EARLY_FIRED:
                self._fire_early(shard, entry[1], scratch)
            elif kind == WATERMARK_FIRED:
                self._fire_watermark(shard, entry[1], scratch)
            scratch.bars.clear()
            scratch.alerts.clear()
            scratch.dead_letters.clear()
            scratch.admitted.clear()
        return shard

    def _restore_snapshot(self, shard: Shard, snapshot: tuple) -> None:
        books, seen, dirty, settled, early_last, clock_ms = snapshot
        shard.books = {symbol: Book.restore(durable) for symbol, durable in books.items()}
        for symbol, end, int_bytes, float_bytes in seen:
            shard.books[symbol].add_seen(end, int_bytes, float_bytes)
        shard.on_time.clear()
        shard.closing.clear()
        for symbol, book in shard.books.items():
            for end, window in book.windows.items():
                shard.expect(symbol, end, window[FINAL])
        shard.dirty = dict(dirty)
        shard.settled = settled
        shard.early_last = dict(early_last)
        shard.clock_ms = clock_ms
        shard.next_early = min(shard.dirty.values(), default=0)

    def _snapshot(self, shard: Shard) -> bytes:
        # A symbol whose last EARLY pane is `early_firing_s` old may have one
        # at once whether it is remembered or not: forget it, in memory too
        # (memory must equal what a rebuild from this snapshot gives).
        horizon = shard.clock_ms - self.early_ms
        shard.early_last = {symbol: at for symbol, at in shard.early_last.items() if at > horizon}
        seen = [entry for symbol, book in shard.books.items() for entry in book.seen_entries(symbol)]
        return pickle.dumps(({symbol: book.durable() for symbol, book in shard.books.items()},
                             seen, sorted(shard.dirty.items()), shard.settled, shard.early_last, shard.clock_ms),
                            PICKLE_PROTOCOL)

    def _commit(self, shard: Shard, entry: tuple | None, journal, version) -> None:
        """Journal what this call did and mark memory as equal to state."""
        if shard.entries >= COMPACT_AFTER or (shard.entries >= COMPACT_MIN
                                              and shard.entry_bytes >= shard.snapshot_bytes):
            snapshot = self._snapshot(shard)
            journal.clear()
            journal.add((SNAPSHOT, snapshot))
            shard.entries, shard.entry_bytes, shard.snapshot_bytes = 1, 0, len(snapshot)
        elif entry is not None:
            if entry[0] == TICKS:
                entry = (TICKS, pickle.dumps(entry[1], PICKLE_PROTOCOL), entry[2])
            shard.entry_bytes += entry_size(entry)
            journal.add(entry)
            shard.entries += 1
        shard.counter += 1
        version.write((self._writer, shard.counter, shard.entries))
        shard.version = (self._writer, shard.counter)

    def _set_timers(self, shard: Shard, watermark_timer, early_timer) -> None:
        due = shard.next_due(self.rules.lateness_ms)
        if due != math.inf and due != shard.event_at:
            watermark_timer.set(Timestamp(micros=int(due) * 1000))
            shard.event_at = due
        if shard.dirty and shard.next_early and (not shard.early_at or shard.next_early < shard.early_at):
            shard.early_at = shard.next_early
            early_timer.set(Timestamp(micros=shard.early_at * 1000))

    # --- outputs ----------------------------------------------------------
    def _pane_place(self, end: int) -> tuple:
        """(timestamp, windows) of a pane of the window ending at `end`: one object per window, shared."""
        place = self._windows.get(end)
        if place is None:
            end_us = end * 1000
            if len(self._windows) > 4096:
                self._windows.clear()
            place = self._windows[end] = (
                Timestamp(micros=end_us - 1),
                (IntervalWindow(Timestamp(micros=end_us - self.rules.size_ms * 1000), Timestamp(micros=end_us)),))
        return place

    def _emit(self, out: Outcome):
        if out.dead_letters:
            late = sum(1 for _, letter in out.dead_letters if letter["reason"] == schema.REASON_LATE)
            self.late.inc(late)
            self.duplicates.inc(len(out.dead_letters) - late)
            for letter in out.dead_letters:
                yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, letter)
        if out.bars:
            self.panes.inc(len(out.bars))
        for end, bar in out.bars:
            # Each pane in its own window, at its last microsecond.
            timestamp, windows = self._pane_place(end)
            yield WindowedValue(bar, timestamp, windows)
        if out.alerts:
            self.alerts.inc(len(out.alerts))
        for end, alert in out.alerts:
            timestamp, _ = self._pane_place(end)
            yield pvalue.TaggedOutput(ALERTS_TAG, WindowedValue(alert, timestamp, _GLOBAL))


class BarOutputs(NamedTuple):
    """The outputs of `ComputeBars`: bar dicts (every pane), alerts and dead letters."""

    bars: beam.PCollection
    alerts: beam.PCollection
    dead_letters: beam.PCollection


class ComputeBars(beam.PTransform):
    """Per-shard batches of ticks (from `ParseTicks`) → one bar per symbol, window and pane, and alerts.

    Every pane carries its cross-window fields (DESIGN.md §4) and each
    alert id is emitted once (§5). With `records` the input is instead a
    source's `(shard, encoded records)`, parsed and validated in this step
    (`ShardRecords`), its rejects among the dead letters.
    """

    def __init__(self,
                 window_size_s: int = config.WINDOW_SIZE_S,
                 allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
                 early_firing_s: float = config.EARLY_FIRING_S,
                 volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT,
                 zscore_threshold: float = config.ZSCORE_THRESHOLD,
                 volume_spike_ratio: float = config.VOLUME_SPIKE_RATIO,
                 clock: Callable[[], float] = time.time,
                 records: ShardRecords | None = None) -> None:
        super().__init__()
        if window_size_s <= 0 or allowed_lateness_s < 0 or early_firing_s < 0:
            raise ValueError("window_size_s must be > 0, allowed_lateness_s and early_firing_s >= 0")
        thresholds = Thresholds(float(volatility_threshold_pct), float(zscore_threshold),
                                float(volume_spike_ratio))
        self.rules = BarRules.of(int(window_size_s), int(allowed_lateness_s), thresholds)
        self.early_firing_s = early_firing_s
        self.clock = clock
        self.records = records

    def expand(self, ticks: beam.PCollection) -> BarOutputs:
        outputs = (
            ticks
            | "BuildBarsPerShard" >> beam.ParDo(BuildBarsFn(self.rules, self.early_firing_s, self.clock,
                                                            self.records))
            # The shard is the state key: a deterministic coder for it.
            .with_input_types(KV[int, Any])
            .with_outputs(DEAD_LETTERS_TAG, ALERTS_TAG, main="bars"))
        return BarOutputs(bars=outputs.bars, alerts=outputs[ALERTS_TAG], dead_letters=outputs[DEAD_LETTERS_TAG])
