"""Composite Beam transforms of the market analytics (DESIGN.md §3-§6).

    raw records ─► ParseTicks ─► WindowedBars ─► DetectAnomalies ─► bars, alerts
                      │              │
                      └──────────────┴─► dead letters

`MarketAnalytics` chains them and returns `.bars`, `.alerts` and
`.dead_letters`. The transforms know nothing of Kafka or of a runner; they
need only event-timestamped input and a watermark (docs/transforms.md).

Late data. Beam gives a Python DoFn no view of the watermark, and a window
step drops data past its allowed lateness without a trace. So the screening
step of WindowedBars (`ScreenTicksFn`, keyed by symbol) runs a per-symbol
clock: an event-time timer at the expiry (window end + allowed lateness) of
the next window. A fired timer proves the watermark passed that expiry, so a
tick for any window up to it goes to the dead letters as `late`. The pending
timer holds the step's output watermark, so the window step cannot expire a
window this step still admits to. The window step allows a grace of
`GRACE_WINDOWS` windows more, which only matters for the one case the clock
cannot judge: a symbol whose clock is stopped (new, or silent for more than
`CLOCK_IDLE_WINDOWS` windows) whose first tick is already too late. Such a
tick ends in a LATE pane, not in silence.

Batching. A portable runner (Flink) pays per element for crossing between
the JVM and the Python worker and per state access of a stateful DoFn, so
WindowedBars screens ticks in per-symbol batches (one per bundle) and passes
one partial bar per window and batch to the window step; the result is the
same bar bit for bit, because partial bars merge exactly.

Ordering. Inside a window, order does not matter: the combiner is exactly
mergeable (exact sums, min/max, order keys). open/close order ticks by
(event time, seq, price): arrival order is not observable in a combiner, so
the price is the documented, deterministic last tie-break. Across windows,
DetectAnomalies buffers ON_TIME bars and processes them on an event-time
timer in window order, whatever order they reach it in. Timers are set on
whole milliseconds: the Fn API carries timer timestamps in milliseconds, so a
portable runner (Flink) fires a timer set at end - 1 µs at end - 1 ms.

State, per symbol. Screening: 3 ints plus one seq range per gap in the seqs
of open windows (one range for a gap-free feed); the clock stops
`CLOCK_IDLE_WINDOWS` windows after the last tick. Windows: one combiner
accumulator (~10 numbers) per open window, kept until window end + allowed
lateness + grace. Analytics: at most HISTORY_WINDOWS + 3 + GRACE_WINDOWS +
ceil(lateness / window) history entries of 4 numbers, the ON_TIME bars awaiting their
timer, and the alert keys of windows still within their lateness.
"""
from transforms.analytics import MarketAnalytics, MarketOutputs
from transforms.anomalies import AnalyzedBars, DetectAnomalies
from transforms.bars import BarCombineFn, BarOutputs, WindowedBars
from transforms.ticks import ParsedTicks, ParseTicks, RecordBatch, SourceRecord, Tick

__all__ = [
    "AnalyzedBars", "BarCombineFn", "BarOutputs", "DetectAnomalies", "MarketAnalytics",
    "MarketOutputs", "ParseTicks", "ParsedTicks", "RecordBatch", "SourceRecord", "Tick", "WindowedBars",
]
