"""The broker killed (-9) under load and restarted on its data: nothing is lost, everything recovers.

The test runs a broker of its own (other ports, a temp data dir; the shared
broker on 9092 is never touched), the producer at 2,000 ticks/s, the
pipeline on embedded Flink and serving. Once the first bar is out (the
pipeline is live) the broker is killed with SIGKILL and restarted on the same
data dir ~15 s later; the producer goes on ~10 s after that, then is stopped
as a supervisor stops it (SIGTERM). Then:

* the producer delivered every record and none failed (exit code 0): its
  librdkafka queue holds the ticks through the outage;
* serving said 503 on /readyz while the broker was down and 200 after;
* the pipeline recovered by itself, and every tick the broker holds ends in
  the latest bar of its window or in a dead letter. The allowed lateness here
  (5 s) is shorter than the outage, so ticks held back by the outage arrive
  behind the watermark and must come out as `late` dead letters, never
  disappear (docs/deployment.md, "Broker outages").
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from runners import wait as runner_wait
from runners.local import kafka, paths, process
from runners.ports import free_port
from runners.topics import TopicSet
from tests.e2e.live import Collector, final_bars
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import seconds_until

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

WINDOW_MS = 5000
RATE = 2000
OUTAGE_S = 15
AFTER_OUTAGE_S = 10


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def get_json(port: int, route: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5) as response:
        return orjson.loads(response.read())


def start_serving(log_path, bootstrap: str, topics: TopicSet, env: dict) -> subprocess.Popen:
    """`python -m serving` on a free port (its `.port`) for the test's topics."""
    port = free_port()
    with open(log_path, "ab") as log:
        serving = subprocess.Popen(
            [sys.executable, "-m", "serving", "--port", str(port), f"--bootstrap_servers={bootstrap}",
             f"--output_topic={topics.trends}", f"--alerts_topic={topics.alerts}", f"--dlq_topic={topics.dlq}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=paths.PROJECT_ROOT, env=env)
    serving.port = port
    return serving


def published_ticks(bootstrap: str, topic: str) -> list[dict]:
    """Every record of `topic` on the broker, decoded, with its (partition, offset)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    ticks, done = [], {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 60
    while len(done) < len(ends) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        tick = orjson.loads(msg.value())
        tick["_source"] = (msg.partition(), msg.offset())
        ticks.append(tick)
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
    consumer.close()
    assert len(ticks) == sum(ends.values())
    return ticks


@pytest.fixture
def own_broker(flink_jars, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    broker = kafka.Broker(name=f"kafka-fault-{suffix}", port=free_port(), controller_port=free_port(),
                          sasl_port=free_port(), home=tmp_path / "kafka")
    kafka.start(broker=broker)
    try:
        yield broker
    finally:
        kafka.stop(broker=broker)


def test_broker_killed_and_restarted_under_load(own_broker, tmp_path):
    bootstrap = own_broker.bootstrap
    topics = TopicSet.create(bootstrap, uuid.uuid4().hex[:8])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [f"--bootstrap_servers={bootstrap}", *topics.pipeline_args(), "--no_resume",
            "--window_size_s=5", "--allowed_lateness_s=5", "--early_firing_s=1", "--parallelism=2",
            "--checkpointing_interval=5000", f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"]
    serving = start_serving(tmp_path / "serving.log", bootstrap, topics, env)
    serving_port = serving.port
    collector = Collector(bootstrap, topics)
    pipeline = PipelineProcess(args, tmp_path / "pipeline.log").start()
    producer = None
    try:
        seconds_until(lambda: "Job state changed to RUNNING" in pipeline.log_path.read_text(errors="replace")
                   or pipeline.assert_running(), 300, "the pipeline's job running")
        seconds_until(lambda: readyz(serving_port) == 200, 60, "serving ready")
        with open(tmp_path / "producer.log", "ab") as producer_log:
            producer = subprocess.Popen(
                [sys.executable, "-m", "producer", f"--bootstrap_servers={bootstrap}",
                 f"--input_topic={topics.ticks}", f"--rate={RATE}", "--duration_s=600",
                 "--stats_interval_s=2"],
                stdout=producer_log, stderr=subprocess.STDOUT, cwd=paths.PROJECT_ROOT, env=env)
        producing_s = time.monotonic()
        # Started under load the pipeline takes a while to its first bar: the
        # outage must hit a pipeline that is live, whenever that is.
        seconds_until(lambda: bool(collector.snapshot()[0]) or pipeline.assert_running(), 180,
                   "the first bar before the outage")
        time.sleep(3)

        os.kill(process.read_pid(own_broker.name), signal.SIGKILL)
        down_at = time.monotonic()
        not_ready_after = seconds_until(lambda: readyz(serving_port) == 503, OUTAGE_S,
                                        "/readyz 503 with the broker down")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        kafka.start(broker=own_broker)
        up_at = time.monotonic()
        ready_after = seconds_until(lambda: readyz(serving_port) == 200, 60, "/readyz 200 after the restart")
        print(f"outage {up_at - down_at:.1f}s; /readyz 503 after {not_ready_after:.1f}s, "
              f"200 {ready_after:.1f}s after the restart")

        time.sleep(AFTER_OUTAGE_S)
        producer.send_signal(signal.SIGTERM)       # a planned stop: it flushes what it holds
        assert producer.wait(timeout=180) == 0, (tmp_path / "producer.log").read_text()[-3000:]
        producing_s = time.monotonic() - producing_s
        ticks = published_ticks(bootstrap, topics.ticks)
        assert len(ticks) >= RATE * producing_s * 0.5, f"only {len(ticks)} ticks published in {producing_s:.0f}s"
        published = Counter((t["symbol"], t["timestamp"] // WINDOW_MS * WINDOW_MS) for t in ticks)

        def accounted() -> tuple[dict, Counter, Counter]:
            bars, _, letters = collector.snapshot()
            latest = final_bars(bars)
            dead = {}
            for _, letter in letters:
                dead[(letter["source"]["partition"], letter["source"]["offset"])] = letter
            in_dead = Counter()
            for letter in dead.values():
                tick = orjson.loads(letter["raw"])
                in_dead[(tick["symbol"].upper(), tick["timestamp"] // WINDOW_MS * WINDOW_MS)] += 1
            # Only a final version counts: an EARLY pane may already hold every
            # tick of its window, but the bar of record is the ON_TIME / LATE one.
            in_bar = {key: bar["tick_count"] for key, bar in latest.items() if bar["is_final"]}
            short = {key: (in_bar.get(key, 0), in_dead[key], n)
                     for key, n in published.items()
                     if in_bar.get(key, 0) + in_dead[key] != n}
            return short, Counter(letter["reason"] for letter in dead.values()), in_dead

        runner_wait.wait_until(lambda: pipeline.assert_running() or not accounted()[0], 150, 2.0)
        short, reasons, _ = accounted()
        assert short == {}, (f"windows whose ticks are neither in the bar nor dead letters "
                             f"(in bar, dead letters, published): {dict(list(short.items())[:10])}; "
                             f"dead letters by reason: {dict(reasons)}\n{pipeline.tail(20)}")
        assert set(reasons) <= {"late"}, reasons
        print(f"{len(ticks)} ticks: {sum(reasons.values())} late dead letters, the rest in final bars")
        # Serving serves what a freshly started serving serves. Both follow the
        # topics a poll apart: the one that lived through the outage must reach
        # the same state, not be caught between two polls of the other.
        assert readyz(serving_port) == 200
        fresh = start_serving(tmp_path / "fresh-serving.log", bootstrap, topics, env)
        try:
            seconds_until(lambda: readyz(fresh.port) == 200, 60, "a fresh serving ready")
            for route in ("/api/v1/trends/latest", "/api/v1/symbols"):
                same = lambda: get_json(serving_port, route) == get_json(fresh.port, route)
                if not runner_wait.wait_until(same, 20):
                    assert get_json(serving_port, route) == get_json(fresh.port, route), route
        finally:
            fresh.terminate()
            fresh.wait(30)
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
        pipeline.stop()
        serving.terminate()
        serving.wait(30)
        collector.close()
