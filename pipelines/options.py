"""`MarketOptions`: the flags of DESIGN.md §9 and §10, defaults from `market.config`.

Each flag also reads its environment variable (market/settings.py's rule:
`INPUT_TOPIC`, `WINDOW_SIZE_S`, `KAFKA_BOOTSTRAP_SERVERS`, ...), the same
names as the producer and serving; a flag given wins.
"""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from market import config, kafka_security, settings
from market.settings import Setting

SETTINGS: tuple[Setting, ...] = (
    settings.BOOTSTRAP_SERVERS,
    settings.INPUT_TOPIC,
    settings.OUTPUT_TOPIC,
    settings.ALERTS_TOPIC,
    settings.DLQ_TOPIC,
    Setting("consumer_group", config.PIPELINE_CONSUMER_GROUP,
            "Kafka consumer group whose offsets are committed when a checkpoint completes (a start "
            "without a checkpoint resumes there)"),
    Setting("start_offset", config.PIPELINE_START_OFFSET, "where to start when the group has no committed offset",
            choices=("earliest", "latest")),
    Setting("watermark_delay_ms", config.WATERMARK_DELAY_MS, "how far the input watermark stays behind the newest record "
            "timestamp (or the clock, when a partition is idle): ticks in flight for less than this "
            "still make their window's ON_TIME bar", type=int),
    Setting("kafka_read", "event_time", "event_time: the project's KafkaIO read whose idle partitions "
            "never hold the watermark (needs its jar in the expansion service); beam: Beam's stock "
            "ReadFromKafka with CreateTime (a partition that never receives a record holds it)",
            choices=("event_time", "beam")),
    Setting("window_size_s", config.WINDOW_SIZE_S, "bar length in seconds, windows aligned to the epoch",
            type=int),
    Setting("allowed_lateness_s", config.ALLOWED_LATENESS_S,
            "how long after a window closes late ticks still update it", type=int),
    Setting("early_firing_s", config.EARLY_FIRING_S,
            "processing-time period of early (partial) bars; 0 disables them", type=float),
    Setting("max_future_s", config.MAX_FUTURE_S, "reject ticks stamped more than this many seconds ahead "
            "of the wall clock when the pipeline reads them (invalid_timestamp)", type=float),
    Setting("volatility_threshold_pct", config.VOLATILITY_THRESHOLD_PCT, "swing_pct alert threshold",
            type=float),
    Setting("zscore_threshold", config.ZSCORE_THRESHOLD, "|return_zscore| alert threshold", type=float),
    Setting("volume_spike_ratio", config.VOLUME_SPIKE_RATIO, "volume_ratio alert threshold", type=float),
    Setting("state_shards", config.STATE_SHARDS, "how many state keys the bar step spreads the symbols "
            "over (a stable hash of the symbol): its cost per bundle grows with shards, not symbols; keep "
            "it several times the parallelism. Changing it needs a start without the old state (--no_resume)",
            type=int),
    Setting("metrics_log_s", config.METRICS_LOG_S, "how often `python -m pipelines.market` logs the job's "
            "own Beam metrics (ticks parsed, dead letters by reason, panes, alerts), summed over Flink's "
            "operators and subtasks; 0: never (Flink runners with a REST API of the project's only)",
            type=float),
    # A switch, not read from the environment: NO_RESUME left set would throw
    # the checkpointed state away on every automatic restart.
    Setting("no_resume", False, "start afresh from the consumer group's committed offsets instead of "
            "resuming from the newest Flink checkpoint or savepoint", switch=True),
)


class MarketOptions(PipelineOptions):
    """Kafka topics and the bar/anomaly settings of the market pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        settings.add_arguments(parser, SETTINGS)
        # DESIGN.md §10. No defaults here: the environment is read when the
        # clients are built, so a password from KAFKA_SASL_PASSWORD never lands
        # in the pipeline options shipped to the runner.
        kafka_security.add_arguments(parser)


def runner_name(options: PipelineOptions) -> str:
    """The runner `options` name, normalised: "flink", "dataflow", "direct", ... (Beam accepts
    `FlinkRunner`, `flink`, a dotted class path; unset is Beam's DirectRunner)."""
    name = str(options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    return name.removesuffix("runner") or name


def command_line(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """A parser of MarketOptions for a command's `--help`: these flags with their defaults, nothing else.

    The values themselves are read by Beam's PipelineOptions (`view_as(MarketOptions)`);
    this parser only answers `--help` and rejects a bad value, given or from the
    environment, before anything starts.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog="Each flag also reads the environment variable shown with it; a flag given wins. "
               "Every standard Beam option is accepted too (--runner, --flink_master, --parallelism, "
               "--job_name, ...): see Beam's PipelineOptions.")
    MarketOptions._add_argparse_args(parser)
    return parser
