"""Gap-free WebSocket resume (DESIGN.md §8) against the real broker.

Clients that drop and come back with `after` or `since` while bars keep flowing end with exactly the messages
of a client that never left; the hand-off is exact whether serving's feed is behind the replay or catches up
during it; a point the topic no longer retains, bad points and the replay limits give their errors.
"""
from __future__ import annotations

import random
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from market import codec
from serving.database import SqliteDatabase
from serving.hub import Client, Hub
from serving.metrics import Metrics
from serving.protocol import ResumePoint
from serving.records import decode_record
from serving.replay import ReplayLimits, Replays
from serving.store import MarketStore
from serving.updates import Update, Updates
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar
from tests.serving.test_fanout import messages
from tests.serving.test_kafka_integration import BASE, get, publish, serving_config
from tests.serving.test_websocket import assert_silent, close_code, recv, send
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOG", "META", "IBM"]


class Topics:
    """Fresh bars, alerts and dead-letter topics and a live server reading them."""

    def __init__(self, make_topic: Callable[..., str], bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.trends, self.alerts, self.dlq = make_topic("resume_trends"), make_topic("resume_alerts"), \
            make_topic("resume_dlq", 1)

    def serve(self, live_server: Callable[..., LiveServer], **extra: Any) -> LiveServer:
        server = live_server(serving_config(self.bootstrap, self.trends, self.alerts, self.dlq,
                                            WS_HEARTBEAT_S=60, **extra))
        wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness")
        return server


@pytest.fixture
def topics(make_topic: Callable[..., str], kafka_bootstrap: str) -> Topics:
    return Topics(make_topic, kafka_bootstrap)


class Publisher(threading.Thread):
    """Keeps producing bar versions (EARLY panes, then ON_TIME) of SYMBOLS and now and then an alert, and
    notes where each landed: `landed[channel][partition]` = [(offset, record) ...]."""

    def __init__(self, topics: Topics, steps: int, pause_s: float) -> None:
        super().__init__(name="resume-publisher", daemon=True)
        self.topics, self.steps, self.pause_s = topics, steps, pause_s
        self.landed: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]] = {
            "trends": defaultdict(list), "alerts": defaultdict(list)}
        self.error: BaseException | None = None

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.error = RuntimeError(str(err))
            return
        channel = "trends" if msg.topic() == self.topics.trends else "alerts"
        self.landed[channel][msg.partition()].append((msg.offset(), codec.loads(msg.value())))

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.topics.bootstrap, "linger.ms": 5})
        try:
            for step in range(self.steps):
                minute, pane = divmod(step, 10)
                for i, symbol in enumerate(SYMBOLS):
                    record = bar(symbol, minute, 100.0 + i + step / 100, pane_index=pane, base_ms=BASE)
                    producer.produce(self.topics.trends, key=symbol.encode(), value=codec.dumps(record),
                                     on_delivery=self._delivered)
                if pane == 9:
                    symbol = SYMBOLS[minute % len(SYMBOLS)]
                    producer.produce(self.topics.alerts, key=symbol.encode(),
                                     value=codec.dumps(alert(symbol, minute, base_ms=BASE)),
                                     on_delivery=self._delivered)
                producer.poll(0)
                time.sleep(self.pause_s)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            producer.flush(10)

    def expected(self, channel: str, symbols: set[str] | None = None) -> dict[int, list[tuple[int, Any]]]:
        """Per partition, the (offset, record)s of `symbols` (None: all) in Kafka order."""
        out = {}
        for partition, landed in self.landed[channel].items():
            out[partition] = [(o, r) for o, r in sorted(landed, key=lambda x: x[0])
                              if symbols is None or r["symbol"] in symbols]
        return out


class Reader(threading.Thread):
    """A WebSocket client subscribed to both channels; with `mode` "after" or "since" it disconnects at random
    points and resumes; with None it never leaves. Records every connection's messages."""

    def __init__(self, server: LiveServer, symbols: list[str], mode: str | None, rng: random.Random,
                 publisher: Publisher) -> None:
        super().__init__(name=f"resume-reader-{mode}", daemon=True)
        self.server, self.symbols, self.mode, self.rng, self.publisher = server, symbols, mode, rng, publisher
        # One entry per connection: the resume point per channel (None at first) and the messages received.
        self.connections: list[dict[str, Any]] = []
        self.done = threading.Event()          # set by the test once every message was produced and seen
        self.error: BaseException | None = None

    def seen(self, channel: str) -> dict[int, list[tuple[int, Any]]]:
        """Per partition, every (offset, data) received on `channel`, in arrival order, across connections."""
        out: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for connection in self.connections:
            for message in connection["messages"]:
                if message["type"] == ("trend" if channel == "trends" else "alert"):
                    out[message["partition"]].append((message["offset"], message["data"]))
        return out

    def unique(self, channel: str) -> dict[int, list[tuple[int, Any]]]:
        """`seen`, keeping the first of each offset (a `since` resume may overlap what a client had)."""
        out = {}
        for partition, received in self.seen(channel).items():
            firsts: dict[int, Any] = {}
            for offset, data in received:
                firsts.setdefault(offset, data)
            out[partition] = sorted(firsts.items(), key=lambda x: x[0])
        return out

    def _point(self, channel: str) -> dict[str, Any]:
        if self.mode == "after":
            highest: dict[str, int] = {}
            for partition, received in self.seen(channel).items():
                highest[str(partition)] = max(o for o, _ in received)
            return {"after": highest}
        # A client knows when it received a message, not the record's timestamp. After a connection that was
        # live (the first, or one that got `replayed`): 2 s before its last message; after one cut in the
        # middle of its replay, the same point again.
        last = self.connections[-1]
        live = len(self.connections) == 1 or any(m["type"] == "replayed" and m["channel"] == channel
                                                 for m in last["messages"])
        return {"since": last["last_ms"] - 2000} if live else last["points"][channel]

    def run(self) -> None:
        try:
            while True:
                first = not self.connections
                ws = websocket.create_connection(self.server.ws_url, timeout=10)
                connection: dict[str, Any] = {"points": {}, "messages": [], "last_ms": int(time.time() * 1000)}
                assert recv(ws)["type"] == "welcome"
                for channel in ("trends", "alerts"):
                    point = {} if first else self._point(channel)
                    connection["points"][channel] = point
                    send(ws, {"action": "subscribe", "channel": channel, "symbols": self.symbols, **point})
                self.connections.append(connection)
                # The last connection of a resuming client is the one made after the publisher finished.
                final = self.mode is None or self.publisher_done()
                budget = self.rng.randint(20, 400)
                while final or budget > 0:
                    if final and self.done.is_set():
                        ws.close()
                        return
                    ws.settimeout(0.2)
                    try:
                        message = codec.loads(ws.recv())
                    except websocket.WebSocketTimeoutException:
                        if not final and self.publisher_done():
                            break
                        continue
                    connection["messages"].append(message)
                    connection["last_ms"] = int(time.time() * 1000)
                    budget -= 1
                ws.close()      # at a random point, maybe in the middle of a replay
                time.sleep(self.rng.uniform(0, 0.3))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def publisher_done(self) -> bool:
        return self.publisher.ident is not None and not self.publisher.is_alive()


def divergence(reader: Reader, channel: str) -> list[Any]:
    """Where `reader` received an offset twice or out of order: (connection, partition, offset, previous), the
    connection's control messages."""
    kind = "trend" if channel == "trends" else "alert"
    last: dict[int, int] = {}
    for index, connection in enumerate(reader.connections):
        for message in connection["messages"]:
            if message["type"] == kind:
                p, o = message["partition"], message["offset"]
                if o <= last.get(p, -1):
                    return [index, p, o, last[p], connection["points"],
                            [m for m in connection["messages"] if m["type"] not in ("trend", "alert")],
                            [(m["partition"], m["offset"]) for m in connection["messages"] if m["type"] == kind][:40]]
                last[p] = o
    return []


def per_connection_streams(reader: Reader, channel: str, expected: dict[int, list[tuple[int, Any]]],
                           starts: list[dict[int, int]]) -> None:
    """Each connection got, per partition, a gap-free run of `expected` from its start offset, then (resumed)
    `replayed` with the count of the messages before it."""
    kind = "trend" if channel == "trends" else "alert"
    for index, (connection, start) in enumerate(zip(reader.connections, starts)):
        got: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for message in connection["messages"]:
            if message["type"] == kind:
                got[message["partition"]].append((message["offset"], message["data"]))
        for partition, received in got.items():
            tail = [entry for entry in expected.get(partition, []) if entry[0] >= start.get(partition, 0)]
            assert received == tail[:len(received)], (reader.mode, index, channel, partition, start,
                                                      connection["points"], received[:1], tail[:1])
        if index == 0:
            continue
        types = [m["type"] for m in connection["messages"] if m.get("channel", channel) == channel
                 and m["type"] in (kind, "replayed", "snapshot", "error")]
        assert "snapshot" not in types and "error" not in types, (
            reader.mode, index, [m for m in connection["messages"] if m["type"] == "error"][:1])
        if "replayed" in types:
            replayed = next(m for m in connection["messages"] if m["type"] == "replayed" and m["channel"] == channel)
            assert replayed["count"] == types.index("replayed"), (reader.mode, index, channel)


def test_clients_that_resume_end_with_exactly_the_messages_of_one_that_never_left(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Two resuming clients, two channels each, and the replays of connections just dropped still ending.
    server = topics.serve(live_server, WS_REPLAY_MAX_CONCURRENT=16)
    publisher = Publisher(topics, steps=280, pause_s=0.02)     # ~2,240 bars and 28 alerts over ~6 s
    subset = SYMBOLS[:5]
    a = Reader(server, ["*"], None, rng, publisher)
    b = Reader(server, subset, "after", random.Random(rng.random()), publisher)
    c = Reader(server, ["*"], "since", random.Random(rng.random()), publisher)
    for reader in (a, b, c):
        reader.start()
    wait_for(lambda: all(r.connections and len(r.connections[0]["messages"]) >= 4 for r in (a, b, c)), 10,
             "the three clients subscribed")
    publisher.start()
    publisher.join(60)
    assert publisher.error is None, publisher.error
    every = {channel: publisher.expected(channel) for channel in ("trends", "alerts")}
    mine = {channel: publisher.expected(channel, set(subset)) for channel in ("trends", "alerts")}

    def missing(reader: Reader, expected: dict[str, dict[int, list[tuple[int, Any]]]]) -> dict[str, Any]:
        """Per channel and partition, how many expected offsets `reader` lacks and how many it has that are not."""
        out = {}
        for ch in expected:
            have = {(p, o) for p, v in reader.unique(ch).items() for o, _ in v}
            want = {(p, o) for p, v in expected[ch].items() for o, _ in v}
            if have != want:
                out[ch] = (len(want - have), sorted(want - have)[:3], len(have - want))
        return out

    def lacking() -> dict[str | None, Any]:
        return {r.mode: missing(r, e) for r, e in ((a, every), (b, mine), (c, every))}
    def why() -> str:
        errors = [m for r in (b, c) for conn in r.connections for m in conn["messages"] if m["type"] == "error"]
        return (f"every message at every client (seed {seed}); lacking per client (missing, first missing, "
                f"extra): {lacking()}; reader errors {[r.error for r in (a, b, c)]}; connections "
                f"{[len(r.connections) for r in (a, b, c)]}; errors sent {errors[:2]}")
    wait_for(lambda: not any(lacking().values()), 30, why)
    for reader in (a, b, c):
        reader.done.set()
        reader.join(10)
        assert reader.error is None, (reader.mode, reader.error, seed)

    for channel in ("trends", "alerts"):
        # The client that never left: every message in Kafka order per partition, with its position and record.
        assert a.seen(channel) == {p: v for p, v in every[channel].items() if v}, (channel, seed)
        # `after`: nothing twice, nothing missing, each connection gap-free from its point.
        assert b.seen(channel) == {p: v for p, v in mine[channel].items() if v}, (channel, seed, divergence(b, channel))
        per_connection_streams(b, channel, mine[channel],
                               [{int(p): o + 1 for p, o in conn["points"][channel].get("after", {}).items()}
                                for conn in b.connections])
        # `since`: the same messages once its overlap is set aside; each connection from the first offset at or
        # after `since` of every partition.
        assert c.unique(channel) == {p: v for p, v in every[channel].items() if v}, (channel, seed)
        topic = topics.trends if channel == "trends" else topics.alerts
        per_connection_streams(c, channel, every[channel],
                               [offsets_at(topics.bootstrap, topic, conn["points"][channel].get("since"))
                                for conn in c.connections])
    resumes = [conn for reader in (b, c) for conn in reader.connections[1:]]
    assert len(resumes) >= 4, f"too few reconnects to prove anything (seed {seed})"

    def replayed_then_live(connection: dict[str, Any]) -> bool:
        types = [m["type"] for m in connection["messages"]]
        return "replayed" in types and "trend" in types[types.index("replayed"):] and types.count("trend") > \
            types[types.index("replayed"):].count("trend")
    assert any(replayed_then_live(conn) for conn in resumes), \
        f"no resume went from replayed bars to live ones (seed {seed})"
    metrics = server.state.metrics
    assert metrics.registry.get_sample_value("serving_websocket_replays_ended_total", {"outcome": "done"}) >= 2
    assert metrics.registry.get_sample_value("serving_websocket_replays") == 0


def offsets_at(bootstrap: str, topic: str, since: int | None) -> dict[int, int]:
    """Per partition, the first offset at or after `since` (None: the first connection, from where it was)."""
    if since is None:
        return {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "resume-test"})
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, since) for p in range(3)], timeout=10)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    finally:
        consumer.close()
    return {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found}


# --- the hand-off with serving's feed played by the test ---------------------------------------------------
class Feed:
    """The write path of serving (store, hub, updates, replays) with the test as its Kafka feed: it hands the
    topic's records to serving.updates as serving.feed does, as many as the test says, when it says."""

    def __init__(self, folder: Path, topics: Topics, queue_bytes: int) -> None:
        self.db = SqliteDatabase(folder / "market.db")
        self.db.init_schema()
        self.hub = Hub(MarketStore(self.db, 3, 100), Metrics())
        self.hub.limits = type(self.hub.limits)(queue_bytes=queue_bytes)
        self.updates = Updates(self.db, self.hub.store, self.hub, self.hub.metrics,
                               channels={topics.trends: "trends", topics.alerts: "alerts"})
        self.hub.replays = Replays(self.hub, self.hub.metrics, topics.bootstrap,
                                   {"trends": topics.trends, "alerts": topics.alerts}, ReplayLimits())
        self.topic = topics.trends
        self.consumer = Consumer({"bootstrap.servers": topics.bootstrap, "group.id": "resume-test-feed",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in range(3)])

    def feed(self, count: int) -> None:
        """Hand the next `count` records to serving.updates, in batches as the feed would."""
        while count > 0:
            batch = self.consumer.consume(min(count, 50), timeout=5)
            assert batch, "the topic ran dry"
            count -= len(batch)
            updates = [Update("trends", decode_record(m.value(), bar=True), True, m.partition(), m.offset())
                       for m in batch]
            self.updates.apply(updates, {(self.topic, m.partition()): m.offset() + 1 for m in batch})

    def close(self) -> None:
        self.hub.replays.stop()
        self.consumer.close()
        self.db.close()


def drain(client: Client, into: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read everything waiting in `client`'s mailbox onto `into` (the client reads, the replay goes on)."""
    into.extend(messages(client))
    return into


def landed(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "resume-test"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3)}
    finally:
        consumer.close()


@pytest.mark.parametrize("feed_during_replay", [False, True], ids=["feed-behind", "feed-catches-up-mid-replay"])
def test_the_hand_off_is_exact_whichever_of_feed_and_replay_is_ahead(
        topics: Topics, tmp_path: Path, feed_during_replay: bool) -> None:
    """The feed has handled 100 of 300 records when a client resumes from a point past it on two partitions;
    either the replay runs to the end before the feed moves (the feed then re-reads what the replay sent), or
    the feed catches up while the replay waits for the client (the live stream takes over mid-replay)."""
    records = [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, pane_index=1, base_ms=BASE) for i in range(300)]
    publish(topics.bootstrap, topics.trends, records)
    ends = landed(topics.bootstrap, topics.trends)
    parts = Feed(tmp_path, topics, queue_bytes=16 * 1024)
    try:
        parts.feed(100)
        client = parts.hub.connect()
        after = {0: ends[0] // 2, 1: ends[1] // 3}            # partition 2 from the start
        parts.hub.subscribe(client, "trends", ["*"], ResumePoint(after=after))
        wait_for(lambda: client.id in parts.hub._replaying["trends"], 10, "the replay joining the fan-out")
        handoff = parts.hub._replaying["trends"][client.id][1]
        got: list[dict[str, Any]] = []
        if feed_during_replay:
            # The client reads nothing yet: the replay waits at a half-full mailbox while the feed catches up.
            wait_for(lambda: client.mailbox.pending_bytes > 4 * 1024, 10, "the replay filling the mailbox")
            parts.feed(200)
            assert handoff.first_live, "the live stream buffered nothing: the case is not exercised"
        wait_for(lambda: any(m["type"] == "replayed" for m in drain(client, got)), 20, "replayed", poll_s=0.02)
        if not feed_during_replay:
            assert client.id in parts.hub._replaying["trends"]    # handed over, not settled: the feed is behind
            parts.feed(200)
        # The buffer goes to the client as it reads; then the hand-off settles (the feed is past the replay).
        wait_for(lambda: drain(client, got) is not None and client.id not in parts.hub._replaying["trends"],
                 10, "the hand-off settled", poll_s=0.02)
        publish(topics.bootstrap, topics.trends, [bar("AAPL", 99, 1.0, base_ms=BASE)])   # and one live bar after
        parts.feed(1)
        drain(client, got)
        assert client.mailbox.state is None
        types = [m["type"] for m in got]
        assert types[0] == "subscribed" and types.count("replayed") == 1
        trends = [(m["partition"], m["offset"]) for m in got if m["type"] == "trend"]
        expected = {(p, o) for p in range(3) for o in range(after.get(p, -1) + 1, ends[p])}
        final = landed(topics.bootstrap, topics.trends)
        expected |= {(p, o) for p in range(3) for o in range(ends[p], final[p])}
        assert len(trends) == len(set(trends)), "a message twice"
        assert set(trends) == expected
        for p in range(3):
            assert [o for q, o in trends if q == p] == sorted(o for q, o in expected if q == p)
        replayed = next(m for m in got if m["type"] == "replayed")
        assert replayed["count"] == types.index("replayed") - 1
        assert replayed["after"] == {str(p): o for p, o in sorted(handoff.covered.items())}
    finally:
        parts.close()


# --- points the topic cannot serve, bad points ---------------------------------------------------------------
def subscribe_and_collect(ws: websocket.WebSocket, message: dict[str, Any], count: int) -> list[dict[str, Any]]:
    send(ws, message)
    return [recv(ws) for _ in range(count)]


def publish_noting(bootstrap: str, topic: str, records: list[dict[str, Any]],
                   timestamp_ms: int | None = None) -> list[tuple[int, int, str]]:
    """Produce `records` keyed by symbol (stamped `timestamp_ms`, default now); where each landed:
    (partition, offset, symbol)."""
    landed: list[tuple[int, int, str]] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    stamp = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
    for record in records:
        producer.produce(topic, key=record["symbol"].encode(), value=codec.dumps(record), **stamp,
                         on_delivery=lambda err, msg: landed.append((msg.partition(), msg.offset(),
                                                                     msg.key().decode())))
    assert producer.flush(10) == 0
    return landed


def test_a_point_the_topic_cannot_serve_is_an_error_then_a_snapshot(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    placed = publish_noting(topics.bootstrap, topics.trends,
                            [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE) for i in range(80)])
    publish(topics.bootstrap, topics.alerts, [alert(SYMBOLS[i % 8], i, base_ms=BASE) for i in range(30)])
    ends = landed(topics.bootstrap, topics.trends)
    # Retention: the oldest records of AAPL's partition are gone (AAPL's first bar was the first record there).
    cut = next(p for p, _, symbol in placed if symbol == "AAPL")
    admin = AdminClient({"bootstrap.servers": topics.bootstrap})
    for future in admin.delete_records([TopicPartition(topics.trends, cut, 5)]).values():
        future.result()
    server = topics.serve(live_server)
    ws = websocket.create_connection(server.ws_url, timeout=10)
    recv(ws)
    other = (cut + 1) % 3
    cases = [({"after": {str(cut): 2}}, f"offset 2 of partition {cut} is no longer retained"),
             ({"since": BASE - 3_600_000}, f"older than what partition {cut} retains"),
             ({"after": {"7": 0}}, "no partition 7"),
             ({"after": {str(cut): 10, str(other): ends[other] + 5}}, "beyond its end")]
    for point, words in cases:
        error, subscribed, snapshot = subscribe_and_collect(
            ws, {"action": "subscribe", "channel": "trends", "symbols": ["*"], **point}, 3)
        assert error["type"] == "error" and words in error["message"] and "snapshot follows" in error["message"]
        assert subscribed["type"] == "subscribed" and snapshot["type"] == "snapshot"
        assert len(snapshot["data"]) == 8 and snapshot["after"] == {str(p): ends[p] - 1 for p in range(3)}
        # Subscribed now: a resume must wait for an unsubscribe.
        error, = subscribe_and_collect(ws, {"action": "subscribe", "channel": "trends", "after": {}}, 1)
        assert error["type"] == "error" and "unsubscribe" in error["message"]
        assert subscribe_and_collect(ws, {"action": "unsubscribe", "channel": "trends", "symbols": ["*"]}, 1)[0][
            "type"] == "unsubscribed"
    # From the start of what is retained (AAPL's partition from offset 5), for two symbols; then live.
    got = subscribe_and_collect(ws, {"action": "subscribe", "channel": "trends", "symbols": ["AAPL", "IBM"],
                                     "after": {}}, 1)
    while got[-1]["type"] != "replayed":
        got.append(recv(ws))
    trends = [(m["partition"], m["offset"]) for m in got if m["type"] == "trend"]
    expected = [(p, o) for p, o, symbol in placed if symbol in ("AAPL", "IBM") and not (p == cut and o < 5)]
    assert len(expected) < 20 and sorted(trends) == sorted(expected)
    for p in range(3):
        assert [o for q, o in trends if q == p] == sorted(o for q, o in expected if q == p)
    assert got[-1]["count"] == len(trends)
    publish(topics.bootstrap, topics.trends, [bar("IBM", 50, 1.0, base_ms=BASE)])
    live = recv(ws)
    assert live["type"] == "trend" and live["data"]["window_start"] == BASE + 50 * 60_000
    assert live["offset"] > got[-1]["after"][str(live["partition"])]
    # Alerts resume the same way, from the alerts topic.
    got = subscribe_and_collect(ws, {"action": "subscribe", "channel": "alerts", "symbols": ["*"],
                                     "after": {"0": -1, "1": -1, "2": -1}}, 1)
    while got[-1]["type"] != "replayed":
        got.append(recv(ws))
    assert got[-1] == {"type": "replayed", "channel": "alerts", "count": 30,
                       "after": {str(p): o - 1 for p, o in landed(topics.bootstrap, topics.alerts).items()}}
    ws.close()


# --- the query string ----------------------------------------------------------------------------------------
def replay_of(ws: websocket.WebSocket, channels: int) -> list[dict[str, Any]]:
    """The messages after the welcome until `channels` channels said `replayed`."""
    got = [recv(ws)]
    while sum(m["type"] == "replayed" for m in got) < channels:
        got.append(recv(ws))
    return got


def positions_of(got: list[dict[str, Any]], kind: str) -> list[tuple[int, int]]:
    return [(m["partition"], m["offset"]) for m in got if m["type"] == kind]


def in_kafka_order(received: list[tuple[int, int]], expected: list[tuple[int, int, str]]) -> bool:
    return all([o for q, o in received if q == p] == sorted(o for q, o, _ in expected if q == p) for p in range(3))


def test_the_query_string_resumes_with_after_or_since_as_the_message_form_does(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    now = int(time.time() * 1000)
    older, newer = now - 120_000, now - 60_000          # record timestamps of the two halves
    first = publish_noting(topics.bootstrap, topics.trends,
                           [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE) for i in range(40)], older)
    second = publish_noting(topics.bootstrap, topics.trends,
                            [bar(SYMBOLS[i % 8], 5 + i // 8, 200.0 + i, base_ms=BASE) for i in range(40)], newer)
    alerts_first = publish_noting(topics.bootstrap, topics.alerts,
                                  [alert(SYMBOLS[i % 8], i, base_ms=BASE) for i in range(10)], older)
    alerts_second = publish_noting(topics.bootstrap, topics.alerts,
                                   [alert(SYMBOLS[i % 8], 10 + i, base_ms=BASE) for i in range(10)], newer)
    server = topics.serve(live_server)
    ends = landed(topics.bootstrap, topics.trends)

    # after: two symbols, from a point on two partitions (partition 2 not named: from the oldest retained).
    after = {0: ends[0] // 2, 1: ends[1] // 3}
    query = ",".join(f"{p}:{o}" for p, o in after.items())
    ws = websocket.create_connection(f"{server.ws_url}?channel=trends&symbols=AAPL,ibm&after={query}", timeout=10)
    assert recv(ws)["type"] == "welcome"
    got = replay_of(ws, 1)
    assert got[0] == {"type": "subscribed", "channel": "trends", "symbols": ["AAPL", "IBM"]}
    assert "snapshot" not in [m["type"] for m in got]
    expected = [(p, o, s) for p, o, s in first + second if s in ("AAPL", "IBM") and o > after.get(p, -1)]
    trends = positions_of(got, "trend")
    assert 0 < len(trends) < 20 and sorted(trends) == sorted((p, o) for p, o, _ in expected)
    assert in_kafka_order(trends, expected)
    assert got[-1] == {"type": "replayed", "channel": "trends", "count": len(trends),
                       "after": {str(p): o - 1 for p, o in ends.items()}}
    later = publish_noting(topics.bootstrap, topics.trends,
                           [bar("IBM", 50, 1.0, base_ms=BASE), bar("MSFT", 50, 1.0, base_ms=BASE)])
    live = recv(ws)                                         # then live, for its symbols only
    assert live["type"] == "trend" and live["data"]["symbol"] == "IBM"
    assert live["offset"] > got[-1]["after"][str(live["partition"])]
    ws.close()

    # since: every channel named, each from its first record stamped at or after `since`.
    ws = websocket.create_connection(f"{server.ws_url}?channel=trends,alerts&since={newer}", timeout=10)
    assert recv(ws)["type"] == "welcome"
    got = replay_of(ws, 2)
    assert sorted(m["channel"] for m in got if m["type"] == "subscribed") == ["alerts", "trends"]   # two replays
    assert "snapshot" not in [m["type"] for m in got]
    assert sorted(positions_of(got, "alert")) == sorted((p, o) for p, o, _ in alerts_second)
    assert in_kafka_order(positions_of(got, "alert"), alerts_second)
    trends = positions_of(got, "trend")
    assert sorted(trends) == sorted((p, o) for p, o, _ in second + later)
    assert in_kafka_order(trends, second + later)
    # Nothing stamped before `since`.
    assert not {(p, o) for p, o, _ in first} & set(trends)
    assert not {(p, o) for p, o, _ in alerts_first} & set(positions_of(got, "alert"))
    ws.close()

    # A point the topic cannot serve: the message form's error, then the snapshot and live.
    beyond = ends[0] + 5
    ws = websocket.create_connection(f"{server.ws_url}?channel=trends&after=0:{beyond}", timeout=10)
    assert recv(ws)["type"] == "welcome"
    error, subscribed, snapshot = recv(ws), recv(ws), recv(ws)
    assert error["type"] == "error" and f"offset {beyond} of partition 0 is beyond its end" in error["message"]
    assert subscribed["type"] == "subscribed" and snapshot["type"] == "snapshot" and len(snapshot["data"]) == 8
    ws.close()

    # Bad values: an `error` at connect, nothing subscribed, the connection open.
    for bad, words in (("channel=trends,alerts&after=0:1", "one channel"), ("channel=trends&after=0:x", "0:x"),
                       ("channel=trends&after=0:-2", "integer >= -1"), ("after=0:1", "name it"),
                       ("channel=trends&since=yesterday", "epoch milliseconds"),
                       (f"channel=trends&since={newer // 1000}", "not seconds"),
                       (f"channel=trends&after=0:1&since={newer}", "not both"),
                       ("channel=trends&after=0:1&after=1:2", "given 2 times")):
        ws = websocket.create_connection(f"{server.ws_url}?{bad}", timeout=10)
        assert recv(ws)["type"] == "welcome"
        error = recv(ws)
        assert error["type"] == "error" and error["message"].startswith("query string: ") and \
            words in error["message"], (bad, error)
        publish(topics.bootstrap, topics.trends, [bar("AAPL", 60, 1.0, base_ms=BASE)])
        assert_silent(ws)
        send(ws, {"action": "ping"})
        assert recv(ws) == {"type": "pong"}
        ws.close()


def test_the_query_string_resume_has_the_message_forms_limits(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish(topics.bootstrap, topics.trends, [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE)
                                              for i in range(200)])
    server = topics.serve(live_server, WS_REPLAY_MAX_MESSAGES=50, WS_MAX_SYMBOLS=2)
    ws = websocket.create_connection(f"{server.ws_url}?channel=trends&after=", timeout=10)  # everything retained
    assert recv(ws)["type"] == "welcome"
    got = [recv(ws)]
    while got[-1]["type"] != "snapshot":
        got.append(recv(ws))
    types = [m["type"] for m in got]
    assert types[0] == "subscribed" and types[-2:] == ["error", "snapshot"] and types.count("trend") <= 50
    assert "WS_REPLAY_MAX_MESSAGES" in got[-2]["message"]
    ws.close()
    ws = websocket.create_connection(f"{server.ws_url}?channel=trends&symbols=AAPL,MSFT,IBM&after=0:1", timeout=10)
    assert recv(ws)["type"] == "welcome"
    error = recv(ws)
    assert error["type"] == "error" and "at most 2 symbols" in error["message"]
    assert_silent(ws)
    ws.close()


# --- limits ----------------------------------------------------------------------------------------------------
def test_a_replay_past_its_message_limit_stops_with_an_error_then_a_snapshot(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish(topics.bootstrap, topics.trends, [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE)
                                              for i in range(200)])
    server = topics.serve(live_server, WS_REPLAY_MAX_MESSAGES=50)
    ws = websocket.create_connection(server.ws_url, timeout=10)
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["*"], "after": {}})
    got = [recv(ws)]
    while got[-1]["type"] != "snapshot":
        got.append(recv(ws))
    types = [m["type"] for m in got]
    assert types[0] == "subscribed" and types[-2:] == ["error", "snapshot"] and "replayed" not in types
    assert types.count("trend") <= 50
    assert "more than 50 messages" in got[-2]["message"] and "WS_REPLAY_MAX_MESSAGES" in got[-2]["message"]
    publish(topics.bootstrap, topics.trends, [bar("IBM", 80, 1.0, base_ms=BASE)])
    assert recv(ws)["data"]["window_start"] == BASE + 80 * 60_000           # live goes on
    assert server.state.metrics.registry.get_sample_value("serving_websocket_replays_ended_total",
                                                          {"outcome": "too_many"}) == 1
    ws.close()


def slow_client(server: LiveServer) -> websocket.WebSocket:
    """A client with a small receive buffer, so what it does not read stays in serving's bounded mailbox."""
    return websocket.create_connection(server.ws_url, timeout=10,
                                       sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))


def test_one_replay_too_many_is_an_error_then_a_snapshot_and_a_replay_waits_for_its_client(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish(topics.bootstrap, topics.trends, [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE)
                                              for i in range(2000)])
    server = topics.serve(live_server, WS_REPLAY_MAX_CONCURRENT=1, WS_QUEUE_BYTES=16 * 1024,
                          WS_SEND_BUFFER_BYTES=4096)
    registry = server.state.metrics.registry
    slow = slow_client(server)
    recv(slow)
    send(slow, {"action": "subscribe", "channel": "trends", "symbols": ["*"], "after": {}})
    # ~1.4 MB to replay: the replay waits for the client, whose mailbox stays within its 16 KiB bound.
    wait_for(lambda: server.state.hub._replaying["trends"] and registry.get_sample_value(
        "serving_websocket_replays") == 1, 10, "the first replay running")
    send(slow, {"action": "unsubscribe", "channel": "trends", "symbols": ["*"]})     # refused meanwhile
    other = websocket.create_connection(server.ws_url, timeout=10)
    recv(other)
    send(other, {"action": "subscribe", "channel": "trends", "symbols": ["AAPL"], "after": {}})
    error, subscribed, snapshot = recv(other), recv(other), recv(other)
    assert error["type"] == "error" and "WS_REPLAY_MAX_CONCURRENT" in error["message"]
    assert subscribed["type"] == "subscribed" and snapshot["type"] == "snapshot"
    assert registry.get_sample_value("serving_websocket_replays") == 1      # still waiting for its client
    got = [recv(slow)]
    while got[-1]["type"] != "replayed":
        got.append(recv(slow))
    assert got[-1]["count"] == 2000 and sum(1 for m in got if m["type"] == "trend") == 2000
    refusals = [m for m in got if m["type"] == "error"]
    assert len(refusals) == 1 and "a replay of trends is running" in refusals[0]["message"]
    assert registry.get_sample_value("serving_websocket_overflows_total") == 0
    wait_for(lambda: registry.get_sample_value("serving_websocket_replays") == 0, 5, "the replay slot freed")
    slow.close()
    other.close()


def test_a_replaying_client_that_cannot_keep_up_is_closed_and_slows_no_one(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    publish(topics.bootstrap, topics.trends, [bar(SYMBOLS[i % 8], i // 8, 100.0 + i, base_ms=BASE)
                                              for i in range(2000)])
    server = topics.serve(live_server, WS_QUEUE_BYTES=16 * 1024, WS_SEND_BUFFER_BYTES=4096,
                          WS_REPLAY_BUFFER_BYTES=32 * 1024)
    fast = websocket.create_connection(server.ws_url + "?channel=trends&symbols=*", timeout=10)
    for _ in range(3):
        recv(fast)
    slow = slow_client(server)
    recv(slow)
    send(slow, {"action": "subscribe", "channel": "trends", "symbols": ["*"], "after": {}})
    wait_for(lambda: server.state.hub._replaying["trends"], 10, "the replay running")
    # Live bars keep coming; the replaying client reads nothing, so they pile up in its hand-off buffer.
    producer = Producer({"bootstrap.servers": topics.bootstrap, "linger.ms": 0})
    delays = []
    for k in range(120):
        record = bar("LIVE", 200 + k, 1.0, base_ms=BASE)
        sent = time.monotonic()
        producer.produce(topics.trends, key=b"LIVE", value=codec.dumps(record))
        producer.flush(5)
        message = recv(fast)
        delays.append(time.monotonic() - sent)
        assert message["data"]["window_start"] == record["window_start"]
    assert max(delays) < 1.0, f"the fast client waited {max(delays):.2f} s for a bar"
    wait_for(lambda: server.state.metrics.registry.get_sample_value("serving_websocket_overflows_total") == 1, 10,
             "the replaying client closed")
    slow.settimeout(10)
    assert close_code(slow) == 1008
    fast.close()


def test_a_snapshot_point_covers_what_serving_did_not_need_to_read(
        topics: Topics, live_server: Callable[..., LiveServer]) -> None:
    """Alerts older than serving's history window are not read at start, yet the snapshot's point covers them:
    a client that resumes from it is replayed nothing it was not sent (not a partition's whole history)."""
    old_ms = int(time.time() * 1000) - 3 * 3_600_000          # HISTORY_HOURS is 1
    publish(topics.bootstrap, topics.alerts, [alert(SYMBOLS[i % 8], i, base_ms=old_ms) for i in range(24)],
            timestamp_ms=old_ms)
    ends = landed(topics.bootstrap, topics.alerts)
    assert all(ends.values()), ends                              # every partition holds old alerts
    server = topics.serve(live_server)
    ws = websocket.create_connection(server.ws_url, timeout=10)
    recv(ws)
    subscribed, snapshot = subscribe_and_collect(ws, {"action": "subscribe", "channel": "alerts", "symbols": ["*"]}, 2)
    assert subscribed["type"] == "subscribed" and snapshot["type"] == "snapshot"
    assert snapshot["after"] == {str(p): end - 1 for p, end in ends.items()}
    ws.close()

    again = websocket.create_connection(server.ws_url, timeout=10)
    recv(again)
    send(again, {"action": "subscribe", "channel": "alerts", "symbols": ["*"], "after": snapshot["after"]})
    answers = [recv(again) for _ in range(2)]
    assert [a["type"] for a in answers] == ["subscribed", "replayed"] and answers[1]["count"] == 0, answers
    again.close()
