"""The dead-letter ledger and the latency histograms against the real broker.

The dead letters are those the pipeline writes for the poison records of
tests/e2e/test_poison_ticks.py, made by the pipeline's own functions
(transforms.ticks.dead_letter, pipelines.kafka_io.encode_dead_letter), so
they are shaped exactly as DESIGN.md §6 has them.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from confluent_kafka import Producer

from market import codec
from market.ticks import TickError
from tests.serving.conftest import LiveServer
from tests.serving.samples import bar, dead_letter
from tests.serving.test_kafka_integration import get, serving_config, wait_for
from tests.serving.test_store_processes import Serving
from tests.serving.test_store_processes import get as get_port

pytestmark = pytest.mark.integration


def pipeline_dead_letters(ticks_topic: str, now_ms: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of the dead letters the pipeline writes for the e2e poison set and a duplicate tick."""
    from pipelines.kafka_io import encode_dead_letter
    from tests.e2e.test_poison_ticks import poison_set, tick
    from transforms.ticks import dead_letter as pipeline_dead_letter
    from transforms.ticks import tick_fields

    out = []
    poison = [*poison_set(now_ms), (b"NORM1", tick("NORM1", 10.0, now_ms, 5), now_ms, "duplicate")]
    for offset, (key, value, _, reason) in enumerate(poison):
        try:
            tick_fields(value) if value is not None else None
            detail = f"a {reason} tick"     # rejected by a later step (lateness, duplicates)
        except TickError as exc:
            detail = exc.detail
        letter = pipeline_dead_letter(reason, detail, value, (ticks_topic, offset % 3, offset))
        out.append(encode_dead_letter((key, letter)))
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def listed(server: LiveServer, query: str = "?limit=500") -> list[dict[str, Any]]:
    status, body = get(server, "/api/v1/dead-letters" + query)
    assert status == 200, body
    return body["dead_letters"]


def test_every_poison_record_is_listed_with_its_reason_key_and_text(
        kafka_bootstrap: str, make_topic: Callable[..., str], live_server: Callable[..., LiveServer]) -> None:
    trends, alerts, dlq = make_topic("ledger_trends"), make_topic("ledger_alerts"), make_topic("ledger_dlq", 1)
    now_ms = int(time.time() * 1000)
    letters = pipeline_dead_letters("raw_stock_ticks", now_ms)
    # What is not a dead letter on the dead-letter topic: counted and skipped, the rest goes on.
    garbage: list[tuple[bytes | None, bytes | None]] = [
        (b"X", b"garbage"), (b"X", None), (b"X", codec.dumps({"detail": "no reason"})),
        (b"X", codec.dumps(dead_letter(reason="NOT A WORD")))]
    produce(kafka_bootstrap, dlq, [*letters[:5], *garbage, *letters[5:]])

    server = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness after replaying the dead letters")

    def expected(pairs: list[tuple[bytes, bytes]]) -> list[tuple[str, str, str]]:
        return sorted((key.decode("utf-8", "backslashreplace"), codec.loads(value)["reason"],
                       codec.loads(value)["raw"]) for key, value in pairs)

    got = listed(server)
    assert sorted((d["key"], d["reason"], d["raw"]) for d in got) == expected(letters)
    # Each as the pipeline wrote it (source, detail, rejected_at), newest first.
    by_offset = {d["source"]["offset"]: d for d in got}
    for key, value in letters:
        letter = codec.loads(value)
        assert {k: by_offset[letter["source"]["offset"]][k] for k in letter} == letter
    assert [d["rejected_at"] for d in got] == sorted((d["rejected_at"] for d in got), reverse=True)
    assert {d["symbol"] for d in got if d["key"] == "BIG"} == {"BIG"}
    assert [d["symbol"] for d in got if d["key"] == "AAPL\n"] == [None]    # no valid symbol anywhere
    assert [d["reason"] for d in listed(server, "?symbol=big")] == ["invalid_price", "invalid_price"]

    status, summary = get(server, f"/api/v1/dead-letters/summary?from={now_ms - 3_600_000}")
    assert status == 200
    reasons: dict[str, int] = {}
    for _, value in letters:
        reason = codec.loads(value)["reason"]
        reasons[reason] = reasons.get(reason, 0) + 1
    assert summary["total"] == len(letters) and summary["by_reason"] == reasons
    assert summary["by_symbol"][0] == {"symbol": "BIG", "n": 2}

    registry = server.state.metrics.registry
    for reason, n in reasons.items():
        assert registry.get_sample_value("serving_dead_letters_total", {"reason": reason}) == n
    assert registry.get_sample_value("serving_messages_rejected_total", {"topic": dlq, "reason": "invalid_json"}) == 2
    assert registry.get_sample_value("serving_messages_rejected_total", {"topic": dlq, "reason": "missing_field"}) == 1
    assert registry.get_sample_value("serving_messages_rejected_total", {"topic": dlq, "reason": "invalid_field"}) == 1

    # Live: a dead letter written now is listed within moments, and a restart neither loses nor repeats any.
    produce(kafka_bootstrap, dlq, [(b"LIVE", codec.dumps(dead_letter("late", rejected_at=int(time.time() * 1000))))])
    wait_for(lambda: [d["key"] for d in listed(server, "?limit=1")] == ["LIVE"], 5, "the live dead letter")
    database_url = server.app.config["DATABASE_URL"]
    server.stop()
    restarted = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq, DATABASE_URL=database_url))
    wait_for(lambda: get(restarted, "/readyz")[0] == 200, 30, "readiness after the restart")
    assert len(listed(restarted)) == len(letters) + 1


HOPS = ("event_to_emit", "on_time_delay", "pipeline_to_serving", "serving_to_websocket")


def test_latency_histograms_move_when_bars_flow(kafka_bootstrap: str, make_topic: Callable[..., str],
                                                live_server: Callable[..., LiveServer]) -> None:
    trends, alerts, dlq = make_topic("latency_trends"), make_topic("latency_alerts"), make_topic("latency_dlq", 1)
    now = int(time.time() * 1000)
    # History (replayed on start) is not live latency: it must not be counted.
    publish_bars(kafka_bootstrap, trends, [bar("OLD", 0, 10.0, base_ms=now - now % 60_000 - 600_000)])
    server = live_server(serving_config(kafka_bootstrap, trends, alerts, dlq))
    wait_for(lambda: get(server, "/readyz")[0] == 200, 30, "readiness")
    registry = server.state.metrics.registry

    def count(hop: str) -> float:
        return registry.get_sample_value("serving_bar_latency_seconds_count", {"hop": hop}) or 0.0

    def total(hop: str) -> float:
        return registry.get_sample_value("serving_bar_latency_seconds_sum", {"hop": hop}) or 0.0

    assert [count(hop) for hop in HOPS] == [0.0] * 4
    ws = websocket.create_connection(server.ws_url + "?channel=trends&symbols=*", timeout=5)
    try:
        # Three EARLY panes and the ON_TIME pane of a window that ended 1.5 s ago: each emitted 1 s after
        # its newest tick and 200 ms before it is produced, the ON_TIME pane 1.3 s after the window's end.
        sent_at = int(time.time() * 1000)
        panes = [bar("LIVE", 0, 100.0 + i, pane_index=i, base_ms=sent_at - 61_500,
                     pane="EARLY" if i < 3 else "ON_TIME", is_final=i == 3,
                     last_tick_ms=sent_at - 1_200, emitted_at=sent_at - 200) for i in range(4)]
        publish_bars(kafka_bootstrap, trends, panes)
        wait_for(lambda: count("event_to_emit") == 4, 10, "the four panes timed")
        got: set[int] = set()
        while len(got) < 4:     # after welcome, subscribed, snapshot; the socket's timeout bounds the wait
            message = codec.loads(ws.recv())
            if message["type"] == "trend":
                got.add(message["data"]["pane_index"])
        received = int(time.time() * 1000)
    finally:
        ws.close()
    assert total("event_to_emit") == pytest.approx(4 * 1.0)
    assert count("on_time_delay") == 1 and total("on_time_delay") == pytest.approx(1.3)
    assert count("pipeline_to_serving") == 4
    # Receipt - emitted_at: the 200 ms before producing, plus the time to get here.
    assert 4 * 0.2 <= total("pipeline_to_serving") <= 4 * (0.2 + (received - sent_at) / 1000)
    wait_for(lambda: count("serving_to_websocket") >= 1, 5, "the WebSocket hop timed")
    assert 0 <= total("serving_to_websocket") <= count("serving_to_websocket") * (received - sent_at) / 1000

    # The dashboard's numbers: p50 and p99 of each hop over the last minute, from the same histogram
    # (interpolated within its buckets: 1.0 s is in (0.5, 1], 1.3 s in (1, 1.5]).
    status, latency = get(server, "/api/v1/latency")
    assert status == 200
    hops = latency["hops"]
    assert hops["event_to_emit"]["count"] == 4 and 500 <= hops["event_to_emit"]["p50_ms"] <= 1000
    assert hops["on_time_delay"]["count"] == 1 and 1000 <= hops["on_time_delay"]["p99_ms"] <= 1500
    assert hops["pipeline_to_serving"]["count"] == 4
    assert hops["serving_to_websocket"]["count"] >= 1 and hops["serving_to_websocket"]["p50_ms"] is not None


def publish_bars(bootstrap: str, topic: str, bars: list[dict[str, Any]]) -> None:
    produce(bootstrap, topic, [(b["symbol"].encode(), codec.dumps(b)) for b in bars])



def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture
def serving_process(tmp_path: Path) -> Iterator[Callable[..., Serving]]:
    started: list[Serving] = []

    def start(*args: Any) -> Serving:
        started.append(Serving(*args, tmp_path / f"serving{len(started)}.log"))
        return started[-1]

    yield start
    for server in started:
        server.stop()


FLOOD = 40_000          # dead letters, ~2.5 KB each: 100 MB, over six times librdkafka's prefetch bound
FLOOD_RATE = 10_000     # a second
INVALID_EVERY = 10      # one record in ten on the dead-letter topic is not even a dead letter
MAX_GROWTH_MB = 64      # what serving's memory may grow by while the flood passes through it
MAX_BAR_DELAY_S = 5.0   # bars published during the flood reach REST within this


def test_a_flood_of_dead_letters_is_stored_while_memory_stays_bounded_and_bars_keep_flowing(
        kafka_bootstrap: str, make_topic: Callable[..., str], postgres_server: Any,
        serving_process: Callable[..., Serving]) -> None:
    """10,000 garbage dead letters a second for 4 s (a minute would test the same bounds, only longer).

    Serving runs as a process of its own on PostgreSQL, so its resident memory is serving's alone (SQLite's
    page cache, bounded at 256 MiB by serving.database, would live in the process).
    """
    trends, alerts, dlq = make_topic("flood_trends", 1), make_topic("flood_alerts", 1), make_topic("flood_dlq", 1)
    server = serving_process(kafka_bootstrap, trends, alerts, dlq, postgres_server.new_database())
    server.wait_ready()
    rng = random.Random(20)
    now_ms = int(time.time() * 1000)

    def garbage(i: int) -> tuple[bytes, bytes]:
        key = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3)).encode()
        if i % INVALID_EVERY == 0:
            return key, b"\x00not a dead letter " + bytes(rng.randrange(256) for _ in range(64))
        raw = '{"symbol": "' + key.decode() + '", "price": "' + "".join(
            rng.choice("0123456789.-eE") for _ in range(2_400)) + '"}'
        return key, codec.dumps(dead_letter("invalid_price", raw, "price must be a number",
                                            rejected_at=now_ms + i // 100, source_offset=i))

    # Made before the clock starts: the producer is not what is measured.
    records = [garbage(i) for i in range(FLOOD)]
    valid = FLOOD - len(range(0, FLOOD, INVALID_EVERY))
    produce(kafka_bootstrap, dlq, records[:1000])     # warm up: every path once, then measure from there
    wait_for(lambda: get_port(server.port, "/api/v1/dead-letters/summary")[1]["total"] == 900, 30, "the warm-up")
    baseline = rss_mb(server.process.pid)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576})
    flood_over = threading.Event()
    bars_sent: dict[int, float] = {}

    def flood() -> None:
        began = time.monotonic()
        for i, (key, value) in enumerate(records[1000:], start=1000):
            producer.produce(dlq, key=key, value=value)
            if i % 500 == 0:
                producer.poll(0)
                time.sleep(max(0.0, began + (i - 1000) / FLOOD_RATE - time.monotonic()))
        producer.flush(60)
        flood_over.set()

    def bars() -> None:
        bar_producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
        pane = 0
        while not flood_over.is_set() or pane < 10:
            bars_sent[pane] = time.monotonic()
            bar_producer.produce(trends, key=b"LIVE", value=codec.dumps(
                bar("LIVE", 0, 100.0 + pane, pane_index=pane, base_ms=now_ms - now_ms % 60_000, pane="EARLY",
                    is_final=False)))
            bar_producer.flush(5)
            pane += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=bars, daemon=True)]
    for thread in threads:
        thread.start()
    peak, bars_seen = baseline, {}
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(server.process.pid))
        status, body = get_port(server.port, "/api/v1/trends/latest")
        if status == 200 and body["trends"]:
            bars_seen.setdefault(body["trends"][0]["pane_index"], time.monotonic())
        time.sleep(0.05)
    for thread in threads:
        thread.join()

    def stored() -> int:
        return get_port(server.port, "/api/v1/dead-letters/summary")[1]["total"]
    deadline = time.monotonic() + 120
    while stored() < valid and time.monotonic() < deadline:
        peak = max(peak, rss_mb(server.process.pid))
        time.sleep(0.2)
    assert stored() == valid
    metrics = get_port_text(server.port, "/metrics")
    assert f'serving_dead_letters_total{{reason="invalid_price"}} {float(valid)}' in metrics
    assert f'serving_messages_rejected_total{{reason="invalid_json",topic="{dlq}"}} {float(FLOOD - valid)}' in metrics

    growth = peak - baseline
    print(f"flood of {FLOOD} dead letters: serving's RSS {baseline:.0f} MB -> peak {peak:.0f} MB")
    assert growth < MAX_GROWTH_MB, f"resident memory grew {growth:.0f} MB under the flood"
    last = max(bars_sent)
    wait_for(lambda: get_port(server.port, "/api/v1/trends/latest")[1]["trends"][0]["pane_index"] == last, 10,
             "the last bar")
    # Every pane the poll saw (a REST poll under the flood takes its time: not every one) had arrived within
    # the bound of being sent, all along the flood.
    delays = {pane: bars_seen[pane] - bars_sent[pane] for pane in bars_seen}
    assert len(delays) >= 5 and max(delays) >= len(bars_sent) - 20, (sorted(delays), len(bars_sent))
    assert max(delays.values()) < MAX_BAR_DELAY_S, sorted(delays.items())


def get_port_text(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()
