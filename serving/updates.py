"""The write path: feed → updates → hub. A batch of checked records is applied, pushed, then stored.

For each batch, in Kafka order:
  1. every record is encoded once (a record that cannot be encoded goes no further);
  2. under the hub's lock, each record is applied to the live state
     (serving.store: only a newer version of its window counts) and the new
     versions are framed, with the Kafka position they came from, and fanned
     out to the WebSocket clients that want them; the hub learns how far the
     batch reached on each partition (resume points, serving.resume);
  3. its bars of record (final panes) and alerts join the pending group with
     the Kafka positions the batch reaches; the group goes to the database in
     one transaction (serving.database) once it holds GROUP_ROWS rows or is
     GROUP_S old (the feed calls `flush_if_due` while idle too).
Dead letters (DESIGN.md §6) take only step 3: they are stored, never kept in
memory or pushed. A group is also written once its dead letters hold
GROUP_BYTES of text, so a flood of large ones costs memory of one group.
Grouping matters when catching up: a batch of 500 bars of 500 symbols
touches 500 pages of the store; a group of 20,000 touches each page for
several bars (ingest ~1.4x faster at 10,000 symbols). Positions are stored
with the rows they cover, so a crash loses only a group not yet written,
and a restart reads it again from Kafka. If a write fails it raises and the
group stays pending (the feed rebuilds its consumer and goes on from its
positions); the next write takes it along.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from market import codec
from serving import protocol
from serving.database import BarDatabase, DeadLetterRow, Offsets
from serving.hub import Fresh, Hub
from serving.metrics import Metrics
from serving.records import check_alert, check_bar
from serving.store import MarketStore
from serving.transport import text_frame

log = logging.getLogger(__name__)

OFFSETS_EVERY_S = 1.0   # a batch with nothing to store still records its positions this often
GROUP_ROWS = 20_000     # bars and alerts written in one transaction at most ...
GROUP_S = 0.25          # ... or after this long
GROUP_BYTES = 8 * 1024 * 1024   # ... or once its dead letters hold this much JSON
DEAD_LETTERS = "dead_letters"   # the channel of an Update holding a DeadLetterRow (no WebSocket channel)


class Update(NamedTuple):
    """One checked record of a batch; `persist` False for a record the database already has (a re-read).

    `record` is a bar or an alert (a dict), or a DeadLetterRow on channel DEAD_LETTERS; `partition` and
    `offset` its Kafka position (None for a record that did not come from Kafka).
    """

    channel: str
    record: Any
    persist: bool = True
    partition: int | None = None
    offset: int | None = None


class Updates:
    """Applies batches to the database, the live state and the WebSocket clients, in that order."""

    def __init__(self, db: BarDatabase, store: MarketStore, hub: Hub, metrics: Metrics,
                 channels: Mapping[str, str] | None = None) -> None:
        """`channels`: topic -> the WebSocket channel its records go to (the feed's bars and alerts topics)."""
        self.db, self.store, self.hub, self.metrics = db, store, hub, metrics
        self.channels = dict(channels or {})
        self._offsets_written = 0.0
        self._finals: list[dict[str, Any]] = []
        self._alerts: list[dict[str, Any]] = []
        self._offsets: Offsets = {}
        self._dead_letters: list[DeadLetterRow] = []
        self._dead_letter_bytes = 0
        self._since = 0.0                  # when the oldest pending row joined the group

    def _rows(self) -> int:
        return len(self._finals) + len(self._alerts) + len(self._dead_letters)

    def reading_from(self, starts: Offsets) -> None:
        """The feed reads each (topic, partition) from these offsets on: what lies before them is as handled
        as it will ever be (older than the history serving keeps, or stored), so resume points cover it, and a
        client resuming from a snapshot is not replayed a partition the feed has had nothing new from."""
        if self.channels:
            with self.hub.lock:
                self.hub.advance({(self.channels[topic], partition): start - 1
                                  for (topic, partition), start in starts.items()
                                  if topic in self.channels and start > 0})

    def apply(self, updates: list[Update], offsets: Offsets | None = None,
              on_error: Callable[[int, Exception], None] | None = None, flush: bool = False,
              received: float | None = None) -> int:
        """Apply, push and store a batch (`flush`: write it now); the number of new versions.
        Raises if a database write fails.

        A record that still fails (it cannot be encoded, say) is skipped and
        reported to `on_error(index, exc)` (logged if None): the rest of the batch is applied.
        `received` (time.time() when the batch came from Kafka) times the hop to the WebSocket clients.
        """
        encoded: list[tuple[int, Update, bytes]] = []
        rows = self._rows()
        for index, update in enumerate(updates):
            if update.channel == DEAD_LETTERS:
                if update.persist:
                    self._dead_letters.append(update.record)
                    self._dead_letter_bytes += len(update.record.body)
                continue
            try:
                encoded.append((index, update, codec.dumps(update.record)))
            except Exception as exc:  # one record, whatever is wrong with it, must not stop the batch
                self._failed(index, update, exc, on_error)
        with self.hub.lock:
            fresh: list[Fresh] = []
            for index, update, data in encoded:
                record = update.record
                try:
                    if update.channel == protocol.CHANNEL_TRENDS:
                        kept = self.store.apply_bar(record, data)
                    else:
                        kept = self.store.apply_alert(record)
                    symbol = record["symbol"].upper()
                except Exception as exc:
                    self._failed(index, update, exc, on_error)
                    continue
                if kept:
                    frame = text_frame(protocol.record_message(update.channel, update.partition, update.offset, data))
                    fresh.append(Fresh(update.channel, symbol, frame, update.partition, update.offset))
            if fresh:
                sent = self.hub.fan_out(fresh)
                if sent and received is not None:
                    # Kafka receipt to the last client's socket (or its mailbox, for a client behind).
                    self.metrics.latency_to_websocket.observe(time.time() - received)
            if offsets and self.channels:
                # Every record of the batch is handled now, skipped ones too: the next offset less one.
                self.hub.advance({(self.channels[topic], partition): following - 1
                                  for (topic, partition), following in offsets.items() if topic in self.channels})
        for _, update, _ in encoded:
            if update.persist:
                if update.channel == protocol.CHANNEL_ALERTS:
                    self._alerts.append(update.record)
                elif update.record["is_final"]:
                    self._finals.append(update.record)
        if offsets:
            self._offsets.update(offsets)
        if not rows and self._rows():
            self._since = time.monotonic()
        self.flush_if_due(force=flush)
        return len(fresh)

    def flush_if_due(self, force: bool = False) -> None:
        """Write the pending group if it is full, old enough, or `force`; raises if the write fails."""
        rows = self._rows()
        now = time.monotonic()
        if not (rows or self._offsets):
            return
        due = (force or rows >= GROUP_ROWS or self._dead_letter_bytes >= GROUP_BYTES
               or (rows and now - self._since >= GROUP_S)
               or (not rows and now - self._offsets_written >= OFFSETS_EVERY_S))
        if not due:
            return
        started = time.perf_counter()
        self.db.write(self._finals, self._alerts, self._offsets, self._dead_letters)
        self.metrics.store_write.observe(time.perf_counter() - started)
        self.metrics.stored.labels("bars").inc(len(self._finals))
        self.metrics.stored.labels("alerts").inc(len(self._alerts))
        self.metrics.stored.labels("dead_letters").inc(len(self._dead_letters))
        self._finals, self._alerts, self._offsets, self._dead_letters = [], [], {}, []
        self._dead_letter_bytes = 0
        self._offsets_written = now

    @staticmethod
    def _failed(index: int, update: Update, exc: Exception, on_error: Callable[[int, Exception], None] | None) -> None:
        if on_error is None:
            log.warning("skipping %s record: %s", update.channel, exc)
        else:
            on_error(index, exc)

    # --- for tests, benchmarks and tools: records that did not come from Kafka ----------
    def publish_bar(self, bar: dict[str, Any]) -> bool:
        """Check, store and push `bar` if it is a new version; True if it was new. Raises MalformedRecord."""
        return self.apply([Update(protocol.CHANNEL_TRENDS, check_bar(bar))], flush=True) == 1

    def publish_alert(self, alert: dict[str, Any]) -> bool:
        """Check, store and push `alert` if its id is new; True if it was new. Raises MalformedRecord."""
        return self.apply([Update(protocol.CHANNEL_ALERTS, check_alert(alert))], flush=True) == 1

    def publish_dead_letters(self, rows: list[DeadLetterRow]) -> None:
        """Store dead letters (checked by serving.records) at once."""
        self.apply([Update(DEAD_LETTERS, row) for row in rows], flush=True)

    def publish_many(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Push and store (channel, checked record) pairs in order, written at once; the number that were new."""
        return self.apply([Update(channel, record) for channel, record in records], flush=True)
