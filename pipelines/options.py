"""`MarketOptions`: the flags of DESIGN.md §9 and §10, defaults from `market.config`."""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from market import config, kafka_security


class MarketOptions(PipelineOptions):
    """Kafka topics and the bar/anomaly settings of the market pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--bootstrap_servers", default=config.bootstrap_servers(),
                            help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
        parser.add_argument("--input_topic", default=config.TICKS_TOPIC, help="topic of raw ticks")
        parser.add_argument("--output_topic", default=config.TRENDS_TOPIC, help="topic of bars")
        parser.add_argument("--alerts_topic", default=config.ALERTS_TOPIC, help="topic of alerts")
        parser.add_argument("--dlq_topic", default=config.DLQ_TOPIC, help="topic of dead letters")
        parser.add_argument("--consumer_group", default=config.PIPELINE_CONSUMER_GROUP,
                            help="Kafka consumer group whose offsets are committed when a "
                                 "checkpoint completes (a start without a checkpoint resumes there)")
        parser.add_argument("--start_offset", choices=["earliest", "latest"], default="earliest",
                            help="where to start when the group has no committed offset")
        parser.add_argument("--watermark_delay_ms", type=int, default=1000,
                            help="how far the input watermark stays behind the newest record "
                                 "timestamp (or the clock, when a partition is idle): ticks in "
                                 "flight for less than this still make their window's ON_TIME bar")
        parser.add_argument("--kafka_read", choices=["event_time", "beam"], default="event_time",
                            help="event_time: the project's KafkaIO read whose idle partitions "
                                 "never hold the watermark (needs its jar in the expansion "
                                 "service); beam: Beam's stock ReadFromKafka with CreateTime "
                                 "(a partition that never receives a record holds it)")
        parser.add_argument("--window_size_s", type=int, default=config.WINDOW_SIZE_S,
                            help="bar length in seconds, windows aligned to the epoch")
        parser.add_argument("--allowed_lateness_s", type=int, default=config.ALLOWED_LATENESS_S,
                            help="how long after a window closes late ticks still update it")
        parser.add_argument("--early_firing_s", type=float, default=config.EARLY_FIRING_S,
                            help="processing-time period of early (partial) bars; 0 disables them")
        parser.add_argument("--max_future_s", type=float, default=config.MAX_FUTURE_S,
                            help="reject ticks stamped more than this many seconds ahead of the "
                                 "wall clock when the pipeline reads them (invalid_timestamp)")
        parser.add_argument("--volatility_threshold_pct", type=float,
                            default=config.VOLATILITY_THRESHOLD_PCT, help="swing_pct alert threshold")
        parser.add_argument("--zscore_threshold", type=float, default=config.ZSCORE_THRESHOLD,
                            help="|return_zscore| alert threshold")
        parser.add_argument("--volume_spike_ratio", type=float, default=config.VOLUME_SPIKE_RATIO,
                            help="volume_ratio alert threshold")
        parser.add_argument("--no_resume", action="store_true", default=False,
                            help="start afresh from the consumer group's committed offsets instead of "
                                 "resuming from the newest Flink checkpoint or savepoint")
        # DESIGN.md §10. No defaults here: the environment is read when the
        # clients are built, so a password from KAFKA_SASL_PASSWORD never lands
        # in the pipeline options shipped to the runner.
        kafka_security.add_arguments(parser)


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each flag's help ends with its default, unless it has none (switches, unset security flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def command_line(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """A parser of MarketOptions for a command's `--help`: these flags with their defaults, nothing else.

    The values themselves are read by Beam's PipelineOptions (`view_as(MarketOptions)`);
    this parser only answers `--help` and rejects a bad value before anything starts.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=_DefaultsHelpFormatter,
        epilog="Every standard Beam option is accepted too (--runner, --flink_master, --parallelism, "
               "--job_name, ...): see Beam's PipelineOptions.")
    MarketOptions._add_argparse_args(parser)
    return parser
