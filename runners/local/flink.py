"""Pipeline arguments for the embedded Flink runner: local jars and durable checkpoints.

With these, `python -m pipelines.market --runner=FlinkRunner` needs no other
flag: the job server comes from the local launcher jar, Flink checkpoints
every 10 s into `.cache/flink/checkpoints` (retained when the job stops), and
a new start resumes from the newest completed checkpoint, restoring window
state and Kafka offsets together.
"""
from __future__ import annotations

import logging
from pathlib import Path

from runners.args import flag_value, has_flag, with_flink_defaults
from runners.local import beam as local_beam
from runners.local import paths

log = logging.getLogger(__name__)

LOCAL_MASTERS = ("[local]", "[auto]")
CHECKPOINT_INTERVAL_MS = 10_000


def checkpoint_dir() -> Path:
    return paths.cache_dir() / "flink" / "checkpoints"


def latest_checkpoint(root: Path | None = None) -> Path | None:
    """The newest completed checkpoint (a `chk-N` folder holding `_metadata`) under `root`."""
    root = root or checkpoint_dir()
    done = [meta.parent for meta in root.glob("*/chk-*/_metadata")]
    if not done:
        return None
    return max(done, key=lambda chk: chk.stat().st_mtime)






def resume_args(checkpoint: Path, storage: Path, argv: list[str]) -> list[str]:
    """Arguments that make an embedded Flink restore `checkpoint`.

    Beam's Flink runner applies `--savepoint_path` only when it submits to a
    remote cluster (FlinkExecutionEnvironments), so for the embedded cluster
    the restore goes through Flink's own configuration: a conf dir whose
    flink-conf.yaml sets `execution.savepoint.path`, given as --flink_conf_dir.
    """
    if has_flag(argv, "flink_conf_dir"):
        raise ValueError("--flink_conf_dir is set: add execution.savepoint.path to it yourself, "
                         "or pass --no_resume")
    conf_dir = storage / ".resume-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "flink-conf.yaml").write_text(
        f"execution.savepoint.path: file://{checkpoint}\n"
        # State of operators the new job no longer has is skipped, not fatal.
        "execution.savepoint.ignore-unclaimed-state: true\n")
    return [f"--flink_conf_dir={conf_dir}"]


def pipeline_args(argv: list[str], resume: bool = True) -> list[str]:
    """`argv` plus the local defaults it does not set itself.

    A given `--state_backend_storage_path=file:///dir` is where checkpoints go
    and where a new start looks for the newest one.
    """
    args = with_flink_defaults(argv)
    if not has_flag(args, "flink_job_server_jar"):
        args += local_beam.flink_job_server_args()
    given = flag_value(args, "state_backend_storage_path")
    storage = Path(given.removeprefix("file://")) if given else checkpoint_dir()
    storage.mkdir(parents=True, exist_ok=True)
    if not given:
        args.append(f"--state_backend_storage_path=file://{storage}")
    if not has_flag(args, "checkpointing_interval"):
        args.append(f"--checkpointing_interval={CHECKPOINT_INTERVAL_MS}")
    if not has_flag(args, "state_backend"):
        args.append("--state_backend=filesystem")
    for flag in ("externalized_checkpoints_enabled", "retain_externalized_checkpoints_on_cancellation"):
        if not has_flag(args, flag):
            args.append(f"--{flag}")
    if resume and not has_flag(args, "savepoint_path"):
        checkpoint = latest_checkpoint(storage)
        if checkpoint is not None:
            log.info("resuming from checkpoint %s", checkpoint)
            args += resume_args(checkpoint, storage, args)
    return args
