"""Helpers for end-to-end tests: unique topic sets, a real-time tick script, output collection."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Producer

from runners.readers import TopicReader
from runners.topics import TopicSet
from runners.wait import wait_until
from tests.reference import Batch


class Collector(TopicReader):
    """Reads the three output topics of `topics` from the beginning in a background thread (runners/readers.py)."""

    def __init__(self, bootstrap: str, topics: TopicSet) -> None:
        self.topics_set = topics
        self.bars: list[dict] = []
        self.bar_received_ms: list[int] = []   # wall clock when each bar was read, parallel to bars
        self.alerts: list[dict] = []
        self.dead_letters: list[tuple[bytes | None, dict]] = []
        super().__init__(bootstrap, topics.outputs(), f"collect-{topics.ticks}", batch=500, timeout_s=0.2)

    def _handle(self, msgs: list) -> None:
        received = int(time.time() * 1000)
        with self.lock:
            for msg in msgs:
                if msg.error():
                    continue
                value = orjson.loads(msg.value())
                if msg.topic() == self.topics_set.trends:
                    assert msg.key() == value["symbol"].encode()
                    self.bars.append(value)
                    self.bar_received_ms.append(received)
                elif msg.topic() == self.topics_set.alerts:
                    assert msg.key() == value["symbol"].encode()
                    self.alerts.append(value)
                else:
                    self.dead_letters.append((msg.key(), value))
        return None

    def snapshot(self) -> tuple[list, list, list]:
        with self.lock:
            return list(self.bars), list(self.alerts), list(self.dead_letters)

    def wait_for(self, predicate, timeout_s: float, poll_s: float = 0.5) -> bool:
        """True once `predicate(bars, alerts, dead_letters)` holds within `timeout_s` (the caller says what failed)."""
        return bool(wait_until(lambda: predicate(*self.snapshot()), timeout_s, poll_s))


def final_bars(bars: list[dict]) -> dict[tuple[str, int], dict]:
    """The latest version (highest pane_index) of each (symbol, window_start)."""
    latest: dict[tuple[str, int], dict] = {}
    for bar in bars:
        key = (bar["symbol"], bar["window_start"])
        if key not in latest or bar["pane_index"] > latest[key]["pane_index"]:
            latest[key] = bar
    return latest


@dataclass
class TickScript:
    """Publishes ticks in real time and records each record for the reference.

    Every record is stamped (Kafka timestamp and tick timestamp) with event
    time, and remembered as a one-record `Batch` whose watermark is the wall
    clock minus `assumed_lag_ms`: the reference then judges lateness the way a
    pipeline keeping up with the wall clock does.
    """

    producer: Producer
    topic: str
    assumed_lag_ms: int = 1000
    batches: list[Batch] = field(default_factory=list)
    seqs: dict[str, int] = field(default_factory=dict)

    def send(self, key: str, value: bytes, timestamp_ms: int, partition: int | None = None,
             now_ms: int | None = None) -> None:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        kwargs = {"partition": partition} if partition is not None else {}
        self.producer.produce(self.topic, key=key.encode(), value=value, timestamp=timestamp_ms, **kwargs)
        self.producer.poll(0)
        self.batches.append(Batch(now_ms - self.assumed_lag_ms, [value], [key.encode()]))

    def tick(self, symbol: str, price: float, volume: float, timestamp_ms: int | None = None,
             partition: int | None = None) -> bytes:
        now_ms = int(time.time() * 1000)
        stamp = now_ms if timestamp_ms is None else timestamp_ms
        self.seqs[symbol] = self.seqs.get(symbol, 0) + 1
        value = orjson.dumps({"symbol": symbol, "price": round(price, 4), "volume": volume,
                              "timestamp": stamp, "seq": self.seqs[symbol]})
        self.send(symbol, value, stamp, partition, now_ms)
        return value

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


class RandomWalk:
    """Deterministic prices per symbol for a seed."""

    def __init__(self, symbols: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.prices = {s: 50.0 + 40 * i for i, s in enumerate(symbols)}

    def next(self, symbol: str) -> float:
        self.prices[symbol] *= 1 + self.rng.gauss(0, 0.0008)
        return self.prices[symbol]

    def volume(self) -> int:
        return self.rng.randint(1, 500)


def publish_for(script: TickScript, walk: RandomWalk, symbols: list[str], seconds: float) -> None:
    """Publish a tick of each symbol, each on its own partition, every 0.1 s for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for partition, symbol in enumerate(symbols):
            script.tick(symbol, walk.next(symbol), walk.volume(), partition=partition)
        time.sleep(0.1)
    script.flush()
