"""Fan-out by subscription index and the encoded latest-bar board, without sockets.

Clients made with `hub.connect()` have no socket: every frame they are sent
waits in their mailbox, where the test reads it back.
"""
from __future__ import annotations

from typing import Any

from pathlib import Path

import pytest

from market import codec
from serving.database import SqliteDatabase
from serving.hub import Client, Hub
from serving.latest import LatestBoard
from serving.metrics import Metrics
from serving.store import MarketStore
from serving.transport import text_frame
from serving.updates import Updates
from tests.serving.samples import bar


class Parts:
    """A store on a SQLite file, a hub and the write path, as serving.state wires them."""

    def __init__(self, folder: Path, queue_bytes: int | None = None) -> None:
        self.db = SqliteDatabase(folder / "market.db")
        self.db.init_schema()
        self.store = MarketStore(self.db, 3, 100)
        self.hub = Hub(self.store, Metrics())
        if queue_bytes is not None:
            self.hub.limits = type(self.hub.limits)(queue_bytes=queue_bytes)
        self.updates = Updates(self.db, self.store, self.hub, self.hub.metrics)


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    p = Parts(tmp_path)
    yield p
    p.db.close()


def messages(client: Client) -> list[dict[str, Any]]:
    """Every message waiting in `client`'s mailbox, decoded from its WebSocket frames."""
    out = []
    while True:
        chunk = client.mailbox.take(0)
        if chunk is None:
            return out
        client.mailbox.done()
        pos = 0
        while pos < len(chunk):
            length, head = chunk[pos + 1] & 0x7F, 2
            if length == 126:
                length, head = int.from_bytes(chunk[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(chunk[pos + 2:pos + 10], "big"), 10
            out.append(codec.loads(chunk[pos + head:pos + head + length]))
            pos += head + length


def trends(client: Client) -> list[tuple[str, int]]:
    return [(m["data"]["symbol"], m["data"]["pane_index"]) for m in messages(client) if m["type"] == "trend"]


def test_each_client_gets_exactly_its_symbols_in_kafka_order(parts: Parts) -> None:
    hub = parts.hub
    symbols = [f"S{i:03d}" for i in range(300)]
    named = []
    for symbol in symbols[:200]:
        client = hub.connect()
        hub.subscribe(client, "trends", [symbol])
        named.append(client)
    everyone = hub.connect()
    hub.subscribe(everyone, "trends", ["*"])
    hub.unsubscribe(everyone, "trends", ["S007"])           # "*" minus one
    both = hub.connect()
    hub.subscribe(both, "trends", ["*"])
    hub.subscribe(both, "trends", ["S001"])                 # named on top of "*": still once
    for client in (*named, everyone, both):
        messages(client)                                    # subscribed + snapshot
    batch = [("trends", bar(s, 0, 100.0 + k, pane_index=k)) for k in (1, 2) for s in symbols]
    assert parts.updates.publish_many(batch) == 600
    for symbol, client in zip(symbols, named):
        assert trends(client) == [(symbol, 1), (symbol, 2)]
    assert trends(everyone) == [(s, k) for k in (1, 2) for s in symbols if s != "S007"]
    assert trends(both) == [(s, k) for k in (1, 2) for s in symbols]


def test_the_index_forgets_unsubscribed_and_gone_clients(parts: Parts) -> None:
    hub = parts.hub
    a, b = hub.connect(), hub.connect()
    hub.subscribe(a, "trends", ["AAPL", "MSFT"])
    hub.subscribe(b, "trends", ["AAPL"])
    hub.subscribe(b, "alerts", ["*"])
    hub.unsubscribe(a, "trends", ["MSFT"])
    assert set(hub._named["trends"]) == {"AAPL"}
    hub.disconnect(b)
    assert set(hub._named["trends"]["AAPL"]) == {a.id} and not hub._everyone["alerts"]
    hub.evict(a, 1008, "test")
    assert not hub._named["trends"] and not hub._everyone["trends"]
    before = a.mailbox.pending_bytes
    parts.updates.publish_bar(bar("AAPL", 0, 1.0))          # nobody left: nothing is written anywhere
    assert a.mailbox.pending_bytes == before == 0


def test_latest_board_serves_what_the_store_holds_and_is_never_stale(parts: Parts) -> None:
    store = parts.store
    for minute in (0, 2, 1):                                # an older window arriving late is not the latest
        for symbol in ("MSFT", "AAPL", "BTC/USD"):
            store.apply_bar(bar(symbol, minute, 100.0 + minute))
    first = store.board.trends_json()
    assert codec.loads(first) == {"trends": store.latest()}
    assert [b["window_start"] for b in store.latest()] == [bar("X", 2)["window_start"]] * 3
    assert [b["symbol"] for b in store.latest()] == ["AAPL", "BTC/USD", "MSFT"]
    assert store.board.trends_json() is first               # same generation: the same bytes, not rebuilt
    assert not store.apply_bar(bar("AAPL", 2, 1.0, pane_index=1))   # not a newer version
    assert store.board.trends_json() is first
    assert store.apply_bar(bar("AAPL", 2, 555.0, pane_index=2))
    assert codec.loads(store.board.trends_json())["trends"][0]["close"] == 555.0
    assert codec.loads(store.board.symbols_json()) == {"symbols": store.symbols()}
    assert store.symbols()[0] == {"symbol": "AAPL", "close": 555.0, "change_pct": bar("AAPL", 2, 555.0)["change_pct"],
                                  "window_end": bar("AAPL", 2)["window_end"]}


def test_latest_board_bars_of_some_symbols() -> None:
    board = LatestBoard()
    for i in range(100):
        b = bar(f"S{i:02d}", 0, float(i + 1))
        board.offer(b["symbol"], b, codec.dumps(b))
    assert [b["symbol"] for b in board.bars({"S50", "S07", "NOPE"})] == ["S07", "S50"]
    assert [b["symbol"] for b in board.bars(set(f"S{i:02d}" for i in range(0, 100, 2)))] == \
        [f"S{i:02d}" for i in range(0, 100, 2)]


def test_a_snapshot_larger_than_the_queue_bound_does_not_evict_the_client(tmp_path: Path) -> None:
    """10,000 symbols make a ~6 MB snapshot; the live messages behind it must still fit."""
    parts = Parts(tmp_path, queue_bytes=64 * 1024)
    hub = parts.hub
    parts.updates.publish_many([("trends", bar(f"S{i:04d}", 0, 100.0)) for i in range(1000)])
    client = hub.connect()
    hub.subscribe(client, "trends", ["*"])
    assert client.mailbox.pending_bytes > 64 * 1024         # the snapshot alone is over the bound
    for k in range(2, 41):                                  # ~25 KB of live messages behind it
        parts.updates.publish_bar(bar("S0001", 0, 100.0, pane_index=k))
    assert client.mailbox.state is None
    got = messages(client)
    assert [m["type"] for m in got[:2]] == ["subscribed", "snapshot"] and len(got[1]["data"]) == 1000
    assert [m["data"]["pane_index"] for m in got[2:]] == list(range(2, 41))
    for k in range(41, 200):                                # the snapshot gone, the bound is the bound again
        parts.updates.publish_bar(bar("S0001", 0, 100.0, pane_index=k))
    assert client.mailbox.state is not None


def test_text_frame_of_bytes_equals_of_text() -> None:
    assert text_frame('{"a":"é"}') == text_frame('{"a":"é"}'.encode())
