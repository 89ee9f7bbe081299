"""`python -m pipelines.market` fails fast and clearly when Kafka is not there."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from runners.local import paths
from runners.ports import free_port

pytestmark = [pytest.mark.integration]


def run_pipeline(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipelines.market", "--runner=FlinkRunner", *args],
                            cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    return result, time.monotonic() - start


def test_missing_broker_is_a_clear_error_not_a_hang(flink_jars):
    address = f"127.0.0.1:{free_port()}"
    result, elapsed = run_pipeline(f"--bootstrap_servers={address}", "--no_resume")
    assert result.returncode == 2
    assert f"no Kafka broker answered at {address}" in result.stderr
    assert elapsed < 60


def test_missing_input_topic_is_a_clear_error(kafka_bootstrap, flink_jars):
    result, _ = run_pipeline(f"--bootstrap_servers={kafka_bootstrap}", "--input_topic=no_such_topic_x1",
                             "--no_resume")
    assert result.returncode == 2
    assert "input topic 'no_such_topic_x1' does not exist" in result.stderr
