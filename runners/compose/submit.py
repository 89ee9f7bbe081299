"""Submit the market pipeline to the Flink cluster of docker-compose.yml.

    python -m runners.compose --runner=FlinkRunner --flink_master=flink-jobmanager:8081 \\
        --job_endpoint=beam-job-server:8099 --artifact_endpoint=beam-job-server:8098 \\
        --environment_type=EXTERNAL --environment_config=localhost:50000 \\
        --kafka_expansion_service=kafka-expansion:8097 --job_name=market

Why this and not `python -m pipelines.market`: that command's `main()` takes the
Beam job server and the KafkaIO expansion service from the local launcher
jars (`python -m runners.local fetch`, which needs Java and Maven). The
project image has neither; in the compose stack both run as containers of
the pinned `apache/beam_flink1.19_job_server:2.62.0` image instead:

* `--job_endpoint`: the long-running job server container (Beam's
  PortableRunner then starts no job server of its own). `--artifact_endpoint`
  names its artifact port, because the job server, bound to 0.0.0.0,
  would advertise that address.
* `--kafka_expansion_service=host:port` (`ComposeOptions`, this module's): Beam's
  `ExpansionService` from the same image's class path, started with
  `--defaultEnvironmentType=EMBEDDED --experiments=use_deprecated_read`
  (the arguments of `runners/local/beam.py`), so Java KafkaIO runs inside the
  TaskManager JVM: the stock Flink image has no Docker to run Beam's default
  Java SDK container.

The pipeline is submitted by `pipelines.market.run`, the same code
`python -m pipelines.market` runs (options, broker check, graph). Added
unless given: `--setup_file` (the Python workers install the project
from it), checkpoints (runners/checkpoints.py) every 10 s under `/opt/flink/checkpoints/<job_name>`
(a volume shared by JobManager, TaskManager and this container), and with
`--job_name` a resume from that name's newest completed checkpoint
(`--no_resume` starts afresh from the consumer group's committed offsets).

A job of the same `--job_name` already running on the cluster is not
submitted twice: the submitter then exits 0, so `docker compose up` can be
repeated. Otherwise it stays attached to the job and exits non-zero if the
job fails, so the container's restart policy resubmits it (resuming from the
newest checkpoint).
"""
from __future__ import annotations

import argparse
import logging
import sys
import urllib.error
from pathlib import Path

from apache_beam.options.pipeline_options import FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions, SetupOptions

from pipelines.options import MarketOptions
from runners import checkpoints
from runners.args import with_flink_defaults
from runners.flink_rest import FlinkRest
from runners.local.flink import LOCAL_MASTERS

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_ROOT = Path("/opt/flink/checkpoints")
DEFAULT_EXPANSION_SERVICE = "kafka-expansion:8097"


class ComposeOptions(MarketOptions):
    """The submitter's options: the market pipeline's and where the stack's expansion service listens.

    A subclass of MarketOptions, so one view reads `--no_resume` too.
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--kafka_expansion_service", default=DEFAULT_EXPANSION_SERVICE, metavar="HOST:PORT",
                            help="host:port of the KafkaIO expansion service container (default: %(default)s)")


# Read by the submitter and kept out of the job's options: the job server
# has no use for them.
SUBMITTER_FLAGS = ("kafka_expansion_service", "no_resume")


def split_flags(argv: list[str]) -> tuple[ComposeOptions, list[str]]:
    """(the submitter's options, the pipeline's arguments without SUBMITTER_FLAGS)."""
    options = PipelineOptions(argv).view_as(ComposeOptions)
    strip = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in SUBMITTER_FLAGS:
        strip.add_argument(f"--{name}", nargs="?")
    return options, strip.parse_known_args(argv)[1]


def pipeline_args(argv: list[str], resume: bool = True) -> list[str]:
    """`argv` plus the worker packaging and checkpointing a compose run needs, unless given."""
    args = with_flink_defaults(argv)
    options = PipelineOptions(args)
    if options.view_as(SetupOptions).setup_file is None:
        args.append(f"--setup_file={PROJECT_ROOT / 'setup.py'}")
    job_name = options.view_as(GoogleCloudOptions).job_name
    storage = checkpoints.storage_of(args, CHECKPOINT_ROOT / (job_name or "unnamed"))
    args = checkpoints.with_checkpointing(args, storage)
    # Without a job name there is no way to tell this job's checkpoints from another's.
    checkpoint = checkpoints.resume_point(args, storage, resume) if job_name else None
    if checkpoint is not None:
        log.info("resuming %s from checkpoint %s", job_name, checkpoint)
        args += checkpoints.restore_args(checkpoint)
    return args


def active_job(flink_master: str, job_name: str) -> dict | None:
    """The cluster's unfinished job called `job_name` (Flink REST `/jobs/overview`), or None."""
    return FlinkRest.at(flink_master).active_job(job_name)


def run(argv: list[str] | None = None):
    """Submit the pipeline unless a job of its name runs; the PipelineResult, or None if not submitted."""
    from pipelines import market

    own, argv = split_flags(list(sys.argv[1:] if argv is None else argv))
    job_name = own.view_as(GoogleCloudOptions).job_name
    flink_master = own.view_as(FlinkRunnerOptions).flink_master
    if job_name and flink_master not in LOCAL_MASTERS:
        running = active_job(flink_master, job_name)
        if running is not None:
            log.info("job %s (%s) is already %s on %s: not submitting it again",
                     job_name, running["jid"], running["state"], flink_master)
            return None
    return market.run(pipeline_args(argv, resume=not own.no_resume),
                      expansion_service=own.kafka_expansion_service)


def main(argv: list[str] | None = None) -> int:
    """`python -m runners.compose [flags]`: submit, then stay attached to the job."""
    from market import console
    from pipelines import preflight
    from pipelines.options import command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = command_line("python -m runners.compose", "Submit the market pipeline to the compose stack's Flink.")
    ComposeOptions._add_argparse_args(parser)   # its own flag; command_line has MarketOptions'
    parser.parse_known_args(argv)     # --help lists the flags and exits
    console.setup_logging()
    try:
        result = run(argv)
    except preflight.PreflightError as exc:
        log.error("%s", exc)
        return 2
    except (urllib.error.URLError, OSError) as exc:
        log.error("the Flink JobManager's REST API did not answer: %s", exc)
        return 3
    if result is None:
        return 0
    try:
        result.wait_until_finish()
    except RuntimeError as exc:  # the job ended FAILED or CANCELLED: let the restart policy resubmit
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
