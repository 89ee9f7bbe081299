"""The Kafka feed: resume the output topics from the positions stored with the bars, then follow them live.

One background thread owns one confluent-kafka Consumer that is *assigned*
every partition of the bars, alerts and dead-letter topics (no consumer group sharing), so each serving
process sees everything. A partition the database has a position for resumes
there, rewound to the start of the windows still open (their EARLY panes are
only in Kafka; what is re-read before the stored position is applied to
memory, not written again); a partition it has none for replays the last
`history_hours`, as on a first start. Readiness is "caught up with the end
offsets seen at start and broker answering"; a broker outage is noticed by
the periodic watermark probe and heals by itself, because librdkafka
reconnects and the thread keeps its positions.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from market.kafka_security import KafkaSecurity
from market.schema import PANE_ON_TIME
from serving.database import DeadLetterRow
from serving.metrics import Metrics, reason_label
from serving.protocol import CHANNEL_ALERTS, CHANNEL_TRENDS
from serving.records import REASON_INTERNAL_ERROR, MalformedRecord, dead_letter_row, decode_record
from serving.updates import DEAD_LETTERS, Update, Updates

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0      # how often the broker is asked for watermarks (readiness, lag)
PROBE_TIMEOUT_S = 2.0       # per partition; an outage is reported within ~4 s
METADATA_TIMEOUT_S = 5.0   # start-up queries; short so stop() is not held up by a dead broker
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
BATCH = 500     # records taken at most per poll: what is already waiting, never waited for (a batch
                # is one write per WebSocket client: it must stay well below WS_QUEUE_BYTES)


def consumer_config(bootstrap_servers: str, security: KafkaSecurity | None = None) -> dict[str, Any]:
    """librdkafka settings of the serving consumer (connection security per DESIGN.md §10)."""
    return {
        **(security or KafkaSecurity()).librdkafka(),
        "bootstrap.servers": bootstrap_servers,
        # assign() needs no group, but librdkafka wants an id; a unique one
        # guarantees no two processes ever share partitions or offsets.
        "group.id": f"serving-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # Serve a new bar within tens of ms even on a quiet topic.
        "fetch.wait.max.ms": 100,
        # librdkafka prefetches up to 64 MiB by default, which a flood of large dead letters fills whenever
        # the store falls behind; 16 MiB is still seconds of bars at 10,000 a second.
        "queued.max.messages.kbytes": 16 * 1024,
        "reconnect.backoff.ms": 200,
        "reconnect.backoff.max.ms": 2000,
        "client.id": "market-serving",
    }


class KafkaFeed:
    """Background consumer of the trends, alerts and (if named) dead-letter topics feeding serving.updates."""

    def __init__(self, updates: Updates, metrics: Metrics, bootstrap_servers: str, trends_topic: str,
                 alerts_topic: str, history_hours: float, security: KafkaSecurity | None = None,
                 stored: dict[tuple[str, int], int] | None = None, reread_ms: int = 0,
                 dlq_topic: str | None = None) -> None:
        self.updates = updates
        self.security = security
        self.refused_login: str | None = None   # the broker's last "authentication failed", for /readyz
        self.metrics = metrics
        self.bootstrap_servers = bootstrap_servers
        self.trends_topic = trends_topic
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic or None
        self.topics = tuple(t for t in (trends_topic, alerts_topic, self.dlq_topic) if t)
        self.history_ms = int(history_hours * 3600 * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions: dict[tuple[str, int], int] = {}   # next offset to read, survives reconnects
        # Positions the database holds (all before them is stored) and how far
        # back of "now" to re-read for the windows still open.
        self._stored = dict(stored or {})
        self.reread_ms = reread_ms
        self.replayed = False
        self.broker_up = False
        self.status = "starting"

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Start the consumer thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="serving-kafka-feed", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def ready(self) -> bool:
        """True once history is replayed and while the broker answers."""
        return self.replayed and self.broker_up

    def _set(self, status: str, broker_up: bool | None = None) -> None:
        if broker_up is not None:
            if broker_up and not self.broker_up:
                log.info("Kafka broker reachable (%s)", self.bootstrap_servers)
            elif self.broker_up and not broker_up:
                log.warning("Kafka broker unreachable: %s", status)
            self.broker_up = broker_up
        self.status = status
        self.metrics.ready.set(1 if self.ready else 0)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._session()
                attempt = 0
            except Exception as exc:  # any failure: log, back off, rebuild the consumer
                self.metrics.consumer_errors.inc()
                # A refused login reaches only the error callback; the failing call just times out.
                refused, self.refused_login = self.refused_login, None
                self._set(f"Kafka refused the login: {refused}" if refused else f"consumer error: {exc}",
                          broker_up=False)
                log.warning("Kafka feed error (retrying): %s", exc)
                self._stop.wait(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1

    # --- one consumer's life -----------------------------------------------
    def _session(self) -> None:
        consumer = Consumer(consumer_config(self.bootstrap_servers, self.security), error_cb=self._on_error,
                            logger=logging.getLogger("serving.librdkafka"))
        try:
            assignment = self._assignment(consumer)
            consumer.assign(assignment)
            self.updates.reading_from({(tp.topic, tp.partition): tp.offset for tp in assignment if tp.offset >= 0})
            targets = self._pending(consumer, assignment) if not self.replayed else {}
            self._set("replaying" if not self.replayed else "following", broker_up=True)
            # Watermark queries on the consuming client queue behind its fetches
            # and stalled the live stream for ~0.5 s every probe: they get a
            # client (connection) and a thread of their own.
            session_over = threading.Event()
            prober = threading.Thread(target=self._probe_loop, args=(assignment, session_over),
                                      name="serving-kafka-probe", daemon=True)
            prober.start()
            try:
                self._follow(consumer, targets)
            finally:
                session_over.set()
                prober.join(PROBE_TIMEOUT_S * len(assignment) + 5)
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer, targets: dict[tuple[str, int], int]) -> None:
        """Hand records to the hub until stopped; marks the replay done on reaching `targets`."""
        while not self._stop.is_set():
            # consume(n, timeout) waits for n records or the timeout, which would
            # add up to the timeout to every bar's latency: wait for one, then drain.
            first = consumer.poll(0.2)
            if first is not None:
                self._handle([first, *consumer.consume(BATCH, timeout=0)])
            else:
                self.updates.flush_if_due()     # a quiet feed still writes its last group
            if not self.replayed and self._caught_up(consumer, targets):
                self.updates.flush_if_due(force=True)   # ready means stored: history reads the store
                self.replayed = True
                log.info("caught up: %s", self.updates.store.counts())
                self._set("following", broker_up=self.broker_up)

    def _probe_loop(self, assignment: list[TopicPartition], over: threading.Event) -> None:
        probe = Consumer(consumer_config(self.bootstrap_servers, self.security), logger=logging.getLogger("serving.librdkafka"))
        try:
            while not over.wait(PROBE_INTERVAL_S) and not self._stop.is_set():
                self._probe(probe, assignment)
        finally:
            probe.close()

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of the topics, at the remembered position or the start of the history."""
        start_ms = int(time.time() * 1000) - self.history_ms
        wanted: list[TopicPartition] = []
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise KafkaException(f"topic {topic} unavailable: {meta.error if meta else 'missing'}")
            wanted += [TopicPartition(topic, p, start_ms) for p in sorted(meta.partitions)]
        fresh = [tp for tp in wanted if (tp.topic, tp.partition) not in self._positions
                 and (tp.topic, tp.partition) not in self._stored]
        found = {(tp.topic, tp.partition): tp.offset
                 for tp in (consumer.offsets_for_times(fresh, timeout=METADATA_TIMEOUT_S) if fresh else [])}
        reread_ms = int(time.time() * 1000) - self.reread_ms
        resumed = [TopicPartition(tp.topic, tp.partition, reread_ms) for tp in wanted
                   if (tp.topic, tp.partition) not in self._positions and (tp.topic, tp.partition) in self._stored]
        rewound = {(tp.topic, tp.partition): tp.offset
                   for tp in (consumer.offsets_for_times(resumed, timeout=METADATA_TIMEOUT_S) if resumed else [])}
        out = []
        for tp in wanted:
            key = (tp.topic, tp.partition)
            if key in self._positions:
                offset = self._positions[key]
            elif key in self._stored:
                # From the stored position, or earlier to re-read the open windows' EARLY panes
                # (never later: what was produced while serving was down must be read).
                offset = self._stored[key]
                back = rewound.get(key, -1)
                if 0 <= back < offset:
                    offset = back
            else:
                offset = found.get(key, -1)
                if offset < 0:
                    # Nothing newer than the history start: begin at the end.
                    offset = consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)[1]
            if offset >= 0:
                # Where reading starts is the position until a record moves it: lag and
                # a reconnect before the first record both count from here.
                self._positions[key] = offset
            out.append(TopicPartition(tp.topic, tp.partition, offset if offset >= 0 else OFFSET_BEGINNING))
        log.info("assigned %d partitions of %s", len(out), ", ".join(self.topics))
        return out

    def _pending(self, consumer: Consumer, assignment: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Partitions with history to replay, and the high watermark to reach on each."""
        pending = {}
        for tp in assignment:
            partition = TopicPartition(tp.topic, tp.partition)
            high = consumer.get_watermark_offsets(partition, timeout=METADATA_TIMEOUT_S)[1]
            if tp.offset < high:
                pending[(tp.topic, tp.partition)] = high
        return pending

    def _caught_up(self, consumer: Consumer, targets: dict[tuple[str, int], int]) -> bool:
        if not targets:
            return True
        # position() (not the last offset seen) steps over transaction markers.
        for tp in consumer.position([TopicPartition(t, p) for t, p in targets]):
            if tp.offset < targets[(tp.topic, tp.partition)]:
                return False
        return True

    def _probe(self, consumer: Consumer, assignment: list[TopicPartition]) -> None:
        """Ask the broker for watermarks: sets broker_up and the lag gauges."""
        try:
            for tp in assignment:
                _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                         timeout=PROBE_TIMEOUT_S)
                pos = self._positions.get((tp.topic, tp.partition))
                lag = max(0, high - pos) if pos is not None else high
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        except KafkaException as exc:
            self._set(f"broker unreachable: {exc.args[0] if exc.args else exc}", broker_up=False)
            return
        self._set("following" if self.replayed else "replaying", broker_up=True)

    def _handle(self, messages: list[Any]) -> None:
        """Check each record of a batch, hand the valid ones to serving.updates in Kafka order (they are stored
        with the positions the batch reaches), then advance positions.

        An invalid record is skipped, counted by topic and reason and logged
        with its topic, partition and offset; the rest of the batch is applied.
        Positions move only after the batch is handled: if storing it fails, the
        session is rebuilt and re-reads the batch (re-applying is harmless).
        """
        records: list[Update] = []
        origins: list[Any] = []     # the message of each entry of `records`
        handled: dict[tuple[str, int], int] = {}
        consumed: dict[str, int] = {}   # counted per batch: a labelled inc() per record cost ~2 us
        received = time.time()
        # Latency is of live bars: a replayed history would report its age as pipeline -> serving.
        timed = self.replayed
        to_emit: list[float] = []       # the batch's hops, in seconds, observed at once (serving.metrics)
        on_time: list[float] = []
        to_serving: list[float] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                # Consumer errors are transient in librdkafka (it retries); log and go on.
                self.metrics.consumer_errors.inc()
                log.warning("consumer error on %s [%s]: %s", msg.topic(), msg.partition(), err)
                continue
            topic = msg.topic()
            handled[(topic, msg.partition())] = msg.offset() + 1
            consumed[topic] = consumed.get(topic, 0) + 1
            stored = self._stored.get((topic, msg.partition()))
            persist = stored is None or msg.offset() >= stored
            if topic == self.dlq_topic:
                row = self._dead_letter(msg)
                if row is not None:
                    records.append(Update(DEAD_LETTERS, row, persist=persist))
                    origins.append(msg)
                continue
            is_bar = topic == self.trends_topic
            try:
                record = decode_record(msg.value(), bar=is_bar)
            except MalformedRecord as exc:
                self._reject(msg, exc.reason, exc)
                continue
            except Exception as exc:  # whatever one record does, the feed goes on
                self._reject(msg, REASON_INTERNAL_ERROR, exc)
                continue
            if is_bar and timed and record["emitted_at"] is not None:
                # A bar from an older pipeline (the fields null) is not timed.
                emitted = record["emitted_at"]
                if record["last_tick_ms"] is not None:
                    to_emit.append((emitted - record["last_tick_ms"]) / 1000)
                if record["pane"] == PANE_ON_TIME:
                    on_time.append((emitted - record["window_end"]) / 1000)
                to_serving.append(received - emitted / 1000)
            records.append(Update(CHANNEL_TRENDS if is_bar else CHANNEL_ALERTS, record, persist,
                                  msg.partition(), msg.offset()))
            origins.append(msg)
        if records or handled:
            self.updates.apply(records, handled,
                               on_error=lambda i, exc: self._reject(origins[i], REASON_INTERNAL_ERROR, exc),
                               received=received if timed else None)
        self._positions.update(handled)
        for topic, n in consumed.items():
            self.metrics.consumed.labels(topic).inc(n)
        if to_serving:
            self.metrics.latency_event_to_emit.observe_many(to_emit)
            self.metrics.latency_on_time_delay.observe_many(on_time)
            self.metrics.latency_pipeline_to_serving.observe_many(to_serving)

    def _dead_letter(self, msg: Any) -> DeadLetterRow | None:
        """The row a record of the dead-letter topic is stored as, counted by its reason; None (counted and
        logged as rejected) if it is not a dead letter of DESIGN.md §6."""
        try:
            row = dead_letter_row(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
        except MalformedRecord as exc:
            self._reject(msg, exc.reason, exc)
            return None
        except Exception as exc:  # whatever one record does, the feed goes on
            self._reject(msg, REASON_INTERNAL_ERROR, exc)
            return None
        self.metrics.dead_letters.labels(reason_label(row.reason)).inc()
        return row

    def _reject(self, msg: Any, reason: str, exc: Exception) -> None:
        self.metrics.rejected.labels(msg.topic(), reason).inc()
        # The detail is cut: a hostile record must not flood the log either.
        log.warning("skipping record %s[%d]@%d (%s): %s", msg.topic(), msg.partition(), msg.offset(), reason,
                    str(exc)[:200])

    def _on_error(self, err: KafkaError) -> None:
        self.metrics.consumer_errors.inc()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set("all brokers down", broker_up=False)
        elif err.code() == KafkaError._AUTHENTICATION:
            self.refused_login = err.str()
        else:
            log.info("Kafka client: %s", err)
