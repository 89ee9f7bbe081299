"""The pipeline's flags as Beam's PipelineOptions reads them, for the per-runner set-up in runners/.

Every option is read through PipelineOptions (`--name value` and
`--name=value` alike), never by scanning argv: Beam's own options through
their views (`GoogleCloudOptions.job_name`, `FlinkRunnerOptions.flink_master`),
the Java Flink runner's through `FlinkJavaOptions` below.
"""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions


class FlinkJavaOptions(PipelineOptions):
    """Options of Beam's Java Flink runner that runners/ sets or reads.

    Python declares none of them: the FlinkRunner learns them from the job
    server when it submits (and skips those declared here). Declaring them
    lets the set-up read them like any other option, and keeps Beam from
    warning about unknown flags when it does. Every default is None: unset,
    and then not sent to any runner.
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        for switch in ("finish_bundle_before_checkpointing", "object_reuse", "externalized_checkpoints_enabled",
                       "retain_externalized_checkpoints_on_cancellation", "allow_non_restored_state"):
            parser.add_argument(f"--{switch}", action="store_true", default=None,
                                help="Beam's Java Flink runner option of this name")
        for name in ("max_bundle_time_mills", "checkpointing_interval"):
            parser.add_argument(f"--{name}", type=int, default=None,
                                help="Beam's Java Flink runner option of this name")
        for name in ("state_backend", "state_backend_storage_path", "savepoint_path", "flink_conf_dir"):
            parser.add_argument(f"--{name}", default=None, help="Beam's Java Flink runner option of this name")


_UNSET = object()


def given_options(argv: list[str]) -> dict[str, object]:
    """The options `argv` sets, by name, as PipelineOptions parses them.

    A switch given is True. An option given with its default value counts
    as given (`--max_cache_memory_usage_mb=0` turns Beam's cache off on
    purpose), which `get_all_options(drop_default=True)` would miss: every
    known option's default is replaced by a marker instead, and what still
    holds the marker was not given.
    """
    known = PipelineOptions([]).get_all_options()
    # Options given more than once (--experiments) append to their default,
    # which must stay None or a list: for them None is the marker.
    appended: set[str] = set()

    def unset_by_default(parser) -> None:
        appended.update(action.dest for action in parser._actions
                        if isinstance(action, argparse._AppendAction))
        parser.set_defaults(**{name: None if name in appended else _UNSET for name in known})

    # Unknown options too: a Java option nobody declares is still the user's.
    parsed = PipelineOptions(argv).get_all_options(add_extra_args_fn=unset_by_default,
                                                   retain_unknown_options=True)
    return {name: value for name, value in parsed.items()
            if value is not _UNSET and not (value is None and name in appended)}


def with_defaults(argv: list[str], defaults: dict[str, str | None]) -> list[str]:
    """`argv` plus `--name=value` (`--name` where the value is None) for each of `defaults` it does not set."""
    given = given_options(argv)
    return list(argv) + [f"--{name}" if value is None else f"--{name}={value}"
                         for name, value in defaults.items() if name not in given]


# Flags every Flink run of the pipeline gets unless its argv sets them
# (docs/pipeline.md, "Flink settings"), flag name -> value (None: a switch):
# * finish the Python bundle before a checkpoint barrier: otherwise Beam
#   sends the watermark on before the bundle's buffered output (apache/beam
#   DoFnOperator.snapshotState), and batches emitted at the end of a bundle
#   reach the window step behind the watermark, late;
# * hand records from the Kafka reader to the next chained operator without
#   the defensive copy (an encode and a decode per tick); Beam elements are
#   immutable;
# * no Python state cache: the bar step keeps its shards decoded in memory
#   and reads one small version cell per call, so Beam's cache would only
#   cost it: every cached write re-measures the value with objsize, which
#   walks every loaded module's globals (about 0.6 ms per write with Beam
#   imported). A 300,000-tick, 5,000-symbol drain took 40 s of Python CPU
#   with a 64 MB cache and 31 s without.
# * bundles of at most 150 ms (Java option maxBundleTimeMills, hence "mills"):
#   a Python stage hands its output on when its bundle finishes, and Beam's
#   streaming default of 1000 ms adds up to a second per stage between a
#   tick and its bar. With the sharded bar step, `compare.py live --rate
#   10000`, one run each (latency p50/p99 ms, ON_TIME delay p99 ms; 20 and
#   10,000 symbols): 250 ms 1428/2435/2662 and 1925/3395/2975; 150 ms
#   1155/1961/2036 and 1730/3221/3362; 100 ms 1016/1744/1832 and
#   1946/3678/4036 (at 10,000 symbols the Python worker is busy enough that
#   more bundles cost more than they save: 60 against 48 µs per tick).
#   `compare.py drain --symbols 5000`: 150 ms 14,615-16,880 ticks/s, 250 ms
#   11,685-13,734 (docs/performance.md).
#
# Not here, on purpose: `--experiments=data_buffer_time_limit_ms=N`. It
# would cut the latency (docs/performance.md) but Beam 2.62's Python SDK
# drops output bytes written while its time-based flush thread runs
# (TimeBasedBufferingClosableOutputStream), and drains lost ticks with it.
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
    "max_cache_memory_usage_mb": "0",
    "max_bundle_time_mills": "150",
}


def with_flink_defaults(argv: list[str]) -> list[str]:
    """`argv` plus each of FLINK_DEFAULTS it does not set."""
    return with_defaults(argv, FLINK_DEFAULTS)
