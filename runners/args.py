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
FLINK_DEFAULTS: dict[str, str | None] = {
    "finish_bundle_before_checkpointing": None,
    "object_reuse": None,
    "max_cache_memory_usage_mb": "64",
}


def with_flink_defaults(argv: list[str]) -> list[str]:
    """`argv` plus each of FLINK_DEFAULTS it does not set."""
    added = [f"--{flag}" if value is None else f"--{flag}={value}"
             for flag, value in FLINK_DEFAULTS.items() if not has_flag(argv, flag)]
    return list(argv) + added
