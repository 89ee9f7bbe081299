"""Serving against a real broker whose output topics hold hostile records and re-sent panes."""
from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websocket
from confluent_kafka import Producer

from market import codec
from tests.serving.conftest import LiveServer
from tests.serving.samples import alert, bar
from tests.serving.test_kafka_integration import BASE, get, serving_config, wait_for

pytestmark = pytest.mark.integration


def produce_raw(bootstrap: str, topic: str, values: list[bytes | None]) -> None:
    """Each value as one record of partition 0, in this order, in one flush (so one consumed batch)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for value in values:
        producer.produce(topic, key=b"K", value=value, partition=0)
    assert producer.flush(10) == 0


def nested(depth: int) -> bytes:
    """JSON text of an array nested `depth` deep (orjson reads up to 1024, but writes at most 254)."""
    return b"[" * depth + b"1.0" + b"]" * depth


def good(symbol: str, minute: int, close: float, **overrides: Any) -> bytes:
    return codec.dumps(bar(symbol, minute, close, base_ms=BASE, **overrides))


def with_field(record: dict[str, Any], name: str, json_text: bytes) -> bytes:
    """`record` as JSON text with one more field holding `json_text` as it is."""
    return codec.dumps(record)[:-1] + b',"' + name.encode() + b'":' + json_text + b"}"


# (reason it is counted under, raw value): each one alone used to be stored, crash a REST
# route or the WebSocket snapshot, or drop the rest of its batch.
POISON_BARS: list[tuple[str, bytes | None]] = [
    ("invalid_field", with_field({k: v for k, v in bar("EVIL", 0, 1.0, base_ms=BASE).items() if k != "close"},
                                 "close", nested(300))),
    ("too_deep", with_field(bar("EVIL", 1, 1.0, base_ms=BASE), "note", nested(300))),
    ("invalid_json", b'{"symbol": "EVIL", "close": 1e400}'),
    ("invalid_json", b"\xff\xfe not json"),
    ("invalid_json", None),                                                    # a tombstone
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_field", codec.dumps({k: v for k, v in bar("EVIL", 2, 1.0, base_ms=BASE).items() if k != "close"})),
    ("invalid_field", good("EVIL", 3, 1.0, window_start="yesterday")),
    ("invalid_field", good("EVIL", 4, 1.0, pane_index=True)),
    ("invalid_field", codec.dumps(dict(bar("EVIL", 5, 1.0, base_ms=BASE), symbol="EVIL\n"))),
    ("invalid_field", good("EVIL", 6, 1.0, volume=-5)),
    ("invalid_field", with_field({k: v for k, v in bar("EVIL", 7, 1.0, base_ms=BASE).items() if k != "tick_count"},
                                 "tick_count", b"18446744073709551616")),   # orjson reads it as a float
    ("too_large", good("EVIL", 8, 1.0, note="x" * 70_000)),
    ("too_large", codec.dumps({**bar("EVIL", 9, 1.0, base_ms=BASE), **{f"f{i}": i for i in range(100)}})),
]


def test_malformed_records_inside_a_batch_are_skipped_and_counted(
        kafka_bootstrap: str, make_topic: Callable[..., str], live_server: Callable[..., LiveServer],
        caplog: pytest.LogCaptureFixture) -> None:
    trends, alerts = make_topic("serving_hostile_trends", 1), make_topic("serving_hostile_alerts", 1)
    dlq = make_topic("serving_hostile_dlq", 1)
    # Good bars before, between and after the poison, all in one partition and one batch.
    values: list[bytes | None] = [good("AAPL", 0, 100.0)]
    for n, (_, poison) in enumerate(POISON_BARS):
        values += [poison, good("AAPL", n + 1, 101.0 + n)]
    values.append(good("MSFT", 0, 400.0))
    produce_raw(kafka_bootstrap, trends, values)
    produce_raw(kafka_bootstrap, alerts, [codec.dumps(alert("AAPL", 0, base_ms=BASE)),
                                          with_field(alert("AAPL", 1, base_ms=BASE), "detail", nested(300)),
                                          codec.dumps({"alert_id": "x", "symbol": "AAPL"}),
                                          codec.dumps(alert("MSFT", 0, base_ms=BASE))])

    caplog.set_level(logging.WARNING, logger="serving.feed")
    server = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness after replaying the poisoned topics")

    status, body = get(server, "/api/v1/trends/latest")
    assert status == 200
    assert [(b["symbol"], b["close"]) for b in body["trends"]] == [
        ("AAPL", 101.0 + len(POISON_BARS) - 1), ("MSFT", 400.0)]
    status, body = get(server, "/api/v1/trends/AAPL")
    assert status == 200 and len(body["trends"]) == len(POISON_BARS) + 1   # every good bar of the batch
    assert get(server, "/api/v1/trends/EVIL")[0] == 404
    assert get(server, "/api/v1/symbols")[0] == 200
    assert sorted(a["symbol"] for a in get(server, "/api/v1/alerts")[1]["alerts"]) == ["AAPL", "MSFT"]

    # The WebSocket snapshot (which encodes every stored bar) works too.
    ws = websocket.create_connection(server.ws_url + "?channel=trends,alerts&symbols=*", timeout=5)
    messages = [codec.loads(ws.recv()) for _ in range(5)]
    assert [m["type"] for m in messages] == ["welcome", "subscribed", "snapshot", "subscribed", "snapshot"]
    assert len(messages[2]["data"]) == 2 and len(messages[4]["data"]) == 2
    ws.close()

    metrics = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    expected: dict[str, int] = {}
    for reason, _ in POISON_BARS:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        assert f'serving_messages_rejected_total{{reason="{reason}",topic="{trends}"}} {count}.0' in metrics, reason
    assert f'serving_messages_rejected_total{{reason="too_deep",topic="{alerts}"}} 1.0' in metrics
    assert f'serving_messages_rejected_total{{reason="missing_field",topic="{alerts}"}} 1.0' in metrics
    # Each skip is logged with where the record is: topic[partition]@offset.
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping record")]
    poison_offsets = [1 + 2 * n for n in range(len(POISON_BARS))]
    assert [line.split()[2] for line in skipped if trends in line] == [f"{trends}[0]@{o}" for o in poison_offsets]

    # Every position advanced past the poison: nothing left to read.
    def lags() -> list[str]:
        text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
        return [line for line in text.splitlines() if line.startswith("serving_consumer_lag{")]
    wait_for(lambda: len(lags()) == 3 and all(line.endswith(" 0.0") for line in lags()), 10, "lag 0")

    # Live, after the replay: poison between two good bars in one batch changes nothing either.
    produce_raw(kafka_bootstrap, trends, [good("AAPL", 50, 150.0), POISON_BARS[0][1], good("AAPL", 51, 151.0)])
    wait_for(lambda: get(server, "/api/v1/trends/latest")[1]["trends"][0]["close"] == 151.0, 5, "live good bars")
    assert [b["close"] for b in get(server, "/api/v1/trends/AAPL?limit=2")[1]["trends"]] == [150.0, 151.0]


def test_resent_pane_after_restore_final_then_more_ticks_wins(
        kafka_bootstrap: str, make_topic: Callable[..., str], live_server: Callable[..., LiveServer]) -> None:
    """DESIGN.md §4: an EARLY pane, then the ON_TIME pane re-sent with the same pane_index after a restore."""
    trends, alerts = make_topic("serving_resent_trends"), make_topic("serving_resent_alerts")
    dlq = make_topic("serving_resent_dlq", 1)
    early = dict(bar("AAPL", 0, 100.0, pane_index=0, base_ms=BASE), tick_count=5)
    produce_raw(kafka_bootstrap, trends, [codec.dumps(early)])
    server = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness")
    ws = websocket.create_connection(server.ws_url + "?channel=trends&symbols=AAPL", timeout=5)
    assert [codec.loads(ws.recv())["type"] for _ in range(3)] == ["welcome", "subscribed", "snapshot"]

    # The restored pipeline fires the window's ON_TIME pane first: index 0 again.
    on_time = dict(bar("AAPL", 0, 101.0, pane_index=0, base_ms=BASE), pane="ON_TIME", is_final=True, tick_count=9)
    produce_raw(kafka_bootstrap, trends, [codec.dumps(on_time)])
    pushed = codec.loads(ws.recv())
    assert pushed["type"] == "trend" and pushed["data"]["pane"] == "ON_TIME" and pushed["data"]["close"] == 101.0
    wait_for(lambda: get(server, "/api/v1/trends/AAPL")[1]["trends"][0]["close"] == 101.0, 5, "REST ON_TIME")

    # Same index, not final: older. Same index, final, fewer ticks: older. More ticks: newer.
    produce_raw(kafka_bootstrap, trends, [
        codec.dumps(dict(early, close=90.0, tick_count=50)),
        codec.dumps(dict(on_time, close=91.0, tick_count=8)),
        codec.dumps(dict(on_time, close=102.0, tick_count=10)),
    ])
    pushed = codec.loads(ws.recv())
    assert (pushed["data"]["close"], pushed["data"]["tick_count"]) == (102.0, 10)
    # A higher pane_index wins whatever it holds.
    produce_raw(kafka_bootstrap, trends, [codec.dumps(dict(early, close=103.0, pane_index=1, tick_count=1))])
    assert codec.loads(ws.recv())["data"]["close"] == 103.0
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            message = codec.loads(ws.recv())
            assert message["type"] == "heartbeat", message
    assert [b["close"] for b in get(server, "/api/v1/trends/AAPL")[1]["trends"]] == [103.0]
    ws.close()
