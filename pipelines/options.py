"""`MarketOptions`: the flags of DESIGN.md §9, defaults from `market.config`."""
from __future__ import annotations

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
        parser.add_argument("--consumer_group", default="market-pipeline",
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
        # DESIGN.md §10. No defaults here: the environment is read when the
        # clients are built, so a password from KAFKA_SASL_PASSWORD never lands
        # in the pipeline options shipped to the runner.
        kafka_security.add_arguments(parser)
