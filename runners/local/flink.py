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


def _has_flag(argv: list[str], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)


def pipeline_args(argv: list[str], resume: bool = True) -> list[str]:
    """`argv` plus the local defaults it does not set itself."""
    args = list(argv)
    if not _has_flag(args, "flink_job_server_jar"):
        args += local_beam.flink_job_server_args()
    if not _has_flag(args, "checkpointing_interval"):
        storage = checkpoint_dir()
        storage.mkdir(parents=True, exist_ok=True)
        args += [f"--checkpointing_interval={CHECKPOINT_INTERVAL_MS}",
                 "--state_backend=filesystem",
                 f"--state_backend_storage_path=file://{storage}",
                 "--externalized_checkpoints_enabled",
                 "--retain_externalized_checkpoints_on_cancellation"]
    if resume and not _has_flag(args, "savepoint_path"):
        checkpoint = latest_checkpoint()
        if checkpoint is not None:
            log.info("resuming from checkpoint %s", checkpoint)
            args += [f"--savepoint_path=file://{checkpoint}", "--allow_non_restored_state"]
    return args
