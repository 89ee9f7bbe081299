"""Run `python -m pipelines.market` as a user would: a subprocess, stopped after the test."""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from runners.local.supervised import Supervised, pipeline_command
from runners.wait import wait_until


class PipelineProcess(Supervised):
    """The market pipeline on the embedded Flink runner, in its own process group."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        super().__init__("pipeline", pipeline_command(args), log_path)
        self.args = args

    def assert_running(self) -> None:
        self.require_running()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (Python driver, job server JVM, expansion service): a crash."""
        if not self.running():
            return
        tree = self.tree()
        self.signal_group(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
        # The job server JVM may outlive the driver for a moment.
        wait_until(lambda: not [pid for pid in tree if pid in self._alive()], 10, 0.1)
