"""The per-app serving state (store, hub, feed, metrics), registered on app.extensions."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from market import kafka_security
from serving.database import BarDatabase, open_database
from serving.feed import KafkaFeed
from serving.hub import Hub, Limits
from serving.latency import LatencyWindow
from serving.metrics import Metrics
from serving.protocol import CHANNEL_ALERTS, CHANNEL_TRENDS
from serving.replay import ReplayLimits, Replays
from serving.store import MarketStore
from serving.updates import Updates

EXTENSION = "market_serving"
PRUNE_EVERY_S = 600.0
REREAD_MARGIN_MS = 10_000   # before the open window: its first EARLY panes may carry a slightly earlier timestamp
log = logging.getLogger(__name__)


class Retention:
    """Deletes what is older than `history_days` from the store, in a thread of its own (never on a request)."""

    def __init__(self, db: BarDatabase, metrics: Metrics, history_days: float) -> None:
        self.db, self.metrics, self.history_ms = db, metrics, int(history_days * 86_400_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def prune_once(self) -> int:
        """Delete everything older than the retention now; the number of bars deleted."""
        deleted = self.db.prune(int(time.time() * 1000) - self.history_ms)
        self.metrics.store_pruned.inc(deleted)
        return deleted

    def _run(self) -> None:
        wait = 5.0      # the first round soon after start, then every PRUNE_EVERY_S
        while not self._stop.wait(wait):
            wait = PRUNE_EVERY_S
            try:
                deleted = self.prune_once()
                if deleted:
                    log.info("retention: deleted %d bars older than %.1f days", deleted, self.history_ms / 86_400_000)
            except Exception as exc:  # a busy or unreachable database: try again next round
                log.warning("retention failed (will retry): %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


@dataclass
class ServingState:
    """Everything one app instance owns; `feed` and `replays` are None when CONSUME is off (tests feeding the hub)."""

    store: MarketStore
    hub: Hub
    metrics: Metrics
    feed: KafkaFeed | None
    updates: Updates
    db: BarDatabase
    retention: Retention
    latency: LatencyWindow
    window_ms: int = 60_000
    replays: Replays | None = None

    @property
    def replayed(self) -> bool:
        """True once the initial history is in the store."""
        return self.feed is None or self.feed.replayed

    @property
    def ready(self) -> bool:
        """True when /readyz answers 200."""
        return self.feed is None or self.feed.ready

    @property
    def status(self) -> str:
        """A short human-readable state of the feed."""
        return "consumer disabled" if self.feed is None else self.feed.status

    def close(self) -> None:
        """Stop the feed, replay and retention threads and close the database."""
        if self.replays is not None:
            self.replays.stop()
        if self.feed is not None:
            self.feed.stop()
        self.retention.stop()
        self.db.close()


def init_app(app: Flask) -> ServingState:
    """Build the state from app.config and start the Kafka feed if CONSUME is on."""
    cfg: Any = app.config
    metrics = Metrics()
    started = time.monotonic()
    db = open_database(cfg["DATABASE_URL"])
    store = MarketStore(db, cfg["WINDOWS_IN_MEMORY"], cfg["ALERTS_KEPT"])
    loaded = store.load()
    log.info("loaded the newest window of %d symbols from %s in %.2f s", loaded, db.describe(),
             time.monotonic() - started)
    window_ms = cfg["WINDOW_SIZE_S"] * 1000
    hub = Hub(store, metrics, Limits(queue_bytes=cfg["WS_QUEUE_BYTES"], close_grace_s=cfg["WS_CLOSE_GRACE_S"],
                                     max_clients=cfg["WS_MAX_CONNECTIONS"], max_symbols=cfg["WS_MAX_SYMBOLS"],
                                     message_rate=cfg["WS_MESSAGE_RATE"], message_burst=cfg["WS_MESSAGE_BURST"]))
    topics = {CHANNEL_TRENDS: cfg["OUTPUT_TOPIC"], CHANNEL_ALERTS: cfg["ALERTS_TOPIC"]}
    updates = Updates(db, store, hub, metrics, channels={topic: channel for channel, topic in topics.items()})
    feed = replays = None
    if cfg["CONSUME"]:
        security = kafka_security.from_mapping({name: cfg.get(env) for name, env in kafka_security.ENV.items()})
        # Re-read from a little before the open window's start: its EARLY panes are only in Kafka.
        now_ms = int(time.time() * 1000)
        feed = KafkaFeed(updates, metrics, cfg["KAFKA_BOOTSTRAP_SERVERS"], cfg["OUTPUT_TOPIC"],
                         cfg["ALERTS_TOPIC"], cfg["HISTORY_HOURS"], security=security,
                         stored=db.offsets(), reread_ms=now_ms % window_ms + REREAD_MARGIN_MS,
                         dlq_topic=cfg["DLQ_TOPIC"])
        replays = Replays(hub, metrics, cfg["KAFKA_BOOTSTRAP_SERVERS"], topics,
                          ReplayLimits(max_concurrent=cfg["WS_REPLAY_MAX_CONCURRENT"],
                                       max_messages=cfg["WS_REPLAY_MAX_MESSAGES"],
                                       buffer_bytes=cfg["WS_REPLAY_BUFFER_BYTES"]), security)
        hub.replays = replays
        feed.start()
    else:
        metrics.ready.set(1)
    retention = Retention(db, metrics, cfg["HISTORY_DAYS"])
    retention.start()
    serving_state = ServingState(store, hub, metrics, feed, updates, db, retention,
                                 LatencyWindow(metrics.bar_latency), window_ms, replays)
    app.extensions[EXTENSION] = serving_state
    return serving_state


def state() -> ServingState:
    """The serving state of the current app."""
    return current_app.extensions[EXTENSION]
