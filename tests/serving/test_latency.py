"""serving.latency: p50/p99 of the latency histogram over the last window, as the dashboard shows them."""
from __future__ import annotations

import time

import pytest

from serving.latency import LatencyWindow, quantile
from serving.metrics import HOP_EVENT_TO_EMIT, HOP_ON_TIME_DELAY, Metrics


def test_quantiles_interpolate_within_buckets_like_prometheus() -> None:
    bounds = [0.5, 1.0, 2.0, float("inf")]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [0, 10, 10, 10]) == pytest.approx(0.75)    # all in (0.5, 1]
    assert quantile(0.99, bounds, [5, 5, 10, 10]) == pytest.approx(1.98)
    assert quantile(0.99, bounds, [0, 0, 0, 4]) == 2.0                       # +Inf: the largest finite bound


def test_the_window_forgets_what_is_older_than_it() -> None:
    metrics = Metrics()
    window = LatencyWindow(metrics.bar_latency, window_s=0.3, every_s=0.05)
    for seconds in (0.2, 0.2, 0.2, 4.0):
        metrics.latency_event_to_emit.observe(seconds)
    first = window.current()["hops"]
    assert first[HOP_EVENT_TO_EMIT]["count"] == 4 and first[HOP_ON_TIME_DELAY] == {
        "count": 0, "p50_ms": None, "p99_ms": None}
    assert 100 <= first[HOP_EVENT_TO_EMIT]["p50_ms"] <= 250 and first[HOP_EVENT_TO_EMIT]["p99_ms"] > 3000
    time.sleep(0.35)
    metrics.latency_event_to_emit.observe(0.003)
    later = window.current()
    # Only what came after the snapshot of 0.35 s ago.
    assert later["hops"][HOP_EVENT_TO_EMIT]["count"] == 1 and later["hops"][HOP_EVENT_TO_EMIT]["p99_ms"] <= 5
    assert later["window_s"] >= 0.3


def test_the_batched_histogram_exposes_what_prometheus_clients_own_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from serving.metrics import HOPS, LATENCY_BUCKETS

    values = [0.0005, 0.001, 0.0011, 0.5, 1.0, 1.0000001, 2.9, 299.0, 300.0, 301.0, 1e6, -0.2]
    ours = Metrics()
    ours.latency_on_time_delay.observe_many(values[:5])
    for value in values[5:]:
        ours.latency_on_time_delay.observe(value)
    registry = CollectorRegistry()
    theirs = Histogram("serving_bar_latency_seconds", "x", ["hop"], buckets=LATENCY_BUCKETS, registry=registry)
    for hop in HOPS:
        theirs.labels(hop)
    for value in values:
        theirs.labels(HOP_ON_TIME_DELAY).observe(value)

    def samples(text: bytes) -> list[str]:
        return sorted(line for line in text.decode().splitlines()
                      if line.startswith("serving_bar_latency_seconds_") and "_created" not in line)
    assert samples(generate_latest(ours.registry)) == samples(generate_latest(registry))
