"""The pipeline package builds and runs pipelines; what a runner needs is attached at the command line's edge."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_module_imports_no_runner_code():
    """Importing the pipeline and building it for a TestStream loads nothing of runners/ (any runner can run it)."""
    code = ("import sys\n"
            "import apache_beam as beam\n"
            "from apache_beam.options.pipeline_options import PipelineOptions\n"
            "from apache_beam.testing.test_stream import TestStream\n"
            "from pipelines import market\n"
            "p = beam.Pipeline(options=PipelineOptions(['--streaming']))\n"
            "sink = {k: beam.Map(lambda kv: kv) for k in ('bars', 'alerts', 'dead_letters')}\n"
            "market.build_pipeline(p, p.options, source=TestStream().advance_watermark_to_infinity(), sinks=sink)\n"
            "print(sorted(m for m in sys.modules if m == 'runners' or m.startswith('runners.')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_flink_runner_checkpoints_at_one_interval(tmp_path):
    """The local runner takes the one default interval, and a given --checkpointing_interval wins."""
    from runners import checkpoints
    from runners.local import flink as local_flink

    storage = f"--state_backend_storage_path=file://{tmp_path}"
    args, _ = local_flink.pipeline_args(["--runner=FlinkRunner", storage], resume=False)
    assert f"--checkpointing_interval={checkpoints.CHECKPOINT_INTERVAL_MS}" in args
    args, _ = local_flink.pipeline_args(["--runner=FlinkRunner", storage, "--checkpointing_interval=2500"],
                                        resume=False)
    assert [a for a in args if a.startswith("--checkpointing_interval")] == ["--checkpointing_interval=2500"]
