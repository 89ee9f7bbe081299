"""Reading pipeline flags out of an argv list, for the per-runner set-up in runners/."""
from __future__ import annotations


def flag_value(argv: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in `argv`, or None."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            return argv[index + 1]
    return None


def has_flag(argv: list[str], name: str) -> bool:
    """Whether `argv` sets `--name` (with or without a value)."""
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)


# Flags every Flink run of the pipeline gets unless its argv sets them
# (docs/pipeline.md, "Flink settings"), flag name -> value (None: a switch):
# * finish the Python bundle before a checkpoint barrier: otherwise Beam
#   sends the watermark on before the bundle's buffered output (apache/beam
#   DoFnOperator.snapshotState), and batches emitted at the end of a bundle
#   reach the window step behind the watermark, late;
# * hand records from the Kafka reader to the next chained operator without
#   the defensive copy (an encode and a decode per tick); Beam elements are
#   immutable;
# * a Python state cache: without it every state read of the screening step
#   is a round trip to the Flink JVM (12 ms each under load in one profile);
#   Beam disables it by default.
# * bundles of at most 250 ms (Java option maxBundleTimeMills, hence "mills"):
#   a Python stage hands its output on when its bundle finishes, and Beam's
#   streaming default of 1000 ms adds up to a second per stage between a
#   tick and its bar. benchmarks/pipeline_bench.py --rates 10000 --step_s 40
#   on 2 cores, batched Kafka read, one run each (p50/p95/p99 ms, processed
#   ticks/s): 1000 ms 4516/7038/49820, 9,282; 250 ms 1744/2446/2811, 9,593;
#   100 ms 1840/2899/27581, 9,700. 250 ms is as fast as 100 ms with fewer
#   bundle round trips to the Python workers.
#
# Parallelism is left to Beam: on the embedded Flink it defaults to the
# number of cores, and the Kafka read (pipelines/java,
# KafkaRecordBatchSource) makes one reader per partition whatever the
# parallelism, so a subtask runs partitions/parallelism readers and none of
# them owns two partitions. A constant here would be wrong on the next
# machine or topic; on a cluster its own default applies.
FLINK_DEFAULTS: dict[str, str | None] = {
    "finish_bundle_before_checkpointing": None,
    "object_reuse": None,
    "max_cache_memory_usage_mb": "64",
    "max_bundle_time_mills": "250",
}


def with_flink_defaults(argv: list[str]) -> list[str]:
    """`argv` plus each of FLINK_DEFAULTS it does not set."""
    added = [f"--{flag}" if value is None else f"--{flag}={value}"
             for flag, value in FLINK_DEFAULTS.items() if not has_flag(argv, flag)]
    return list(argv) + added
