"""WebSocket limits against a live server: Origin, connections, symbols, message rate,
byte-bounded mailboxes, O(n) subscribe lists, and frames never interleaved with protocol pings."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import websocket  # websocket-client

from market import codec
from tests.serving.conftest import LiveServer
from tests.serving.samples import bar
from tests.serving.test_websocket import assert_silent, close_code, connect, recv, send

SERVER_TYPES = {"welcome", "subscribed", "unsubscribed", "snapshot", "trend", "alert", "pong", "heartbeat", "error"}


def handshake_status(server: LiveServer, **kwargs: Any) -> int:
    """101 if the WebSocket opens with these options, else the HTTP status of the refusal."""
    try:
        ws = websocket.create_connection(server.ws_url, timeout=5, **kwargs)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code
    ws.close()
    return 101


def refused(server: LiveServer, reason: str) -> float:
    return server.metric("serving_websocket_refused_total", reason=reason)


def test_origin_allow_list_default_same_origin_and_localhost(live_server: Callable[..., LiveServer]) -> None:
    server = live_server()
    assert handshake_status(server) == 101                                   # websocket-client sends its own origin
    assert handshake_status(server, origin=f"http://127.0.0.1:{server.port}") == 101
    assert handshake_status(server, origin="http://localhost:3000") == 101   # a dev server on another port
    assert handshake_status(server, origin="https://[::1]:8443") == 101
    assert handshake_status(server, suppress_origin=True) == 101             # not a browser
    for evil in ("https://evil.example", "http://127.0.0.1.evil.example", "null", "file://", "http://localhost@evil"):
        assert handshake_status(server, origin=evil) == 403, evil
    assert refused(server, "origin") == 5
    deadline = time.monotonic() + 5      # the accepted ones are closed: none may linger
    while server.state.hub.client_count() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.state.hub.client_count() == 0


def test_origin_allow_list_configured(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_ALLOWED_ORIGINS": "https://dash.example.com"})
    assert handshake_status(server, origin="https://dash.example.com") == 101
    assert handshake_status(server, origin="https://DASH.example.com") == 101   # hosts are case-insensitive
    assert handshake_status(server, origin="http://dash.example.com") == 403
    assert handshake_status(server, origin="http://localhost:3000") == 403
    assert handshake_status(server, origin=f"http://127.0.0.1:{server.port}") == 403    # 'self' not listed
    anyone = live_server({"WS_ALLOWED_ORIGINS": "*"})
    assert handshake_status(anyone, origin="https://evil.example") == 101


def test_max_connections_closes_the_next_with_1013(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_MAX_CONNECTIONS": 2})
    first, second = connect(server), connect(server)
    for ws in (first, second):
        assert recv(ws)["type"] == "welcome"
    third = connect(server)
    message = recv(third)
    assert message["type"] == "error" and "server full" in message["message"]
    assert close_code(third) == 1013
    assert server.state.hub.client_count() == 2 and refused(server, "full") == 1
    first.close()
    deadline = time.monotonic() + 5
    while server.state.hub.client_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    fourth = connect(server)
    assert recv(fourth)["type"] == "welcome"     # a freed place is taken again
    second.close()
    fourth.close()


def test_max_symbols_per_client(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_MAX_SYMBOLS": 3})
    ws = connect(server)
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["A", "B", "C", "D"]})
    message = recv(ws)
    assert message["type"] == "error" and "at most 3 symbols" in message["message"]
    server.state.updates.publish_bar(bar("A", 0, 1.0))
    assert_silent(ws)                                   # the refused subscription did not half-happen
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["A", "B", "a"]})   # 2 after de-duplication
    assert recv(ws) == {"type": "subscribed", "channel": "trends", "symbols": ["A", "B"]}
    recv(ws)
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["C", "D"]})        # 4 in all
    assert recv(ws)["type"] == "error"
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": ["*"]})             # "*" names none
    assert recv(ws)["type"] == "subscribed"
    recv(ws)
    send(ws, {"action": "unsubscribe", "channel": "trends", "symbols": ["P", "Q", "R", "S"]})   # 4 exclusions
    assert recv(ws)["type"] == "error"
    ws2 = connect(server, "?channel=trends&symbols=A,B,C,D")   # the query string obeys the same limit
    recv(ws2)
    assert recv(ws2)["type"] == "error"
    ws.close()
    ws2.close()


def test_message_rate_limit_closes_a_flooding_client_only(live_server: Callable[..., LiveServer]) -> None:
    server = live_server({"WS_MESSAGE_RATE": 5, "WS_MESSAGE_BURST": 5})
    calm, flood = connect(server), connect(server)
    recv(calm)
    recv(flood)
    for _ in range(50):
        send(flood, {"action": "ping"})
    replies = []
    while True:
        opcode, data = flood.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1008
            break
        replies.append(codec.loads(data))
    assert [r["type"] for r in replies[:5]] == ["pong"] * 5
    assert replies[-1]["type"] == "error" and "rate limit" in replies[-1]["message"]
    assert len(replies) < 10
    assert server.metric("serving_websocket_rate_limited_total") == 1
    for _ in range(8):                                  # 4/s: within 5/s
        send(calm, {"action": "ping"})
        assert recv(calm) == {"type": "pong"}
        time.sleep(0.25)
    calm.close()


def test_mailbox_is_bounded_in_bytes(live_server: Callable[..., LiveServer]) -> None:
    """40 frames of ~2 KB overflow a 20,000-byte mailbox; 40 small ones do not."""
    server = live_server({"WS_QUEUE_BYTES": 20_000, "WS_SEND_BUFFER_BYTES": 4096, "WS_CLOSE_GRACE_S": 10})
    small_opts = {"sockopt": ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)}
    big, small = (connect(server, f"?channel=trends&symbols={s}", **small_opts) for s in ("BIG", "SMALL"))
    for ws in (big, small):
        for _ in range(3):
            recv(ws)
    hub = server.state.hub
    for minute in range(40):     # nobody reads: everything beyond the kernel buffers waits in the mailbox
        server.state.updates.publish_bar(bar("BIG", minute, 1.0 + minute, note="x" * 2000))
        server.state.updates.publish_bar(bar("SMALL", minute, 1.0 + minute))
    assert hub.client_count() == 1 and server.metric("serving_websocket_overflows_total") == 1
    types = []
    while True:
        opcode, data = big.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1008
            break
        types.append(codec.loads(data)["type"])
    assert types[-1] == "error" and 0 < types.count("trend") < 40
    assert [recv(small)["data"]["close"] for _ in range(40)] == [1.0 + m for m in range(40)]
    small.close()


def test_huge_subscribe_list_is_deduplicated_in_linear_time(live_server: Callable[..., LiveServer]) -> None:
    """50,000 symbols (and each again) in one subscribe: answered at once, not after a quadratic scan."""
    server = live_server({"WS_MAX_MESSAGE_BYTES": 2 * 1024 * 1024, "WS_MAX_SYMBOLS": 100_000})
    ws = connect(server)
    recv(ws)
    symbols = [f"S{n}" for n in range(50_000)]
    started = time.monotonic()
    send(ws, {"action": "subscribe", "channel": "trends", "symbols": symbols + symbols})
    reply = recv(ws)
    took = time.monotonic() - started
    assert reply["type"] == "subscribed" and reply["symbols"] == symbols
    assert took < 3.0, f"a 50,000-symbol subscribe took {took:.1f} s"
    ws.close()


def test_every_frame_is_whole_while_pings_and_fan_out_share_the_socket(
        live_server: Callable[..., LiveServer]) -> None:
    """simple-websocket pings every 500 ms from its own thread while frames bigger than the socket
    buffers are fanned out: each frame a client gets is a complete, valid protocol message.

    (Shorter intervals are not a fair test here: the library closes a client whose pong is not back
    by the next ping, and these clients share one GIL with the server.)"""
    server = live_server({"WS_PING_INTERVAL_S": 0.5, "WS_SEND_BUFFER_BYTES": 4096, "WS_HEARTBEAT_S": 30,
                          "WS_QUEUE_BYTES": 64 * 1024 * 1024})
    total, clients = 1000, 2
    sockets = [connect(server, "?channel=trends&symbols=*",
                       sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)) for _ in range(clients)]
    for ws in sockets:
        assert [recv(ws)["type"] for _ in range(3)] == ["welcome", "subscribed", "snapshot"]
    results: list[dict[str, Any]] = [{"trends": [], "pings": 0, "error": None} for _ in range(clients)]

    def read(ws: websocket.WebSocket, result: dict[str, Any]) -> None:
        try:
            while len(result["trends"]) < total:
                opcode, data = ws.recv_data(control_frame=True)   # answers pings itself
                if opcode == websocket.ABNF.OPCODE_PING:
                    result["pings"] += 1
                    continue
                assert opcode == websocket.ABNF.OPCODE_TEXT, f"opcode {opcode}: {data[:60]!r}"
                message = codec.loads(data)
                assert message.get("type") in SERVER_TYPES, message
                if message["type"] == "trend":
                    assert message["data"]["note"] == "y" * 4000
                    result["trends"].append(message["data"]["close"])
        except Exception as exc:  # reported below with the client's number
            result["error"] = repr(exc)[:300]

    readers = [threading.Thread(target=read, args=(ws, r)) for ws, r in zip(sockets, results)]
    for reader in readers:
        reader.start()
    for minute in range(total):
        server.state.updates.publish_bar(bar("AAPL", minute, minute + 1.0, note="y" * 4000))
        if minute % 10 == 9:
            time.sleep(0.02)     # a feed comes in bursts (~2 s in all): pings fall between and inside them
    for reader in readers:
        reader.join(60)
    for n, result in enumerate(results):
        assert result["error"] is None, f"client {n}: {result['error']}"
        assert result["trends"] == [m + 1.0 for m in range(total)], f"client {n}"
    assert sum(r["pings"] for r in results) > 0
    for ws in sockets:
        ws.close()


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                          live_server: Callable[..., LiveServer]) -> None:
    for name, value in (("WS_MAX_CONNECTIONS", "1"), ("WS_MAX_SYMBOLS", "7"), ("WS_MESSAGE_RATE", "2.5"),
                        ("WS_MESSAGE_BURST", "3"), ("WS_QUEUE_BYTES", "12345"),
                        ("WS_ALLOWED_ORIGINS", "https://a.example, https://b.example")):
        monkeypatch.setenv(name, value)
    server = live_server()
    limits = server.state.hub.limits
    assert (limits.max_clients, limits.max_symbols, limits.message_rate, limits.message_burst,
            limits.queue_bytes) == (1, 7, 2.5, 3, 12345)
    assert handshake_status(server, origin="https://b.example") == 101
    assert handshake_status(server, origin=f"http://127.0.0.1:{server.port}") == 403
