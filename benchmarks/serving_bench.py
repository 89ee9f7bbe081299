"""Serving benchmark: REST latency under concurrent load and WebSocket fan-out delay, on this machine.

Starts serving under gunicorn (gthread, one worker) against the real Kafka
broker on fresh, uniquely named topics, then
  1. REST: `--rest-concurrency` keep-alive clients for `--rest-seconds`: req/s, p50/p99;
  2. WebSocket: for each N in `--clients`, N clients subscribed to all symbols;
     `--bars` bars are produced at `--rate` per second and every client records
     the delay from the produce call (the bar's arrival on Kafka) to its delivery.
Loopback only, bounded loops; topics are deleted at the end.

    .venv/bin/python benchmarks/serving_bench.py --clients 100,500,1000
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from market import codec, config  # noqa: E402
from market.settings import BOOTSTRAP_SERVERS  # noqa: E402
from tests.serving.samples import bar  # noqa: E402

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_clients(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
        return orjson.loads(r.read())["websocket_clients"]


class Server:
    """gunicorn serving on a free port."""

    def __init__(self, bootstrap: str, trends: str, alerts: str, threads: int, queue_bytes: int) -> None:
        self.port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTPUT_TOPIC": trends,
               "ALERTS_TOPIC": alerts, "HISTORY_HOURS": "1", "WS_QUEUE_BYTES": str(queue_bytes),
               "LOG_LEVEL": "WARNING"}
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
            "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


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
            "p50_ms": percentile(delays, 0.50) * 1000, "p99_ms": percentile(delays, 0.99) * 1000,
            "max_ms": max(delays) * 1000 if delays else float("nan"), "server_cpu": server_cpu,
            "client_cpu": client_cpu, "queued": queued, "fanout_ms": fanout_ms}


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
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",") if c]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(counts) + 256)), hard))

    admin = AdminClient({"bootstrap.servers": args.bootstrap_servers})
    suffix = uuid.uuid4().hex[:8]
    trends, alerts = f"bench_trends_{suffix}", f"bench_alerts_{suffix}"
    for future in admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)
                                       for t in (trends, alerts)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 0})
    now_ms = int(time.time() * 1000)
    base = now_ms - now_ms % 60_000 - 100 * 60_000
    for symbol in SYMBOLS:                      # 100 minutes of history for the REST reads
        for minute in range(100):
            producer.produce(trends, key=symbol.encode(),
                             value=codec.dumps(bar(symbol, minute, 100.0 + minute, base_ms=base)))
        producer.poll(0)
    producer.flush(30)
    server = Server(args.bootstrap_servers, trends, alerts, threads=max(counts) + 64, queue_bytes=args.queue_bytes)
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
        for future in admin.delete_topics([trends, alerts], operation_timeout=30).values():
            try:
                future.result()
            except Exception:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
