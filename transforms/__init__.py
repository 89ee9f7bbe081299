"""Composite Beam transforms of the market analytics (DESIGN.md §3-§6).

    raw records ─► ParseTicks ─► ComputeBars ─► DetectAnomalies ─► bars, alerts
                      │              │
                      └──────────────┴─► dead letters

`MarketAnalytics` chains them and returns `.bars`, `.alerts` and
`.dead_letters`. The transforms know nothing of Kafka or of a runner; they
need only event-timestamped input and a watermark (docs/transforms.md).

Modules, one idea each: `ticks` (parsing and validation, per-symbol
batches), `combining` (the exact bar accumulator), `bars` (the per-symbol
step that screens late ticks and duplicates and fires EARLY / ON_TIME /
LATE panes), `formatting` (the bar dict), `anomalies` (cross-window fields
and alerts), `analytics` (the chain).

Ordering. Inside a window, order does not matter: the accumulator is
exactly mergeable (exact sums, min/max, order keys). open/close order ticks
by (event time, seq, price). Across windows, DetectAnomalies buffers ON_TIME
bars and processes them on an event-time timer in window order, whatever
order they reach it in. Timers are set on whole milliseconds: the Fn API
carries timer timestamps in milliseconds.

State, per symbol. Bars: one accumulator (~10 numbers) per open window,
seq ranges (one per gap in the seqs of open windows) and the identities of
the open windows' ticks that carry a seq, all dropped when a window closes
(window end + allowed lateness). Analytics: at most HISTORY_WINDOWS + 3 +
ceil(lateness / window) history entries of 4 numbers, the ON_TIME bars
awaiting their timer, and the alert keys of windows still within their
lateness.
"""
from transforms.analytics import MarketAnalytics, MarketOutputs
from transforms.anomalies import AnalyzedBars, DetectAnomalies
from transforms.bars import BarOutputs, ComputeBars
from transforms.combining import BarCombineFn
from transforms.ticks import ParsedTicks, ParseTicks, RecordBatch, SourceRecord, Tick

__all__ = [
    "AnalyzedBars", "BarCombineFn", "BarOutputs", "ComputeBars", "DetectAnomalies", "MarketAnalytics",
    "MarketOutputs", "ParseTicks", "ParsedTicks", "RecordBatch", "SourceRecord", "Tick",
]
