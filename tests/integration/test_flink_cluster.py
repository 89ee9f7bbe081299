"""Beam pipelines on a real Flink 1.19 session cluster on this machine (runners/flink_cluster).

The cluster is three processes started by `runners.flink_cluster.cluster`:
JobManager, TaskManager and Beam's Python worker pool. Pipelines go through
the real FlinkRunner with `--flink_master=localhost:8081`: the Python SDK
starts Beam's job server, which submits to the cluster; KafkaIO runs
EMBEDDED in the TaskManager, the Python steps in the pool's SDK workers.
Each test checks that its job ran on the cluster (Flink's REST API lists it)
and cancels it through Flink, as one stops a streaming job on a cluster.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import typing
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer, Producer

from market import codec, config
from runners.flink_cluster import cluster, distribution
from runners.flink_rest import TERMINAL_STATES
from runners.local import beam as local_beam
from runners.local import process
from runners.local.supervised import cmdline
from runners.topics import TopicSet
from runners.wait import wait_until
from tests.conftest import missing_prerequisite
from tests.e2e.live import Collector, RandomWalk, TickScript, final_bars
from tests.e2e.pipeline_process import PipelineProcess
from tests.reference import window_bar

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e,
              pytest.mark.usefixtures("beam_services_end_with_test")]

FLINK_MASTER = "localhost:8081"


@pytest.fixture(scope="module")
def flink_cluster(flink_jars) -> Iterator[None]:
    """A running local session cluster; started here (and stopped after) unless one already runs."""
    try:
        distribution.fetch()
    except RuntimeError as exc:
        missing_prerequisite(f"the Flink distribution could not be fetched: {exc}")
    started_here = not cluster.is_running()
    try:
        cluster.start()
        yield
    finally:
        if started_here:
            cluster.stop()


def shout(record: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    key, value = record
    return key, value.upper() + b"!"


def consume(bootstrap: str, topic: str, until: typing.Callable[[list], bool], timeout_s: float) -> list:
    """Records of `topic` from the start, until `until(records)` holds or time runs out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            records.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return records


def cluster_job(name: str, timeout_s: float = 60.0) -> dict:
    """The cluster's job called `name`, once the JobManager has accepted it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [job for job in cluster.rest().jobs() if job["name"] == name]
        if found:
            return found[0]
        time.sleep(1.0)
    raise AssertionError(f"no job named {name!r} on the cluster: {cluster.rest().jobs()}")


def wait_until_running(jid: str, timeout_s: float = 180.0) -> None:
    """Until every task of the job runs: its SDK workers are up and its Kafka readers assigned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        details = cluster.rest().job(jid)
        assert details["state"] in ("CREATED", "INITIALIZING", "RUNNING"), details["state"]
        if details["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in details["vertices"]):
            return
        time.sleep(1.0)
    raise AssertionError(f"job {jid} did not start all its tasks in {timeout_s:.0f}s")


def cancel_on_cluster(name: str, result) -> None:
    """Cancel the job through Flink and let the client see its end (which stops the job server)."""
    for job in cluster.rest().jobs():
        if job["name"] == name and job["state"] not in ("CANCELED", "FAILED", "FINISHED"):
            assert cluster.rest().cancel(job["jid"]) == "CANCELED"
    if result is not None:
        try:
            result.wait_until_finish(duration=30_000)
        except RuntimeError:  # the client reports a cancelled job as a failure
            pass


def test_kafka_python_kafka_on_the_cluster(kafka_bootstrap, flink_cluster, make_topic):
    source, sink = make_topic("cluster_in"), make_topic("cluster_out")
    sent = {f"sym{i % 7}:{i}".encode(): f"tick-{i}".encode() for i in range(300)}
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for key, value in sent.items():
        producer.produce(source, key=key, value=value)
    assert producer.flush(30) == 0

    job_name = f"cluster-proof-{uuid.uuid4().hex[:8]}"
    args, _ = cluster.pipeline_args(["--runner=FlinkRunner", f"--flink_master={FLINK_MASTER}", "--streaming",
                                     "--parallelism=2", f"--job_name={job_name}"])
    expansion = local_beam.expansion_service()
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    _ = (pipeline
         | "ReadTicks" >> ReadFromKafka(
             consumer_config={"bootstrap.servers": kafka_bootstrap, "auto.offset.reset": "earliest"},
             topics=[source], expansion_service=expansion)
         | "Shout" >> beam.Map(shout).with_output_types(typing.Tuple[bytes, bytes])
         | "WriteBack" >> WriteToKafka(
             producer_config={"bootstrap.servers": kafka_bootstrap}, topic=sink, expansion_service=expansion))
    result = None
    try:
        result = pipeline.run()
        job = cluster_job(job_name, timeout_s=120)
        received = consume(kafka_bootstrap, sink, lambda records: len(records) >= len(sent), timeout_s=120)
        keys = [key for key, _ in received]
        assert len(keys) == len(set(keys)), "a record was written twice"
        assert dict(received) == {key: value.upper() + b"!" for key, value in sent.items()}
        # Checkpoints (every 10 s, under .cache/flink-cluster/checkpoints) complete on the cluster.
        deadline = time.monotonic() + 60
        while cluster.rest().checkpoint_counts(job["jid"])["completed"] < 1 and time.monotonic() < deadline:
            time.sleep(1.0)
        assert cluster.rest().checkpoint_counts(job["jid"])["completed"] >= 1
        assert any(cluster.checkpoint_root(job_name).glob("*/chk-*/_metadata"))
    finally:
        cancel_on_cluster(job_name, result)


# The market pipeline itself: 3 symbols × 3 windows of 5 s, 4 ticks each, one
# window swinging > 2 %, and one record that is not JSON.
WINDOW_MS = 5_000
SYMBOLS = ("AAPL", "MSFT", "BTC-USD")


def market_ticks(base_ms: int) -> list[dict]:
    ticks = []
    for s, symbol in enumerate(SYMBOLS):
        for w in range(3):
            start = base_ms + w * WINDOW_MS
            prices = [100.0 + s, 100.5 + s, 99.8 + s, 100.2 + s]
            if symbol == "MSFT" and w == 1:
                prices[2] = 104.0 + s  # swing_pct ≈ 4 %: a volatility alert
            for i, price in enumerate(prices):
                ticks.append({"symbol": symbol, "price": price, "volume": 10 * (i + 1),
                              "timestamp": start + 1_000 * i + 100, "seq": w * 10 + i})
    return sorted(ticks, key=lambda tick: tick["timestamp"])


def test_market_pipeline_on_the_cluster(kafka_bootstrap, flink_cluster, make_topic):
    from pipelines import market
    from runners import launch

    topics = {"input": make_topic("cluster_ticks"), "output": make_topic("cluster_bars"),
              "alerts": make_topic("cluster_alerts"), "dlq": make_topic("cluster_dlq", partitions=1)}
    job_name = f"cluster-market-{uuid.uuid4().hex[:8]}"
    result = None
    try:
        # What `python -m pipelines.market` attaches for a cluster, then the same run().
        prepared = launch.prepare([
            "--runner=FlinkRunner", f"--flink_master={FLINK_MASTER}", "--parallelism=2",
            f"--job_name={job_name}", f"--bootstrap_servers={kafka_bootstrap}",
            f"--input_topic={topics['input']}", f"--output_topic={topics['output']}",
            f"--alerts_topic={topics['alerts']}", f"--dlq_topic={topics['dlq']}",
            f"--consumer_group={job_name}", "--window_size_s=5", "--allowed_lateness_s=2",
            "--early_firing_s=0"])
        result = market.run(prepared.args, prepared.expansion_service)
        wait_until_running(cluster_job(job_name, timeout_s=120)["jid"])

        # A live feed: the ticks are published once the job reads, with event
        # times from the next window on. Ticks published before the readers
        # start can be behind KafkaIO's watermark already (it follows processing
        # time while a partition looks idle) and would be judged late.
        base = (int(time.time() * 1000) // WINDOW_MS + 1) * WINDOW_MS
        ticks = market_ticks(base)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for tick in ticks:
            producer.produce(topics["input"], key=tick["symbol"].encode(), value=codec.dumps(tick),
                             timestamp=tick["timestamp"])
        producer.produce(topics["input"], key=b"AAPL", value=b"{not json", timestamp=base + 2_000)
        assert producer.flush(30) == 0

        def final_bars(records: list) -> dict:
            bars = {}
            for _, value in records:
                bar = codec.loads(value)
                if bar["is_final"]:
                    bars[(bar["symbol"], bar["window_start"])] = bar
            return bars

        records = consume(kafka_bootstrap, topics["output"], lambda r: len(final_bars(r)) >= 9, timeout_s=120)
        bars = final_bars(records)
        assert set(bars) == {(symbol, base + w * WINDOW_MS) for symbol in SYMBOLS for w in range(3)}
        for (symbol, start), bar in bars.items():
            window = [t for t in ticks if t["symbol"] == symbol and start <= t["timestamp"] < start + WINDOW_MS]
            prices = [t["price"] for t in window]
            assert bar["tick_count"] == len(window) == 4
            assert (bar["open"], bar["close"]) == (prices[0], prices[-1])
            assert (bar["high"], bar["low"]) == (max(prices), min(prices))
            assert bar["volume"] == pytest.approx(sum(t["volume"] for t in window))
            assert bar["window_end"] == start + WINDOW_MS
        assert all(key.decode() == codec.loads(value)["symbol"] for key, value in records)

        alerts = [codec.loads(v) for _, v in consume(kafka_bootstrap, topics["alerts"], bool, timeout_s=30)]
        assert f"MSFT:{base + WINDOW_MS}:volatility" in {alert["alert_id"] for alert in alerts}
        dead = [codec.loads(v) for _, v in consume(kafka_bootstrap, topics["dlq"], bool, timeout_s=30)]
        assert [d["reason"] for d in dead] == ["invalid_json"]
    finally:
        cancel_on_cluster(job_name, result)


# --- what the cluster cannot run, and a job's lifecycle (docs/flink_cluster.md) ---------------------

ROOT = Path(__file__).resolve().parents[2]
LIFECYCLE_SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "JPM", "V", "XOM", "BTC-USD", "ETH-USD"]
LIFECYCLE_WINDOW_MS = 10_000


def command(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """A project command as a user runs it (`python -m ...` from the project root), output as text."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_for(condition: typing.Callable[[], object], timeout_s: float, what: typing.Callable[[], str]):
    value = wait_until(condition, timeout_s, 0.5)
    assert value, f"{what()}: not within {timeout_s:.0f}s"
    return value


def job_running(name: str, submitter: PipelineProcess, after: str | None = None, timeout_s: float = 300) -> dict:
    """The cluster's job `name` (other than the job id `after`) once all its tasks run; its submitter must live."""
    def running() -> dict | None:
        submitter.assert_running()
        job = cluster.rest().active_job(name)
        if job is None or job["jid"] == after:
            return None
        details = cluster.rest().job(job["jid"])
        counts = details["status-counts"]
        return details if 0 < counts.get("RUNNING", 0) == sum(counts.values()) else None

    return wait_for(running, timeout_s, lambda: f"job {name} running all its tasks\n{submitter.tail(30)}")


def alive(pids: list[int]) -> list[str]:
    """The pids of `pids` still running (not zombies), with their command lines."""
    left = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.append(f"{pid}: {cmdline(pid)[:150]}")
    return left


def publish(script: TickScript, walk: RandomWalk, seconds: float) -> None:
    """A tick of every symbol every 0.1 s for `seconds`, symbols spread over the topic's 3 partitions."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, symbol in enumerate(LIFECYCLE_SYMBOLS):
            script.tick(symbol, walk.next(symbol), walk.volume(), partition=i % 3)
        time.sleep(0.1)
    script.flush()


def publish_until(script: TickScript, walk: RandomWalk, condition: typing.Callable[[], object], timeout_s: float,
                  what: typing.Callable[[], str]) -> None:
    """Publish in rounds of 0.5 s until `condition()` holds (a live feed: windows close as time goes on)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what()}: not within {timeout_s:.0f}s"
        publish(script, walk, 0.5)


def published_ticks(script: TickScript) -> dict[tuple[str, int], list[tuple]]:
    """(symbol, window_start) -> the ticks published in it, as tests.reference takes them."""
    ticks = defaultdict(list)
    for batch in script.batches:
        tick = orjson.loads(batch.values[0])
        start = tick["timestamp"] // LIFECYCLE_WINDOW_MS * LIFECYCLE_WINDOW_MS
        ticks[(tick["symbol"], start)].append(
            (tick["symbol"], tick["price"], tick["volume"], tick["timestamp"], tick["seq"]))
    return ticks


def dead_letter_counts(dead_letters: list) -> Counter:
    counted = Counter()
    for _, letter in dead_letters:
        tick = orjson.loads(letter["raw"])
        counted[(tick["symbol"], tick["timestamp"] // LIFECYCLE_WINDOW_MS * LIFECYCLE_WINDOW_MS)] += 1
    return counted


def test_a_job_needing_more_slots_than_are_free_is_refused_before_submitting(kafka_bootstrap, flink_cluster,
                                                                              make_topic):
    topic = make_topic("cluster_refused")
    job_name = f"cluster-refused-{uuid.uuid4().hex[:8]}"
    free = cluster.overview()["slots-available"]
    done = command("-m", "pipelines.market", "--runner=FlinkRunner", f"--flink_master={FLINK_MASTER}",
                   f"--job_name={job_name}", f"--parallelism={free + 1}", f"--bootstrap_servers={kafka_bootstrap}",
                   f"--input_topic={topic}")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert f"needs {free + 1} task slots (--parallelism={free + 1})" in output
    assert f"has {free} free of" in output and "start --taskmanagers" in output
    # Refused before any JVM: no job server started, nothing reached the cluster.
    assert "flink-job-server" not in output
    assert [job for job in cluster.rest().jobs() if job["name"] == job_name] == []


def test_a_job_outlives_its_killed_submitter_and_resumes_from_stop_job_at_parallelism_2(kafka_bootstrap,
                                                                                        flink_cluster, tmp_path):
    """The lifecycle of docs/flink_cluster.md, then a rescale from a savepoint, then a job that loses its slots.

    1. `python -m pipelines.market` submits at parallelism 1; kill -9 of its
       process group (driver and job server JVM) leaves the job RUNNING on
       the cluster, still turning ticks into bars; `jobs` lists it, a second
       submission of the name is refused, `stop-job NAME` stops it with a
       savepoint while a window is open.
    2. The same command at parallelism 2 resumes from that savepoint: Flink
       spreads the keyed state over two subtasks. Every tick is in exactly
       one final bar (or a `late` dead letter), no bar version is sent
       twice, the open window is closed by the new job with every tick it
       had, and each symbol's history (log_return) runs on across the stop.
    3. Its TaskManager killed, the job restarts for want of slots: the
       submitter says so, cancels it and exits with status 2.
    """
    topics = TopicSet.create(kafka_bootstrap, uuid.uuid4().hex[:8])
    job_name = f"cluster-life-{uuid.uuid4().hex[:8]}"
    args = [f"--flink_master={FLINK_MASTER}", f"--job_name={job_name}", f"--bootstrap_servers={kafka_bootstrap}",
            *topics.pipeline_args(), f"--consumer_group={job_name}", f"--window_size_s={LIFECYCLE_WINDOW_MS // 1000}",
            "--allowed_lateness_s=2", "--early_firing_s=0"]
    collector = Collector(kafka_bootstrap, topics)
    script = TickScript(Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}), topics.ticks)
    walk = RandomWalk(LIFECYCLE_SYMBOLS, seed=22)
    first = PipelineProcess([*args, "--parallelism=1"], tmp_path / "first.log").start()
    second = None
    try:
        # 1. Submitted at parallelism 1; ticks only once it reads (see test_market_pipeline_on_the_cluster).
        jid = job_running(job_name, first)["jid"]
        publish_until(script, walk, lambda: any(bar["is_final"] for bar in collector.snapshot()[0]), 120,
                      lambda: f"a final bar from the first job\n{first.tail(20)}")

        tree = first.tree()
        assert any("flink-job-server" in cmdline(pid) for pid in tree), f"no job server under the submitter: {tree}"
        first.kill()                                       # SIGKILL to the whole process group
        assert alive(tree) == [], "the submitter's processes outlived kill -9"
        killed_ms = int(time.time() * 1000)
        publish_until(script, walk, lambda: any(bar["is_final"] and bar["window_start"] >= killed_ms
                                                for bar in collector.snapshot()[0]), 120,
                      lambda: "a final bar of ticks published after the submitter was killed")
        assert cluster.rest().job(jid)["state"] == "RUNNING"

        listed = command("-m", "runners.flink_cluster", "jobs")
        assert listed.returncode == 0, listed.stderr
        assert any(jid in line and "RUNNING" in line and job_name in line for line in listed.stdout.splitlines()), \
            listed.stdout
        again = command("-m", "pipelines.market", "--runner=FlinkRunner", *args, "--parallelism=1")
        assert again.returncode == 2 and f"a job named '{job_name}' is already RUNNING" in again.stderr, again.stderr

        # Stop while a window is open (just after a window boundary): its
        # state, ticks and all, crosses the savepoint.
        publish_until(script, walk, lambda: 300 <= time.time() * 1000 % LIFECYCLE_WINDOW_MS < 1500, 30,
                      lambda: "the start of a window")
        open_window = int(time.time() * 1000) // LIFECYCLE_WINDOW_MS * LIFECYCLE_WINDOW_MS
        stopped = command("-m", "runners.flink_cluster", "stop-job", job_name)
        assert stopped.returncode == 0, stopped.stderr
        savepoint = Path(stopped.stdout.strip().rsplit("savepoint ", 1)[-1])
        assert "FINISHED" in stopped.stdout and (savepoint / "_metadata").exists(), stopped.stdout
        assert savepoint.parent == cluster.checkpoint_root(job_name) / "savepoints"
        assert cluster.rest().job(jid)["state"] == "FINISHED"

        # 2. Resumed at parallelism 2. Nothing is published while no job runs: a
        # restart takes longer than the 2 s allowed lateness (test_clean_stop.py).
        second = PipelineProcess([*args, "--parallelism=2"], tmp_path / "second.log").start()
        resumed = job_running(job_name, second, after=jid)
        resumed_ms = resumed["start-time"]
        assert f"resuming {job_name} from checkpoint {savepoint}" in second.log_path.read_text()
        assert {vertex["parallelism"] for vertex in resumed["vertices"]} == {2}
        publish(script, walk, 8)
        expected = published_ticks(script)

        def all_counted(bars, alerts, dead_letters) -> bool:
            got, dead = final_bars(bars), dead_letter_counts(dead_letters)
            return all(got.get(key, {}).get("tick_count", 0) + dead[key] == len(ticks)
                       for key, ticks in expected.items())

        if not collector.wait_for(all_counted, timeout_s=120):
            got, dead = final_bars(collector.snapshot()[0]), dead_letter_counts(collector.snapshot()[2])
            short = {key: (got.get(key, {}).get("tick_count"), dead[key], len(ticks)) for key, ticks in expected.items()
                     if got.get(key, {}).get("tick_count", 0) + dead[key] != len(ticks)}
            raise AssertionError(f"windows whose ticks are not all in a final bar or a dead letter "
                                 f"(in bar, dead, published): {short}\n{second.tail(20)}")
        bars, _, dead_letters = collector.snapshot()
        # The keyed bar step ran in two subtasks, each with some of the symbols' shards.
        keyed = [node["id"] for node in resumed["plan"]["nodes"]
                 if any(edge.get("ship_strategy") == "HASH" for edge in node.get("inputs", []))]
        assert keyed, resumed["plan"]
        subtasks = cluster.rest().call(f"/jobs/{resumed['jid']}/vertices/{keyed[0]}")["subtasks"]
        assert [s["metrics"]["read-records"] > 0 for s in subtasks] == [True, True], subtasks

        # 3. Its TaskManager gone, the job cannot get its slots: the submitter ends it and says why.
        os.kill(process.read_pid(f"{cluster.TASKMANAGER_PREFIX}0"), signal.SIGKILL)
        assert second.proc.wait(timeout=240) == 2, second.tail(30)
        assert "could not get the task slots it needs" in second.log_path.read_text(), second.tail(30)
        assert cluster.rest().job(resumed["jid"])["state"] == "CANCELED"
    finally:
        first.kill()
        if second is not None:
            second.kill()
        for job in cluster.rest().jobs():
            if job["name"] == job_name and job["state"] not in TERMINAL_STATES:
                cluster.rest().cancel(job["jid"])
        collector.close()
        topics.delete(kafka_bootstrap)
        # The TaskManager again, for what runs next: started by the project's
        # command, so it is no child of this test (whose children end with it).
        restarted = command("-m", "runners.flink_cluster", "start")
        assert restarted.returncode == 0, restarted.stderr

    finals = final_bars(bars)
    dead = dead_letter_counts(dead_letters)
    assert {letter["reason"] for _, letter in dead_letters} <= {"late"}
    # Most ticks are in bars (the feed pauses while no job runs, so few can be late).
    assert sum(dead.values()) < len(script.batches) // 10, dict(dead)
    # Exactly once: a window without dead letters is the bar of its ticks.
    for key, ticks in expected.items():
        if not dead[key]:
            want = window_bar(key[0], key[1], key[1] + LIFECYCLE_WINDOW_MS, ticks, config.VOLATILITY_THRESHOLD_PCT)
            got = finals[key]
            assert {f: got[f] for f in ("tick_count", "open", "close", "high", "low")} == \
                {f: want[f] for f in ("tick_count", "open", "close", "high", "low")}, key
            assert got["volume"] == pytest.approx(want["volume"])
    versions = Counter((bar["symbol"], bar["window_start"], bar["pane_index"]) for bar in bars)
    assert {version: n for version, n in versions.items() if n > 1} == {}, "a bar version was sent twice"
    # The window open at the savepoint was closed by the resumed job, with the ticks it held.
    carried = [finals[(symbol, open_window)] for symbol in LIFECYCLE_SYMBOLS if (symbol, open_window) in finals]
    assert carried and all(bar["emitted_at"] >= resumed_ms for bar in carried), carried
    assert sum(bar["tick_count"] for bar in carried) == sum(
        len(expected[(symbol, open_window)]) for symbol in LIFECYCLE_SYMBOLS), "ticks of the open window were lost"
    # Each symbol's history ran on across the stop: log_return against the previous ON_TIME close.
    on_time = sorted((bar for bar in bars if bar["pane"] == "ON_TIME"), key=lambda bar: bar["window_start"])
    last_close: dict[str, float] = {}
    for bar in on_time:
        previous = last_close.get(bar["symbol"])
        if previous is None:
            assert bar["log_return"] is None, bar
        else:
            assert bar["log_return"] == pytest.approx(math.log(bar["close"] / previous), rel=1e-9), bar
        last_close[bar["symbol"]] = bar["close"]
