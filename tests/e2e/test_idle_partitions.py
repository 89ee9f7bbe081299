"""Ticks on one partition only: bars still close (apache/beam#20908).

The input topic has three partitions; two never receive a record. With
Beam's stock CreateTime policy they would hold the watermark at its minimum
forever and only EARLY panes would come out. The project's KafkaIO read
(pipelines/java, `--kafka_read=event_time`) lets a caught-up
partition follow the clock, so every window gets its ON_TIME bar soon after
it ends, and the last one closes after input stops.
"""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from market import codec
from tests.e2e.live import Collector, RandomWalk, TickScript, final_bars
from tests.e2e.pipeline_process import PipelineProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.flink, pytest.mark.e2e]

WINDOW_MS = 5000


def test_bars_close_with_two_silent_partitions(kafka_bootstrap, flink_jars, topics, tmp_path):
    args = [f"--bootstrap_servers={kafka_bootstrap}", *topics.pipeline_args(),
            "--window_size_s=5", "--allowed_lateness_s=2", "--early_firing_s=1",
            f"--consumer_group=idle-{topics.ticks}", "--parallelism=2", "--no_resume", "--kafka_read=event_time",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}"]
    collector = Collector(kafka_bootstrap, topics)
    script = TickScript(Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5}), topics.ticks)
    walk = RandomWalk(["ONLY"], seed=11)
    try:
        with PipelineProcess(args, tmp_path / "pipeline.log") as pipeline:
            def tick_once() -> None:
                pipeline.assert_running()
                script.tick("ONLY", walk.next("ONLY"), walk.volume(), partition=0)
                script.flush()

            # The first (EARLY) bar: the pipeline reads live.
            wait_for(lambda: collector.snapshot()[0], 300, lambda: f"a bar:\n{pipeline.tail()}", between=tick_once)
            stop_at = time.time() + 2 * WINDOW_MS / 1000
            while time.time() < stop_at:
                script.tick("ONLY", walk.next("ONLY"), walk.volume(), partition=0)
                time.sleep(0.1)
            script.flush()
            published = {}
            for batch in script.batches:
                stamp = codec.loads(batch.values[0])["timestamp"]
                window = stamp // WINDOW_MS * WINDOW_MS
                published[window] = published.get(window, 0) + 1
            # The window of the last tick (the clock after a slow flush may be
            # in the next one already, which has no tick and so no bar).
            last_window = max(published)

            def all_on_time(bars, alerts, dead_letters) -> bool:
                on_time = {b["window_start"]: b for b in bars if b["pane"] == "ON_TIME"}
                return all(w in on_time for w in published)

            assert collector.wait_for(all_on_time, timeout_s=60), (
                f"windows without an ON_TIME bar: "
                f"{sorted(set(published) - {b['window_start'] for b in collector.snapshot()[0] if b['pane'] == 'ON_TIME'})}"
                f"\n{pipeline.tail(10)}")
            bars = collector.snapshot()[0]
    finally:
        collector.close()
    assert last_window in {b["window_start"] for b in bars if b["pane"] == "ON_TIME"}
    got = final_bars(bars)
    assert {w: got[("ONLY", w)]["tick_count"] for w in published} == published
