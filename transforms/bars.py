"""Event-time bars per symbol: `ComputeBars` (DESIGN.md §4, window-local fields).

One stateful step per symbol owns the symbol's open windows: it screens
each batch of ticks (late ticks and exact duplicates to the dead letters),
adds the admitted ones to their window's accumulator, and fires the panes
itself:

* EARLY: a processing-time timer `early_firing_s` after the first tick
  since the last pane of a window that is still before the watermark;
* ON_TIME: an event-time timer at the window's last millisecond;
* LATE: at once, for each batch that adds ticks to a window past its
  ON_TIME pane (or to a window opened after the source's watermark had
  already passed its end);
* the window is closed, and its state dropped, by the same event-time
  timer at window end + allowed lateness.

Why not `WindowInto` + a trigger + a combiner: a portable runner (Flink)
does not lift combiners in streaming, so an accumulating window keeps
every input in runner state and re-sends all of it to Python at each early
firing; and a window step drops data past its allowed lateness without a
trace. Here each batch costs one state read and write, each pane one small
output, and every tick ends in a pane or a dead letter.

Late data. A Python DoFn cannot read the watermark, so a tick is judged
late in two ways, both provable: its window is older than one this step
has already closed (the close timer fired, so the watermark is past it),
or the source says so: a `RecordBatch` carries the source's watermark
right after its records were read, and a tick whose window expired by that
watermark is late (the watermark at this step can never be ahead of the
source's). The first tick of a new or long-silent symbol is judged like any
other. A tick from a source that does not carry its watermark (a plain
record, as in TestStream tests) and whose window no timer has closed yet
opens its window, whose timers, already in the past, fire at the next
watermark update: it ends in a bar instead of the dead letters, never in
silence. Nothing in this step holds the watermark back longer than the
next pane of one of the symbol's own open windows, so no symbol can hold
back another's bars.

Duplicates (DESIGN.md §3): a tick equal to an earlier tick of an open
window in seq, timestamp, price and volume. Seq ranges in state say
cheaply whether a seq was seen; only a reused seq makes the step read the
seen ticks of the open windows and compare content.
"""
from __future__ import annotations

import time
from array import array
from typing import Any, Callable, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.typehints import KV
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from market import config, schema
from transforms.combining import PRICE, SEQ, TIMESTAMP, VOLUME, add_ticks, bar_stats_of, new_accumulator
from transforms.formatting import format_bar
from transforms.ticks import DEAD_LETTERS_TAG, METRICS_NAMESPACE, tick_dead_letter

# An open window in state: [accumulator, next pane index, final, dirty].
# final: its ON_TIME (or first LATE) pane has fired; dirty: ticks added
# since its last pane.
ACC, PANE_INDEX, FINAL, DIRTY = range(4)


def insert_seq(ranges: list, seq: int, end: int) -> bool:
    """Record `seq` (of a tick in the window ending at `end`) in `ranges`.

    `ranges` is a sorted list of [low, high, last_window_end] seq ranges;
    returns False if `seq` was already there. Contiguous seqs share a range,
    so a gap-free feed costs one range per symbol however many ticks.
    """
    if ranges:
        last = ranges[-1]
        if seq == last[1] + 1:   # the common case: the next seq of the feed
            last[1] = seq
            if end > last[2]:
                last[2] = end
            return True
        if seq > last[1] + 1:
            ranges.append([seq, seq, end])
            return True
    lo, hi = 0, len(ranges)
    while lo < hi:  # bisect on the ranges' lower bounds
        mid = (lo + hi) // 2
        if ranges[mid][0] <= seq:
            lo = mid + 1
        else:
            hi = mid
    before = ranges[lo - 1] if lo else None
    after = ranges[lo] if lo < len(ranges) else None
    if before is not None and seq <= before[1]:
        return False
    joins_before = before is not None and before[1] == seq - 1
    joins_after = after is not None and after[0] == seq + 1
    if joins_before and joins_after:
        before[1] = after[1]
        before[2] = max(before[2], after[2], end)
        del ranges[lo]
    elif joins_before:
        before[1] = seq
        before[2] = max(before[2], end)
    elif joins_after:
        after[0] = seq
        after[2] = max(after[2], end)
    else:
        ranges.insert(lo, [seq, seq, end])
    return True


def touch_seq(ranges: list, seq: int, end: int) -> None:
    """Keep the range holding `seq` until the window ending at `end` closes."""
    for span in ranges:
        if span[0] <= seq <= span[1]:
            if end > span[2]:
                span[2] = end
            return


def _pack_seen(end: int, ticks: list) -> tuple:
    """The identities of a window's ticks with a seq, as one compact bag entry."""
    ints, floats = array("q"), array("d")
    for tick in ticks:
        ints.append(tick[SEQ])
        ints.append(tick[TIMESTAMP])
        floats.append(tick[PRICE])
        floats.append(tick[VOLUME])
    return end, ints.tobytes(), floats.tobytes()


def _unpack_seen(entry: tuple) -> set:
    _, int_bytes, float_bytes = entry
    ints, floats = array("q"), array("d")
    ints.frombytes(int_bytes)
    floats.frombytes(float_bytes)
    return set(zip(ints[0::2], ints[1::2], floats[0::2], floats[1::2]))


def _identity(tick: tuple) -> tuple:
    return tick[SEQ], tick[TIMESTAMP], tick[PRICE], tick[VOLUME]


class BuildBarsFn(beam.DoFn):
    """Keyed by symbol: screens batches of ticks and fires the panes of its windows.

    State per symbol: one cell [closed, event timer ms, early timer ms, seq
    ranges, open windows], read and written once per batch or timer; and a
    bag of the seen tick identities of open windows, appended once per batch
    and read only when a seq repeats. Both shrink when a window closes.
    """

    BARS = userstate.ReadModifyWriteStateSpec("bars", FastPrimitivesCoder())
    SEEN = userstate.BagStateSpec("seen", FastPrimitivesCoder())
    WATERMARK = userstate.TimerSpec("watermark", TimeDomain.WATERMARK)
    EARLY = userstate.TimerSpec("early", TimeDomain.REAL_TIME)

    def __init__(self, window_size_s: int, allowed_lateness_s: int, early_firing_s: float,
                 volatility_threshold_pct: float, clock: Callable[[], float] = time.time) -> None:
        self.size_ms = int(window_size_s * 1000)
        self.lateness_ms = int(allowed_lateness_s * 1000)
        self.early_ms = int(early_firing_s * 1000)
        self.threshold = volatility_threshold_pct
        # Processing time for the EARLY timer. A DoFn cannot read its
        # runner's processing-time clock; tests on TestStream pass its clock.
        self.clock = clock
        self.late = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_LATE}")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{schema.REASON_DUPLICATE}")
        self.panes = Metrics.counter(METRICS_NAMESPACE, "bar_panes")

    # --- ticks ------------------------------------------------------------
    def process(self, element: tuple,
                bars=beam.DoFn.StateParam(BARS),
                seen=beam.DoFn.StateParam(SEEN),
                watermark_timer=beam.DoFn.TimerParam(WATERMARK),
                early_timer=beam.DoFn.TimerParam(EARLY)):
        symbol, (ticks, read_watermark) = element
        closed, event_at, early_at, ranges, windows = bars.read() or (0, 0, 0, [], {})
        size, lateness = self.size_ms, self.lateness_ms
        # Windows that expired by the source's watermark when these ticks were read.
        expired_by = closed if read_watermark is None else max(closed, read_watermark - lateness)
        groups: dict[int, list] = {}
        with_seq: dict[int, list] = {}
        suspects = []
        for tick in ticks:
            stamp = tick[TIMESTAMP]
            end = stamp - stamp % size + size   # its epoch-aligned window
            if end <= expired_by:
                self.late.inc()
                why = (f"closed here (closed through {closed})" if end <= closed else
                       f"expired by the source watermark {read_watermark} before the tick was read")
                yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, tick_dead_letter(
                    schema.REASON_LATE,
                    f"{symbol} window ending {end} {why}; allowed lateness {lateness} ms", tick))
                continue
            seq = tick[SEQ]
            if seq is not None:
                if not insert_seq(ranges, seq, end):
                    suspects.append((end, tick))
                    continue
                with_seq.setdefault(end, []).append(tick)
            group = groups.get(end)
            if group is None:
                groups[end] = group = []
            group.append(tick)
        if suspects:
            yield from self._screen_reused_seqs(symbol, suspects, seen, ranges, groups, with_seq)
        for end, group in with_seq.items():
            seen.add(_pack_seen(end, group))

        for end in sorted(groups):
            window = windows.get(end)
            if window is None:
                window = windows[end] = [new_accumulator(), 0, False, False]
                if read_watermark is not None and read_watermark >= end:
                    # The source's watermark had passed this window's end
                    # before its first tick was read: like Beam, the first
                    # pane is LATE, and it fires now.
                    window[FINAL] = True
            add_ticks(window[ACC], groups[end])
            if window[FINAL]:
                yield self._pane(symbol, end, window, schema.PANE_LATE)
            else:
                window[DIRTY] = True
        event_at = self._set_event_timer(windows, event_at, watermark_timer)
        if self.early_ms > 0 and not early_at and any(w[DIRTY] for w in windows.values()):
            early_at = int(self.clock() * 1000) + self.early_ms
            early_timer.set(Timestamp(micros=early_at * 1000))
        bars.write((closed, event_at, early_at, ranges, windows))

    def _screen_reused_seqs(self, symbol: str, suspects: list, seen, ranges: list,
                            groups: dict, with_seq: dict):
        """A reused seq is a duplicate only if the whole tick repeats (DESIGN.md §3)."""
        identities: set = set()
        for entry in seen.read():
            identities |= _unpack_seen(entry)
        for group in with_seq.values():
            identities.update(map(_identity, group))
        for end, tick in suspects:
            identity = _identity(tick)
            if identity in identities:
                self.duplicates.inc()
                yield pvalue.TaggedOutput(DEAD_LETTERS_TAG, tick_dead_letter(
                    schema.REASON_DUPLICATE, f"duplicate of {symbol} seq {tick[SEQ]} (same time, "
                    f"price and volume) in the window ending {end}", tick))
                continue
            identities.add(identity)
            touch_seq(ranges, tick[SEQ], end)
            with_seq.setdefault(end, []).append(tick)
            groups.setdefault(end, []).append(tick)

    # --- timers -----------------------------------------------------------
    @userstate.on_timer(WATERMARK)
    def on_watermark(self,
                     key=beam.DoFn.KeyParam,
                     fired_at=beam.DoFn.TimestampParam,
                     bars=beam.DoFn.StateParam(BARS),
                     seen=beam.DoFn.StateParam(SEEN),
                     watermark_timer=beam.DoFn.TimerParam(WATERMARK)):
        state = bars.read()
        if state is None:
            return
        closed, _, early_at, ranges, windows = state
        now = fired_at.micros // 1000   # the watermark is at least this
        dropped = False
        for end in sorted(windows):
            window = windows[end]
            if not window[FINAL] and end - 1 <= now:
                window[FINAL] = True
                yield self._pane(key, end, window, schema.PANE_ON_TIME)
            if end + self.lateness_ms <= now:
                del windows[end]
                closed = max(closed, end)
                dropped = True
        if dropped:
            ranges = [span for span in ranges if span[2] > closed]
            kept = [entry for entry in seen.read() if entry[0] > closed]
            seen.clear()
            for entry in kept:
                seen.add(entry)
        event_at = self._set_event_timer(windows, 0, watermark_timer)
        bars.write((closed, event_at, early_at, ranges, windows))

    @userstate.on_timer(EARLY)
    def on_early(self,
                 key=beam.DoFn.KeyParam,
                 bars=beam.DoFn.StateParam(BARS)):
        state = bars.read()
        if state is None:
            return
        closed, event_at, _, ranges, windows = state
        for end in sorted(windows):
            window = windows[end]
            if window[DIRTY] and not window[FINAL]:
                yield self._pane(key, end, window, schema.PANE_EARLY)
        bars.write((closed, event_at, 0, ranges, windows))

    def _set_event_timer(self, windows: dict, event_at: int, timer) -> int:
        """Set the watermark timer to the next ON_TIME or close time of an open window."""
        if not windows:
            return 0
        due = min(end + self.lateness_ms if window[FINAL] else end - 1
                  for end, window in windows.items())
        if due != event_at:
            timer.set(Timestamp(micros=due * 1000))
        return due

    def _pane(self, symbol: str, end: int, window: list, pane: str) -> WindowedValue:
        """The window's bar as of now, as a pane; in its own window, at its last millisecond."""
        start = end - self.size_ms
        bar = format_bar(symbol, start, end, bar_stats_of(window[ACC]), pane, window[PANE_INDEX],
                         self.threshold)
        window[PANE_INDEX] += 1
        window[DIRTY] = False
        self.panes.inc()
        return WindowedValue(bar, Timestamp(micros=(end - 1) * 1000),
                             (IntervalWindow(Timestamp(micros=start * 1000), Timestamp(micros=end * 1000)),))


class BarOutputs(NamedTuple):
    """The outputs of `ComputeBars`: bar dicts (every pane) and dead letters."""

    bars: beam.PCollection
    dead_letters: beam.PCollection


class ComputeBars(beam.PTransform):
    """Per-symbol batches of ticks (from `ParseTicks`) → one bar per symbol, window and pane."""

    def __init__(self,
                 window_size_s: int = config.WINDOW_SIZE_S,
                 allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
                 early_firing_s: float = config.EARLY_FIRING_S,
                 volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        if window_size_s <= 0 or allowed_lateness_s < 0 or early_firing_s < 0:
            raise ValueError("window_size_s must be > 0, allowed_lateness_s and early_firing_s >= 0")
        self.window_size_s = int(window_size_s)
        self.allowed_lateness_s = int(allowed_lateness_s)
        self.early_firing_s = early_firing_s
        self.volatility_threshold_pct = float(volatility_threshold_pct)
        self.clock = clock

    def expand(self, ticks: beam.PCollection) -> BarOutputs:
        outputs = (
            ticks
            | "BuildBarsPerSymbol" >> beam.ParDo(BuildBarsFn(
                self.window_size_s, self.allowed_lateness_s, self.early_firing_s,
                self.volatility_threshold_pct, self.clock))
            # The symbol is the state key: a deterministic coder for it.
            .with_input_types(KV[str, Any])
            .with_outputs(DEAD_LETTERS_TAG, main="bars"))
        return BarOutputs(bars=outputs.bars, dead_letters=outputs[DEAD_LETTERS_TAG])


def zero_clock() -> float:
    """Processing time 0, where a TestStream's clock starts (see BuildBarsFn.clock)."""
    return 0.0
