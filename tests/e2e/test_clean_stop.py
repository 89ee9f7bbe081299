"""A planned stop (SIGTERM, as `make stop` and supervisors send it) keeps state and leaves no JVM.

The pipeline is stopped with SIGTERM to its driver process only. It must stop
its Flink job with a savepoint, and its job server JVM must be gone
afterwards even when Beam's own clean-up fails (its temp folder removed under
it: a FileNotFoundError then left the JVM running). The next start resumes from the
savepoint: every tick is counted once and no bar version is sent twice
(after a crash, by contrast, versions since the last checkpoint repeat:
test_pipeline_restart.py). Offsets continue: no dead letter is sent twice.

Survivors are checked by the pids of the driver's process tree, not by name:
other pipelines on this machine run the same jars.
"""
from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests.e2e.live import Collector, RandomWalk, TickScript, final_bars, publish_for
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

WINDOW_MS = 5000
SYMBOLS = ["AAPL", "MSFT", "GOOG"]


def alive(pids: list[int]) -> list[str]:
    """The pids of `pids` still running (not zombies), with their command lines."""
    left = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:150]
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] != "Z":
            left.append(f"{pid}: {cmdline}")
    return left


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def job_server_temp_root(pids: list[int]) -> Path | None:
    """Beam's temp folder of the job server among `pids` (its --artifacts-dir lives inside)."""
    for pid in pids:
        args = cmdline(pid)
        if "--artifacts-dir" in args:
            return Path(args[args.index("--artifacts-dir") + 1]).parent
    return None


def sigterm_driver(pipeline: PipelineProcess, timeout_s: float = 150) -> list[int]:
    """SIGTERM the driver only, wait for it to exit; return the pids of its tree at the signal."""
    tree = pipeline.tree()
    pipeline.proc.send_signal(signal.SIGTERM)
    pipeline.proc.wait(timeout=timeout_s)
    return tree


def assert_gone(pids: list[int], pipeline: PipelineProcess, timeout_s: float = 10) -> None:
    """Every process of `pids` ends within `timeout_s` (a JVM told to stop takes a moment to exit)."""
    wait_for(lambda: alive(pids) == [], timeout_s,
             lambda: f"left running after SIGTERM: {alive(pids)}\n{pipeline.tail(30)}")


def wait_for_log(pipeline: PipelineProcess, text: str, timeout_s: float = 300) -> None:
    wait_for(lambda: text in pipeline.log_path.read_text(errors="replace"), timeout_s,
             lambda: f"{text!r} in the log:\n{pipeline.tail()}", between=pipeline.assert_running, poll_s=0.5)


def test_sigterm_stops_with_a_savepoint_and_the_next_start_replays_nothing(
        kafka_bootstrap, flink_jars, topics, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    # Checkpoints every 30 s: a stop that only cancelled would resume from
    # far back (or from nothing) and send many bar versions again.
    args = [f"--bootstrap_servers={kafka_bootstrap}", *topics.pipeline_args(),
            "--window_size_s=5", "--allowed_lateness_s=2", "--early_firing_s=1",
            f"--consumer_group=stop-{topics.ticks}", "--parallelism=2",
            "--checkpointing_interval=30000", f"--state_backend_storage_path=file://{checkpoints}"]
    collector = Collector(kafka_bootstrap, topics)
    script = TickScript(Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}), topics.ticks)
    walk = RandomWalk(SYMBOLS, seed=5)
    first = PipelineProcess(args + ["--no_resume"], tmp_path / "first.log").start()
    second = None
    try:
        # Ticks published before the job reads can be judged late at its
        # start (docs/deployment.md, troubleshooting): the feed starts once it runs.
        wait_for_log(first, "Job state changed to RUNNING")
        wait_for(lambda: collector.snapshot()[0], 300, lambda: f"a bar from the first run:\n{first.tail()}",
                 between=lambda: (first.assert_running(), publish_for(script, walk, SYMBOLS, 0.5)), poll_s=0)
        publish_for(script, walk, SYMBOLS, 6)

        # Beam's stop of its job server removes this folder first; when that
        # raised, the JVM used to run on with parent 1.
        temp_root = job_server_temp_root(first.tree())
        assert temp_root is not None, f"no job server among the driver's children: {first.tree()}"
        shutil.rmtree(temp_root)
        tree = sigterm_driver(first)
        assert tree, "the driver had no child process"
        assert_gone(tree, first)
        log = (tmp_path / "first.log").read_text()
        assert "savepoint complete" in log, first.tail(40)
        savepoints = sorted((checkpoints / "savepoints").glob("savepoint-*/_metadata"))
        assert len(savepoints) == 1

        # Nothing is published while no pipeline runs: a restart here takes
        # longer than the 2 s allowed lateness, so such ticks would be `late`
        # dead letters by design (docs/deployment.md, "Broker outages").
        # The restored job runs before the feed resumes. (Not "a bar after the
        # restart": when the savepoint came after the last window's ON_TIME
        # pane, the restored state has only closes left to do, and rightly
        # emits nothing until new ticks come.)
        second = PipelineProcess(args, tmp_path / "second.log").start()
        wait_for_log(second, "Job state changed to RUNNING")
        assert f"resuming from checkpoint {savepoints[0].parent}" in (tmp_path / "second.log").read_text()
        publish_for(script, walk, SYMBOLS, 6)

        published = Counter()
        for batch in script.batches:
            tick = orjson.loads(batch.values[0])
            published[(tick["symbol"], tick["timestamp"] // WINDOW_MS * WINDOW_MS)] += 1

        def in_dead_letters(dead_letters) -> Counter:
            counted = Counter()
            for _, letter in dead_letters:
                tick = orjson.loads(letter["raw"])
                counted[(tick["symbol"], tick["timestamp"] // WINDOW_MS * WINDOW_MS)] += 1
            return counted

        def all_counted(bars, alerts, dead_letters) -> bool:
            # Every tick in the latest bar of its window or a dead letter (ticks
            # published while the first job started can be `late`).
            got, dead = final_bars(bars), in_dead_letters(dead_letters)
            return all(got.get(key, {}).get("tick_count", 0) + dead[key] == n for key, n in published.items())

        if not collector.wait_for(all_counted, timeout_s=120):
            got, dead = final_bars(collector.snapshot()[0]), in_dead_letters(collector.snapshot()[2])
            short = {key: (got.get(key, {}).get("tick_count"), dead[key], n) for key, n in published.items()
                     if got.get(key, {}).get("tick_count", 0) + dead[key] != n}
            reasons = Counter(letter["reason"] for _, letter in collector.snapshot()[2])
            raise AssertionError(f"windows missing ticks (got, published): {short}; "
                                 f"dead letters by reason: {dict(reasons)}\n{second.tail(20)}")
        tree = second.tree()
        second.stop()
        assert_gone(tree, second)
        bars, _, dead_letters = collector.snapshot()
    finally:
        first.kill()
        if second is not None:
            second.kill()
        collector.close()
    versions = Counter((bar["symbol"], bar["window_start"], bar["pane_index"]) for bar in bars)
    sent_twice = {version: n for version, n in versions.items() if n > 1}
    assert sent_twice == {}, f"bar versions sent again after a planned stop: {sent_twice}"
    # A replay would send dead letters again too: each source record at most once, and only `late` ones.
    sources = Counter((letter["source"]["partition"], letter["source"]["offset"]) for _, letter in dead_letters)
    assert [source for source, n in sources.items() if n > 1] == []
    assert {letter["reason"] for _, letter in dead_letters} <= {"late"}


def test_sigterm_during_start_up_leaves_no_jvm(kafka_bootstrap, flink_jars, topics, tmp_path):
    """SIGTERM while the KafkaIO expansion service runs (start-up): it and the driver are gone."""
    args = [f"--bootstrap_servers={kafka_bootstrap}", *topics.pipeline_args(), "--no_resume",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"]
    pipeline = PipelineProcess(args, tmp_path / "pipeline.log").start()
    try:
        wait_for(lambda: any("io-expansion-service" in " ".join(cmdline(pid)) for pid in pipeline.tree()), 120,
                 lambda: f"an expansion service started:\n{pipeline.tail()}", between=pipeline.assert_running,
                 poll_s=0.1)
        tree = sigterm_driver(pipeline, timeout_s=60)
        assert_gone(tree, pipeline)
    finally:
        pipeline.kill()
