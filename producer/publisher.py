"""Sending records to Kafka with confluent-kafka: configuration, broker check, the produce loop."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from market import config as market_config
from market import kafka_security, settings
from market.kafka_security import KafkaSecurity

from producer.pacing import Pacer, TokenBucket
from producer.records import Record
from producer.stats import ProduceStats

log = logging.getLogger(__name__)

# Records sent between two `poll(0)` calls: enough to amortise the call,
# few enough that delivery reports and the stop flag are served every ms or so.
BATCH = 500
# Shortest wait handed to `poll`: librdkafka counts in whole milliseconds,
# and a 0 ms wait would spin the CPU.
MIN_WAIT_S = 0.001


class ProducerError(RuntimeError):
    """The producer cannot start: broker unreachable, topic unusable, bad settings."""


@dataclass(frozen=True)
class ProducerConfig:
    """Where and how to send; `extra` holds librdkafka keys that override the defaults."""

    bootstrap_servers: str = field(default_factory=settings.BOOTSTRAP_SERVERS.value)
    topic: str = market_config.TICKS_TOPIC
    client_id: str = "market-tick-producer"
    compression: str = market_config.PRODUCER_COMPRESSION
    linger_ms: int = market_config.PRODUCER_LINGER_MS
    delivery_timeout_s: float = 120.0
    flush_timeout_s: float = market_config.PRODUCER_FLUSH_TIMEOUT_S
    broker_timeout_s: float = market_config.PRODUCER_BROKER_TIMEOUT_S
    partitions: int = 3
    """Partitions of the topic if the producer has to create it (DESIGN.md §2)."""
    security: KafkaSecurity = field(default_factory=kafka_security.from_env)
    """Connection security (DESIGN.md §10), for the producer and its admin client alike."""
    extra: dict[str, Any] = field(default_factory=dict)


class ProducerLike(Protocol):
    """The part of `confluent_kafka.Producer` the loop uses (tests pass a fake)."""

    def produce(self, topic: str, value: bytes, key: bytes | None = ..., **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def __len__(self) -> int: ...


def kafka_config(cfg: ProducerConfig) -> dict[str, Any]:
    """The librdkafka settings of the tick producer, as one plain dict."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "client.id": cfg.client_id,
        # Retries can neither duplicate nor reorder a partition, and nothing is
        # reported delivered before all in-sync replicas have it.
        "enable.idempotence": True,
        "acks": "all",
        # Why lz4 and 20 ms: market/config.py.
        "compression.type": cfg.compression,
        "linger.ms": cfg.linger_ms,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 256 * 1024,
        # Fail a record (and so the exit code) after 2 min instead of 5.
        "delivery.timeout.ms": int(cfg.delivery_timeout_s * 1000),
        "error_cb": kafka_error,
        "logger": logging.getLogger("producer.librdkafka"),
    }
    conf.update(cfg.security.librdkafka())
    conf.update(cfg.extra)
    return conf


def admin_config(cfg: ProducerConfig) -> dict[str, Any]:
    """The librdkafka settings of the producer's admin client: same broker, same security."""
    return {"bootstrap.servers": cfg.bootstrap_servers, "client.id": cfg.client_id,
            "logger": logging.getLogger("producer.librdkafka"), **cfg.security.librdkafka()}


def kafka_error(err: KafkaError) -> None:
    """librdkafka's error callback: client-level errors (broker down, auth) go to the log."""
    if err.fatal():
        log.error("fatal Kafka error, the producer cannot continue: %s", err)
    else:
        log.warning("Kafka: %s", err)


class ClientErrors:
    """librdkafka's error callback that also keeps the errors, for the start-up message.

    A broker that refuses the credentials (or a client speaking the wrong
    protocol) shows up only here; the metadata request merely times out.
    """

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError) -> None:
        if len(self.errors) < 100:
            self.errors.append(err)
        kafka_error(err)

    def explain(self, cfg: ProducerConfig) -> str:
        """What the client reported when it looks like a security mismatch, else ""."""
        refused = kafka_security.refusal(self.errors, cfg.bootstrap_servers, cfg.security)
        if refused is None:
            return ""
        return (f" The broker refused the connection made with {cfg.security.describe()}: {refused}. Check "
                f"--security_protocol, --sasl_mechanism, --sasl_username, --sasl_password (or KAFKA_SECURITY_PROTOCOL, "
                f"KAFKA_SASL_*).")


def check_broker(producer: Any, cfg: ProducerConfig, errors: ClientErrors | None = None) -> int:
    """Fail fast if the broker does not answer; create the topic if it is missing.

    librdkafka would otherwise retry in the background for ever and only log,
    so a metadata request with a timeout is made before anything is queued.
    Returns the topic's partition count. Raises `ProducerError`.
    """
    try:
        metadata = producer.list_topics(timeout=cfg.broker_timeout_s)
    except KafkaException as exc:
        producer.poll(0.5)  # serves the error callback: a refused login is only reported there
        explained = errors.explain(cfg) if errors is not None else ""
        if explained:
            raise ProducerError(f"Kafka at {cfg.bootstrap_servers}: no metadata within "
                                f"{cfg.broker_timeout_s:g} s.{explained}") from exc
        raise ProducerError(
            f"Kafka broker at {cfg.bootstrap_servers} did not answer within {cfg.broker_timeout_s:g} s "
            f"({exc.args[0].str() if exc.args else exc}); is it running? "
            f"(locally: python -m runners.local start)") from exc
    topic = metadata.topics.get(cfg.topic)
    if topic is not None and topic.error is None:
        return len(topic.partitions)
    # Created here rather than by the broker's auto-create, which would use the
    # broker's default partition count instead of DESIGN.md §2's.
    admin = AdminClient(admin_config(cfg))
    future = admin.create_topics([NewTopic(cfg.topic, num_partitions=cfg.partitions, replication_factor=1)],
                                 operation_timeout=cfg.broker_timeout_s)[cfg.topic]
    try:
        future.result(timeout=cfg.broker_timeout_s * 2)
        log.info("created topic %s with %d partitions", cfg.topic, cfg.partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ProducerError(f"topic {cfg.topic} does not exist and could not be created: {exc}") from exc
    return cfg.partitions


def create_producer(cfg: ProducerConfig) -> Producer:
    """A connected producer for `cfg.topic`: the broker answered and the topic exists."""
    errors = ClientErrors()
    producer = Producer({**kafka_config(cfg), "error_cb": errors})
    check_broker(producer, cfg, errors)
    return producer


def run_producer(
    cfg: ProducerConfig,
    records: Iterable[Record],
    *,
    rate: float | None = None,
    pacer: Pacer | None = None,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    stats_interval_s: float = market_config.PRODUCER_STATS_INTERVAL_S,
    producer: ProducerLike | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProduceStats:
    """Send `records` to `cfg.topic` until they run out, `duration_s` passes or `stop` is set.

    `rate` (records/s) paces with a token bucket; `pacer` paces otherwise (for
    example a `ReplayPacer`); neither means as fast as possible. The end is
    always a `flush` of up to `cfg.flush_timeout_s`; the returned stats say
    what was delivered, what failed and what was left unconfirmed. Without
    `producer`, one is created and the broker checked (`ProducerError`).
    """
    if rate and pacer is not None:
        raise ValueError("give either rate or pacer, not both")
    if rate:
        pacer = TokenBucket(rate)
    if producer is None:
        producer = create_producer(cfg)
    if stop is None:
        stop = threading.Event()
    stats = ProduceStats(started=clock())
    topic = cfg.topic
    produce = producer.produce
    poll = producer.poll
    produced = stats.produced
    callbacks: dict[str, Callable[[Any, Any], None]] = {}
    it = iter(records)
    deadline = stats.started + duration_s if duration_s else float("inf")
    reporter = _StatsReporter(stats, producer, rate, stats_interval_s, stats.started)
    last_ts = 0
    stats.stopped_by = "exhausted"
    try:
        while True:
            now = clock()
            if stop.is_set():
                stats.stopped_by = "stopped"
                break
            if now >= deadline:
                stats.stopped_by = "duration"
                break
            if now >= reporter.next_at:
                reporter.report(now, last_ts)
            if pacer is None:
                want = BATCH
            else:
                want = pacer.take(BATCH, now)
                if want == 0:
                    poll(max(pacer.wait_s(now), MIN_WAIT_S))
                    continue
            sent = 0
            for kind, key, value, ts in islice(it, want):
                callback = callbacks.get(kind) or callbacks.setdefault(kind, stats.on_delivery(kind))
                try:
                    produce(topic, value, key, on_delivery=callback, timestamp=ts)
                except BufferError:
                    if not _produce_when_room(producer, stop, topic, value, key, callback, ts):
                        break  # stopped while the queue was full: this record was never queued
                produced[kind] += 1
                sent += 1
                last_ts = ts
            poll(0)
            if sent < want and not stop.is_set():
                break  # the records ran out
    finally:
        remaining = producer.flush(cfg.flush_timeout_s)
        stats.finished = clock()
        if remaining:
            log.error("%d records not confirmed within the %g s flush timeout", remaining, cfg.flush_timeout_s)
    reporter.report(stats.finished, last_ts)
    return stats


def _produce_when_room(producer: ProducerLike, stop: threading.Event, topic: str, value: bytes,
                       key: bytes | None, callback: Callable[[Any, Any], None], ts: int) -> bool:
    """Retry a produce that met a full queue, serving deliveries meanwhile; False if stopped first."""
    while not stop.is_set():
        producer.poll(0.05)
        try:
            producer.produce(topic, value, key, on_delivery=callback, timestamp=ts)
            return True
        except BufferError:
            continue
    return False


class _StatsReporter:
    """The periodic stats line: target and actual rate, delivered, failed, queue length."""

    def __init__(self, stats: ProduceStats, producer: ProducerLike, rate: float | None,
                 interval_s: float, now: float) -> None:
        self.stats = stats
        self.producer = producer
        self.rate = rate
        self.interval_s = interval_s
        self.next_at = now + interval_s if interval_s > 0 else float("inf")
        self._last = (now, 0)

    def report(self, now: float, last_ts: int) -> None:
        last_now, last_delivered = self._last
        delivered = self.stats.total_delivered
        actual = (delivered - last_delivered) / (now - last_now) if now > last_now else 0.0
        lag_s = time.time() - last_ts / 1000.0 if last_ts else 0.0
        log.info("target %s/s actual %.0f/s produced %d delivered %d failed %d queued %d event-time lag %.1f s",
                 f"{self.rate:.0f}" if self.rate else "max", actual, self.stats.total_produced, delivered,
                 self.stats.total_failed, len(self.producer), lag_s)
        self._last = (now, delivered)
        if self.interval_s > 0:
            self.next_at = now + self.interval_s
