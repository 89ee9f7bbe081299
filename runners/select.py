"""Per-runner set-up of the market pipeline, kept out of the pipeline code.

`prepare(argv)` returns the pipeline arguments with what the chosen runner
needs added, and the expansion service that expands Beam's Java KafkaIO:

* FlinkRunner, embedded (`--flink_master` unset, `[local]` or `[auto]`):
  local job server jar, checkpoints, resume; KafkaIO runs EMBEDDED in the
  job server's JVM.
* FlinkRunner on a cluster (`--flink_master=host:port`): see
  runners/flink_cluster; KafkaIO runs EMBEDDED in the TaskManagers, in the
  job's class loader: the job server ships its own class path (the Beam
  jars) with the job.
* DataflowRunner: Dataflow's defaults (KafkaIO in Dataflow's Java
  container); the expansion service is started from the local jar only to
  expand the transform.
"""
from __future__ import annotations

import argparse

from runners.local import beam as local_beam
from runners.local import flink as local_flink


def _runner_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--flink_master", default="[auto]")
    parser.add_argument("--no_resume", action="store_true")
    known, _ = parser.parse_known_args(argv)
    return known


def prepare(argv: list[str] | None) -> tuple[list[str], object | None]:
    """(pipeline args, KafkaIO expansion service) for the runner named in `argv`."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    flags = _runner_flags(argv)
    argv = [arg for arg in argv if arg != "--no_resume"]
    runner = flags.runner.rsplit(".", 1)[-1].lower()
    if runner in ("flinkrunner", "flink"):
        if flags.flink_master in local_flink.LOCAL_MASTERS:
            return local_flink.pipeline_args(argv, resume=not flags.no_resume), local_beam.expansion_service()
        from runners.flink_cluster import cluster
        return cluster.pipeline_args(argv, resume=not flags.no_resume), local_beam.expansion_service()
    if runner in ("dataflowrunner", "dataflow"):
        from runners.dataflow import submit
        return submit.pipeline_args(argv), submit.expansion_service()
    return argv, None
