"""The per-app serving state (store, hub, feed, metrics), registered on app.extensions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from market import kafka_security
from serving.feed import KafkaFeed
from serving.hub import Hub, Limits
from serving.metrics import Metrics
from serving.store import MarketStore

EXTENSION = "market_serving"


@dataclass
class ServingState:
    """Everything one app instance owns; `feed` is None when CONSUME is off (tests feeding the hub)."""

    store: MarketStore
    hub: Hub
    metrics: Metrics
    feed: KafkaFeed | None

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
        """Stop the feed thread."""
        if self.feed is not None:
            self.feed.stop()


def init_app(app: Flask) -> ServingState:
    """Build the state from app.config and start the Kafka feed if CONSUME is on."""
    cfg: Any = app.config
    metrics = Metrics()
    store = MarketStore(cfg["BARS_PER_SYMBOL"], cfg["ALERTS_KEPT"])
    hub = Hub(store, metrics, Limits(queue_bytes=cfg["WS_QUEUE_BYTES"], close_grace_s=cfg["WS_CLOSE_GRACE_S"],
                                     max_clients=cfg["WS_MAX_CONNECTIONS"], max_symbols=cfg["WS_MAX_SYMBOLS"],
                                     message_rate=cfg["WS_MESSAGE_RATE"], message_burst=cfg["WS_MESSAGE_BURST"]))
    feed = None
    if cfg["CONSUME"]:
        feed = KafkaFeed(hub, metrics, cfg["KAFKA_BOOTSTRAP_SERVERS"], cfg["OUTPUT_TOPIC"],
                         cfg["ALERTS_TOPIC"], cfg["HISTORY_HOURS"],
                         security=kafka_security.from_mapping({name: cfg.get(env) for name, env in
                                                               kafka_security.ENV.items()}))
        feed.start()
    else:
        metrics.ready.set(1)
    serving_state = ServingState(store, hub, metrics, feed)
    app.extensions[EXTENSION] = serving_state
    return serving_state


def state() -> ServingState:
    """The serving state of the current app."""
    return current_app.extensions[EXTENSION]
