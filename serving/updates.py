"""The write path: feed → updates → hub. A batch of checked records is stored, then applied, then pushed.

For each batch, in Kafka order:
  1. every record is encoded once (a record that cannot be encoded goes no further);
  2. its bars of record (final panes) and alerts go to the database with the
     Kafka positions the batch reaches, in one transaction (serving.database);
  3. under the hub's lock, each record is applied to the live state
     (serving.store: only a newer version of its window counts) and the new
     versions are framed and fanned out to the WebSocket clients that want them.
If step 2 fails the batch raises: the feed rebuilds its consumer at the old
positions and reads the batch again (every step is idempotent).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from market import codec
from serving import protocol
from serving.database import BarDatabase, Offsets
from serving.hub import Hub
from serving.metrics import Metrics
from serving.records import check_alert, check_bar
from serving.store import MarketStore
from serving.transport import text_frame

log = logging.getLogger(__name__)

OFFSETS_EVERY_S = 1.0   # a batch with nothing to store still records its positions this often


class Update(NamedTuple):
    """One checked record of a batch; `persist` False for a record the database already has (a re-read)."""

    channel: str
    record: dict[str, Any]
    persist: bool = True


class Updates:
    """Applies batches to the database, the live state and the WebSocket clients, in that order."""

    def __init__(self, db: BarDatabase, store: MarketStore, hub: Hub, metrics: Metrics) -> None:
        self.db, self.store, self.hub, self.metrics = db, store, hub, metrics
        self._offsets_written = 0.0

    def apply(self, updates: list[Update], offsets: Offsets | None = None,
              on_error: Callable[[int, Exception], None] | None = None) -> int:
        """Store, apply and push a batch; the number of new versions. Raises if the database write fails.

        A record that still fails (it cannot be encoded, say) is skipped and
        reported to `on_error(index, exc)` (logged if None): the rest of the batch is applied.
        """
        encoded: list[tuple[int, Update, bytes]] = []
        for index, update in enumerate(updates):
            try:
                encoded.append((index, update, codec.dumps(update.record)))
            except Exception as exc:  # one record, whatever is wrong with it, must not stop the batch
                self._failed(index, update, exc, on_error)
        finals = [u.record for _, u, _ in encoded
                  if u.persist and u.channel == protocol.CHANNEL_TRENDS and u.record["is_final"]]
        alerts = [u.record for _, u, _ in encoded if u.persist and u.channel == protocol.CHANNEL_ALERTS]
        now = time.monotonic()
        if finals or alerts or (offsets and now - self._offsets_written >= OFFSETS_EVERY_S):
            started = time.perf_counter()
            self.db.write(finals, alerts, offsets or {})
            self.metrics.store_write.observe(time.perf_counter() - started)
            self.metrics.stored.labels("bars").inc(len(finals))
            self.metrics.stored.labels("alerts").inc(len(alerts))
            self._offsets_written = now
        with self.hub.lock:
            fresh: list[tuple[str, str, bytes]] = []
            for index, update, data in encoded:
                record = update.record
                try:
                    if update.channel == protocol.CHANNEL_TRENDS:
                        kept = self.store.apply_bar(record, data)
                        frame = text_frame(b'{"type":"trend","data":' + data + b"}")
                    else:
                        kept = self.store.apply_alert(record)
                        frame = text_frame(b'{"type":"alert","data":' + data + b"}")
                    symbol = record["symbol"].upper()
                except Exception as exc:
                    self._failed(index, update, exc, on_error)
                    continue
                if kept:
                    fresh.append((update.channel, symbol, frame))
            if fresh:
                self.hub.fan_out(fresh)
            return len(fresh)

    @staticmethod
    def _failed(index: int, update: Update, exc: Exception, on_error: Callable[[int, Exception], None] | None) -> None:
        if on_error is None:
            log.warning("skipping %s record: %s", update.channel, exc)
        else:
            on_error(index, exc)

    # --- for tests, benchmarks and tools: records that did not come from Kafka ----------
    def publish_bar(self, bar: dict[str, Any]) -> bool:
        """Check, store and push `bar` if it is a new version; True if it was new. Raises MalformedRecord."""
        return self.apply([Update(protocol.CHANNEL_TRENDS, check_bar(bar))]) == 1

    def publish_alert(self, alert: dict[str, Any]) -> bool:
        """Check, store and push `alert` if its id is new; True if it was new. Raises MalformedRecord."""
        return self.apply([Update(protocol.CHANNEL_ALERTS, check_alert(alert))]) == 1

    def publish_many(self, records: list[tuple[str, dict[str, Any]]]) -> int:
        """Store and push (channel, checked record) pairs in order; the number that were new."""
        return self.apply([Update(channel, record) for channel, record in records])
