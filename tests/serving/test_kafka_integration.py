"""Serving against the real broker: replay, latest versions, live pushes, restart, readiness."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from confluent_kafka import Producer

from market import codec, config
from runners import topics
from runners.ports import free_port
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
BASE = NOW_MS - NOW_MS % 60_000 - 30 * 60_000     # 30 minutes ago, minute-aligned


def get(server: LiveServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=5) as response:
            return response.status, codec.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, codec.loads(exc.read())


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def publish(bootstrap: str, topic: str, records: list[dict[str, Any]], timestamp_ms: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for record in records:
        kwargs = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        producer.produce(topic, key=record["symbol"].encode(), value=codec.dumps(record), **kwargs)
    assert producer.flush(10) == 0


def serving_config(bootstrap: str, trends: str, alerts: str, dlq: str, **extra: Any) -> dict[str, Any]:
    return {"CONSUME": True, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTPUT_TOPIC": trends,
            "ALERTS_TOPIC": alerts, "DLQ_TOPIC": dlq, "HISTORY_HOURS": 1.0, **extra}


def test_replay_live_pushes_and_restart(kafka_bootstrap: str, make_topic: Callable[..., str],
                                        live_server: Callable[..., LiveServer]) -> None:
    trends, alerts, dlq = make_topic("serving_trends"), make_topic("serving_alerts"), make_topic("serving_dlq", 1)
    # Older than the 1 h history: must not be replayed.
    publish(kafka_bootstrap, trends, [bar("OLD", 0, 1.0, base_ms=BASE - 3 * 3600_000)],
            timestamp_ms=NOW_MS - 3 * 3600_000)
    symbols = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOG"]     # spread over the 3 partitions
    history = [bar(s, m, 100.0 + i * 10 + m, base_ms=BASE) for i, s in enumerate(symbols) for m in range(5)]
    # Three panes of one window: EARLY, ON_TIME, LATE; then a stale EARLY re-delivery.
    history += [bar("AAPL", 5, 111.0, pane_index=0, base_ms=BASE), bar("AAPL", 5, 112.0, pane_index=1, base_ms=BASE),
                bar("AAPL", 5, 112.5, pane_index=2, pane="LATE", base_ms=BASE),
                bar("AAPL", 5, 50.0, pane_index=0, base_ms=BASE)]
    publish(kafka_bootstrap, trends, history)
    publish(kafka_bootstrap, alerts, [alert("AAPL", 5, base_ms=BASE), alert("AAPL", 5, base_ms=BASE),
                                      alert("TSLA", 2, "volume_spike", value=4.0, base_ms=BASE)])

    # Two processes side by side: each reads every partition itself.
    first = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    second = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    for server in (first, second):
        wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness after replay")
        status, body = get(server, "/api/v1/symbols")
        assert status == 200
        assert [s["symbol"] for s in body["symbols"]] == sorted(symbols)
    status, body = get(first, "/api/v1/trends/AAPL")
    assert [b["close"] for b in body["trends"]] == [100.0, 101.0, 102.0, 103.0, 104.0, 112.5]
    assert body["trends"][-1]["pane"] == "LATE"
    assert [a["symbol"] for a in get(first, "/api/v1/alerts")[1]["alerts"]] == ["AAPL", "TSLA"]
    assert get(first, "/api/v1/trends/OLD")[0] == 404

    # Live: a new pane and an alert reach a WebSocket client within a second.
    ws = websocket.create_connection(first.ws_url + "?channel=trends,alerts&symbols=*", timeout=5)
    seen = [codec.loads(ws.recv())["type"] for _ in range(5)]
    assert seen == ["welcome", "subscribed", "snapshot", "subscribed", "snapshot"]
    sent = time.monotonic()
    publish(kafka_bootstrap, trends, [bar("MSFT", 6, 999.0, pane_index=0, base_ms=BASE)])
    publish(kafka_bootstrap, alerts, [alert("MSFT", 6, "return_zscore", value=9.0, base_ms=BASE)])
    got: dict[str, Any] = {}
    while len(got) < 2:
        message = codec.loads(ws.recv())
        if message["type"] in ("trend", "alert"):
            got[message["type"]] = message["data"]
    assert time.monotonic() - sent < 1.0
    assert got["trend"]["close"] == 999.0 and got["alert"]["type"] == "return_zscore"
    ws.close()
    wait_for(lambda: {b["symbol"]: b["close"] for b in get(first, "/api/v1/trends/latest")[1]["trends"]}["MSFT"]
             == 999.0, 1, "REST update")
    before = {path: get(first, path)[1] for path in
              ("/api/v1/symbols", "/api/v1/trends/latest", "/api/v1/trends/AAPL", "/api/v1/alerts")}
    metrics = urllib.request.urlopen(first.url + "/metrics", timeout=5).read().decode()
    assert f'serving_messages_consumed_total{{topic="{trends}"}} 35.0' in metrics

    def lags() -> list[str]:
        text = urllib.request.urlopen(first.url + "/metrics", timeout=5).read().decode()
        return [line for line in text.splitlines() if line.startswith("serving_consumer_lag{")]
    wait_for(lambda: len(lags()) == 7 and all(line.endswith(" 0.0") for line in lags()), 10,
             "consumer lag gauges at 0 on all 7 partitions (3 + 3 + the dead letters' 1)")

    # Restart: a new process rebuilds the same state from Kafka alone.
    first.stop()
    second.stop()
    restarted = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    wait_for(lambda: get(restarted, "/readyz")[0] == 200, 30, "readiness after restart")
    after = {path: get(restarted, path)[1] for path in before}
    assert after == before


def test_unreachable_broker_is_not_ready(live_server: Callable[..., LiveServer]) -> None:
    server = live_server(serving_config(f"127.0.0.1:{free_port()}", "t", "a", "d"))
    # Not ready from the start; what counts is that serving finds out why (not "starting").
    details = []
    wait_for(lambda: details.append(get(server, "/readyz")[1]["detail"]) or details[-1] != "starting", 30,
             f"a reason other than 'starting' (seen: {details[-1:]})")
    status, body = get(server, "/readyz")
    assert status == 503 and body["error"]["code"] == "not_ready"
    assert "broker" in body["detail"].lower(), body["detail"]
    assert get(server, "/api/v1/symbols")[0] == 503
    assert get(server, "/healthz")[0] == 200


def test_missing_topics_then_created_recovers_by_itself(kafka_bootstrap: str,
                                                        live_server: Callable[..., LiveServer]) -> None:
    trends, alerts, dlq = (f"serving_late_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("trends", "alerts", "dlq"))
    server = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    try:
        wait_for(lambda: "unavailable" in get(server, "/readyz")[1]["detail"], 30, "the missing topics reported")
        status, body = get(server, "/readyz")
        assert status == 503 and "unavailable" in body["detail"]
        topics.create_topics(kafka_bootstrap, {trends: config.TRENDS.partitions, alerts: config.ALERTS.partitions,
                                               dlq: config.DLQ.partitions})
        publish(kafka_bootstrap, trends, [bar("IBM", 0, 150.0, base_ms=BASE)])
        wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "recovery once the topics exist")
        wait_for(lambda: get(server, "/api/v1/symbols")[1].get("symbols") == [
            {"symbol": "IBM", "close": 150.0, "change_pct": bar("IBM", 0, 150.0)["change_pct"],
             "window_end": BASE + 60_000}], 5, "the bar published after the topics appeared")
    finally:
        server.stop()
        topics.delete_topics(kafka_bootstrap, [trends, alerts, dlq])


def test_probe_marks_outage_and_recovery(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    """The readiness probe flips to not-ready when the broker stops answering, and back by itself."""
    from confluent_kafka import Consumer, TopicPartition

    from serving.feed import KafkaFeed, consumer_config
    from serving.metrics import Metrics

    trends = make_topic("serving_probe")
    metrics = Metrics()
    feed = KafkaFeed(None, metrics, kafka_bootstrap, trends, trends, 1.0)   # type: ignore[arg-type] # never fed
    feed.replayed = True
    assignment = [TopicPartition(trends, p) for p in range(3)]
    dead = Consumer(consumer_config(f"127.0.0.1:{free_port()}"))    # a broker that went away
    live = Consumer(consumer_config(kafka_bootstrap))
    try:
        # A topic created a moment ago may not have partition leaders yet.
        wait_for(lambda: feed._probe(live, assignment) or feed.ready, 15, "the first successful probe")
        assert metrics.registry.get_sample_value("serving_ready") == 1
        feed._probe(dead, assignment)
        assert not feed.ready and "unreachable" in feed.status and metrics.registry.get_sample_value("serving_ready") == 0
        feed._probe(live, assignment)
        assert feed.ready and feed.status == "following"
    finally:
        dead.close()
        live.close()
