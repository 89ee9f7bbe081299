"""The market pipeline: raw ticks from Kafka → bars, alerts, dead letters to Kafka.

    python -m pipelines.market --runner=FlinkRunner

runs it on an embedded Flink with the local jars; `--flink_master=host:port`
on a Flink cluster; `--runner=DataflowRunner ...` on Dataflow (see
docs/deployment.md). Streaming is implied.
"""
from __future__ import annotations

from market import console

if __name__ == "__main__":
    # Before Beam is imported: its Google client libraries warn at import time.
    console.filter_library_warnings()

import atexit
import contextlib
import logging
import signal
import sys
import typing

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from market import kafka_security
from pipelines import kafka_io, preflight
from pipelines.options import MarketOptions, command_line, runner_name
from transforms import MarketAnalytics

log = logging.getLogger(__name__)


def analytics_for(options: MarketOptions, routed_records=None) -> MarketAnalytics:
    """The transforms configured from the pipeline's flags (`routed_records`: see MarketAnalytics)."""
    return MarketAnalytics(
        window_size_s=options.window_size_s,
        allowed_lateness_s=options.allowed_lateness_s,
        early_firing_s=options.early_firing_s,
        volatility_threshold_pct=options.volatility_threshold_pct,
        zscore_threshold=options.zscore_threshold,
        volume_spike_ratio=options.volume_spike_ratio,
        max_future_s=options.max_future_s,
        shards=options.state_shards,
        routed_records=routed_records)


def build_pipeline(pipeline: beam.Pipeline, options: PipelineOptions, source: beam.PTransform | None = None,
                   sinks: typing.Mapping[str, beam.PTransform] | None = None, expansion_service=None):
    """Wire source → MarketAnalytics → sinks on `pipeline`; return the analytics outputs.

    `source` replaces the Kafka read (tests feed a TestStream of SourceRecords
    or bytes); `sinks` maps "bars", "alerts", "dead_letters" to transforms
    taking (key, value) byte pairs and replaces the Kafka writes.
    """
    market = options.view_as(MarketOptions)
    security = kafka_security.from_args(market)
    routed_records = None
    if source is None:
        batched = market.kafka_read == "event_time"
        source = kafka_io.ReadTicksFromKafka(
            market.bootstrap_servers, market.input_topic, market.consumer_group,
            market.start_offset, expansion_service=expansion_service,
            watermark_delay_ms=market.watermark_delay_ms,
            event_time_read=batched, batched=batched, security=security, shards=market.state_shards)
        if batched:
            # The read routes each record to its symbol's shard: the bar step parses them.
            routed_records = kafka_io.decode_record_batch
    if sinks is None:
        # The project's jar (event-time read) has the batched write too;
        # Beam's stock expansion service has only the per-record one.
        write = kafka_io.WriteBatchesToTopic if market.kafka_read == "event_time" else kafka_io.WriteToTopic
        sinks = {name: write(market.bootstrap_servers, topic, expansion_service, security=security)
                 for name, topic in (("bars", market.output_topic), ("alerts", market.alerts_topic),
                                     ("dead_letters", market.dlq_topic))}

    outputs = pipeline | "ReadTicks" >> source | "AnalyzeMarket" >> analytics_for(market, routed_records)
    kv = typing.Tuple[bytes, bytes]
    _ = (outputs.bars
         | "EncodeBars" >> beam.Map(kafka_io.keyed_json("symbol")).with_output_types(kv)
         | "WriteBars" >> sinks["bars"])
    _ = (outputs.alerts
         | "EncodeAlerts" >> beam.Map(kafka_io.keyed_json("symbol")).with_output_types(kv)
         | "WriteAlerts" >> sinks["alerts"])
    _ = (outputs.dead_letters
         | "EncodeDeadLetters" >> beam.Map(kafka_io.encode_dead_letter).with_output_types(kv)
         | "WriteDeadLetters" >> sinks["dead_letters"])
    return outputs


def run(argv: list[str] | None = None, expansion_service=None) -> beam.runners.runner.PipelineResult:
    """Build the pipeline from plain Beam flags (any runner) and run it; return without waiting.

    `expansion_service` expands the Java KafkaIO transforms (a
    JavaJarExpansionService, entered here so one JVM serves all four, or a
    "host:port" string); None lets Beam start its default one.
    """
    options = PipelineOptions(sys.argv[1:] if argv is None else argv)
    options.view_as(StandardOptions).streaming = True
    if not options.view_as(TestOptions).dry_run and runner_name(options) != "dataflow":
        # Dataflow's workers reach brokers this machine may not: no check there.
        preflight.check_kafka(options.view_as(MarketOptions))
    pipeline = beam.Pipeline(options=options)
    # One expansion-service JVM for the four KafkaIO transforms, not one each.
    with (expansion_service if isinstance(expansion_service, contextlib.AbstractContextManager)
          else contextlib.nullcontext()):
        build_pipeline(pipeline, options, expansion_service=expansion_service)
    return pipeline.run()


def _exit_on_first_signal(signum: int, frame) -> None:
    """SIGTERM (make stop, a supervisor): leave through `finally` so the job is stopped in order.

    Later signals are ignored: a second SystemExit in the middle of a
    savepoint would leave the job half stopped.
    """
    signal.signal(signum, signal.SIG_IGN)
    log.info("signal %d: stopping the pipeline", signum)
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.market [flags]`: run the pipeline until it ends or a signal stops it.

    The command line's edge: here, not in `run()`, the runner gets what it
    needs from this machine (runners/launch.py: local jars, Flink conf dir,
    checkpoints and resume, the expansion service).
    """
    from runners import launch

    argv = list(sys.argv[1:] if argv is None else argv)
    # --help lists MarketOptions' flags and exits; a bad value stops here, before any JVM starts.
    command_line("python -m pipelines.market", description=__doc__.split("\n\n")[0]).parse_known_args(argv)
    console.setup_logging()
    signal.signal(signal.SIGTERM, _exit_on_first_signal)
    # Registered first, so it runs after Beam's own exit handlers: whatever
    # path leaves (a signal during start-up included), no child JVM survives.
    atexit.register(launch.stop_child_processes)
    try:
        prepared = launch.prepare(argv)
        result = run(prepared.args, prepared.expansion_service)
    except preflight.PreflightError as exc:
        log.error("%s", exc)
        return 2
    metrics = prepared.metrics_log()
    try:
        result.wait_until_finish()
    finally:
        if metrics is not None:
            metrics.stop()          # logs the last figures before the job is stopped
        prepared.stop_job(result)
        launch.stop_child_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
