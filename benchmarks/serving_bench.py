"""Serving benchmark: REST latency under concurrent load and WebSocket fan-out delay, on this machine.

Starts serving under gunicorn (gthread, one worker) against the real Kafka
broker on fresh, uniquely named topics, then
  1. REST: `--rest-concurrency` keep-alive clients for `--rest-seconds`: req/s, p50/p99;
  2. WebSocket: for each N in `--clients`, N clients subscribed to all symbols;
     `--bars` bars are produced at `--rate` per second and every client records
     the delay from the produce call (the bar's arrival on Kafka) to its delivery.
Loopback only, bounded loops; topics are deleted at the end.

    .venv/bin/python benchmarks/serving_bench.py --clients 100,500,1000

`--store N --hours H` measures the store of record (DESIGN.md §7): it writes
N symbols x H hours of 1-minute bars of record into a new SQLite file (or
`--database_url`) in the groups serving.updates writes (bars/s),
starts serving on it (seconds to ready, resident memory), then runs
`--rest-concurrency` keep-alive clients for `--rest-seconds` over
`?interval=1m&limit=1440` and `?interval=1h&from=<24 h ago>` (p50/p99).

    .venv/bin/python benchmarks/serving_bench.py --store 10000 --hours 24

`--universe N` measures instead serving under a whole market live:
N symbols, `--rate` bar versions per second (EARLY panes every second per
symbol, the ON_TIME pane of every window at its end, as the pipeline emits
them) for `--seconds`, produced from a process of its own, while REST clients
poll `/api/v1/trends/latest` and `/api/v1/symbols` and WebSocket clients
follow "*" or a few named symbols. It prints consumer lag every 10 s, REST
p50/p99 per route, server CPU per bar version and what the clients received.

    .venv/bin/python benchmarks/serving_bench.py --universe 10000 --rate 10000 --seconds 300
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import multiprocessing
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from benchmarks.stats import percentile
from market import codec, config
from market.settings import BOOTSTRAP_SERVERS
from runners import topics
from runners.ports import free_port
from tests.serving.samples import bar

ROOT = Path(__file__).resolve().parents[1]

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_clients(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return orjson.loads(r.read())["websocket_clients"]


class Server:
    """gunicorn serving on a free port."""

    def __init__(self, bootstrap: str, trends: str, alerts: str, threads: int, queue_bytes: int,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTPUT_TOPIC": trends,
               "ALERTS_TOPIC": alerts, "DLQ_TOPIC": f"{trends}_dlq", "HISTORY_HOURS": "1", "WS_QUEUE_BYTES": str(queue_bytes),
               "LOG_LEVEL": "WARNING", **(extra_env or {})}
        cmd = [str(ROOT / ".venv/bin/gunicorn"), "--worker-class", "gthread", "--workers", "1",
               "--threads", str(threads), "--worker-connections", str(2 * threads), "--backlog", "4096",
               "--bind", f"127.0.0.1:{self.port}",
               "--log-level", "warning", "serving:create_app()"]
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("serving did not become ready in 60 s")
        self.worker = self._worker_pid()

    def _worker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0]) if children else self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def bench_rest(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    """Keep-alive clients hitting the read routes in turn for `seconds`."""
    paths = ["/api/v1/trends/latest", "/api/v1/symbols", "/api/v1/alerts?limit=50"] + \
            [f"/api/v1/trends/{s}?limit=100" for s in SYMBOLS[:5]]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, bad, i = [], 0, offset
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            conn.request("GET", paths[i % len(paths)])
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            bad += response.status != 200
            i += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


class FeedClient(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455 upgrade, unmasked server frames): cheap enough
    that 1,000 of them in one process measure the server rather than the client library."""

    def __init__(self, port: int, bars: int, sent_at: dict[tuple[str, int], float], delays: list[float]) -> None:
        self.port, self.bars, self.sent_at, self.delays = port, bars, sent_at, delays
        self.buffer = b""
        self.upgraded = False
        self.texts = 0
        self.trends = 0
        self.ready = asyncio.get_running_loop().create_future()     # welcome, subscribed, snapshot
        self.finished = asyncio.get_running_loop().create_future()  # all bars, or the connection closed
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET /ws?channel=trends&symbols=* HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buffer + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._finish(-1)
                return
            self.upgraded, buf = True, buf[end + 4:]
        pos = 0
        while len(buf) - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < head + length:
                break
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            if opcode == 0x1:
                self._text(payload, now)
            elif opcode == 0x8:
                self._finish(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
        self.buffer = buf[pos:]

    def _text(self, payload: bytes, now: float) -> None:
        self.texts += 1
        if self.texts == 3 and not self.ready.done():
            self.ready.set_result(True)
        if payload.startswith(b'{"type":"trend"'):
            data = orjson.loads(payload)["data"]
            self.delays.append(now - self.sent_at[(data["symbol"], data["window_start"])])
            self.trends += 1
            if self.trends == self.bars:
                self._finish(None)

    def _finish(self, code: int | None) -> None:
        self.close_code = code
        if not self.finished.done():
            self.finished.set_result(code)
        if not self.ready.done():
            self.ready.set_result(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self.close_code if self.close_code is not None else (None if self.trends == self.bars
                                                                            else 1006))


def metric_series(port: int) -> dict[str, float]:
    """The server's Prometheus samples by series name (labels included)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                if line and not line.startswith("#")}


async def bench_fanout(port: int, worker: int, producer: Producer, trends: str, clients: int, bars: int,
                       rate: float, minute0: int, burst: bool) -> dict[str, float]:
    """N clients on /ws?channel=trends&symbols=*; delay of each produced bar to each client."""
    loop = asyncio.get_running_loop()
    sent_at: dict[tuple[str, int], float] = {}
    delays: list[float] = []
    protocols: list[FeedClient] = []
    for start in range(0, clients, 100):      # connect in batches: no SYN flood on the backlog
        made = await asyncio.gather(*[loop.create_connection(lambda: FeedClient(port, bars, sent_at, delays),
                                                             "127.0.0.1", port)
                                      for _ in range(min(100, clients - start))])
        protocols.extend(p for _, p in made)
    await asyncio.wait_for(asyncio.gather(*[p.ready for p in protocols]), 60)

    before = metric_series(port)
    began, cpu0, own0 = time.monotonic(), cpu_seconds(worker), time.process_time()
    for i in range(bars):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        record = bar(symbol, minute0 + i // len(SYMBOLS), 100.0 + i, pane_index=0)
        sent_at[(symbol, record["window_start"])] = time.perf_counter()
        producer.produce(trends, key=symbol.encode(), value=codec.dumps(record))
        producer.poll(0)
        if not burst:
            await asyncio.sleep(1 / rate)
        elif i % len(SYMBOLS) == len(SYMBOLS) - 1:
            # Like a pipeline firing every symbol's pane at once, at the same mean rate.
            await asyncio.sleep(len(SYMBOLS) / rate)
    producer.flush(10)
    await asyncio.wait([p.finished for p in protocols], timeout=20)
    elapsed = time.monotonic() - began
    server_cpu = (cpu_seconds(worker) - cpu0) / elapsed * 100
    client_cpu = (time.process_time() - own0) / elapsed * 100
    after = metric_series(port)
    fanouts = after["serving_fanout_seconds_count"] - before.get("serving_fanout_seconds_count", 0.0)
    fanout_ms = (after["serving_fanout_seconds_sum"] - before.get("serving_fanout_seconds_sum", 0.0)) \
        / max(1.0, fanouts) * 1000
    queued = after.get("serving_websocket_messages_queued_total", 0.0) - \
        before.get("serving_websocket_messages_queued_total", 0.0)
    for p in protocols:
        if p.transport is not None:
            p.transport.close()
    return {"clients": clients, "delivered": len(delays), "expected": clients * bars,
            "closed_1008": sum(1 for p in protocols if p.close_code == 1008),
            "p50_ms": percentile(delays, 50) * 1000, "p99_ms": percentile(delays, 99) * 1000,
            "max_ms": max(delays) * 1000 if delays else float("nan"), "server_cpu": server_cpu,
            "client_cpu": client_cpu, "queued": queued, "fanout_ms": fanout_ms}


# --- a whole market live (--universe) -------------------------------------------------
def universe_symbols(n: int) -> list[str]:
    """`n` made-up tickers, sorted."""
    return sorted(f"U{i:05d}" for i in range(n))


def produce_universe(bootstrap: str, trends: str, symbols: list[str], rate: float, seconds: float,
                     counter: Any) -> None:
    """Bar versions of every symbol at `rate` per second for `seconds` (runs in a process of its own).

    Each symbol gets an EARLY pane per pass with the next pane_index of its
    current 1-minute window; when the minute turns, the window's ON_TIME pane
    first. `counter` (a shared value) counts what was produced.
    """
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})
    rng = random.Random(7)
    price = {s: rng.uniform(5, 500) for s in symbols}
    window = {s: 0 for s in symbols}
    pane = {s: 0 for s in symbols}
    first = {s: 0.0 for s in symbols}
    began = time.monotonic()
    sent = i = 0
    step = 0.01
    next_at = began
    while time.monotonic() - began < seconds:
        due = int((time.monotonic() - began) * rate) - sent
        for _ in range(max(0, due)):
            symbol = symbols[i % len(symbols)]
            i += 1
            now_ms = int(time.time() * 1000)
            start = now_ms - now_ms % 60_000
            if window[symbol] != start:
                if window[symbol]:
                    final = bar(symbol, 0, price[symbol], pane_index=pane[symbol], base_ms=window[symbol],
                                open=first[symbol], is_final=True, pane="ON_TIME", emitted_at=now_ms)
                    producer.produce(trends, key=symbol.encode(), value=codec.dumps(final))
                    sent += 1
                window[symbol], pane[symbol], first[symbol] = start, 0, price[symbol]
            price[symbol] *= 1 + rng.gauss(0, 0.002)
            close = round(price[symbol], 4)
            version = bar(symbol, 0, close, pane_index=pane[symbol], base_ms=start, open=first[symbol],
                          high=max(close, first[symbol]), low=min(close, first[symbol]),
                          change_pct=(close - first[symbol]) / first[symbol] * 100, is_final=False, pane="EARLY",
                          tick_count=pane[symbol] + 1, last_tick_ms=now_ms - 300, emitted_at=now_ms)
            pane[symbol] += 1
            try:
                producer.produce(trends, key=symbol.encode(), value=codec.dumps(version))
            except BufferError:
                producer.poll(0.05)
                producer.produce(trends, key=symbol.encode(), value=codec.dumps(version))
            sent += 1
        producer.poll(0)
        counter.value = sent
        next_at += step
        time.sleep(max(0.0, next_at - time.monotonic()))
    producer.flush(30)
    counter.value = sent


class CountingClient(asyncio.Protocol):
    """A WebSocket client that counts the trend messages it receives (no JSON parsing)."""

    def __init__(self, port: int, query: str) -> None:
        self.port, self.query = port, query
        self.buffer = b""
        self.upgraded = False
        self.trends = 0
        self.close_code: int | None = None
        self.closing = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            f"GET /ws?{self.query} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            self.upgraded, buf = True, buf[end + 4:]
        pos, n = 0, len(buf)
        while n - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head + length:
                break
            if opcode == 0x1 and buf.startswith(b'{"type":"trend"', pos + head):
                self.trends += 1
            elif opcode == 0x8:
                self.close_code = int.from_bytes(buf[pos + head:pos + head + 2], "big") if length >= 2 else 1005
            pos += head + length
        self.buffer = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None and not self.closing:
            self.close_code = 1006


def run_ws_clients(port: int, queries: list[str], stop: Any, results: Any) -> None:
    """Connect one CountingClient per query and keep them reading until `stop` (runs in a process of its own,
    so its parsing does not compete with the REST pollers for one GIL); puts [(trends, close code)] on `results`."""
    out: list[CountingClient] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for query in queries:
            _, proto = await loop.create_connection(lambda q=query: CountingClient(port, q), "127.0.0.1", port)
            out.append(proto)
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for proto in out:
            proto.closing = True
            if proto.transport is not None:
                proto.transport.close()
    asyncio.run(main())
    results.put([(c.trends, c.close_code) for c in out])


def poll_rest(port: int, path: str, interval: float, stop: threading.Event, out: list[float],
              errors: list[int]) -> None:
    """GET `path` on one keep-alive connection every `interval` s until `stop`; latencies into `out`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        out.append(time.perf_counter() - started)
        if response.status != 200:
            errors.append(response.status)
        stop.wait(max(0.0, interval - (time.perf_counter() - started)))
    conn.close()


def server_share_within(before: dict[str, float], after: dict[str, float], endpoint: str, le: str) -> tuple[float, float]:
    """(requests, share answered within `le` seconds) of `endpoint` by serving's own histogram, between two scrapes."""
    def count(series: dict[str, float], bound: str) -> float:
        return sum(v for k, v in series.items() if k.startswith("serving_request_duration_seconds_bucket{")
                   and f'endpoint="{endpoint}"' in k and f'le="{bound}"' in k)
    total = count(after, "+Inf") - count(before, "+Inf")
    return total, (count(after, le) - count(before, le)) / total if total else float("nan")


def trend_lag(series: dict[str, float], topic: str) -> float:
    """serving_consumer_lag summed over the partitions of `topic`."""
    return sum(v for k, v in series.items() if k.startswith("serving_consumer_lag{") and f'topic="{topic}"' in k)


def create_bench_topics(bootstrap: str, suffix: str) -> tuple[str, str]:
    """(bars topic, alerts topic) of this run, with `<bars topic>_dlq` beside them (serving reads its dead letters there)."""
    trends, alerts = f"bench_trends_{suffix}", f"bench_alerts_{suffix}"
    topics.create_topics(bootstrap, {trends: config.TRENDS.partitions, alerts: config.ALERTS.partitions,
                                     f"{trends}_dlq": config.DLQ.partitions})
    return trends, alerts


def bench_universe(args: argparse.Namespace) -> int:
    """Serving under `--universe` symbols at `--rate` bar versions/s for `--seconds` (see the module doc)."""
    symbols = universe_symbols(args.universe)
    suffix = uuid.uuid4().hex[:8]
    trends, alerts = create_bench_topics(args.bootstrap_servers, suffix)
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 5})
    now_ms = int(time.time() * 1000)
    previous = now_ms - now_ms % 60_000 - 60_000
    for symbol in symbols:                  # the last closed minute of every symbol, to replay at start
        producer.produce(trends, key=symbol.encode(), value=codec.dumps(bar(symbol, 0, 100.0, base_ms=previous)))
        producer.poll(0)
    producer.flush(30)
    ws_queries = ["channel=trends&symbols=*"] * args.ws_all + [
        "channel=trends&symbols=" + ",".join(random.Random(k).sample(symbols, min(10, len(symbols))))
        for k in range(args.ws_named)]
    store = ROOT / ".cache" / "bench" / f"universe-{suffix}"
    store.mkdir(parents=True, exist_ok=True)
    server = Server(args.bootstrap_servers, trends, alerts, threads=64 + len(ws_queries),
                    queue_bytes=args.queue_bytes,
                    extra_env={"DATABASE_URL": f"sqlite:///{store / 'market.db'}",
                               **dict(e.split("=", 1) for e in args.server_env)})
    print(f"serving: gunicorn gthread, 1 worker, port {server.port}; {len(symbols)} symbols, "
          f"{args.rate:g} bar versions/s for {args.seconds:g} s; {args.ws_all} WebSocket clients on \"*\", "
          f"{args.ws_named} on 10 symbols each; {os.cpu_count()} CPUs shared by server, producer, clients, Kafka; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    stop = threading.Event()
    ws_stop, ws_results = multiprocessing.Event(), multiprocessing.Queue()
    ws_process = multiprocessing.Process(target=run_ws_clients, args=(server.port, ws_queries, ws_stop, ws_results))
    ws_process.start()
    clients: list[tuple[int, int | None]] = []
    latencies: dict[str, list[float]] = {"/api/v1/trends/latest": [], "/api/v1/symbols": []}
    errors: list[int] = []
    pollers = [threading.Thread(target=poll_rest, args=(server.port, path, args.rest_interval, stop, out, errors),
                                daemon=True)
               for path, out in latencies.items() for _ in range(args.rest_clients)]
    counter = multiprocessing.Value("q", 0)
    feeder = multiprocessing.Process(target=produce_universe, args=(args.bootstrap_servers, trends, symbols,
                                                                  args.rate, args.seconds, counter))
    try:
        time.sleep(1)
        for t in pollers:
            t.start()
        before = metric_series(server.port)
        consumed0 = before.get(f'serving_messages_consumed_total{{topic="{trends}"}}', 0.0)
        cpu0, began = cpu_seconds(server.worker), time.monotonic()
        feeder.start()
        lags: list[tuple[float, float]] = []
        while feeder.is_alive():
            feeder.join(10)
            series = metric_series(server.port)
            elapsed = time.monotonic() - began
            lag = trend_lag(series, trends)
            lags.append((elapsed, lag))
            consumed = series.get(f'serving_messages_consumed_total{{topic="{trends}"}}', 0.0) - consumed0
            print(f"  t={elapsed:5.0f} s  produced {counter.value:9d}  consumed {consumed:9.0f}  lag {lag:7.0f}  "
                  f"server CPU {(cpu_seconds(server.worker) - cpu0) / elapsed * 100:4.0f}%  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        produced = counter.value
        deadline = time.monotonic() + 60     # the tail: until serving has consumed everything produced
        while time.monotonic() < deadline:
            series = metric_series(server.port)
            if series.get(f'serving_messages_consumed_total{{topic="{trends}"}}', 0.0) - consumed0 >= produced:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(server.worker) - cpu0
        final = metric_series(server.port)
        consumed = series.get(f'serving_messages_consumed_total{{topic="{trends}"}}', 0.0) - consumed0
    finally:
        stop.set()
        ws_stop.set()
        for t in pollers:
            t.join(30)
        try:
            clients = ws_results.get(timeout=30)
        except Exception:
            pass
        ws_process.join(10)
        if feeder.is_alive():
            feeder.terminate()
        server.stop()
        topics.delete_topics(args.bootstrap_servers, [trends, alerts, f"{trends}_dlq"])
        import shutil
        shutil.rmtree(store, ignore_errors=True)
    steady = [lag for t, lag in lags if t >= 20] or [lag for _, lag in lags]
    third = max(1, len(steady) // 3)
    print(f"produced {produced} bar versions in {args.seconds:g} s ({produced / args.seconds:.0f}/s); "
          f"serving consumed {consumed:.0f}, all within {elapsed - args.seconds:.1f} s after the last")
    print(f"consumer lag (records, every 10 s): max {max(steady):.0f}, mean of first third "
          f"{sum(steady[:third]) / third:.0f}, of last third {sum(steady[-third:]) / third:.0f}")
    print(f"server CPU {cpu:.1f} s = {cpu / max(1.0, consumed) * 1e6:.0f} us per bar version "
          f"({cpu / elapsed * 100:.0f}% of a core)")
    for path, values in latencies.items():
        total, within = server_share_within(before, final, path, "0.05")
        print(f"REST  {path}: {len(values)} requests, p50 {percentile(values, 50) * 1000:.1f} ms, "
              f"p99 {percentile(values, 99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms (client side); "
              f"server side {within * 100:.1f}% within 50 ms")
    print(f"REST  non-200 answers: {len(errors)}")
    every = [n for n, _ in clients[:args.ws_all]]
    print(f"WS    '*' clients received {every} trend messages (of {consumed:.0f} consumed); named clients "
          f"received {sum(n for n, _ in clients[args.ws_all:])} in all; closed by the server: "
          f"{sorted({code for _, code in clients if code}) or 'none'}")
    print(f"load average now {os.getloadavg()[0]:.1f}")
    return 0


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_store(args: argparse.Namespace) -> int:
    """Ingest, restart and interval queries on a store of `--store` symbols x `--hours` (see the module doc)."""
    from serving.database import SqliteDatabase, open_database
    from serving.updates import GROUP_ROWS

    folder = ROOT / ".cache" / "bench" / f"store-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    url = args.database_url or f"sqlite:///{folder / 'market.db'}"
    db = open_database(url)
    symbols = universe_symbols(args.store)
    now_ms = int(time.time() * 1000)
    end = now_ms - now_ms % 60_000
    minutes = int(args.hours * 60)
    start = end - minutes * 60_000
    rng = random.Random(19)
    price = {s: rng.uniform(5, 500) for s in symbols}
    written, spent, batch = 0, 0.0, []
    began = time.monotonic()
    for m in range(minutes):
        for symbol in symbols:
            close = price[symbol] = price[symbol] * (1 + rng.gauss(0, 0.001))
            batch.append(bar(symbol, m, close, base_ms=start))
            if len(batch) == GROUP_ROWS:
                t = time.perf_counter()
                db.write(batch, [], {("bench", 0): written + len(batch)})
                spent += time.perf_counter() - t
                written += len(batch)
                batch = []
        if m % 60 == 59:
            print(f"  wrote {written} bars, {written / spent:.0f} bars/s in the store's write path "
                  f"({time.monotonic() - began:.0f} s)", flush=True)
    if batch:
        db.write(batch, [], {})
        written += len(batch)
    size = sum(f.stat().st_size for f in folder.glob("market.db*")) / 1e9 if isinstance(db, SqliteDatabase) else 0
    db.close()
    print(f"store: {written} bars of record ({len(symbols)} symbols x {args.hours:g} h) in {db.describe()}: "
          f"{written / spent:.0f} bars/s in groups of {GROUP_ROWS} with their offsets (serving.updates' "
          f"groups while catching up); {size:.2f} GB on disk", flush=True)
    suffix = uuid.uuid4().hex[:8]
    trends, alerts = create_bench_topics(args.bootstrap_servers, suffix)
    t = time.monotonic()
    server = Server(args.bootstrap_servers, trends, alerts, threads=64, queue_bytes=args.queue_bytes,
                    extra_env={"DATABASE_URL": url, "HISTORY_DAYS": "30"})
    ready = time.monotonic() - t
    print(f"serving ready {ready:.2f} s after start on that store (gunicorn start included), "
          f"resident memory {rss_mb(server.worker):.0f} MB", flush=True)
    try:
        day_ago = end - 24 * 3_600_000
        paths = {"1m, limit 1440": [f"/api/v1/trends/{s}?interval=1m&limit=1440" for s in symbols[:200]],
                 "1h, from 24 h ago": [f"/api/v1/trends/{s}?interval=1h&from={day_ago}" for s in symbols[:200]]}
        for name, urls in paths.items():
            latencies: list[float] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.rest_seconds

            def worker(k: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                mine, i = [], k
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    conn.request("GET", urls[i % len(urls)])
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 200, response.status
                    mine.append(time.perf_counter() - t0)
                    i += args.rest_concurrency
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.rest_concurrency)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            print(f"REST  ?interval={name}: {len(latencies)} requests in {args.rest_seconds:g} s "
                  f"({len(latencies) / args.rest_seconds:.0f}/s, {args.rest_concurrency} clients), "
                  f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms",
                  flush=True)
        print(f"resident memory after the queries {rss_mb(server.worker):.0f} MB; load average {os.getloadavg()[0]:.1f}")
    finally:
        server.stop()
        topics.delete_topics(args.bootstrap_servers, [trends, alerts, f"{trends}_dlq"])
        if not args.keep_store:
            import shutil
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default=BOOTSTRAP_SERVERS.value())
    parser.add_argument("--clients", default="100,500,1000", help="comma-separated WebSocket client counts")
    parser.add_argument("--bars", type=int, default=100, help="bars produced per fan-out round")
    parser.add_argument("--rate", type=float, default=10.0, help="bars per second during a round")
    parser.add_argument("--burst", action="store_true",
                        help="produce one bar per symbol at once (as the pipeline fires panes) instead of evenly")
    parser.add_argument("--rest-concurrency", type=int, default=16)
    parser.add_argument("--rest-seconds", type=float, default=5.0)
    parser.add_argument("--queue_bytes", type=int, default=config.WS_QUEUE_BYTES,
                        help="bytes a WebSocket client may have waiting (serving's WS_QUEUE_BYTES)")
    parser.add_argument("--universe", type=int, default=0,
                        help="symbols of a whole market live: measure lag, REST and CPU per bar version instead")
    parser.add_argument("--seconds", type=float, default=300.0, help="--universe: how long to produce")
    parser.add_argument("--rest-clients", type=int, default=1, help="--universe: pollers per route")
    parser.add_argument("--rest-interval", type=float, default=0.1,
                        help="--universe: seconds between the requests of one poller")
    parser.add_argument("--ws-all", type=int, default=2, help="--universe: WebSocket clients on \"*\"")
    parser.add_argument("--ws-named", type=int, default=50,
                        help="--universe: WebSocket clients on 10 symbols each")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the serving process (repeatable)")
    parser.add_argument("--store", type=int, default=0, help="symbols of a store-of-record benchmark")
    parser.add_argument("--hours", type=float, default=24.0, help="--store: hours of 1-minute bars per symbol")
    parser.add_argument("--database_url", default="", help="--store: a PostgreSQL to use instead of a new SQLite file")
    parser.add_argument("--keep-store", action="store_true", help="--store: keep the database file afterwards")
    args = parser.parse_args(argv)
    if args.store:
        return bench_store(args)
    if args.universe:
        if args.rate == 10.0:
            args.rate = float(args.universe)
        return bench_universe(args)
    counts = [int(c) for c in args.clients.split(",") if c]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(counts) + 256)), hard))

    suffix = uuid.uuid4().hex[:8]
    trends, alerts = create_bench_topics(args.bootstrap_servers, suffix)
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 0})
    now_ms = int(time.time() * 1000)
    base = now_ms - now_ms % 60_000 - 100 * 60_000
    for symbol in SYMBOLS:                      # 100 minutes of history for the REST reads
        for minute in range(100):
            producer.produce(trends, key=symbol.encode(),
                             value=codec.dumps(bar(symbol, minute, 100.0 + minute, base_ms=base)))
        producer.poll(0)
    producer.flush(30)
    store = ROOT / ".cache" / "bench" / f"fanout-{suffix}"
    store.mkdir(parents=True, exist_ok=True)
    server = Server(args.bootstrap_servers, trends, alerts, threads=max(counts) + 64, queue_bytes=args.queue_bytes,
                    extra_env={"DATABASE_URL": f"sqlite:///{store / 'market.db'}"})
    print(f"serving: gunicorn gthread, 1 worker, {max(counts) + 64} threads, port {server.port}; "
          f"{len(SYMBOLS)} symbols x 100 bars replayed; {os.cpu_count()} CPUs shared by server, clients, Kafka; "
          f"load average {os.getloadavg()[0]:.1f}")
    try:
        cpu = cpu_seconds(server.worker)
        rest = bench_rest(server.port, args.rest_concurrency, args.rest_seconds)
        rest_cpu = (cpu_seconds(server.worker) - cpu) / args.rest_seconds * 100
        print(f"REST  {args.rest_concurrency} keep-alive clients x {args.rest_seconds:.0f} s: "
              f"{rest['requests']} requests ({rest['errors']} non-200), {rest['rps']:.0f} req/s, "
              f"p50 {rest['p50_ms']:.2f} ms, p99 {rest['p99_ms']:.2f} ms, server CPU {rest_cpu:.0f}%")
        held = 0
        for i, n in enumerate(counts):
            result = asyncio.run(bench_fanout(server.port, server.worker, producer, trends, n, args.bars,
                                              args.rate, minute0=200 + i * 100, burst=args.burst))
            pattern = f"bursts of {len(SYMBOLS)}" if args.burst else "evenly"
            print(f"WS    {n:5d} clients x {args.bars} bars at {args.rate:g}/s {pattern}: delivered "
                  f"{result['delivered']}/{result['expected']}, p50 {result['p50_ms']:.1f} ms, "
                  f"p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms, "
                  f"closed 1008 {result['closed_1008']}, queued {result['queued']:.0f}, "
                  f"fan-out {result['fanout_ms']:.1f} ms/bar, server CPU {result['server_cpu']:.0f}%, "
                  f"client CPU {result['client_cpu']:.0f}%")
            if result["p99_ms"] < 100 and result["delivered"] == result["expected"]:
                held = max(held, n)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:     # let the server see every close before the next round
                try:
                    if serving_clients(server.port) == 0:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
        print(f"most clients held with p99 < 100 ms (of those tried): {held or 'none'}; "
              f"load average now {os.getloadavg()[0]:.1f}")
    finally:
        server.stop()
        import shutil
        shutil.rmtree(store, ignore_errors=True)
        topics.delete_topics(args.bootstrap_servers, [trends, alerts, f"{trends}_dlq"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
