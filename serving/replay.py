"""Gap-free resume (DESIGN.md §8): a subscribe with `after` or `since` is replayed from Kafka, then handed over
to the live stream without a message twice or missing.

Each replay has a thread and a confluent-kafka consumer of its own (assign + seek, offsets_for_times for
`since`); it never reads serving's memory. A slow replay holds nothing but its own client: the fan-out only
appends to that client's hand-off buffer (serving.resume.Handoff, bounded in bytes). The steps:

  1. the start offset of every partition, from the broker's watermarks (serving.resume.start_offsets): a point
     the topic no longer retains gets an `error` and a plain subscribe (snapshot) instead;
  2. join the fan-out (Hub.begin_replay, `subscribed`): from here the channel's live messages for the client
     go to the hand-off;
  3. read the high watermarks: every message at or after them is fanned out after step 2, so reaches the
     hand-off; they are where the replay of a partition ends at the latest;
  4. read each partition from its start, deciding every record with Handoff.claim (a partition is done at its
     end or where the live stream took over), and send the client's symbols' new versions through its
     bounded mailbox a chunk at a time, waiting for it to drain instead of overflowing it (records are
     claimed only as they are sent, so what a slow client has not taken yet goes to the live stream once
     that reaches it);
  5. `replayed`, then the buffer in chunks as the client reads them, and the rest under the hub's lock,
     atomically with switching the hand-off to direct live delivery (Hub.end_replay).

Bounded: WS_REPLAY_MAX_CONCURRENT replays at once, WS_REPLAY_MAX_MESSAGES messages per replay,
WS_REPLAY_BUFFER_BYTES of live messages per replaying client (more: closed with 1008).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from market import codec
from market import config as mc
from market.kafka_security import KafkaSecurity
from serving import protocol
from serving.feed import METADATA_TIMEOUT_S, consumer_config
from serving.hub import Client, Hub
from serving.metrics import Metrics
from serving.records import MalformedRecord, decode_record
from serving.resume import Handoff, NewVersions, ResumeError, start_offsets
from serving.transport import text_frame

log = logging.getLogger(__name__)

BATCH = 500             # records taken per consume()
STALL_S = 30.0          # a client that reads nothing, or a broker that sends nothing, this long ends the replay
POLL_S = 0.2


@dataclass(frozen=True)
class ReplayLimits:
    """Bounds of the replays of one serving process (settings WS_REPLAY_*, docs/serving.md)."""

    max_concurrent: int = mc.WS_REPLAY_MAX_CONCURRENT
    max_messages: int = mc.WS_REPLAY_MAX_MESSAGES
    buffer_bytes: int = mc.WS_REPLAY_BUFFER_BYTES


class Gone(Exception):
    """The client left (or serving is stopping): the replay just ends."""


class Abandoned(Exception):
    """The replay cannot go on; the message is for the client, the outcome a label of
    serving_websocket_replays_ended."""

    def __init__(self, message: str, outcome: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def replay_config(bootstrap_servers: str, security: KafkaSecurity | None) -> dict[str, Any]:
    """The serving consumer's settings (serving.feed), for a short-lived reader of one topic."""
    return {**consumer_config(bootstrap_servers, security),
            # A replay is short; its prefetch is memory per running replay.
            "queued.max.messages.kbytes": 4096,
            # A start offset deleted by retention after it was checked must fail, not silently skip.
            "auto.offset.reset": "error",
            "client.id": "market-serving-replay"}


class Replays:
    """Starts the replays of resuming subscribes and bounds how many run at once."""

    def __init__(self, hub: Hub, metrics: Metrics, bootstrap_servers: str, topics: Mapping[str, str],
                 limits: ReplayLimits | None = None, security: KafkaSecurity | None = None) -> None:
        """`topics`: channel -> the topic it is replayed from."""
        self.hub, self.metrics = hub, metrics
        self.topics = dict(topics)
        self.limits = limits or ReplayLimits()
        self.config = replay_config(bootstrap_servers, security)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self.stopping = threading.Event()

    def running(self) -> int:
        """Replays running now."""
        with self._lock:
            return len(self._threads)

    def start(self, client: Client, channel: str, symbols: list[str], point: protocol.ResumePoint) -> None:
        """Replay `channel` for `client` from `point` in a thread of its own, or (at the limit) refuse with an
        `error` and a plain subscribe. The hub has checked the subscription and marked the channel resuming."""
        replay = Replay(self, client, channel, symbols, point)
        with self._lock:
            busy = len(self._threads) >= self.limits.max_concurrent
            if not busy:
                thread = threading.Thread(target=self._run, args=(replay,), daemon=True,
                                          name=f"ws-replay-{client.id}-{channel}")
                self._threads.add(thread)
                self.metrics.ws_replays.set(len(self._threads))
        if busy:
            self.metrics.ws_replay_ends.labels("busy").inc()
            why = (f"{self.limits.max_concurrent} replays are running, the most at once (WS_REPLAY_MAX_CONCURRENT)"
                   if self.limits.max_concurrent > 0 else "resume is off on this server (WS_REPLAY_MAX_CONCURRENT=0)")
            self.hub.refuse_resume(client, channel, symbols, f"cannot replay {channel} now: {why}; a snapshot "
                                                             f"follows instead (to resume later, unsubscribe first)")
            return
        thread.start()

    def _run(self, replay: Replay) -> None:
        try:
            outcome = replay.run()
        except Exception:   # a bug must not leave the client without an answer or hold a slot
            log.exception("replay of %s for WebSocket client %d failed", replay.channel, replay.client.id)
            outcome = "failed"
            try:
                replay.fail(f"cannot replay {replay.channel}: the replay failed on the server; "
                            f"a snapshot follows instead")
            except Exception:   # the client may be gone half-way; nothing more to tell it
                log.exception("could not tell WebSocket client %d", replay.client.id)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                self.metrics.ws_replays.set(len(self._threads))
        self.metrics.ws_replay_ends.labels(outcome).inc()

    def stop(self, timeout: float = 5.0) -> None:
        """End every running replay (serving is stopping)."""
        self.stopping.set()
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Replay:
    """One client's replay of one channel (the steps in the module's docstring)."""

    def __init__(self, replays: Replays, client: Client, channel: str, symbols: list[str],
                 point: protocol.ResumePoint) -> None:
        self.replays, self.hub, self.client = replays, replays.hub, client
        self.channel, self.symbols, self.point = channel, symbols, point
        self.topic = replays.topics[channel]
        self.handoff: Handoff | None = None
        self.sent = 0

    def run(self) -> str:
        """Replay, hand over; the outcome (a label of serving_websocket_replays_ended)."""
        consumer = Consumer(self.replays.config, logger=logging.getLogger("serving.librdkafka"))
        try:
            try:
                start = self._start_offsets(consumer)
            except ResumeError as exc:
                self.fail(f"cannot replay {self.channel} from that point: {exc}; a snapshot follows instead")
                return "refused"
            handoff = Handoff(start, self.replays.limits.buffer_bytes)
            if not self.hub.begin_replay(self.client, self.channel, self.symbols, handoff):
                return "gone"
            self.handoff = handoff
            # Read after joining the fan-out: whatever is written from here on reaches the hand-off.
            end = {p: self._watermarks(consumer, p)[1] for p in start}
            self._read(consumer, handoff, start, end)
            self._check()
            self._deliver([text_frame(protocol.encode(protocol.replayed(self.channel, self.sent,
                                                                        dict(handoff.covered))))])
            self._hand_over(handoff)
            return "done"
        except Gone:
            return "gone"
        except Abandoned as exc:
            self.fail(str(exc))
            return exc.outcome
        except KafkaException as exc:
            self.fail(f"cannot replay {self.channel}: Kafka: {exc.args[0] if exc.args else exc}; "
                      f"a snapshot follows instead")
            return "failed"
        finally:
            consumer.close()

    def fail(self, message: str) -> None:
        """Tell the client and fall back to a plain subscription (snapshot, live)."""
        if self.handoff is None:
            self.hub.refuse_resume(self.client, self.channel, self.symbols, message)
        else:
            self.hub.abandon_replay(self.client, self.channel, self.symbols, self.handoff, message)

    # --- steps -------------------------------------------------------------
    def _watermarks(self, consumer: Consumer, partition: int) -> tuple[int, int]:
        return consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=METADATA_TIMEOUT_S,
                                              cached=False)

    def _start_offsets(self, consumer: Consumer) -> dict[int, int]:
        meta = consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT_S).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaException(f"topic {self.topic} unavailable: {meta.error if meta else 'missing'}")
        watermarks = {p: self._watermarks(consumer, p) for p in sorted(meta.partitions)}
        by_time = None
        if self.point.since is not None:
            found = consumer.offsets_for_times([TopicPartition(self.topic, p, self.point.since) for p in watermarks],
                                               timeout=METADATA_TIMEOUT_S)
            by_time = {tp.partition: tp.offset for tp in found}
        return start_offsets(self.point, watermarks, by_time)

    def _read(self, consumer: Consumer, handoff: Handoff, start: Mapping[int, int], end: Mapping[int, int]) -> None:
        """Send the new versions of the client's symbols in [start, end) of each partition, up to where the live
        stream took over. Records are claimed a chunk at a time, as the client reads: what a slow client has not
        taken yet is left to the live stream once that reaches it."""
        todo = {p for p in start if start[p] < end[p]}
        if not todo:
            return
        consumer.assign([TopicPartition(self.topic, p, start[p]) for p in sorted(todo)])
        subscription = self.client.subscriptions[self.channel]    # fixed while the channel resumes
        versions = NewVersions()
        chunk_bytes = self._chunk_bytes()
        quiet_since = time.monotonic()
        over: set[int] = set()      # partitions at their end, or taken over by the live stream
        while todo - over:
            self._check()
            batch = consumer.consume(BATCH, timeout=POLL_S)
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > STALL_S:
                raise Abandoned(f"cannot replay {self.channel}: the broker sent nothing for {STALL_S:g} s; "
                                f"a snapshot follows instead", "failed")
            records = []
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise KafkaException(err)
                record = self._decode(msg.value())
                frame = None
                if record is not None and subscription.matches(record["symbol"].upper()):
                    frame = text_frame(protocol.record_message(self.channel, msg.partition(), msg.offset(),
                                                               codec.dumps(record)))
                records.append((msg.partition(), msg.offset(), record, frame))
            index = 0
            while index < len(records):
                self._wait_for_room()
                chosen: list[bytes] = []
                size = 0
                with handoff.lock:
                    while index < len(records) and size < chunk_bytes:
                        partition, offset, record, frame = records[index]
                        index += 1
                        if partition in over or partition not in todo:
                            continue
                        if offset >= end[partition] or not handoff.claim(partition, offset):
                            over.add(partition)     # its end, or the live stream has it from here on
                            continue
                        if frame is not None and versions.is_new(self.channel, record):
                            chosen.append(frame)
                            size += len(frame)
                self._send_replayed(chosen)
            # position() steps over transaction markers, which no record shows.
            over |= {tp.partition for tp in consumer.position([TopicPartition(self.topic, p) for p in todo - over])
                     if tp.offset >= end[tp.partition]}
            if over & todo:
                consumer.pause([TopicPartition(self.topic, p) for p in over & todo])
                todo -= over

    def _send_replayed(self, frames: list[bytes]) -> None:
        """Queue replayed messages (room was waited for), within the replay's message limit."""
        limit = self.replays.limits.max_messages
        if self.sent + len(frames) > limit:
            raise Abandoned(f"replay of {self.channel} stopped: more than {limit} messages after that point "
                            f"(WS_REPLAY_MAX_MESSAGES); a snapshot follows instead", "too_many")
        if frames and not self.hub.deliver(self.client, b"".join(frames)):
            raise Gone()
        self.sent += len(frames)
        self.hub.metrics.ws_replayed.inc(len(frames))

    def _decode(self, value: bytes | None) -> dict[str, Any] | None:
        """The record as the feed checks it (serving.records), None if it is not one (the feed skips it too)."""
        try:
            return decode_record(value, bar=self.channel == protocol.CHANNEL_TRENDS)
        except MalformedRecord:
            return None
        except Exception:   # as the feed: whatever one record does, the rest go on
            return None

    def _hand_over(self, handoff: Handoff) -> None:
        """The live messages buffered during the replay, in chunks as the client reads them, then the rest and
        the switch to direct delivery at once."""
        chunk = self._chunk_bytes()
        while True:
            with handoff.lock:
                frames = handoff.take(chunk) if handoff.buffered_bytes > chunk else []
            if not frames:
                break
            self._deliver(frames)
        self._wait_for_room()
        if not self.hub.end_replay(self.client, self.channel, handoff):
            raise Gone()

    # --- writing to the client -----------------------------------------------
    def _chunk_bytes(self) -> int:
        return max(1, self.client.mailbox.max_bytes // 4)

    def _deliver(self, frames: list[bytes]) -> None:
        """Queue `frames` in chunks, each once the client's mailbox is at most half full."""
        chunk_bytes = self._chunk_bytes()
        start = 0
        while start < len(frames):
            stop, size = start, 0
            while stop < len(frames) and (stop == start or size + len(frames[stop]) <= chunk_bytes):
                size += len(frames[stop])
                stop += 1
            self._wait_for_room()
            if not self.hub.deliver(self.client, b"".join(frames[start:stop])):
                raise Gone()
            start = stop

    def _wait_for_room(self) -> None:
        """Wait until the client's mailbox is at most half full (a chunk fits); Gone if it leaves or stalls."""
        mailbox = self.client.mailbox
        deadline = time.monotonic() + STALL_S
        # In slices, so a stopping server does not wait for a client that reads nothing.
        while not mailbox.wait_below(mailbox.max_bytes // 2, POLL_S):
            self._check()
            if time.monotonic() > deadline:
                self.hub.evict(self.client, 1008, f"read nothing of its replay for {STALL_S:g} s: client too slow")
                raise Gone()
        self._check()

    def _check(self) -> None:
        if self.client.mailbox.state is not None or self.replays.stopping.is_set():
            raise Gone()
