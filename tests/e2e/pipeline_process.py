"""Run `python -m pipelines.market` as a user would: a subprocess, stopped after the test."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runners.local import paths, process


class PipelineProcess:
    """The market pipeline on the embedded Flink runner, in its own process group."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PipelineProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.market", "--runner=FlinkRunner", *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=paths.PROJECT_ROOT, env=env, start_new_session=True)
        log.close()
        return self

    def assert_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pipeline exited with {self.proc.returncode}:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (Python driver, job server JVM, expansion service)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        # The job server JVM may outlive the driver for a moment.
        time.sleep(1)

    def stop(self, timeout_s: float = 120.0) -> None:
        """A planned stop as `make stop` does it: SIGTERM to the driver only, then nothing may be left.

        The driver stops its job with a savepoint and its JVMs itself; what
        still runs of its process tree after it exits (or after `timeout_s`)
        is killed, so no JVM outlives the test.
        """
        if self.proc is None:
            return
        tree = self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        process.terminate([self.proc.pid, *tree, *process.group_members(self.proc.pid)], grace_s=5.0)
        self.proc.poll()

    def tree(self) -> list[int]:
        """Pids of the driver's child processes (job server JVM, expansion service), now."""
        return process.descendants(self.proc.pid) if self.proc is not None else []

    def tail(self, lines: int = 60) -> str:
        """The log's last `lines` lines; of a Java stack trace only its first lines, the exception."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        kept, frames = [], 0
        for line in text.splitlines():
            frames = frames + 1 if "\tat " in line or "\t... " in line else 0
            if frames <= 3:
                kept.append(line)
        return "\n".join(kept[-lines:])

    def __enter__(self) -> "PipelineProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
