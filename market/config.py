"""The one place that knows topic names, partition counts and defaults (DESIGN.md §2, §9).

Producer, pipeline and serving import these names; flags and environment
variables (market/settings.py) may override the values, never redefine them.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- Kafka -----------------------------------------------------------------
DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"

TICKS_TOPIC = "raw_stock_ticks"
TRENDS_TOPIC = "analyzed_market_trends"
ALERTS_TOPIC = "market_alerts"
DLQ_TOPIC = "raw_stock_ticks_dlq"


@dataclass(frozen=True)
class TopicSpec:
    """A topic the system needs, as DESIGN.md §2 lays it out."""

    name: str
    partitions: int
    description: str


TICKS = TopicSpec(TICKS_TOPIC, 3, "market ticks keyed by symbol")
TRENDS = TopicSpec(TRENDS_TOPIC, 3, "1-minute bars keyed by symbol")
ALERTS = TopicSpec(ALERTS_TOPIC, 3, "anomaly alerts keyed by symbol")
DLQ = TopicSpec(DLQ_TOPIC, 1, "rejected ticks with the reason")
TOPICS: tuple[TopicSpec, ...] = (TICKS, TRENDS, ALERTS, DLQ)

# The pipeline's Kafka consumer group: offsets are committed to it when a
# checkpoint completes, and a start without a checkpoint resumes there.
PIPELINE_CONSUMER_GROUP = "market-pipeline"
# Where the pipeline starts when its group has no committed offset.
PIPELINE_START_OFFSET = "earliest"
# How far the input watermark stays behind the newest record timestamp: ticks
# in flight for less than this still make their window's ON_TIME bar.
WATERMARK_DELAY_MS = 1000

# --- Bars and anomalies (DESIGN.md §4, §5, §9) -------------------------------
WINDOW_SIZE_S = 60
ALLOWED_LATENESS_S = 30
EARLY_FIRING_S = 1
# A tick stamped further than this ahead of the wall clock when the pipeline
# reads it is rejected as invalid_timestamp (DESIGN.md §3).
MAX_FUTURE_S = 60
VOLATILITY_THRESHOLD_PCT = 2.0
ZSCORE_THRESHOLD = 3.0
VOLUME_SPIKE_RATIO = 3.0

# The bar step keeps its state by shard of symbols, not by symbol: its cost
# per bundle grows with shards, not with the universe (docs/transforms.md).
# Enough shards to spread over a cluster's slots (Flink hashes each key into
# one of 128 key groups), few enough that each carries many symbols.
STATE_SHARDS = 32
# How often the command line logs the running job's own Beam metrics (0: never).
METRICS_LOG_S = 60.0

# Cross-window history (DESIGN.md §4): z-score and volume ratio look back 20
# windows and need at least 5; the moving averages span 5 and 20 windows.
HISTORY_WINDOWS = 20
MIN_HISTORY_WINDOWS = 5
SMA_FAST_WINDOWS = 5
SMA_SLOW_WINDOWS = 20

# --- Serving (DESIGN.md §7, §8) ----------------------------------------------
SERVING_HOST = "127.0.0.1"
SERVING_PORT = 8000
SERVING_HISTORY_HOURS = 24.0
SERVING_BARS_PER_SYMBOL = 1000
SERVING_ALERTS_KEPT = 1000
WS_HEARTBEAT_S = 15
REST_DEFAULT_LIMIT = 100
REST_MAX_LIMIT = 1000

# Limits for hostile or broken WebSocket clients; docs/serving.md explains each.
WS_QUEUE_BYTES = 1024 * 1024
WS_MAX_CONNECTIONS = 1000      # below gunicorn's --threads (1100), which also serve REST
WS_MAX_SYMBOLS = 1000
WS_MESSAGE_RATE = 20.0
WS_MESSAGE_BURST = 40
WS_ALLOWED_ORIGINS = "self,localhost"
# Gap-free resume (DESIGN.md §8): each replay is a Kafka consumer and a thread; docs/serving.md.
WS_REPLAY_MAX_CONCURRENT = 4
WS_REPLAY_MAX_MESSAGES = 100_000
WS_REPLAY_BUFFER_BYTES = 8 * 1024 * 1024

LOG_LEVEL = "INFO"



# --- Serving WebSocket transport -------------------------------------------
# Protocol pings find dead peers; the send buffer is kept small so a slow
# client overflows its bounded queue instead of hiding in kernel memory.
WS_PING_INTERVAL_S = 25
WS_MAX_MESSAGE_BYTES = 64 * 1024
WS_SEND_BUFFER_BYTES = 256 * 1024
WS_CLOSE_GRACE_S = 5.0

# --- Producer (DESIGN.md §2, §3, §9) -------------------------------------------
PRODUCER_RATE = 10_000
# lz4: the cheapest codec on CPU, and ticks of one symbol compress well. Big
# batches are what gets 50k+ small records/s through one connection; 20 ms of
# lingering is invisible next to 1-minute bars.
PRODUCER_COMPRESSION = "lz4"
PRODUCER_LINGER_MS = 20
PRODUCER_STATS_INTERVAL_S = 5.0
PRODUCER_FLUSH_TIMEOUT_S = 30.0
# A broker that does not answer a metadata request within this is reported
# as unreachable instead of letting librdkafka retry forever.
PRODUCER_BROKER_TIMEOUT_S = 5.0
# Market simulation: expected price jumps per symbol per minute of event time
# and their mean size, chosen so that >2 % swings and z-score alerts happen
# within minutes on the default universe.
PRODUCER_JUMP_RATE_PER_MIN = 0.05
PRODUCER_JUMP_SIZE_PCT = 3.0
# Injected late ticks are back-dated past window + allowed lateness (+ margin)
# so the pipeline must dead-letter them; out-of-order ticks stay within it.
PRODUCER_LATE_BY_S = WINDOW_SIZE_S + ALLOWED_LATENESS_S + 15
PRODUCER_OUT_OF_ORDER_MAX_S = 10.0
