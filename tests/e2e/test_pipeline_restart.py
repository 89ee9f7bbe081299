"""A pipeline killed with SIGKILL and started again loses no tick.

The pipeline checkpoints every 2 s (Kafka offsets and window state together)
to a directory of the test. It is killed mid-stream; ticks keep arriving while
it is down; the new process resumes from the newest completed checkpoint.
Every tick published must then be counted in the latest version of its bar.
Bar versions may repeat after the restart (at-least-once): the latest version
per (symbol, window_start) is what counts.
"""
from __future__ import annotations

import signal
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from runners.local import flink as local_flink
from tests.conftest import committed_offsets
from tests.e2e.live import Collector, RandomWalk, TickScript, final_bars, publish_for
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

WINDOW_MS = 5000
SYMBOLS = ["AAPL", "MSFT", "GOOG"]


def test_killed_pipeline_resumes_from_checkpoint(kafka_bootstrap, flink_jars, topics, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    args = [f"--bootstrap_servers={kafka_bootstrap}", *topics.pipeline_args(),
            "--window_size_s=5", "--allowed_lateness_s=2", "--early_firing_s=1",
            f"--consumer_group=restart-{topics.ticks}", "--parallelism=2",
            "--checkpointing_interval=2000", f"--state_backend_storage_path=file://{checkpoints}"]
    collector = Collector(kafka_bootstrap, topics)
    script = TickScript(Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}), topics.ticks)
    walk = RandomWalk(SYMBOLS, seed=3)
    try:
        first = PipelineProcess(args + ["--no_resume"], tmp_path / "first.log").start()
        try:
            wait_for(lambda: collector.snapshot()[0], 300, lambda: f"a bar from the first run:\n{first.tail()}",
                     between=lambda: (first.assert_running(), publish_for(script, walk, SYMBOLS, 0.5)), poll_s=0)
            publish_for(script, walk, SYMBOLS, 8)
            # Let a checkpoint complete after those ticks, then crash hard.
            seen = local_flink.latest_checkpoint(checkpoints)
            wait_for(lambda: local_flink.latest_checkpoint(checkpoints) != seen, 60,
                     lambda: f"a checkpoint completed:\n{first.tail()}",
                     between=lambda: publish_for(script, walk, SYMBOLS, 0.5), poll_s=0)
        finally:
            first.kill(signal.SIGKILL)
        resumed_from = local_flink.latest_checkpoint(checkpoints)
        assert resumed_from is not None
        # The consumer group's offsets moved with the checkpoints (what
        # `--no_resume` continues from, docs/deployment.md), and never past
        # what was published.
        published_so_far = len(script.batches)
        committed = committed_offsets(kafka_bootstrap, f"restart-{topics.ticks}", topics.ticks, 3)
        assert 0 < sum(max(offset, 0) for offset in committed) <= published_so_far, committed

        publish_for(script, walk, SYMBOLS, 8)            # published while no pipeline runs
        bars_before = len(collector.snapshot()[0])
        with PipelineProcess(args, tmp_path / "second.log") as second:
            wait_for(lambda: len(collector.snapshot()[0]) > bars_before, 300,
                     lambda: f"a bar after the restart:\n{second.tail()}", between=second.assert_running, poll_s=1)
            assert f"resuming from checkpoint {resumed_from}" in (tmp_path / "second.log").read_text()
            publish_for(script, walk, SYMBOLS, 6)

            published = Counter()
            for batch in script.batches:
                tick = orjson.loads(batch.values[0])
                published[(tick["symbol"], tick["timestamp"] // WINDOW_MS * WINDOW_MS)] += 1

            def all_counted(bars, alerts, dead_letters) -> bool:
                got = final_bars(bars)
                return all(got.get(key, {}).get("tick_count") == n for key, n in published.items())

            if not collector.wait_for(all_counted, timeout_s=120):
                got = final_bars(collector.snapshot()[0])
                short = {key: (got.get(key, {}).get("tick_count"), n) for key, n in published.items()
                         if got.get(key, {}).get("tick_count") != n}
                reasons = Counter(letter["reason"] for _, letter in collector.snapshot()[2])
                raise AssertionError(f"windows missing ticks (got, published): {short}; "
                                     f"dead letters by reason: {dict(reasons)}\n{second.tail(20)}")
        dead_letters = collector.snapshot()[2]
    finally:
        collector.close()
    assert dead_letters == [], dead_letters[:3]
