"""The benchmark's readers of the tick and bar topics: what was published, when, and whether they keep up."""
from __future__ import annotations

import time
from array import array
from collections import defaultdict
from dataclasses import dataclass

import numpy
import orjson
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from benchmarks.common import WINDOW_MS
from runners import readers


class TopicReader(readers.TopicReader):
    """A reader of one topic that also reports how far its polls trail the topic."""

    def __init__(self, bootstrap: str, topic: str, group: str, batch: int, timeout_s: float) -> None:
        self.topic = topic
        super().__init__(bootstrap, [topic], group, batch, timeout_s)

    def delay_ms(self, from_index: int = 0) -> list[float]:
        """p50, p99 and max of the polls' delays behind the topic, from the `from_index`-th poll on."""
        values = numpy.array(self.delays[from_index:], dtype=numpy.int64)
        if not len(values):
            return [float("nan")] * 3
        return [float(numpy.percentile(values, 50)), float(numpy.percentile(values, 99)), float(values.max())]


class TickLog(TopicReader):
    """Event time of every tick on the input topic, per (symbol, window), in partition order.

    Read from the records' key and timestamp (= event time, DESIGN.md §2): no
    JSON parse, so watching costs little of the machine under test, and the
    same per tick whatever the number of symbols (one dict look-up).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.stamps: dict[tuple[str, int], array] = defaultdict(lambda: array("q"))
        self.count = 0
        super().__init__(bootstrap, topic, f"compare-ticks-{topic}", batch=5000, timeout_s=0.2)

    def _handle(self, msgs: list) -> int | None:
        oldest = None
        with self.lock:
            stamps = self.stamps
            for msg in msgs:
                if msg.error() is None:
                    stamp = msg.timestamp()[1]
                    stamps[(msg.key().decode(), stamp - stamp % WINDOW_MS)].append(stamp)
                    self.count += 1
                    if oldest is None or stamp < oldest:
                        oldest = stamp
        return oldest


class BarProgress(TopicReader):
    """Ticks a system has put into published bars, read from its bar topic.

    processed = Σ over (symbol, window) of the newest tick_count seen. Every
    time is the bar's append time on its topic (LogAppendTime, set by
    Outputs.create; the reader's clock on a topic without it). With a
    TickLog, each tick a new bar version covers gets its latency: the bar's
    append time minus the tick's event time; ON_TIME panes get their delay
    after their window's end.
    """

    def __init__(self, bootstrap: str, topic: str, ticks: TickLog | None = None) -> None:
        self.covered: dict[tuple[str, int], int] = defaultdict(int)
        self.final: dict[tuple[str, int], tuple[int, int]] = {}   # key -> (pane_index, tick_count)
        self.final_sum = 0
        self.processed = 0
        self.bars = 0
        self.first_ms: int | None = None      # append time of the first bar
        self.last_final_ms: int | None = None   # ... of the last bar that added ticks to the final bars
        self.ticks = ticks
        self.latency_at = array("q")    # append time (ms) of the bar, per latency sample
        self.latency = array("q")       # ms
        self.to_emit = array("q")       # ms, per latency sample: the bar's emitted_at - the tick's event time
        self.on_time = array("q")       # per ON_TIME pane: window_end, append time, delay (ms), flat
        self._pending: list[tuple[tuple[str, int], int, int, int]] = []
        self._resolved_at = -1          # tick_log.count at the last _resolve
        self._new_pending = False
        # Per bar version that added ticks: its append time and the ticks it
        # added. The 10 % / 90 % marks and "processed at t" come from here
        # (timeline()), at the resolution of one bar, whatever the polls.
        self._gain_at = array("q")
        self._gain = array("q")
        super().__init__(bootstrap, topic, f"compare-bars-{topic}", batch=1000, timeout_s=0.05)

    def _handle(self, msgs: list) -> int | None:
        now_ms = int(time.time() * 1000)
        oldest = None
        loads = orjson.loads
        with self.lock:
            for msg in msgs:
                if msg.error() is None:
                    kind, stamp = msg.timestamp()
                    appended = stamp if kind == TIMESTAMP_LOG_APPEND_TIME else now_ms
                    self._on_bar(loads(msg.value()), appended)
                    if oldest is None or appended < oldest:
                        oldest = appended
            # Only when something could have changed: the pending list
            # grows when the TickLog trails, and each poll would walk it.
            if self._new_pending or (self._pending and self.ticks.count != self._resolved_at):
                self._resolve()
        return oldest

    def _idle(self) -> None:
        # The TickLog may have read the ticks of the last bars since.
        with self.lock:
            if self._pending and self.ticks.count != self._resolved_at:
                self._resolve()

    def _on_bar(self, bar: dict, appended: int) -> None:
        key = (bar["symbol"], bar["window_start"])
        count = bar["tick_count"]
        self.bars += 1
        if self.first_ms is None or appended < self.first_ms:
            self.first_ms = appended
        if bar.get("is_final"):
            pane = bar.get("pane_index", 0)
            old = self.final.get(key)
            if old is None or pane >= old[0]:
                self.final[key] = (pane, count)
                gained = count - (old[1] if old else 0)
                self.final_sum += gained
                if gained > 0:
                    self.last_final_ms = max(self.last_final_ms or appended, appended)
            if bar.get("pane") == "ON_TIME":
                self.on_time.extend((bar["window_end"], appended, appended - bar["window_end"]))
        before = self.covered[key]
        if count <= before:
            return
        self.covered[key] = count
        self.processed += count - before
        self._gain_at.append(appended)
        self._gain.append(count - before)
        if self.ticks is not None:
            self._pending.append((key, before, count, appended, bar.get("emitted_at") or appended))
            self._new_pending = True

    def _resolve(self) -> None:
        """Latencies of covered ticks the TickLog has read (it may trail the bars by a poll)."""
        waiting = []
        self._new_pending = False
        with self.ticks.lock:
            self._resolved_at = self.ticks.count
            for entry in self._pending:
                key, before, count, appended, emitted = entry
                stamps = self.ticks.stamps.get(key)
                if stamps is None or len(stamps) < count:
                    waiting.append(entry)
                    continue
                self.latency.extend([appended - stamp for stamp in stamps[before:count]])
                self.to_emit.extend([emitted - stamp for stamp in stamps[before:count]])
                self.latency_at.extend(array("q", [appended]) * (count - before))
        self._pending = waiting

    def timeline(self) -> "Timeline":
        """Ticks in bars by append time, as far as this reader has read."""
        with self.lock:
            at = numpy.array(self._gain_at, dtype=numpy.int64)
            gain = numpy.array(self._gain, dtype=numpy.int64)
        order = numpy.argsort(at, kind="stable")
        return Timeline(at[order], numpy.cumsum(gain[order]))

    def final_ticks(self) -> int:
        return self.final_sum

    def latencies_from(self, index: int) -> tuple[numpy.ndarray, int]:
        """Latencies resolved since the `index`-th one, and the index to ask from next time."""
        with self.lock:
            end = len(self.latency)
            return numpy.array(self.latency[index:end], dtype=numpy.int64), end

    def latencies_between(self, start_ms: float, end_ms: float = float("inf")) -> numpy.ndarray:
        """Latencies of the ticks whose first bar version was appended in [start_ms, end_ms]."""
        with self.lock:
            latency = numpy.array(self.latency, dtype=numpy.int64)
            at = numpy.array(self.latency_at, dtype=numpy.int64)
        return latency[(at >= start_ms) & (at <= end_ms)]

    def hops_between(self, start_ms: float, end_ms: float = float("inf")) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The latencies of latencies_between split at the bar's `emitted_at`: event -> emit, emit -> append."""
        with self.lock:
            latency = numpy.array(self.latency, dtype=numpy.int64)
            to_emit = numpy.array(self.to_emit, dtype=numpy.int64)
            at = numpy.array(self.latency_at, dtype=numpy.int64)
        inside = (at >= start_ms) & (at <= end_ms)
        return to_emit[inside], (latency - to_emit)[inside]

    def on_time_delays(self, start_ms: float, end_ms: float) -> numpy.ndarray:
        """Append time − window end of the ON_TIME panes of windows ending in [start_ms, end_ms]."""
        with self.lock:
            flat = numpy.array(self.on_time, dtype=numpy.int64).reshape(-1, 3)
        ends = flat[:, 0]
        return flat[(ends >= start_ms) & (ends <= end_ms), 2]

    def pending(self) -> int:
        """Bar versions whose ticks the TickLog has not read yet."""
        with self.lock:
            return len(self._pending)


@dataclass
class Timeline:
    """Progress by the bars' append times: `at` sorted (ms), `total[i]` ticks in bars appended up to `at[i]`."""
    at: numpy.ndarray
    total: numpy.ndarray

    def processed_at(self, when_ms: float) -> int:
        """Ticks in bars appended up to `when_ms`."""
        i = int(numpy.searchsorted(self.at, when_ms, side="right"))
        return int(self.total[i - 1]) if i else 0

    def crossed(self, count: float) -> tuple[int, int] | None:
        """(append time ms, processed) of the bar that took processed to `count` or more; None before."""
        i = int(numpy.searchsorted(self.total, count, side="left"))
        return (int(self.at[i]), int(self.total[i])) if i < len(self.total) else None

    def longest_gap_ms(self, start_ms: float, end_ms: float) -> int:
        """The longest time between two bars that added ticks, within [start_ms, end_ms]."""
        times = self.at[(self.at >= start_ms) & (self.at <= end_ms)]
        return int(numpy.diff(times).max()) if len(times) > 1 else 0
