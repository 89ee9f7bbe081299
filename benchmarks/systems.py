"""The systems the benchmark compares, and the command that starts each on the same topics.

* raw:      benchmarks/peer_raw.py, one confluent-kafka consumer + orjson + a
            dict of open bars, closed bars to a topic (the Python ceiling);
* quix:     benchmarks/peer_quix.py, Quix Streams' tumbling window to a topic
            (in the benchmark's own virtualenv, benchmarks/setup.sh);
* pipeline: `python -m pipelines.market --runner=FlinkRunner` with default
            flags, checkpoints in the run's folder (`make run` never resumes
            from a benchmark's checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.common import BARS_TOPIC_CONFIG, BENCH_DIR, BENCH_PYTHON, PYTHON, BenchError
from runners.local.supervised import pipeline_command as market_pipeline
from runners.topics import TopicSet


@dataclass(frozen=True)
class Run:
    """Where one system runs: the bootstrap, its topics (the shared ticks topic, outputs of its own), group, folder."""

    bootstrap: str
    topics: TopicSet
    group: str
    run_dir: Path
    pipeline_args: list[str]


def output_topics(bootstrap: str, ticks_topic: str, suffix: str) -> TopicSet:
    """A system's own output topics beside the shared `ticks_topic`; bars stamped with their append time."""
    return TopicSet.create(bootstrap, suffix, ticks=ticks_topic, configs={"trends": BARS_TOPIC_CONFIG})


def _peer(python: str, script: str) -> Callable[[Run], list[str]]:
    def command(run: Run) -> list[str]:
        return [python, str(BENCH_DIR / script), f"--bootstrap_servers={run.bootstrap}",
                f"--input_topic={run.topics.ticks}", f"--output_topic={run.topics.trends}", f"--group={run.group}"]
    return command


def pipeline_command(run: Run) -> list[str]:
    """The market pipeline with default flags on the run's topics, checkpoints in the run's folder."""
    return market_pipeline([f"--bootstrap_servers={run.bootstrap}", *run.topics.pipeline_args(),
                            f"--consumer_group={run.group}", "--no_resume",
                            f"--state_backend_storage_path=file://{run.run_dir / 'checkpoints'}",
                            *run.pipeline_args], python=PYTHON)


SYSTEMS: dict[str, Callable[[Run], list[str]]] = {
    "raw": _peer(PYTHON, "peer_raw.py"),
    "quix": _peer(str(BENCH_PYTHON), "peer_quix.py"),
    "pipeline": pipeline_command,
}


def system_command(system: str, run: Run) -> list[str]:
    if system not in SYSTEMS:
        raise BenchError(f"unknown system {system!r}: {', '.join(SYSTEMS)}")
    return SYSTEMS[system](run)
