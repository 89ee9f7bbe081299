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
import os
import signal
import sys
import time
import typing

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from market import kafka_security
from pipelines import kafka_io, preflight
from pipelines.options import MarketOptions, command_line
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
        volume_spike_ratio=options.volume_spike_ratio,
        max_future_s=options.max_future_s)


def build_pipeline(pipeline: beam.Pipeline, options: PipelineOptions, source: beam.PTransform | None = None,
                   sinks: typing.Mapping[str, beam.PTransform] | None = None, expansion_service=None):
    """Wire source → MarketAnalytics → sinks on `pipeline`; return the analytics outputs.

    `source` replaces the Kafka read (tests feed a TestStream of SourceRecords
    or bytes); `sinks` maps "bars", "alerts", "dead_letters" to transforms
    taking (key, value) byte pairs and replaces the Kafka writes.
    """
    market = options.view_as(MarketOptions)
    security = kafka_security.from_args(market)
    if source is None:
        source = kafka_io.ReadTicksFromKafka(
            market.bootstrap_servers, market.input_topic, market.consumer_group,
            market.start_offset, expansion_service=expansion_service,
            watermark_delay_ms=market.watermark_delay_ms,
            event_time_read=market.kafka_read == "event_time", security=security)
    if sinks is None:
        sinks = {name: kafka_io.WriteToTopic(market.bootstrap_servers, topic, expansion_service, security=security)
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


def _exit_on_first_signal(signum: int, frame) -> None:
    """SIGTERM (make stop, a supervisor): leave through `finally` so the job is stopped in order.

    Later signals are ignored: a second SystemExit in the middle of a
    savepoint would leave the job half stopped.
    """
    signal.signal(signum, signal.SIG_IGN)
    log.info("signal %d: stopping the pipeline", signum)
    sys.exit(128 + signum)


def _stop_job(result: beam.runners.runner.PipelineResult) -> None:
    """End a job still running: stop with a savepoint where the runner allows it, else cancel."""
    from runners.local import flink as local_flink

    terminal = beam.runners.runner.PipelineState.is_terminal
    try:
        if result.state and terminal(result.state):
            return
    except Exception as exc:  # the job server is gone: nothing left to stop
        log.warning("job state unknown (%s): not stopping it", exc)
        return
    target = local_flink.savepoint_target
    if target is not None and local_flink.stop_with_savepoint(target) is not None:
        # The job ends FINISHED once its tasks have stopped; Beam reports DONE.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if terminal(result.state):
                    return
            except Exception:  # the job server shut its cluster down after the job
                return
            time.sleep(0.5)
        log.warning("the job did not end within 30s of its savepoint: cancelling it")
    else:
        log.warning("no savepoint: cancelling the job; the next start replays from the last checkpoint")
    try:
        result.cancel()
    except Exception as exc:  # the job server may already be gone
        log.warning("could not cancel the job: %s", exc)


def _stop_child_processes() -> None:
    """Terminate what this process started and left running: the Flink job server and expansion service JVMs.

    Beam stops its job server at exit, but its stop removes a temp folder
    first and, when that raises (a FileNotFoundError was seen), never stops
    the JVM, which then runs on with parent 1. The JVMs are found by this
    process's tree, not by name: other pipelines run the same jars.
    """
    from runners.local import process

    left = process.terminate(process.descendants(os.getpid()), grace_s=10.0)
    if left:
        log.info("stopped child processes %s", left)


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.market [flags]`: run the pipeline until it ends or a signal stops it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --help lists MarketOptions' flags and exits; a bad value stops here, before any JVM starts.
    command_line("python -m pipelines.market", description=__doc__.split("\n\n")[0]).parse_known_args(argv)
    console.setup_logging()
    signal.signal(signal.SIGTERM, _exit_on_first_signal)
    # Registered first, so it runs after Beam's own exit handlers: whatever
    # path leaves (a signal during start-up included), no child JVM survives.
    atexit.register(_stop_child_processes)
    try:
        result = run(argv)
    except preflight.PreflightError as exc:
        log.error("%s", exc)
        return 2
    try:
        result.wait_until_finish()
    finally:
        _stop_job(result)
        _stop_child_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
