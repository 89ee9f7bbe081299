"""The store of record (serving/database.py) on a real SQLite file and a real PostgreSQL, and rollups.

Every test runs on both engines (`database_url`): the same SQL must mean the same thing.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from serving import create_app
from serving.database import BarDatabase, SchemaMismatch, open_database
from tests.serving.conftest import KEEP_EVERYTHING, serving_of
from tests.serving.samples import BASE_MS, MINUTE_MS, alert, bar


@pytest.fixture
def db(database_url: str) -> Iterator[BarDatabase]:
    store = open_database(database_url)
    yield store
    store.close()


def stored(db: BarDatabase, symbol: str) -> list[tuple[int, int, bool, int, float]]:
    return [(b["window_start"], b["pane_index"], b["is_final"], b["tick_count"], b["close"])
            for b in db.bars(symbol, None, None, 5000)]


def test_a_version_replaces_only_an_older_one(db: BarDatabase) -> None:
    w = BASE_MS
    db.write([bar("AAPL", 0, 100.0, pane_index=1)], [], {("t", 0): 10})
    db.write([bar("AAPL", 0, 101.0, pane_index=2, pane="LATE", tick_count=11)], [], {("t", 0): 20})
    db.write([bar("AAPL", 0, 1.0, pane_index=1)], [], {("t", 0): 15})           # a replay: older, ignored
    db.write([bar("AAPL", 0, 2.0, pane_index=2, pane="LATE", tick_count=9)], [], {})   # same pane, fewer ticks
    assert stored(db, "AAPL") == [(w, 2, True, 11, 101.0)]
    db.write([bar("AAPL", 0, 3.0, pane_index=2, pane="LATE", tick_count=12)], [], {})  # same pane, more ticks
    assert stored(db, "AAPL") == [(w, 2, True, 12, 3.0)]
    assert db.offsets() == {("t", 0): 20}                                         # never moved back
    # After a restore the same pane index may come final and not: the final one wins.
    db.write([bar("MSFT", 0, 5.0, pane_index=3, is_final=False, pane="EARLY")], [], {})
    db.write([bar("MSFT", 0, 6.0, pane_index=3)], [], {})
    db.write([bar("MSFT", 0, 7.0, pane_index=3, is_final=False, pane="EARLY", tick_count=99)], [], {})
    assert stored(db, "MSFT") == [(w, 3, True, 10, 6.0)]
    # Everything round-trips, extra fields and nulls included.
    original = bar("BTC/USD", 4, 42.5, note="kept", last_tick_ms=None, anomalies=["volatility"])
    db.write([original], [], {})
    assert db.bars("BTC/USD", None, None, 1) == [original]
    assert [b["symbol"] for b in db.latest_bars()] == ["AAPL", "BTC/USD", "MSFT"]


def test_alerts_first_id_wins_and_filters(db: BarDatabase) -> None:
    a1, a2 = alert("AAPL", 0), alert("AAPL", 1, "return_zscore", value=7.0)
    db.write([], [a1, a2, alert("MSFT", 0, "volume_spike", value=3.5)], {})
    db.write([], [{**a1, "message": "a replay"}], {})
    assert db.alerts(limit=10)[0]["alert_id"] == a2["alert_id"]
    assert [a["message"] for a in db.alerts("AAPL", "volatility")] == [a1["message"]]
    assert len(db.alerts(since_ms=a2["detected_at"])) == 1


def test_a_failed_batch_writes_nothing_not_even_its_offsets(db: BarDatabase) -> None:
    db.write([bar("AAPL", 0, 1.0)], [], {("t", 0): 5})
    broken = bar("AAPL", 1, 2.0)
    broken["open"] = None                      # NOT NULL: the database refuses the row
    with pytest.raises(Exception):
        db.write([bar("AAPL", 2, 3.0), broken], [alert("AAPL", 2)], {("t", 0): 9})
    assert [w for w, *_ in stored(db, "AAPL")] == [BASE_MS]
    assert db.offsets() == {("t", 0): 5} and db.alerts() == []
    db.write([bar("AAPL", 2, 3.0)], [], {("t", 0): 9})        # and the store is still usable
    assert db.offsets() == {("t", 0): 9}


def test_schema_version_of_another_serving_is_refused(database_url: str) -> None:
    db = open_database(database_url)
    conn = db._conn()
    with db._transaction(conn) as cur:
        cur.execute(db._sql("UPDATE serving_meta SET value = ? WHERE key = ?"), ("999", "schema_version"))
    db.close()
    with pytest.raises(SchemaMismatch, match="schema version 999, this serving needs 1: point DATABASE_URL"):
        open_database(database_url)


def test_retention_deletes_what_is_older_only(db: BarDatabase) -> None:
    db.write([bar("AAPL", m, 1.0 + m) for m in range(10)] + [bar("OLD", 0, 1.0)],
             [alert("AAPL", 1), alert("AAPL", 8)], {})
    cut = BASE_MS + 5 * MINUTE_MS
    assert db.prune(cut, symbols_per_transaction=1) == 6
    assert [w for w, *_ in stored(db, "AAPL")] == [BASE_MS + m * MINUTE_MS for m in range(5, 10)]
    assert not db.has_symbol("OLD") and db.has_symbol("AAPL")
    assert [a["window_start"] for a in db.alerts()] == [BASE_MS + 8 * MINUTE_MS]


# --- rollups, against an independent computation of DESIGN.md §7 ---------------------------------

def random_bars(rng: random.Random, symbol: str, windows: int) -> list[dict[str, Any]]:
    out = []
    price = rng.uniform(10, 500)
    for m in range(windows):
        if rng.random() < 0.15:
            continue                                      # a window without ticks: no bar
        o = price
        c = price * math.exp(rng.gauss(0, 0.01))
        h, lo = max(o, c) * (1 + rng.random() * 0.01), min(o, c) * (1 - rng.random() * 0.01)
        ticks = rng.randint(1, 50)
        volume = 0.0 if rng.random() < 0.1 else rng.uniform(0, 1e6)
        average = rng.uniform(lo, h)
        vwap = average if volume == 0 else rng.uniform(lo, h)
        out.append(bar(symbol, m, c, open=o, high=h, low=lo, average_price=average, vwap=vwap, volume=volume,
                       tick_count=ticks, change_pct=(c - o) / o * 100, swing_pct=(h - lo) / lo * 100,
                       pane_index=rng.randint(1, 3), is_volatility_anomaly=rng.random() < 0.05,
                       last_tick_ms=BASE_MS + m * MINUTE_MS + rng.randint(0, 59_999)))
        price = c
    return out


def reference_rollup(bars: list[dict[str, Any]], interval_ms: int) -> dict[int, dict[str, Any]]:
    """DESIGN.md §7 written out directly, bucket by bucket."""
    buckets: dict[int, list[dict[str, Any]]] = {}
    for b in bars:
        buckets.setdefault(b["window_start"] - b["window_start"] % interval_ms, []).append(b)
    out = {}
    for start, group in buckets.items():
        group.sort(key=lambda b: b["window_start"])
        volume = sum(b["volume"] for b in group)
        ticks = sum(b["tick_count"] for b in group)
        average = sum(b["average_price"] * b["tick_count"] for b in group) / ticks
        o, c = group[0]["open"], group[-1]["close"]
        h, lo = max(b["high"] for b in group), min(b["low"] for b in group)
        out[start] = {"window_start": start, "window_end": start + interval_ms, "open": o, "close": c,
                      "high": h, "low": lo, "volume": volume, "tick_count": ticks, "average_price": average,
                      "vwap": sum(b["vwap"] * b["volume"] for b in group) / volume if volume else average,
                      "change_pct": (c - o) / o * 100, "swing_pct": (h - lo) / lo * 100}
    return out


@pytest.fixture
def app_on(database_url: str) -> Iterator[Flask]:
    app = create_app({"TESTING": True, "CONSUME": False, "DATABASE_URL": database_url, **KEEP_EVERYTHING})
    yield app
    serving_of(app).close()


def test_rollups_equal_an_independent_computation(app_on: Flask) -> None:
    rng = random.Random(19)
    updates = serving_of(app_on).updates
    bars = {s: random_bars(rng, s, 3 * 24 * 60 // 2) for s in ("AAPL", "BTC/USD")}   # 36 h of minutes
    for symbol_bars in bars.values():
        for i in range(0, len(symbol_bars), 500):
            updates.publish_many([("trends", b) for b in symbol_bars[i:i + 500]])
    client = app_on.test_client()
    for symbol, symbol_bars in bars.items():
        for interval, ms in (("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("7m", 420_000),
                             ("1d", 86_400_000), ("90m", 5_400_000)):
            body = client.get(f"/api/v1/trends/{symbol}?interval={interval}&limit=5000").get_json()
            assert body["interval"] == interval
            expected = reference_rollup(symbol_bars, ms)
            got = {b["window_start"]: b for b in body["trends"]}
            assert sorted(got) == sorted(expected)
            for start, want in expected.items():
                for field, value in want.items():
                    assert math.isclose(got[start][field], value, rel_tol=1e-9, abs_tol=1e-9), \
                        (symbol, interval, start, field, got[start][field], value)
                assert got[start]["pane"] == "ROLLUP" and got[start]["log_return"] is None
        # from/to bound whole intervals; limit keeps the newest.
        start, end = BASE_MS + 125 * MINUTE_MS, BASE_MS + 600 * MINUTE_MS
        body = client.get(f"/api/v1/trends/{symbol}?interval=1h&from={start}&to={end}&limit=3").get_json()
        hour = 3_600_000
        last = end // hour * hour                      # intervals aligned to the epoch, starting within [from, to]
        assert [b["window_start"] for b in body["trends"]] == [last - 2 * hour, last - hour, last]
        assert body["trends"][0]["window_start"] >= start


def test_the_open_interval_includes_the_open_window(app_on: Flask) -> None:
    updates = serving_of(app_on).updates
    updates.publish_many([("trends", bar("AAPL", m, 100.0 + m, volume=10.0, tick_count=1)) for m in range(7)])
    updates.publish_bar(bar("AAPL", 7, 150.0, pane_index=0, volume=5.0, tick_count=2, high=151.0))   # still open
    client = app_on.test_client()
    rolled = client.get("/api/v1/trends/AAPL?interval=5m").get_json()["trends"]
    assert [(b["window_start"], b["tick_count"], b["is_final"]) for b in rolled] == \
        [(BASE_MS, 5, True), (BASE_MS + 5 * MINUTE_MS, 4, False)]
    assert rolled[-1]["close"] == 150.0 and rolled[-1]["high"] == 151.0 and rolled[-1]["volume"] == 25.0
    # The 1m answer is the bars themselves, the open window's EARLY version last.
    minutes = client.get("/api/v1/trends/AAPL?interval=1m").get_json()
    assert minutes["interval"] == "1m" and minutes["trends"][-1]["pane"] == "EARLY"
    assert len(minutes["trends"]) == 8
