"""Composite Beam transforms of the market analytics (DESIGN.md §3-§6).

    raw records ─► ParseTicks ─► ComputeBars ─► bars (with cross-window fields), alerts
                      │              │
                      └──────────────┴─► dead letters

`MarketAnalytics` chains them and returns `.bars`, `.alerts` and
`.dead_letters`. The transforms know nothing of Kafka or of a runner; they
need only event-timestamped input and a watermark (docs/transforms.md).

Modules, one idea each: `ticks` (parsing and validation, per-shard
batches), `tick_row` (a tick as the bar step holds it), `combining` (the exact bar accumulator), `seqs` (seen seq
ranges), `book` (one symbol's windows and history: lateness, duplicates,
panes, cross-window fields, alerts), `bars` (the stateful step keyed by
shard of symbols that holds the books and fires EARLY / ON_TIME / LATE
panes), `formatting` (the bar dict), `anomalies` (cross-window fields and
alerts as pure functions), `analytics` (the chain).

Ordering. Inside a window, order does not matter: the accumulator is
exactly mergeable (exact sums, min/max, order keys). open/close order ticks
by (event time, seq, price). Across windows, a symbol's ON_TIME panes fire
in window order from the event-time timer of its shard, and each adds the
window to the symbol's history, whatever order the ticks arrived in. Timers
are set on whole milliseconds: the Fn API carries timer timestamps in
milliseconds.

State, per symbol, inside its shard: one accumulator (~10 numbers) per open
window, seq ranges (one per gap in the seqs of open windows) and the
identities of the open windows' ticks that carry a seq, all dropped when a
window closes (window end + allowed lateness); at most HISTORY_WINDOWS + 3
+ ceil(lateness / window) history entries of 4 numbers; the alert types
sent for each open window.
"""
from transforms.analytics import MarketAnalytics, MarketOutputs
from transforms.bars import BarOutputs, ComputeBars
from transforms.ticks import ParsedTicks, ParseTicks, RecordBatch, SourceRecord

__all__ = [
    "BarOutputs", "ComputeBars", "MarketAnalytics",
    "MarketOutputs", "ParseTicks", "ParsedTicks", "RecordBatch", "SourceRecord",
]
