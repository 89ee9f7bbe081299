"""Flink checkpoints and resume: the one place every Flink runner of the pipeline takes them from.

The embedded runner (runners/local/flink.py), the local session cluster
(runners/flink_cluster) and the compose stack (runners/compose) all
checkpoint every CHECKPOINT_INTERVAL_MS into a folder of their own, keep
the checkpoints when the job stops, and a new start resumes from the newest
completed checkpoint or savepoint there (`--no_resume` starts afresh from
the consumer group's committed offsets).
"""
from __future__ import annotations

from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from runners.args import FlinkJavaOptions, with_defaults

# Often enough that a crash replays seconds, not minutes; rare enough that the
# barrier alignment stays out of the per-tick latency (docs/deployment.md).
CHECKPOINT_INTERVAL_MS = 10_000


def savepoint_dir(storage: Path) -> Path:
    """Where a planned stop writes its savepoint, beside the checkpoints of `storage`."""
    return storage / "savepoints"


def latest_checkpoint(root: Path) -> Path | None:
    """The newest completed checkpoint or savepoint under `root`.

    A completed one is a `<job>/chk-N` or `savepoints/savepoint-*` folder
    holding `_metadata` (Flink writes it last). A planned stop leaves a
    savepoint newer than any checkpoint, so the next start resumes from it.
    """
    done = [*root.glob("*/chk-*/_metadata"), *savepoint_dir(root).glob("savepoint-*/_metadata")]
    if not done:
        return None
    return max(done, key=lambda meta: meta.stat().st_mtime).parent


def storage_of(argv: list[str], default: Path) -> Path:
    """The checkpoint folder `argv` names with `--state_backend_storage_path=file://...`, else `default`."""
    given = PipelineOptions(argv).view_as(FlinkJavaOptions).state_backend_storage_path
    return Path(given.removeprefix("file://")) if given else default


def with_checkpointing(argv: list[str], storage: Path) -> list[str]:
    """`argv` plus each checkpointing flag it does not set: every CHECKPOINT_INTERVAL_MS into `storage`, retained."""
    defaults = {"checkpointing_interval": str(CHECKPOINT_INTERVAL_MS), "state_backend": "filesystem",
                "state_backend_storage_path": f"file://{storage}",
                # Kept when the job is cancelled or fails: a resume needs them.
                "externalized_checkpoints_enabled": None,
                "retain_externalized_checkpoints_on_cancellation": None}
    return with_defaults(argv, defaults)


def resume_point(argv: list[str], storage: Path, resume: bool) -> Path | None:
    """The checkpoint or savepoint a start resumes from: None with `resume` off or `--savepoint_path` given."""
    given = PipelineOptions(argv).view_as(FlinkJavaOptions).savepoint_path
    if not resume or given is not None or not storage.is_dir():
        return None
    return latest_checkpoint(storage)


def restore_args(checkpoint: Path) -> list[str]:
    """Flags that submit a job restoring `checkpoint` to a Flink cluster.

    Operators the new job no longer has are skipped, not fatal.
    """
    return [f"--savepoint_path=file://{checkpoint}", "--allow_non_restored_state"]


def prepare_storage(argv: list[str], default: Path, resume: bool) -> tuple[list[str], Path, Path | None]:
    """What every Flink runner does first: (argv with the checkpointing flags, the checkpoint folder, made,
    and the checkpoint or savepoint to resume from, if any). `default` is the folder unless argv names one."""
    storage = storage_of(argv, default)
    storage.mkdir(parents=True, exist_ok=True)
    args = with_checkpointing(argv, storage)
    return args, storage, resume_point(args, storage, resume)
