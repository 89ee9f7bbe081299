"""`MarketAnalytics`: raw tick records in, bars, alerts and dead letters out."""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import apache_beam as beam

from market import config
from transforms.bars import ComputeBars
from transforms.ticks import ParseTicks, RecordBatch, ShardRecords


class MarketOutputs(NamedTuple):
    """The three outputs of `MarketAnalytics` (DESIGN.md §4, §5, §6)."""

    bars: beam.PCollection          # bar dicts, every pane (EARLY / ON_TIME / LATE)
    alerts: beam.PCollection        # alert dicts, each alert_id once
    dead_letters: beam.PCollection  # (original_key: bytes | None, dead_letter dict)


class MarketAnalytics(beam.PTransform):
    """Raw records (RecordBatch, SourceRecord, bytes, str or (key, value)) → bars, alerts, dead letters.

    The input's watermark should follow the ticks' event times (the Kafka
    CreateTime the producer sets). `clock` is the processing-time clock of
    the EARLY panes (see BuildBarsFn); `max_future_s` bounds how far ahead of
    the wall clock a tick may be stamped (None: no bound); `shards` how many
    state keys the bar step spreads the symbols over.

    With `routed_records` the input is instead `(shard, encoded batch)`
    pairs from a source that already put each record in its symbol's shard
    (`shard_of`, `shards` of them), and `routed_records` decodes a batch into
    a `RecordBatch`: the bar step then parses the records itself, with no
    parse step, shuffle and bundle wait before it (ShardRecords).
    """

    def __init__(self,
                 window_size_s: int = config.WINDOW_SIZE_S,
                 allowed_lateness_s: int = config.ALLOWED_LATENESS_S,
                 early_firing_s: float = config.EARLY_FIRING_S,
                 volatility_threshold_pct: float = config.VOLATILITY_THRESHOLD_PCT,
                 zscore_threshold: float = config.ZSCORE_THRESHOLD,
                 volume_spike_ratio: float = config.VOLUME_SPIKE_RATIO,
                 max_future_s: float | None = config.MAX_FUTURE_S,
                 shards: int = config.STATE_SHARDS,
                 clock=time.time,
                 routed_records: Callable[[Any], RecordBatch] | None = None) -> None:
        super().__init__()
        self.routed_records = routed_records
        self.max_future_s = max_future_s
        self.shards = shards
        self.clock = clock
        self.window_size_s = window_size_s
        self.allowed_lateness_s = allowed_lateness_s
        self.early_firing_s = early_firing_s
        self.volatility_threshold_pct = volatility_threshold_pct
        self.zscore_threshold = zscore_threshold
        self.volume_spike_ratio = volume_spike_ratio

    def expand(self, records: beam.PCollection) -> MarketOutputs:
        routed = None
        if self.routed_records is None:
            parsed = records | "ParseTicks" >> ParseTicks(self.max_future_s, self.shards)
            records = parsed.ticks
        else:
            routed = ShardRecords(self.routed_records, self.max_future_s, self.shards)
        bars = records | "ComputeBars" >> ComputeBars(
            window_size_s=self.window_size_s,
            allowed_lateness_s=self.allowed_lateness_s,
            early_firing_s=self.early_firing_s,
            volatility_threshold_pct=self.volatility_threshold_pct,
            zscore_threshold=self.zscore_threshold,
            volume_spike_ratio=self.volume_spike_ratio,
            clock=self.clock,
            records=routed)
        if routed is not None:
            return MarketOutputs(bars=bars.bars, alerts=bars.alerts, dead_letters=bars.dead_letters)
        dead_letters = ((parsed.dead_letters, bars.dead_letters)
                        | "CollectDeadLetters" >> beam.Flatten())
        return MarketOutputs(bars=bars.bars, alerts=bars.alerts, dead_letters=dead_letters)
