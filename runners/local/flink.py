"""Pipeline arguments for the embedded Flink runner: local jars and durable checkpoints.

With these, `python -m pipelines.market --runner=FlinkRunner` needs no other
flag: the job server comes from the local launcher jar, Flink checkpoints
every 10 s into `.cache/flink/checkpoints/<layout>` (retained when the job stops), and
a new start resumes from the newest completed checkpoint or savepoint,
restoring window state and Kafka offsets together. A planned stop (SIGTERM,
`make stop`) stops the job with a savepoint through the embedded cluster's
REST API (`stop_with_savepoint`), so the next start replays nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions

from runners import checkpoints
from runners.args import FlinkJavaOptions, with_flink_defaults
from runners.checkpoints import savepoint_dir
from runners.flink_rest import UNREACHABLE, FlinkRest
from runners.local import beam as local_beam
from runners.local import paths
from runners.ports import free_port

log = logging.getLogger(__name__)

LOCAL_MASTERS = ("[local]", "[auto]")


# The layout of the pipeline's state. A checkpoint holds operator state in
# the shape of the pipeline that wrote it, and Flink cannot restore one
# shape into another (v2: the per-symbol bar step replaced a WindowInto +
# combiner window step; v3: the bar step keyed by shard of symbols, with a
# journal, replaced the per-symbol bar and anomaly steps; v4: journal entries
# carry processing time and snapshots each symbol's last EARLY pane, for the
# EARLY pane at once; v5: the Kafka read routes records to their shard, with
# its waiting batches in its checkpoint mark, and the parse step is gone).
# A new layout gets a
# folder of its own, so an upgraded `make run` starts from the consumer
# group's committed offsets instead of failing to restore, crash after crash.
STATE_LAYOUT = "v5"


def checkpoint_dir() -> Path:
    return paths.cache_dir() / "flink" / "checkpoints" / STATE_LAYOUT


def latest_checkpoint(root: Path | None = None) -> Path | None:
    """The newest completed checkpoint or savepoint under `root` (default: the embedded runner's)."""
    return checkpoints.latest_checkpoint(root or checkpoint_dir())


def embedded_conf(storage: Path, checkpoint: Path | None, rest_port: int) -> Path:
    """A Flink conf dir for the embedded cluster (given to the job server as --flink_conf_dir).

    * REST on 127.0.0.1:`rest_port`: Beam's job server has no
      stop-with-savepoint call, Flink's REST API has (`POST /jobs/<jid>/stop`),
      and the embedded MiniCluster serves it when the port is configured.
      Only this machine can reach it, and jar submission is off.
    * `execution.savepoint.path`: Beam's Flink runner applies
      `--savepoint_path` only when it submits to a remote cluster
      (FlinkExecutionEnvironments), so the embedded restore goes through
      Flink's own configuration.
    """
    conf_dir = storage / ".resume-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"rest.port: {rest_port}", f"rest.bind-port: {rest_port}",
             "rest.address: 127.0.0.1", "rest.bind-address: 127.0.0.1",
             "web.submit.enable: false",
             f"state.savepoints.dir: file://{savepoint_dir(storage)}"]
    if checkpoint is not None:
        lines += [f"execution.savepoint.path: file://{checkpoint}",
                  # State of operators the new job no longer has is skipped, not fatal.
                  "execution.savepoint.ignore-unclaimed-state: true"]
    (conf_dir / "flink-conf.yaml").write_text("\n".join(lines) + "\n")
    return conf_dir


@dataclass
class SavepointTarget:
    """Where a planned stop of this process's Flink job goes: the REST API and the savepoint folder."""

    rest_url: str
    directory: Path
    job_name: str | None = None     # None: the only running job (the embedded cluster runs one)


def stop_with_savepoint(target: SavepointTarget, timeout_s: float = 90.0) -> Path | None:
    """Stop the job with a savepoint (Flink's stop, not drain); return the savepoint, or None.

    The sources stop at the savepoint barrier and the job ends FINISHED: the
    output topics hold everything up to the savepoint and nothing after, so a
    start from it continues with the next offsets and the same window state.
    None when the job is not running, REST does not answer or the savepoint
    fails: the caller then cancels, and the next start resumes from the last
    checkpoint (at-least-once).
    """
    rest = FlinkRest(target.rest_url)
    try:
        jid = rest.running_job(target.job_name)
        if jid is None:
            log.warning("no single running job at %s: no savepoint", target.rest_url)
            return None
        return rest.stop_with_savepoint(jid, target.directory, timeout_s)
    except (*UNREACHABLE, KeyError) as exc:
        log.warning("stop with savepoint failed: %s", exc)
    return None


def pipeline_args(argv: list[str], resume: bool = True) -> tuple[list[str], SavepointTarget | None]:
    """(`argv` plus the local defaults it does not set itself, where a planned stop of the job goes).

    A given `--state_backend_storage_path=file:///dir` is where checkpoints go
    and where a new start looks for the newest one. The stop target is None
    with a `--flink_conf_dir` of the user's: no REST port of ours, so a stop
    cancels (no savepoint).
    """
    args = with_flink_defaults(argv)
    options = PipelineOptions(args)
    if options.view_as(FlinkRunnerOptions).flink_job_server_jar is None:
        args += local_beam.flink_job_server_args()
    args, storage, checkpoint = checkpoints.prepare_storage(args, checkpoint_dir(), resume)
    if options.view_as(FlinkJavaOptions).flink_conf_dir is not None:
        if checkpoint is not None:
            raise ValueError("--flink_conf_dir is set: add execution.savepoint.path to it yourself, "
                             "or pass --no_resume")
        return args, None
    if checkpoint is not None:
        log.info("resuming from checkpoint %s", checkpoint)
    rest_port = free_port()
    args.append(f"--flink_conf_dir={embedded_conf(storage, checkpoint, rest_port)}")
    return args, SavepointTarget(f"http://127.0.0.1:{rest_port}", savepoint_dir(storage))
