"""One symbol's bar book: its open windows, seq ranges, seen ticks and cross-window history.

Plain Python, no Beam: the sharded bar step (transforms/bars.py) keeps one
`Book` per symbol and calls `BarRules` to screen ticks into it and to fire
its panes. Everything per symbol that DESIGN.md §3-§5 asks for is decided
here, so a symbol behaves the same whichever shard holds it and however
many other symbols share that shard.

A book's durable part (`Book.durable()`) is plain lists, dicts, tuples and
numbers, what the bar step's snapshots hold; the seen tick identities are
kept apart (they are large and only read when a seq repeats).
"""
from __future__ import annotations

import math
import time
from array import array
from typing import NamedTuple

from market import config, schema
from transforms.anomalies import (
    START,
    HistorySummary,
    Thresholds,
    bar_anomalies,
    fields_after,
    make_alert,
    summarize_history,
)
from transforms.combining import CLOSE, ORDER_TIME, add_ticks, bar_stats_of, new_accumulator
from transforms.formatting import format_bar
from transforms.seqs import insert_seq, touch_seq
from transforms.tick_row import PRICE, SEQ, TIMESTAMP, VOLUME, tick_row
from transforms.ticks import tick_dead_letter

# An open window: [accumulator, next pane index, final, dirty, alert types sent].
# final: its ON_TIME (or first LATE) pane has fired; dirty: ticks added since
# its last pane; alert types: each alert id is published once (DESIGN.md §5).
ACC, PANE_INDEX, FINAL, DIRTY, ALERTED = range(5)


class Book:
    """One symbol's state in the bar step (see the module docstring)."""

    __slots__ = ("closed", "ranges", "windows", "history", "seen", "summary")

    def __init__(self, closed: int = 0, ranges: list | None = None, windows: dict | None = None,
                 history: list | None = None) -> None:
        self.closed = closed                          # newest window end closed here (0: none)
        self.ranges = [] if ranges is None else ranges  # seq ranges [low, high, last window end]
        self.windows = {} if windows is None else windows  # window end ms -> open window
        self.history = [] if history is None else history  # ON_TIME bars, oldest first
        # window end -> (array q: seq, timestamp pairs; array d: price, volume pairs)
        self.seen: dict[int, tuple[array, array]] = {}
        self.summary: HistorySummary | None = None   # of the whole history; None: to compute

    def durable(self) -> tuple:
        """What state must keep of this book, apart from the seen identities."""
        return self.closed, self.ranges, self.windows, self.history

    @classmethod
    def restore(cls, durable: tuple) -> "Book":
        return cls(*durable)

    def seen_entries(self, symbol: str) -> list:
        """The seen identities as (symbol, window end, int bytes, float bytes) entries."""
        return [(symbol, end, ints.tobytes(), floats.tobytes()) for end, (ints, floats) in self.seen.items()]

    def add_seen(self, end: int, int_bytes: bytes, float_bytes: bytes) -> None:
        if end not in self.windows:
            return   # a window closed since: its identities are no longer needed
        ints, floats = self.seen.setdefault(end, (array("q"), array("d")))
        ints.frombytes(int_bytes)
        floats.frombytes(float_bytes)


class Outcome:
    """What one call on a book produced: panes, alerts, dead letters, new seen identities."""

    __slots__ = ("bars", "alerts", "dead_letters", "admitted", "opened")

    def __init__(self) -> None:
        self.opened: list = []        # (symbol, window end, final) of the windows a call opened
        self.bars: list = []          # (window end, bar dict)
        self.alerts: list = []        # (window end, alert dict)
        self.dead_letters: list = []  # (original key, dead letter dict)
        # (symbol, read watermark, packed ticks) of the ticks a book took, in order
        self.admitted: list = []


class BarRules(NamedTuple):
    """The bar and anomaly settings of DESIGN.md §4-§5, applied to one book at a time."""

    size_ms: int
    lateness_ms: int
    thresholds: Thresholds
    history_limit: int

    @classmethod
    def of(cls, window_size_s: int, allowed_lateness_s: int, thresholds: Thresholds) -> "BarRules":
        size_ms, lateness_ms = int(window_size_s * 1000), int(allowed_lateness_s * 1000)
        # Enough entries for the 20-return z-score of a window that still
        # takes LATE panes (for up to the allowed lateness) while the windows
        # after it are already in.
        limit = config.HISTORY_WINDOWS + 2 + math.ceil(lateness_ms / size_ms) + 1
        return cls(size_ms, lateness_ms, thresholds, limit)

    # --- ticks ------------------------------------------------------------
    def add(self, symbol: str, book: Book, ticks: list, read_watermark: int | None, out: Outcome) -> None:
        """Screen a batch of the symbol's ticks into its book; LATE panes fire at once.

        Late: the tick's window is older than one this book has closed, or it
        expired by the source watermark read before the tick (DESIGN.md §4).
        Duplicate: a reused seq whose whole tick repeats in its window (§3).
        """
        size, lateness, closed = self.size_ms, self.lateness_ms, book.closed
        expired_by = closed if read_watermark is None else max(closed, read_watermark - lateness)
        groups: dict[int, list] = {}
        new_seen: dict[int, tuple[array, array]] = {}
        identities: dict[int, set] = {}   # built only for windows where a seq repeats
        taken = array("q"), array("d")
        taken_ints, taken_floats = taken
        for tick in ticks:
            stamp = tick[TIMESTAMP]
            end = stamp - stamp % size + size   # its epoch-aligned window
            if end <= expired_by:
                why = (f"closed here (closed through {closed})" if end <= closed else
                       f"expired by the source watermark {read_watermark} before the tick was read")
                out.dead_letters.append(tick_dead_letter(
                    schema.REASON_LATE, f"{symbol} window ending {end} {why}; allowed lateness {lateness} ms",
                    tick))
                continue
            seq = tick[SEQ]
            if seq is not None:
                identity = (seq, stamp, tick[PRICE], tick[VOLUME])
                if not insert_seq(book.ranges, seq, end):
                    known = identities.get(end)
                    if known is None:
                        known = identities[end] = _identities(book.seen.get(end), new_seen.get(end))
                    if identity in known:
                        out.dead_letters.append(tick_dead_letter(
                            schema.REASON_DUPLICATE, f"duplicate of {symbol} seq {seq} (same time, "
                            f"price and volume) in the window ending {end}", tick))
                        continue
                    touch_seq(book.ranges, seq, end)
                known = identities.get(end)
                if known is not None:
                    known.add(identity)
                ints, floats = new_seen.get(end) or new_seen.setdefault(end, (array("q"), array("d")))
                ints.append(seq)
                ints.append(stamp)
                floats.append(tick[PRICE])
                floats.append(tick[VOLUME])
            group = groups.get(end)
            if group is None:
                groups[end] = group = []
            group.append(tick)
            taken_ints.append(stamp)
            taken_ints.append(NO_SEQ_PACKED if seq is None else seq)
            taken_floats.append(tick[PRICE])
            taken_floats.append(tick[VOLUME])

        if groups:
            out.admitted.append((symbol, read_watermark, pack_ticks(taken)))
        for end, (ints, floats) in new_seen.items():
            known_ints, known_floats = book.seen.setdefault(end, (array("q"), array("d")))
            known_ints.extend(ints)
            known_floats.extend(floats)
        for end in sorted(groups):
            window = book.windows.get(end)
            if window is None:
                window = book.windows[end] = [new_accumulator(), 0, False, False, []]
                if read_watermark is not None and read_watermark >= end:
                    # The source's watermark had passed this window's end
                    # before its first tick was read: like Beam, the first
                    # pane is LATE, and it fires now.
                    window[FINAL] = True
                out.opened.append((symbol, end, window[FINAL]))
            add_ticks(window[ACC], groups[end])
            if window[FINAL]:
                self._pane(symbol, book, end, window, schema.PANE_LATE, out)
            else:
                window[DIRTY] = True

    # --- panes ------------------------------------------------------------
    def fire_early(self, symbol: str, book: Book, settled_ms: int | None, out: Outcome) -> int:
        """An EARLY pane of each window with ticks since its last pane; returns how many it fired.

        A window that the source's watermark `settled_ms` has already
        reached gets none: its ON_TIME pane, with every tick read so far,
        comes with the watermark (a backlog read after a restart or a drain
        would otherwise send a partial bar of every window before its final
        one). DESIGN.md §4 bounds EARLY panes from above, not below.
        """
        fired = 0
        for end in sorted(book.windows):
            window = book.windows[end]
            if window[DIRTY] and not window[FINAL]:
                if settled_ms is not None and end - 1 <= settled_ms:
                    window[DIRTY] = False
                    continue
                self._pane(symbol, book, end, window, schema.PANE_EARLY, out)
                fired += 1
        return fired

    def fire_on_time(self, symbol: str, book: Book, end: int, out: Outcome) -> None:
        """The ON_TIME pane of the window ending at `end`: the watermark has reached its last millisecond."""
        window = book.windows[end]
        window[FINAL] = True
        self._pane(symbol, book, end, window, schema.PANE_ON_TIME, out)

    def close(self, book: Book, end: int) -> None:
        """Drop the window ending at `end` (past its allowed lateness): a later tick for it is late."""
        del book.windows[end]
        book.seen.pop(end, None)
        if end > book.closed:
            book.closed = end
            book.ranges = [span for span in book.ranges if span[2] > end]

    def _pane(self, symbol: str, book: Book, end: int, window: list, pane: str, out: Outcome) -> None:
        """The window's bar as of now, with its cross-window fields and first-time alerts."""
        start = end - self.size_ms
        acc = window[ACC]
        bar = format_bar(symbol, start, end, bar_stats_of(acc), pane, window[PANE_INDEX],
                         self.thresholds.volatility_pct, last_tick_ms=acc[CLOSE][ORDER_TIME],
                         emitted_at=int(time.time() * 1000))
        window[PANE_INDEX] += 1
        window[DIRTY] = False
        history = book.history
        if not history or history[-1][START] < start:
            # The common case: a pane of a window after the whole history.
            before = history
            if book.summary is None:
                book.summary = summarize_history(history)
            summary = book.summary
        else:   # a LATE pane of a window older than the newest ON_TIME bar
            before = [entry for entry in history if entry[START] < start]
            summary = summarize_history(before)
        bar.update(fields_after(summary, bar["close"], bar["volume"]))
        found = bar_anomalies(bar, self.thresholds)
        bar["anomalies"] = [alert_type for alert_type, _, _ in found]
        out.bars.append((end, bar))
        for alert_type, value, threshold in found:
            if alert_type not in window[ALERTED]:
                window[ALERTED].append(alert_type)
                out.alerts.append((end, make_alert(bar, alert_type, value, threshold)))
        if pane == schema.PANE_ON_TIME:
            # History holds the ON_TIME bar of each window, in window order, so
            # every final bar is a function of the on-time data alone.
            entry = (start, bar["close"], bar["volume"], bar["log_return"])
            if before is history:
                history.append(entry)
            else:
                history[:] = before + [entry] + [e for e in history if e[START] > start]
            del history[:-self.history_limit]
            book.summary = None


# A tick without a seq in packed form (no real seq is negative, DESIGN.md §3).
NO_SEQ_PACKED = -(2 ** 63)


def pack_ticks(taken: tuple[array, array]) -> tuple[bytes, bytes]:
    """Ticks as (timestamp, seq) int64 pairs and (price, volume) float64 pairs, as bytes."""
    return taken[0].tobytes(), taken[1].tobytes()


def unpack_ticks(packed: tuple[bytes, bytes]) -> list:
    """The tick tuples of `pack_ticks` (without source, key and raw: only a dead letter needs those)."""
    ints, floats = array("q"), array("d")
    ints.frombytes(packed[0])
    floats.frombytes(packed[1])
    return [tick_row(price, volume, stamp, None if seq == NO_SEQ_PACKED else seq)
            for stamp, seq, price, volume in zip(ints[0::2], ints[1::2], floats[0::2], floats[1::2])]


def _identities(known: tuple | None, new: tuple | None) -> set:
    """(seq, timestamp, price, volume) of a window's seen ticks, from their packed arrays."""
    found: set = set()
    for pair in (known, new):
        if pair is not None:
            ints, floats = pair
            found.update(zip(ints[0::2], ints[1::2], floats[0::2], floats[1::2]))
    return found
