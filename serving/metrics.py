"""Prometheus metrics of one app, in its own registry so several apps (tests) can coexist.

Every label takes values from a small fixed set (topics of the config,
reasons, route templates, known HTTP methods), so no client can grow /metrics.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from market.schema import DEAD_LETTER_REASONS

# Any other method (a client may send "FOO") is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def method_label(method: str) -> str:
    """The request's method as a bounded label value."""
    return method if method in HTTP_METHODS else "other"


# A dead letter's reason is any short word (DESIGN.md §6): the pipeline's known ones are labels, the rest "other".
_REASON_LABELS = frozenset(DEAD_LETTER_REASONS)


def reason_label(reason: str) -> str:
    """A dead letter's reason as a bounded label value."""
    return reason if reason in _REASON_LABELS else "other"


# The hops of a bar's latency (DESIGN.md §4 `last_tick_ms`, `emitted_at`), label values of serving_bar_latency_seconds.
HOP_EVENT_TO_EMIT = "event_to_emit"             # emitted_at - last_tick_ms, every pane
HOP_ON_TIME_DELAY = "on_time_delay"             # emitted_at - window_end, ON_TIME panes
HOP_PIPELINE_TO_SERVING = "pipeline_to_serving"   # receipt from Kafka - emitted_at
HOP_SERVING_TO_WEBSOCKET = "serving_to_websocket"  # receipt - handed to the WebSocket clients
HOPS = (HOP_EVENT_TO_EMIT, HOP_ON_TIME_DELAY, HOP_PIPELINE_TO_SERVING, HOP_SERVING_TO_WEBSOCKET)
# From a few ms (serving's own hop) to minutes (an ON_TIME pane waits for the watermark; lateness).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)


class HopHistogram(Collector):
    """A histogram labelled by `hop` that takes a batch of observations at once.

    prometheus_client's Histogram.observe costs ~1.7 us (a lock and a walk
    over the buckets): three per bar added a quarter to the consumer thread's
    ~20 us a bar at market scale. Here a batch's values are bucketed by bisect
    under one lock; /metrics shows a plain histogram (`_bucket`, `_sum`, `_count`).
    """

    def __init__(self, name: str, documentation: str, hops: tuple[str, ...], buckets: tuple[float, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = list(buckets)
        self._lock = threading.Lock()
        self._counts = {hop: [0] * (len(self.bounds) + 1) for hop in hops}   # per bucket, +Inf last
        self._sums = dict.fromkeys(hops, 0.0)
        registry.register(self)

    def observe_many(self, hop: str, seconds: Iterable[float]) -> None:
        """Count each value in `seconds` for `hop`."""
        counts, bounds = self._counts[hop], self.bounds
        with self._lock:
            total = 0.0
            for value in seconds:
                counts[bisect.bisect_left(bounds, value)] += 1     # `le` buckets: a value on a bound is in it
                total += value
            self._sums[hop] += total

    def hop(self, hop: str) -> _Hop:
        """The observer of one hop."""
        return _Hop(self, hop)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["hop"])
        with self._lock:
            snapshot = {hop: (list(counts), self._sums[hop]) for hop, counts in self._counts.items()}
        for hop, (counts, total) in snapshot.items():
            cumulative, running = [], 0
            for bound, count in zip([*map(str, self.bounds), "+Inf"], counts):
                running += count
                cumulative.append((bound, running))
            family.add_metric([hop], cumulative, total)
        yield family


class _Hop:
    __slots__ = ("histogram", "name")

    def __init__(self, histogram: HopHistogram, name: str) -> None:
        self.histogram, self.name = histogram, name

    def observe(self, seconds: float) -> None:
        self.histogram.observe_many(self.name, (seconds,))

    def observe_many(self, seconds: Iterable[float]) -> None:
        self.histogram.observe_many(self.name, seconds)


class Metrics:
    """The series /metrics exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("serving_messages_consumed", "Kafka records consumed", ["topic"], registry=r)
        self.rejected = Counter("serving_messages_rejected",
                                "Kafka records skipped because they are not a valid bar/alert, by reason",
                                ["topic", "reason"], registry=r)
        self.lag = Gauge("serving_consumer_lag", "High watermark minus position, per partition",
                         ["topic", "partition"], registry=r)
        self.ready = Gauge("serving_ready", "1 when history is replayed and the broker answers", registry=r)
        self.consumer_errors = Counter("serving_consumer_errors", "Kafka consumer errors seen", registry=r)
        self.ws_clients = Gauge("serving_websocket_clients", "Connected WebSocket clients", registry=r)
        self.ws_sent = Counter("serving_websocket_messages_sent", "Messages written to WebSocket clients",
                               registry=r)
        self.ws_queued = Counter("serving_websocket_messages_queued",
                                 "Fan-out messages that waited in a client's queue (socket buffer full)",
                                 registry=r)
        self.ws_overflows = Counter("serving_websocket_overflows",
                                    "Slow WebSocket clients closed with 1008", registry=r)
        self.ws_rate_limited = Counter("serving_websocket_rate_limited",
                                       "WebSocket clients closed with 1008 for sending too many messages", registry=r)
        self.ws_refused = Counter("serving_websocket_refused",
                                  "WebSocket connections refused: origin (403) or full (1013)", ["reason"],
                                  registry=r)
        self.ws_replays = Gauge("serving_websocket_replays", "Resuming subscribes replaying from Kafka now",
                                registry=r)
        self.ws_replayed = Counter("serving_websocket_replayed_messages",
                                   "Messages sent by replays (not counting the live ones buffered meanwhile)",
                                   registry=r)
        self.ws_replay_ends = Counter(
            "serving_websocket_replays_ended", "Replays by how they ended: done, busy (too many at once), "
            "refused (the point is not retained or not in the topic), too_many (messages), failed (Kafka), gone "
            "(the client left)", ["outcome"], registry=r)
        self.fanout = Histogram(
            "serving_fanout_seconds", "Time to hand one bar or alert to every subscribed WebSocket client",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=r)
        self.stored = Counter("serving_store_written", "Bars of record, alerts and dead letters written to the database",
                              ["kind"], registry=r)
        self.store_write = Histogram(
            "serving_store_write_seconds", "Time to write one batch (bars, alerts, offsets) in one transaction",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0), registry=r)
        self.store_pruned = Counter("serving_store_pruned", "Bars deleted by --history_days retention", registry=r)
        self.dead_letters = Counter("serving_dead_letters",
                                    "Dead letters (rejected ticks) read from the dead-letter topic, by reason "
                                    "(reasons the pipeline does not define: other)", ["reason"], registry=r)
        self.bar_latency = HopHistogram(
            "serving_bar_latency_seconds",
            "Latency of live bars by hop: event_to_emit (emitted_at - last_tick_ms), on_time_delay (emitted_at - "
            "window_end, ON_TIME panes), pipeline_to_serving (receipt - emitted_at), serving_to_websocket "
            "(receipt - handed to the WebSocket clients, per batch)", HOPS, LATENCY_BUCKETS, r)
        self.latency_event_to_emit = self.bar_latency.hop(HOP_EVENT_TO_EMIT)
        self.latency_on_time_delay = self.bar_latency.hop(HOP_ON_TIME_DELAY)
        self.latency_pipeline_to_serving = self.bar_latency.hop(HOP_PIPELINE_TO_SERVING)
        self.latency_to_websocket = self.bar_latency.hop(HOP_SERVING_TO_WEBSOCKET)
        self.request_latency = Histogram(
            "serving_request_duration_seconds", "HTTP request latency", ["method", "endpoint", "status"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r)
