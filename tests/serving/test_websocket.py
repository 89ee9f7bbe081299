"""The /ws protocol of DESIGN.md §8 against a live server, with a real WebSocket client."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

import pytest
import websocket  # websocket-client

from market import codec
from tests.serving.conftest import LiveServer
from tests.serving.samples import BASE_MS, alert, bar
from tests.waiting import wait_for


def connect(server: LiveServer, query: str = "", **kwargs: Any) -> websocket.WebSocket:
    return websocket.create_connection(server.ws_url + query, timeout=5, **kwargs)


def recv(ws: websocket.WebSocket, skip: tuple[str, ...] = ("heartbeat",)) -> dict[str, Any]:
    """The next message that is not of a skipped type."""
    while True:
        message = codec.loads(ws.recv())
        if message.get("type") not in skip:
            return message


def assert_silent(ws: websocket.WebSocket, seconds: float = 0.3) -> None:
    """No message other than heartbeats arrives within `seconds`."""
    ws.settimeout(seconds)
    try:
        message = recv(ws)
    except websocket.WebSocketTimeoutException:
        return
    finally:
        ws.settimeout(5)
    pytest.fail(f"unexpected message {message}")


def send(ws: websocket.WebSocket, message: dict[str, Any]) -> None:
    ws.send(codec.dumps(message).decode())


def close_code(ws: websocket.WebSocket) -> int:
    """Read until the close frame; its status code."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")


@pytest.fixture
def server(live_server: Callable[..., LiveServer]) -> LiveServer:
    server = live_server({"WS_HEARTBEAT_S": 30})
    for symbol, close in (("AAPL", 190.0), ("MSFT", 410.0), ("NVDA", 120.0)):
        server.state.updates.publish_bar(bar(symbol, 0, close))
    server.state.updates.publish_alert(alert("AAPL", 0))
    return server


def test_welcome_subscribe_snapshot_and_live(server: LiveServer) -> None:
    ws = connect(server)
    assert recv(ws) == {"type": "welcome", "channels": ["trends", "alerts"], "heartbeat_s": 30}
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["aapl", "MSFT"]})
    assert recv(ws) == {"type": "subscribed", "channel": "trends", "symbols": ["AAPL", "MSFT"]}
    snapshot = recv(ws)
    assert snapshot["type"] == "snapshot" and snapshot["channel"] == "trends"
    assert [(b["symbol"], b["close"]) for b in snapshot["data"]] == [("AAPL", 190.0), ("MSFT", 410.0)]

    hub = server.state.hub
    server.state.updates.publish_bar(bar("NVDA", 1, 121.0))           # not subscribed
    server.state.updates.publish_bar(bar("MSFT", 1, 411.0, pane_index=0))
    server.state.updates.publish_bar(bar("MSFT", 1, 411.5, pane_index=1))
    server.state.updates.publish_bar(bar("MSFT", 1, 400.0, pane_index=0))   # stale version: not pushed
    server.state.updates.publish_alert(alert("MSFT", 1))              # alerts channel not subscribed
    first, second = recv(ws), recv(ws)
    assert (first["type"], first["data"]["close"], first["data"]["pane_index"]) == ("trend", 411.0, 0)
    assert (second["type"], second["data"]["close"]) == ("trend", 411.5)
    assert_silent(ws)

    send(ws, {"action": "unsubscribe", "channel": "trends", "symbols": ["MSFT"]})
    assert recv(ws) == {"type": "unsubscribed", "channel": "trends", "symbols": ["MSFT"]}
    server.state.updates.publish_bar(bar("MSFT", 2, 412.0))
    server.state.updates.publish_bar(bar("AAPL", 2, 191.0))
    assert recv(ws)["data"]["symbol"] == "AAPL"
    ws.close()


def test_alerts_channel_snapshot_and_push(server: LiveServer) -> None:
    ws = connect(server)
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "alerts", "symbols": ["*"]})
    assert recv(ws)["type"] == "subscribed"
    snapshot = recv(ws)
    assert snapshot["channel"] == "alerts" and [a["symbol"] for a in snapshot["data"]] == ["AAPL"]
    server.state.updates.publish_bar(bar("AAPL", 5, 200.0))    # trends not subscribed
    server.state.updates.publish_alert(alert("NVDA", 3, "volume_spike", value=6.5))
    server.state.updates.publish_alert(alert("NVDA", 3, "volume_spike", value=6.5))   # duplicate id
    message = recv(ws)
    assert message["type"] == "alert" and message["data"]["alert_id"] == f"NVDA:{BASE_MS + 180_000}:volume_spike"
    assert_silent(ws)
    ws.close()


def test_wildcard_minus_unsubscribed_symbol(server: LiveServer) -> None:
    ws = connect(server)
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["*"]})
    recv(ws)
    assert len(recv(ws)["data"]) == 3
    send(ws, {"action": "unsubscribe", "channel": "trends", "symbols": ["NVDA"]})
    recv(ws)
    server.state.updates.publish_bar(bar("NVDA", 1, 1.0))
    server.state.updates.publish_bar(bar("ZZZ", 1, 2.0))     # a symbol first seen now is included
    assert recv(ws)["data"]["symbol"] == "ZZZ"
    send(ws, {"action": "unsubscribe", "channel": "trends", "symbols": ["*"]})
    recv(ws)
    server.state.updates.publish_bar(bar("ZZZ", 2, 3.0))
    assert_silent(ws)
    ws.close()


def test_ping_and_errors_keep_connection_open(server: LiveServer) -> None:
    ws = connect(server)
    recv(ws)
    bad = ["not json", "[1, 2]", '{"action": "dance"}', '{"action": "subscribe", "channel": "news"}',
           '{"action": "subscribe", "channel": "trends", "symbols": ["BAD SYMBOL"]}',
           '{"action": "subscribe", "channel": "trends", "symbols": 7}', "{}"]
    for raw in bad:
        ws.send(raw)
        message = recv(ws)
        assert message["type"] == "error" and message["message"], raw
    send(ws, {"action": "ping"})
    assert recv(ws) == {"type": "pong"}
    ws.close()


def test_query_string_subscription(server: LiveServer) -> None:
    ws = connect(server, "?channel=trends&symbols=NVDA,aapl")
    assert recv(ws)["type"] == "welcome"
    assert recv(ws) == {"type": "subscribed", "channel": "trends", "symbols": ["NVDA", "AAPL"]}
    assert [b["symbol"] for b in recv(ws)["data"]] == ["AAPL", "NVDA"]
    server.state.updates.publish_bar(bar("NVDA", 1, 122.0))
    assert recv(ws)["data"]["close"] == 122.0
    ws.close()
    bad = connect(server, "?channel=weather")
    assert recv(bad)["type"] == "welcome"
    assert recv(bad)["type"] == "error"
    bad.close()


def test_two_clients_different_subscriptions_in_order(server: LiveServer) -> None:
    a = connect(server, "?channel=trends&symbols=AAPL")
    b = connect(server, "?channel=trends,alerts&symbols=MSFT")
    for ws, n in ((a, 3), (b, 5)):     # welcome, subscribed, snapshot (+ alerts subscribed, snapshot)
        for _ in range(n):
            recv(ws)
    hub = server.state.hub
    for minute in range(1, 41):
        server.state.updates.publish_bar(bar("AAPL", minute, 190.0 + minute))
        server.state.updates.publish_bar(bar("MSFT", minute, 410.0 + minute))
    server.state.updates.publish_alert(alert("MSFT", 7))
    assert [recv(a)["data"]["close"] for _ in range(40)] == [190.0 + m for m in range(1, 41)]
    assert [recv(b)["data"]["close"] for _ in range(40)] == [410.0 + m for m in range(1, 41)]
    assert recv(b)["type"] == "alert"
    assert_silent(a)
    a.close()
    b.close()


def test_heartbeats(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_HEARTBEAT_S": 0.2})
    ws = connect(server)
    assert recv(ws)["heartbeat_s"] == 0.2
    beats = [recv(ws, skip=()) for _ in range(3)]
    assert beats == [{"type": "heartbeat", "seq": n} for n in (1, 2, 3)]
    ws.close()


def test_oversized_client_message_closes(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_MAX_MESSAGE_BYTES": 1024})
    ws = connect(server)
    recv(ws)
    ws.send("x" * 5000)
    assert close_code(ws) == 1009   # message too big


def test_slow_client_closed_1008_fast_client_unaffected(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_QUEUE_BYTES": 50_000, "WS_SEND_BUFFER_BYTES": 65536, "WS_CLOSE_GRACE_S": 10})
    hub = server.state.hub
    # The slow client's tiny receive buffer and its not reading make the server's send block.
    slow = connect(server, "?channel=trends&symbols=*",
                   sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    fast = connect(server, "?channel=trends&symbols=*")
    for ws in (slow, fast):     # welcome, subscribed, snapshot: both are registered
        for _ in range(3):
            recv(ws)
    assert server.metric("serving_websocket_clients") == 2
    total = 600
    received: list[float] = []

    def read_fast() -> None:
        for _ in range(total):
            received.append(recv(fast)["data"]["close"])

    reader = threading.Thread(target=read_fast)
    reader.start()
    started = time.monotonic()
    for minute in range(total):
        server.state.updates.publish_bar(bar("AAPL", minute, 100.0 + minute, note="x" * 1000))
        if minute % 10 == 9:
            time.sleep(0.01)   # a feed comes in bursts, not as one 400-bar block
    reader.join(10)
    assert hub.client_count() == 1                      # the slow one is out of the fan-out
    assert received == [100.0 + m for m in range(total)]
    assert time.monotonic() - started < 5

    # Now the slow client reads: some trends, then the error, then close 1008.
    types = []
    while True:
        opcode, data = slow.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1008
            break
        if opcode == websocket.ABNF.OPCODE_TEXT:
            types.append(codec.loads(data)["type"])
    assert types[-1] == "error"
    assert 0 < types.count("trend") < total
    assert server.metric("serving_websocket_overflows_total") == 1
    fast.close()


def test_unread_slow_client_is_cut_after_grace(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_QUEUE_BYTES": 5_000, "WS_SEND_BUFFER_BYTES": 4096, "WS_CLOSE_GRACE_S": 0.5})
    slow = connect(server, "?channel=trends&symbols=*", sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    wait_for(lambda: server.metric("serving_websocket_clients") == 1, 5, "the client registered")
    for minute in range(300):
        server.state.updates.publish_bar(bar("AAPL", minute, 1.0 + minute, note="x" * 400))
    # The server thread blocked in send() is released by the cut; the connection then ends.
    wait_for(lambda: server.metric("serving_websocket_clients") == 0, 5, "the unread client cut", poll_s=0.05)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        slow.settimeout(5)
        while True:
            opcode, _ = slow.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("closed")


def test_batch_is_coalesced_per_client_but_arrives_as_separate_messages(server: LiveServer) -> None:
    both = connect(server, "?channel=trends,alerts&symbols=AAPL,MSFT")
    one = connect(server, "?channel=trends&symbols=MSFT")
    for ws, n in ((both, 5), (one, 3)):
        for _ in range(n):
            recv(ws)
    batch = [("trends", bar("AAPL", 1, 191.0)), ("trends", bar("MSFT", 1, 411.0)),
             ("alerts", alert("MSFT", 1)), ("trends", bar("AAPL", 1, 150.0, pane_index=0)),   # stale: dropped
             ("trends", bar("MSFT", 2, 412.0))]
    assert server.state.updates.publish_many(batch) == 4
    got = [recv(both) for _ in range(4)]
    assert [(m["type"], m["data"]["symbol"]) for m in got] == [
        ("trend", "AAPL"), ("trend", "MSFT"), ("alert", "MSFT"), ("trend", "MSFT")]
    assert [recv(one)["data"]["close"] for _ in range(2)] == [411.0, 412.0]
    assert_silent(one)
    both.close()
    one.close()
