"""Event-time bars per symbol (DESIGN.md §4, window-local fields).

`WindowedBars` = batch ticks per symbol within a bundle → screen and
pre-aggregate (late ticks and duplicates → dead letters, keyed state per
symbol; the admitted ticks become one partial bar per window) → fixed
event-time windows with early / on-time / late panes → an exactly mergeable
`PartialBarsCombineFn` → one bar dict per pane.

Why the batching: on a portable runner (Flink) every element that reaches a
stateful Python DoFn costs a state round trip to the runner, and a
streaming GroupByKey keeps and re-sends every input of a window at each
early firing (runners do not lift combiners in streaming). One batch per
symbol and bundle, and one partial bar per window and batch, turn both costs
from per tick into per batch. See the package docstring for how late data
and state are bounded.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.typehints import KV
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue

from market import config, schema
from transforms.ticks import DEAD_LETTERS_TAG, METRICS_NAMESPACE, Tick, dead_letter, tick_json

# A screened tick travels as (symbol, (price, volume, timestamp_ms, seq, source)):
# plain tuples take the coder's fast path, a NamedTuple would be pickled.
PRICE, VOLUME, TIMESTAMP, SEQ, SOURCE = range(5)
NO_SEQ = -1  # sorts before every real seq (seq >= 0) in the open/close order

# How many windows a symbol's expiry clock keeps running after its last tick
# beyond the allowed lateness; see ScreenTicksFn.
CLOCK_IDLE_WINDOWS = 2
# Extra lateness the window step allows beyond `allowed_lateness_s`, measured
# in windows: a tick the screening step could not prove too late (a symbol
# with no running clock) lands in a LATE pane instead of being dropped unseen.
GRACE_WINDOWS = 10

_PANE_NAMES = {
    PaneInfoTiming.EARLY: schema.PANE_EARLY,
    PaneInfoTiming.ON_TIME: schema.PANE_ON_TIME,
    PaneInfoTiming.LATE: schema.PANE_LATE,
}


# --- exact sums -----------------------------------------------------------
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


# --- the combiner ---------------------------------------------------------
# Accumulator: a small list, encoded with the fast primitives coder.
COUNT, OPEN, CLOSE, HIGH, LOW, SUM_PRICE, SUM_PV, SUM_VOLUME = range(8)


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


def order_key(tick: tuple) -> tuple:
    """Where a tick sits in a window's open→close order.

    Event time, then seq (a larger seq is later; no seq sorts first), then
    price: arrival order is not observable in a mergeable combiner, so the
    price is the deterministic last resort (of otherwise tied ticks the open
    is the lowest price and the close the highest).
    """
    seq = tick[SEQ]
    return (tick[TIMESTAMP], NO_SEQ if seq is None else seq, tick[PRICE])


class BarCombineFn(beam.CombineFn):
    """open/high/low/close/average/vwap/volume/tick_count of a window's ticks.

    The accumulator has constant size (counts, two order keys, min, max and
    three exact sums) and merging is exact and order-independent, so the
    runner may lift it before the shuffle and merge partial results freely.
    """

    def create_accumulator(self) -> list:
        return [0, None, None, -math.inf, math.inf, [], [], []]

    def add_input(self, acc: list, tick: tuple) -> list:
        price = tick[PRICE]
        volume = tick[VOLUME]
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
        exact_add(acc[SUM_PV], price * volume)
        exact_add(acc[SUM_VOLUME], volume)
        return acc

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        merged = self.create_accumulator()
        for acc in accumulators:
            merge_into(merged, acc)
        return merged

    def extract_output(self, acc: list) -> BarStats | None:
        count = acc[COUNT]
        if count == 0:
            return None
        average = math.fsum(acc[SUM_PRICE]) / count
        volume = math.fsum(acc[SUM_VOLUME])
        vwap = math.fsum(acc[SUM_PV]) / volume if volume > 0 else average
        return BarStats(open=acc[OPEN][2], high=acc[HIGH], low=acc[LOW], close=acc[CLOSE][2],
                        average_price=average, vwap=vwap, volume=volume, tick_count=count)

    def get_accumulator_coder(self):
        return FastPrimitivesCoder()


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


class PartialBarsCombineFn(BarCombineFn):
    """`BarCombineFn` whose inputs are partial bars (accumulators of some of a window's ticks).

    The screening step pre-aggregates each batch of ticks per window, so the
    window step shuffles, keeps and re-sends partial bars instead of ticks.
    """

    def add_input(self, acc: list, partial: list) -> list:
        if isinstance(partial, tuple):
            # A single tick, as the step before batching sent it: a window
            # restored from a checkpoint of that version still holds those.
            return BarCombineFn.add_input(self, acc, partial)
        return merge_into(acc, partial)


# --- screening: late ticks and duplicates -----------------------------------
def window_end_ms(timestamp_ms: int, size_ms: int) -> int:
    """End of the epoch-aligned window holding `timestamp_ms` (as FixedWindows)."""
    return timestamp_ms - timestamp_ms % size_ms + size_ms


def _insert_seq(seen: list, seq: int, end: int) -> bool:
    """Record `seq` (of a tick in the window ending at `end`) in `seen`.

    `seen` is a sorted list of [low, high, last_window_end] seq ranges;
    returns False if `seq` was already there. Contiguous seqs share a range,
    so a gap-free feed costs one range per symbol however many ticks.
    """
    lo, hi = 0, len(seen)
    while lo < hi:  # bisect on the ranges' lower bounds
        mid = (lo + hi) // 2
        if seen[mid][0] <= seq:
            lo = mid + 1
        else:
            hi = mid
    before = seen[lo - 1] if lo else None
    after = seen[lo] if lo < len(seen) else None
    if before is not None and seq <= before[1]:
        return False
    joins_before = before is not None and before[1] == seq - 1
    joins_after = after is not None and after[0] == seq + 1
    if joins_before and joins_after:
        before[1] = after[1]
        before[2] = max(before[2], after[2], end)
        del seen[lo]
    elif joins_before:
        before[1] = seq
        before[2] = max(before[2], end)
    elif joins_after:
        after[0] = seq
        after[2] = max(after[2], end)
    else:
        seen.insert(lo, [seq, seq, end])
    return True


class BatchBySymbolFn(beam.DoFn):
    """`Tick`s → one `(symbol, [tick tuple, ...])` batch per symbol, window and bundle.

    Stateless, so it fuses with parsing; the batches are emitted when the
    bundle finishes, stamped with their earliest tick's event time. The
    runner finishes a bundle before it forwards the watermark past it, so a
    batch is never later than its ticks would have been. (Beam's Flink
    runner breaks that at a checkpoint unless bundles are finished before
    it: runners/args.py sets `--finish_bundle_before_checkpointing`.)
    """

    def start_bundle(self) -> None:
        self._batches: dict[tuple[Any, str], list] = {}

    def process(self, tick: Tick,
                timestamp=beam.DoFn.TimestampParam,
                win=beam.DoFn.WindowParam):
        batch = self._batches.get((win, tick.symbol))
        if batch is None:
            self._batches[(win, tick.symbol)] = batch = [timestamp, []]
        elif timestamp < batch[0]:
            batch[0] = timestamp
        batch[1].append(_tick_tuple(tick))
        return ()  # everything leaves in finish_bundle

    def finish_bundle(self):
        batches, self._batches = self._batches, {}
        for (win, symbol), (timestamp, ticks) in batches.items():
            yield WindowedValue((symbol, ticks), timestamp, (win,))


class ScreenTicksFn(beam.DoFn):
    """Keyed by symbol: drops ticks too late for their window and duplicates,
    and sums the admitted ticks of a batch into one partial bar per window.

    A Python DoFn cannot read the watermark, so each symbol runs a clock: an
    event-time timer at the expiry (window end + allowed lateness) of the
    next window. When it fires, every window up to that one is closed for
    good; a tick for a closed window goes to the dead letters as `late`. The
    pending timer also holds this step's output watermark, so the window
    step downstream cannot expire a window before this step has seen it
    expire: whatever this step passes on is never dropped by the runner.

    Duplicates (same symbol and seq) are found in `seen`, seq ranges of
    ticks whose windows are still open; a range is forgotten once its last
    window closes, because a copy of such a tick would be `late` anyway.

    State per symbol: the clock (3 ints) and the seq ranges (one per gap in
    the seqs of open windows). The clock stops `CLOCK_IDLE_WINDOWS` windows
    after the symbol's last tick, and the seq ranges empty with it. State is
    read and written once per batch, not per tick.
    """

    # One state cell, (closed, ticking, latest, seen): on a portable runner
    # each cell read is a round trip to the runner, so a batch costs one.
    # closed: last closed window end; ticking: window end the timer is set
    # for, 0 when stopped; latest: latest window end that had a tick;
    # seen: the seq ranges.
    SCREEN = userstate.ReadModifyWriteStateSpec("screen", FastPrimitivesCoder())
    EXPIRY = userstate.TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, window_size_s: int, allowed_lateness_s: int) -> None:
        self.size_ms = int(window_size_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self.late = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_LATE}")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_DUPLICATE}")
        self.combine = BarCombineFn()

    def _expiry(self, end_ms: int) -> Timestamp:
        # Beam expires a window when the watermark passes its last
        # microsecond (end - 1 µs) plus the allowed lateness.
        return Timestamp(micros=(end_ms + self.lateness_ms) * 1000 - 1)

    def process(self, element: tuple,
                screen=beam.DoFn.StateParam(SCREEN),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        symbol, ticks = element
        if isinstance(ticks, tuple):
            # One tick, not a batch: output of the per-tick version buffered
            # in a checkpoint (Flink re-emits a bundle's buffered output on
            # restore), so an upgrade resumes from its checkpoints.
            ticks = [ticks]
        state = screen.read()
        closed, ticking, latest, seen = state or (0, 0, 0, [])
        changed = False
        partials: dict[int, list] = {}   # window end -> [earliest tick ms, accumulator]
        for tick in ticks:
            end = window_end_ms(tick[TIMESTAMP], self.size_ms)
            if end <= closed:
                self.late.inc()
                yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, (symbol.encode(), self._rejection(
                    schema.REASON_LATE, f"window ending {end} closed (allowed lateness {self.lateness_ms} ms)",
                    symbol, tick)))
                continue
            seq = tick[SEQ]
            if seq is not None:
                if not _insert_seq(seen, seq, end):
                    self.duplicates.inc()
                    yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, (symbol.encode(), self._rejection(
                        schema.REASON_DUPLICATE, f"duplicate of {symbol} seq {seq}", symbol, tick)))
                    continue
                changed = True
            if not ticking:
                # Start the clock at this tick's window: until its timer fires
                # we cannot tell whether older, tick-less windows already expired.
                ticking = end
                expiry.set(self._expiry(ticking))
                changed = True
            if end > latest:
                latest = end
                changed = True
            partial = partials.get(end)
            if partial is None:
                partials[end] = partial = [tick[TIMESTAMP], self.combine.create_accumulator()]
            elif tick[TIMESTAMP] < partial[0]:
                partial[0] = tick[TIMESTAMP]
            self.combine.add_input(partial[1], tick)
        if changed:
            screen.write((closed, ticking, latest, seen))
        for earliest_ms, acc in partials.values():
            # Stamped with a tick of its window, so WindowInto puts it there.
            yield TimestampedValue((symbol, acc), earliest_ms / 1000.0)

    @userstate.on_timer(EXPIRY)
    def expire(self,
               screen=beam.DoFn.StateParam(SCREEN),
               expiry=beam.DoFn.TimerParam(EXPIRY)):
        closed, ticking, latest, seen = screen.read() or (0, 0, 0, [])
        if not ticking:
            return
        closed = ticking
        seen = [span for span in seen if span[2] > closed]
        # Keep the clock running while windows with ticks are open, and a few
        # idle windows more so that a straggler after a pause is still judged.
        if closed < latest + CLOCK_IDLE_WINDOWS * self.size_ms:
            ticking = closed + self.size_ms
            expiry.set(self._expiry(ticking))
        else:
            ticking = 0
        screen.write((closed, ticking, latest, seen))

    def _rejection(self, reason: str, detail: str, symbol: str, tick: tuple) -> dict:
        full = Tick(symbol, tick[PRICE], tick[VOLUME], tick[TIMESTAMP], tick[SEQ], tick[SOURCE])
        return dead_letter(reason, detail, tick_json(full), tick[SOURCE])


# --- bars -----------------------------------------------------------------
def window_fields(stats: BarStats, volatility_threshold_pct: float) -> dict:
    """The window-local derived fields of DESIGN.md §4."""
    swing = (stats.high - stats.low) / stats.low * 100.0
    return {
        "change_pct": (stats.close - stats.open) / stats.open * 100.0,
        "swing_pct": swing,
        "is_volatility_anomaly": swing > volatility_threshold_pct,
    }


class FormatBarFn(beam.DoFn):
    """(symbol, BarStats) of one pane → a bar dict with every DESIGN.md §4 field.

    The cross-window fields stay empty (None, "flat", []) here; DetectAnomalies
    fills them.
    """

    def __init__(self, volatility_threshold_pct: float) -> None:
        self.threshold = volatility_threshold_pct

    def process(self, element: tuple,
                win=beam.DoFn.WindowParam,
                pane_info=beam.DoFn.PaneInfoParam):
        symbol, stats = element
        if stats is None:
            # An empty pane (a firing with no ticks yet): DESIGN.md §4, no
            # ticks → no bar.
            return []
        pane = _PANE_NAMES.get(pane_info.timing, schema.PANE_LATE)
        bar = {
            "symbol": symbol,
            "window_start": win.start.micros // 1000,
            "window_end": win.end.micros // 1000,
            "open": stats.open,
            "high": stats.high,
            "low": stats.low,
            "close": stats.close,
            "average_price": stats.average_price,
            "vwap": stats.vwap,
            "volume": stats.volume,
            "tick_count": stats.tick_count,
            **window_fields(stats, self.threshold),
            "pane": pane,
            "pane_index": pane_info.index,
            "is_final": pane != schema.PANE_EARLY,
            "log_return": None,
            "return_zscore": None,
            "volume_ratio": None,
            "sma_fast": None,
            "sma_slow": None,
            "trend": schema.TREND_FLAT,
            "anomalies": [],
        }
        return [bar]


def _tick_tuple(tick: Tick) -> tuple:
    return tick.price, tick.volume, tick.timestamp, tick.seq, tick.source


class BarOutputs(NamedTuple):
    """The outputs of `WindowedBars`: bar dicts (every pane) and dead letters."""

    bars: beam.PCollection
    dead_letters: beam.PCollection


class WindowedBars(beam.PTransform):
    """Timestamped `Tick`s → one bar per symbol, window and pane."""

    def __init__(self,
                 window_size_s: int = config.WINDOW_SIZE_S,
                 allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
                 early_firing_s: float = config.EARLY_FIRING_S,
                 volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT) -> None:
        super().__init__()
        if window_size_s <= 0 or allowed_lateness_s < 0 or early_firing_s < 0:
            raise ValueError("window_size_s must be > 0, allowed_lateness_s and early_firing_s >= 0")
        self.window_size_s = int(window_size_s)
        self.allowed_lateness_s = int(allowed_lateness_s)
        self.early_firing_s = early_firing_s
        self.volatility_threshold_pct = float(volatility_threshold_pct)

    def expand(self, ticks: beam.PCollection) -> BarOutputs:
        screened = (
            ticks
            | "BatchBySymbol" >> beam.ParDo(BatchBySymbolFn()).with_output_types(KV[str, Any])
            | "ScreenLateAndDuplicates" >> beam.ParDo(
                ScreenTicksFn(self.window_size_s, self.allowed_lateness_s)).with_outputs(
                    DEAD_LETTERS_TAG, main="partial_bars"))
        early = (trigger.AfterProcessingTime(self.early_firing_s)
                 if self.early_firing_s > 0 else None)
        bars = (
            screened.partial_bars
            | "WindowPerMinute" >> beam.WindowInto(
                window.FixedWindows(self.window_size_s),
                # Early panes keep the dashboard live; the ON_TIME pane at the
                # watermark is the bar of record; every late tick admitted by
                # the screening step re-fires the window as a LATE pane.
                trigger=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
                # Each pane is the whole bar so far, not a delta: consumers
                # keep the highest pane_index per window.
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                # The screening step enforces the allowed lateness exactly;
                # the grace only keeps a tick it could not judge from being
                # dropped without a trace.
                allowed_lateness=Duration(
                    seconds=self.allowed_lateness_s + GRACE_WINDOWS * self.window_size_s))
            | "CombineBars" >> beam.CombinePerKey(PartialBarsCombineFn())
            | "FormatBars" >> beam.ParDo(FormatBarFn(self.volatility_threshold_pct)))
        return BarOutputs(bars=bars, dead_letters=screened[DEAD_LETTERS_TAG])


def bar_stats(ticks: Iterable[Any]) -> BarStats | None:
    """One-pass BarStats of (price, volume, timestamp_ms, seq, source) tuples."""
    fn = BarCombineFn()
    acc = fn.create_accumulator()
    for tick in ticks:
        acc = fn.add_input(acc, tick)
    return fn.extract_output(acc)
