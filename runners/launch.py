"""What the chosen runner needs on this machine, attached at the command line's edge.

`pipelines.market.run(argv)` builds and runs the pipeline on whatever runner
plain Beam flags name; `python -m pipelines.market` (its `main()`) first
calls `prepare(argv)` here, which returns a `Launch`: the pipeline arguments
with what that runner needs from this machine, the KafkaIO expansion
service, and how to stop the job it starts (`Launch.stop_job`); after the
job, `stop_child_processes` ends the JVMs this process started:

* FlinkRunner, embedded (`--flink_master` unset, `[local]` or `[auto]`):
  local job server jar, checkpoints, resume (runners/local/flink.py);
  KafkaIO runs EMBEDDED in the job server's JVM.
* FlinkRunner on a cluster (`--flink_master=host:port`): see
  runners/flink_cluster; KafkaIO runs EMBEDDED in the TaskManagers, in the
  job's class loader: the job server ships its own class path (the Beam
  jars) with the job.
* DataflowRunner: Dataflow's defaults (KafkaIO in Dataflow's Java
  container); the expansion service is started from the local jar only to
  expand the transform.

The compose stack's submitter (runners/compose) attaches its own: the job
server and the expansion service are containers there.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines.options import MarketOptions, runner_name
from runners.flink_rest import UNREACHABLE, FlinkRest
from runners.job_metrics import MetricsLog
from runners.local import beam as local_beam
from runners.local import flink as local_flink
from runners.local import process
from runners.wait import wait_until

log = logging.getLogger(__name__)


@dataclass
class Launch:
    """What `python -m pipelines.market` runs with on the runner its flags name, and how it stops the job.

    `flink` is where a planned stop of a Flink job of ours goes (its REST API
    and savepoint folder); None where the runner offers no savepoint (a stop
    then cancels). `slot_watch` ends the command when a cluster job starves.
    """

    args: list[str]
    expansion_service: object | None = None
    flink: local_flink.SavepointTarget | None = None
    slot_watch: object | None = None

    def metrics_log(self) -> MetricsLog | None:
        """A started MetricsLog of the job on Flink (every `--metrics_log_s`), or None: not Flink, or off."""
        interval_s = PipelineOptions(self.args).view_as(MarketOptions).metrics_log_s
        if self.flink is None or not interval_s or interval_s <= 0:
            return None
        return MetricsLog(FlinkRest(self.flink.rest_url), interval_s, self.flink.job_name).start()

    def stop_job(self, result: PipelineResult, timeout_s: float = 30.0) -> None:
        """End a job still running: stop with a savepoint where the runner allows it, else cancel."""
        try:
            if result.state and PipelineState.is_terminal(result.state):
                return
        except Exception as exc:  # the job server is gone: nothing left to stop
            log.warning("job state unknown (%s): not stopping it", exc)
            return

        def ended() -> bool:
            try:
                return PipelineState.is_terminal(result.state)
            except Exception:  # the job server shut its cluster down after the job
                return True

        target = self.flink
        if target is not None and target.job_name is not None and _ended_on_flink(target):
            # Cancelled on the cluster (an operator, the slot watch): Beam hears of it in a moment.
            wait_until(ended, timeout_s)
            return
        if target is not None and local_flink.stop_with_savepoint(target) is not None:
            # The job ends FINISHED once its tasks have stopped; Beam reports DONE.
            if wait_until(ended, timeout_s):
                return
            log.warning("the job did not end within %.0fs of its savepoint: cancelling it", timeout_s)
        else:
            log.warning("no savepoint: cancelling the job; the next start replays from the last checkpoint")
        try:
            result.cancel()
        except Exception as exc:  # the job server may already be gone
            log.warning("could not cancel the job: %s", exc)


def prepare(argv: list[str]) -> Launch:
    """The `Launch` of the runner `argv` names (see the module docstring)."""
    options = PipelineOptions(argv)
    resume = not options.view_as(MarketOptions).no_resume
    runner = runner_name(options)
    if runner == "flink":
        if options.view_as(FlinkRunnerOptions).flink_master in local_flink.LOCAL_MASTERS:
            args, target = local_flink.pipeline_args(argv, resume=resume)
            return Launch(args, local_beam.expansion_service(), target)
        from runners.flink_cluster import cluster, slots
        args, target = cluster.pipeline_args(argv, resume=resume)
        # Before any JVM starts: a cluster without the slots is an error, not
        # a job that waits; after the submission, a job starved of slots ends this command.
        watch = slots.watch_from_command_line(args)
        return Launch(args, local_beam.expansion_service(), target, watch)
    if runner == "dataflow":
        from runners.dataflow import submit
        return Launch(submit.pipeline_args(argv), submit.expansion_service())
    return Launch(list(argv))


def _ended_on_flink(target: local_flink.SavepointTarget) -> bool:
    try:
        return FlinkRest(target.rest_url).active_job(target.job_name) is None
    except UNREACHABLE:
        return False


def stop_child_processes() -> None:
    """Terminate what this process started and left running: the Flink job server and expansion service JVMs.

    Beam stops its job server at exit, but its stop removes a temp folder
    first and, when that raises (a FileNotFoundError was seen), never stops
    the JVM, which then runs on with parent 1. The JVMs are found by this
    process's tree, not by name: other pipelines run the same jars.
    """
    left = process.terminate(process.descendants(os.getpid()), grace_s=10.0)
    if left:
        log.info("stopped child processes %s", left)
