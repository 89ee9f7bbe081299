"""The market pipeline: raw ticks from Kafka → bars, alerts, dead letters to Kafka.

    python -m pipelines.market --runner=FlinkRunner

runs it on an embedded Flink with the local jars; `--flink_master=host:port`
on a Flink cluster; `--runner=DataflowRunner ...` on Dataflow (see
runners/README.md). Streaming is implied.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import typing

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import kafka_io, preflight
from pipelines.options import MarketOptions
from transforms import MarketAnalytics

log = logging.getLogger(__name__)


def analytics_for(options: MarketOptions) -> MarketAnalytics:
    """The transforms configured from the pipeline's flags."""
    return MarketAnalytics(
        window_size_s=options.window_size_s,
        allowed_lateness_s=options.allowed_lateness_s,
        early_firing_s=options.early_firing_s,
        volatility_threshold_pct=options.volatility_threshold_pct,
        zscore_threshold=options.zscore_threshold,
        volume_spike_ratio=options.volume_spike_ratio)


def build_pipeline(pipeline: beam.Pipeline, options: PipelineOptions, source: beam.PTransform | None = None,
                   sinks: typing.Mapping[str, beam.PTransform] | None = None, expansion_service=None):
    """Wire source → MarketAnalytics → sinks on `pipeline`; return the analytics outputs.

    `source` replaces the Kafka read (tests feed a TestStream of SourceRecords
    or bytes); `sinks` maps "bars", "alerts", "dead_letters" to transforms
    taking (key, value) byte pairs and replaces the Kafka writes.
    """
    market = options.view_as(MarketOptions)
    if source is None:
        source = kafka_io.ReadTicksFromKafka(
            market.bootstrap_servers, market.input_topic, market.consumer_group,
            market.start_offset, expansion_service=expansion_service,
            watermark_delay_ms=market.watermark_delay_ms,
            event_time_read=market.kafka_read == "event_time")
    if sinks is None:
        sinks = {name: kafka_io.WriteToTopic(market.bootstrap_servers, topic, expansion_service)
                 for name, topic in (("bars", market.output_topic), ("alerts", market.alerts_topic),
                                     ("dead_letters", market.dlq_topic))}

    outputs = pipeline | "ReadTicks" >> source | "AnalyzeMarket" >> analytics_for(market)
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


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Parse flags, let the runner add what it needs, build and run the pipeline."""
    from apache_beam.options.pipeline_options import TestOptions

    from runners import select

    pipeline_args, expansion_service = select.prepare(argv)
    options = PipelineOptions(pipeline_args)
    options.view_as(StandardOptions).streaming = True
    if not options.view_as(TestOptions).dry_run and "Dataflow" not in str(options.view_as(StandardOptions).runner):
        # Dataflow's workers reach brokers this machine may not: no check there.
        preflight.check_kafka(options.view_as(MarketOptions))
    pipeline = beam.Pipeline(options=options)
    # One expansion-service JVM for the four KafkaIO transforms, not one each.
    with expansion_service if expansion_service is not None else contextlib.nullcontext():
        build_pipeline(pipeline, options, expansion_service=expansion_service)
    return pipeline.run()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (make stop, a supervisor) must stop the job and the job server
    # JVM too: exit through Python so atexit handlers and `finally` run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        result = run()
    except preflight.PreflightError as exc:
        log.error("%s", exc)
        return 2
    try:
        result.wait_until_finish()
    finally:
        if not result.state or not beam.runners.runner.PipelineState.is_terminal(result.state):
            try:
                result.cancel()
            except Exception as exc:  # the job server may already be gone
                log.warning("could not cancel the job: %s", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
