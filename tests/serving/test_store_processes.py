"""Serving processes (`python -m serving`) on a real broker and a real store: kill -9 in the middle of
writing, restart from the store, and two processes writing one PostgreSQL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from market import codec
from runners.ports import free_port
from serving.database import open_database
from serving.store import bar_version
from tests.serving.samples import alert, bar

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW_MS = int(time.time() * 1000)
# Well inside the 1 h replayed on a first start, and older than the open windows a restart re-reads.
RECORD_TIME = NOW_MS - 30 * 60_000
# Bars of the last hours: within the store's retention (--history_days), which runs in the background.
RECENT = NOW_MS - NOW_MS % 60_000 - 4 * 3_600_000


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, codec.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, codec.loads(exc.read())


class Serving:
    """`python -m serving` on a free port."""

    def __init__(self, bootstrap: str, trends: str, alerts: str, dlq: str, database_url: str, log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTPUT_TOPIC": trends, "ALERTS_TOPIC": alerts,
               "DLQ_TOPIC": dlq,
               "DATABASE_URL": database_url, "HISTORY_HOURS": "1", "LOG_LEVEL": "WARNING"}
        self.log = log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "serving", "--port", str(self.port)], cwd=ROOT,
                                        env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            assert self.process.poll() is None, "serving exited"
            try:
                if get(self.port, "/readyz")[0] == 200:
                    return time.monotonic() - began
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serving not ready within {timeout} s")

    def consumed(self, topic: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f'serving_messages_consumed_total{{topic="{topic}"}}'):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(*args: Any) -> Serving:
        server = Serving(*args, tmp_path / f"serving{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    for record in records:
        producer.produce(topic, key=record["symbol"].encode(), value=codec.dumps(record), timestamp=RECORD_TIME)
        producer.poll(0)
    assert producer.flush(30) == 0


def expected_finals(records: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, bool, int]]:
    """The version of record of each window: the newest final version (DESIGN.md §4)."""
    out: dict[tuple[str, int], tuple[int, bool, int]] = {}
    for r in records:
        if r["is_final"]:
            key = (r["symbol"], r["window_start"])
            out[key] = max(out.get(key, (-1, False, 0)), bar_version(r))
    return out


def stored_finals(database_url: str) -> dict[tuple[str, int], tuple[int, bool, int]]:
    db = open_database(database_url)
    try:
        rows = db._query("SELECT symbol, window_start, pane_index, is_final, tick_count FROM bars")
        return {(s, w): (p, bool(f), t) for s, w, p, f, t in rows}
    finally:
        db.close()


def test_kill_9_while_writing_then_restart_loses_and_duplicates_nothing(
        kafka_bootstrap: str, make_topic: Callable[..., str], processes: Callable[..., Serving],
        database_url: str) -> None:
    trends, alerts, dlq = make_topic("store_kill"), make_topic("store_kill_alerts"), make_topic("store_kill_dlq", 1)
    symbols = [f"K{i:03d}" for i in range(400)]
    records = [bar(s, m, 100.0 + m, base_ms=RECENT) for m in range(100) for s in symbols]     # 40,000
    alert_records = [alert(s, m, base_ms=RECENT) for m in range(0, 100, 20) for s in symbols]  # 2,000
    produce(kafka_bootstrap, trends, records)
    produce(kafka_bootstrap, alerts, alert_records)

    first = processes(kafka_bootstrap, trends, alerts, dlq, database_url)
    db = open_database(database_url)
    deadline, killed_at = time.monotonic() + 90, None
    try:
        while time.monotonic() < deadline:
            done = sum(o for (t, _), o in db.offsets().items() if t == trends)
            if done >= len(records) // 10:
                first.kill()                                   # mid-ingest: some batches stored, most not
                killed_at = sum(o for (t, _), o in db.offsets().items() if t == trends)
                break
            time.sleep(0.01)
        assert killed_at is not None and killed_at < len(records), "ingest finished before the kill"
        # What the store says it has applied, it holds: every final before the stored offsets.
        assert killed_at > 0
    finally:
        db.close()

    second = processes(kafka_bootstrap, trends, alerts, dlq, database_url)
    second.wait_ready(120)
    assert stored_finals(database_url) == expected_finals(records)
    check = open_database(database_url)
    try:
        assert check._query("SELECT count(*) FROM alerts")[0][0] == len(alert_records)
        assert check._query("SELECT count(*) FROM bars")[0][0] == len(records)
    finally:
        check.close()
    # Resumed from the stored positions, not from the start of the history.
    assert second.consumed(trends) <= len(records) - killed_at
    status, body = get(second.port, f"/api/v1/trends/{symbols[7]}?limit=5000")
    assert status == 200 and [b["close"] for b in body["trends"]] == [100.0 + m for m in range(100)]


def test_two_serving_processes_on_one_postgresql(kafka_bootstrap: str, make_topic: Callable[..., str],
                                                 processes: Callable[..., Serving], postgres_server: Any) -> None:
    url = postgres_server.new_database()
    trends, alerts, dlq = make_topic("store_fleet"), make_topic("store_fleet_alerts"), make_topic("store_fleet_dlq", 1)
    symbols = [f"F{i:03d}" for i in range(200)]
    records: list[dict[str, Any]] = []
    for m in range(30):
        for s in symbols:
            records += [bar(s, m, 1.0 + m, pane_index=0, base_ms=RECENT),
                        bar(s, m, 2.0 + m, pane_index=1, base_ms=RECENT),
                        bar(s, m, 3.0 + m, pane_index=2, pane="LATE", tick_count=12, base_ms=RECENT),
                        bar(s, m, 9.0, pane_index=1, base_ms=RECENT)]           # a re-sent older version
    a, b = processes(kafka_bootstrap, trends, alerts, dlq, url), processes(kafka_bootstrap, trends, alerts, dlq, url)
    a.wait_ready(60)
    b.wait_ready(60)
    produce(kafka_bootstrap, trends, records)                   # both ingest it at the same time
    produce(kafka_bootstrap, alerts, [alert(s, 0, base_ms=RECENT) for s in symbols])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (a.consumed(trends) >= len(records) <= b.consumed(trends)):
        time.sleep(0.2)
    assert a.consumed(trends) == b.consumed(trends) == len(records)
    time.sleep(1.5)                                            # the last batch's transaction
    assert stored_finals(url) == expected_finals(records)
    for symbol in symbols[:5]:
        answers = [get(p.port, f"/api/v1/trends/{symbol}?limit=5000")[1] for p in (a, b)]
        assert answers[0] == answers[1]
        assert [t["close"] for t in answers[0]["trends"]] == [3.0 + m for m in range(30)]
    assert get(a.port, "/api/v1/alerts?limit=1000")[1] == get(b.port, "/api/v1/alerts?limit=1000")[1]
    assert len(get(a.port, "/api/v1/alerts?limit=1000")[1]["alerts"]) == len(symbols)
