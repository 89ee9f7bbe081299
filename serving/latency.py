"""Current p50/p99 of each latency hop, from the histogram /metrics exposes (no second measurement).

A Prometheus histogram counts since start; "current" is the difference from
a snapshot of its buckets about `window_s` ago (since start until there is
one). Snapshots are taken when asked (the dashboard polls), at most every
`every_s`, so nothing runs while nobody looks. Quantiles are interpolated within a bucket, as Prometheus'
histogram_quantile does: as exact as the buckets (serving.metrics.LATENCY_BUCKETS).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from prometheus_client import Histogram

from serving.metrics import HOPS

Counts = dict[str, list[float]]     # hop -> cumulative count per bucket bound, +Inf last


def bucket_counts(histogram: Histogram) -> tuple[list[float], Counts]:
    """(the bucket bounds, +Inf last; cumulative counts per hop) of a histogram labelled by `hop`."""
    bounds: list[float] = []
    counts: Counts = {hop: [] for hop in HOPS}
    for family in histogram.collect():
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            hop, le = sample.labels["hop"], float(sample.labels["le"])
            if hop == HOPS[0]:
                bounds.append(le)
            counts.setdefault(hop, []).append(sample.value)
    return bounds, counts


def quantile(q: float, bounds: list[float], cumulative: list[float]) -> float | None:
    """The q-quantile of a histogram's cumulative bucket counts (None when empty), linear within a bucket;
    in the +Inf bucket, the largest finite bound."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        below, lower = count, bound
    return lower


class LatencyWindow:
    """p50/p99 per hop over roughly the last `window_s` seconds of a `hop`-labelled histogram."""

    def __init__(self, histogram: Histogram, window_s: float = 60.0, every_s: float = 5.0) -> None:
        self.histogram, self.window_s, self.every_s = histogram, window_s, every_s
        self._lock = threading.Lock()
        self._snapshots: deque[tuple[float, Counts]] = deque()
        self._started = time.monotonic()

    def current(self) -> dict[str, Any]:
        """{"window_s", "hops": {hop: {"count", "p50_ms", "p99_ms"}}}: counts and quantiles since the newest
        snapshot at least `window_s` old, or since start while there is none (the first minute of asking)."""
        now = time.monotonic()
        bounds, counts = bucket_counts(self.histogram)
        with self._lock:
            # Drop the snapshots that a newer one, also older than the window, makes useless.
            while len(self._snapshots) > 1 and now - self._snapshots[1][0] >= self.window_s:
                self._snapshots.popleft()
            if self._snapshots and now - self._snapshots[0][0] >= self.window_s:
                base_at, base = self._snapshots[0]
            else:
                base_at, base = self._started, {}
            if not self._snapshots or now - self._snapshots[-1][0] >= self.every_s:
                self._snapshots.append((now, counts))
        hops = {}
        for hop in HOPS:
            current = counts.get(hop, [])
            before = base.get(hop, [0.0] * len(current))
            window = [c - b for c, b in zip(current, before)]
            p50, p99 = quantile(0.5, bounds, window), quantile(0.99, bounds, window)
            hops[hop] = {"count": int(window[-1]) if window else 0,
                         "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                         "p99_ms": None if p99 is None else round(p99 * 1000, 1)}
        return {"window_s": round(now - base_at, 1), "hops": hops}
