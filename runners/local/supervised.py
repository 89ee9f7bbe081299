"""A command started in a session of its own, watched until it is stopped: the harness of e2e tests and benchmarks.

`Supervised` starts a command (the pipeline, the producer, a peer) with its
output in a log file, records every descendant it spawns as it appears (so
a stop reaches even what left the process group or outlived its parent, and
never a stranger that reused a pid), and, if asked, samples the tree's CPU
by kind of process (a JVM, the pipeline's Python, an SDK worker ...) so the
CPU between any two moments of a run can be read afterwards.

`python -m pipelines.market` on the local runner is `PipelineCommand`: the
tests and `benchmarks/compare.py` start it the same way.
"""
from __future__ import annotations

import bisect
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from runners.local import paths, process
from runners.wait import wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.1          # how often a sampled tree's CPU is read
TREE_SCAN_EVERY = 5     # CPU samples between two scans of /proc for new descendants


class ProcessExited(AssertionError):
    """The supervised command ended while it was expected to run (an AssertionError: tests report it as such)."""


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds of /proc stat fields (as `_stat` splits them)."""
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_kind(command: str) -> str:
    """What a process of a supervised tree is, for a CPU breakdown."""
    if "java" in command.split(" ", 1)[0]:
        if "flink-job-server" in command:
            return "job-server JVM"
        if "expansion-service" in command:
            return "expansion JVM"
        return "other JVM"
    if "pipelines.market" in command:
        return "pipeline Python (driver + LOOPBACK worker)"
    if "python" in command:
        return "Python SDK worker" if "sdk_worker" in command else "Python"
    return command.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


class Supervised:
    """A command in its own session with its log; see the module docstring.

    With `sample_cpu` a watcher thread reads the tree's CPU every SAMPLE_S
    (`cpu_between`); without it the tree is scanned when asked (`tree()`) and
    when stopped.
    """

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None,
                 sample_cpu: bool = False) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.sample_cpu = sample_cpu
        self.proc: subprocess.Popen | None = None
        self.known: dict[int, str] = {}                         # pid -> start time (a pid's identity)
        self._last_cpu: dict[int, tuple[str, float]] = {}       # pid -> (kind, CPU s when last seen)
        self._samples_lock = threading.Lock()
        self.samples: list[tuple[float, dict[str, float]]] = []  # (wall time s, CPU s by kind)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> "Supervised":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=paths.PROJECT_ROOT, env=self.env, start_new_session=True)
        self.known[self.pid] = (_stat(self.pid) or [""] * 20)[19]
        if self.sample_cpu:
            self._sample()
            self._watcher = threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True)
            self._watcher.start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def __enter__(self) -> "Supervised":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the tree ---------------------------------------------------------
    def tree(self) -> list[int]:
        """Pids of the command's live descendants now (each is recorded for `stop`)."""
        if self.proc is None:
            return []
        found = process.descendants(self.pid)
        for pid in found:
            fields = _stat(pid)
            if fields is not None:
                self.known.setdefault(pid, fields[19])
        return found

    def pids_of(self, kind: str) -> list[int]:
        return [pid for pid in self.tree() if process_kind(cmdline(pid)) == kind]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def require_running(self) -> None:
        """Raise ProcessExited, with the log's tail, if the command has ended."""
        if not self.running():
            code = None if self.proc is None else self.proc.returncode
            raise ProcessExited(f"{self.name} exited with {code}; its log {self.log_path} ends:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        """The log's last `lines` lines; of a Java stack trace only its first frames, after the exception."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        kept, frames = [], 0
        for line in text.splitlines():
            frames = frames + 1 if "\tat " in line or "\t... " in line else 0
            if frames <= 3:
                kept.append(line)
        return "\n".join(kept[-lines:])

    # --- CPU --------------------------------------------------------------
    def _watch(self) -> None:
        n = 0
        while not self._stop.wait(SAMPLE_S):
            if n % TREE_SCAN_EVERY == 0:
                self.tree()
            self._sample()
            n += 1

    def _sample(self) -> dict[str, float]:
        """Read the CPU of every recorded process; a process that ended keeps its last reading."""
        for pid, started in list(self.known.items()):
            fields = _stat(pid)
            if fields is None or fields[19] != started:
                continue
            command = cmdline(pid)
            previous = self._last_cpu.get(pid)
            # A zombie has no command line: it keeps the kind it had.
            kind = process_kind(command) if command or previous is None else previous[0]
            self._last_cpu[pid] = (kind, cpu_seconds(fields))
        totals: dict[str, float] = defaultdict(float)
        for kind, seconds in list(self._last_cpu.values()):
            totals[kind] += seconds
        with self._samples_lock:
            self.samples.append((time.time(), dict(totals)))
        return dict(totals)

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of each kind of process in the tree."""
        self.tree()
        return self._sample()

    def cpu_at(self, when: float) -> dict[str, float]:
        """CPU seconds by kind at wall time `when`, interpolated between the samples around it."""
        with self._samples_lock:
            samples = list(self.samples)
        if not samples:
            return {}
        times = [t for t, _ in samples]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return dict(samples[0][1])
        if i == len(samples):
            return dict(samples[-1][1])
        (t_a, a), (t_b, b) = samples[i - 1], samples[i]
        share = (when - t_a) / (t_b - t_a) if t_b > t_a else 1.0
        return {kind: a.get(kind, 0.0) + share * (b[kind] - a.get(kind, 0.0)) for kind in b}

    def cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by kind used between two wall times of the run."""
        a, b = self.cpu_at(start), self.cpu_at(end)
        return {kind: b[kind] - a.get(kind, 0.0) for kind in b}

    # --- stopping ---------------------------------------------------------
    def signal_group(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the command's whole process group (a crash, as kill -9 of a supervisor would do)."""
        if self.running():
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float = 120.0, whole_group: bool = False) -> None:
        """Stop the command and leave nothing of its tree.

        SIGTERM goes to the command alone (the pipeline then stops its job
        with a savepoint and its JVMs itself, as `make stop` has it), or with
        `whole_group` to its process group (the pipeline cancels its job: a
        quick end). After it exits, or after `grace_s`, every recorded
        process still alive is terminated (SIGTERM, then SIGKILL).
        """
        if self.proc is None:
            return
        self.tree()
        if self.running():
            try:
                if whole_group:
                    os.killpg(self.pid, signal.SIGTERM)
                else:
                    self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

            def exited() -> bool:
                self.tree()     # what it starts while stopping is stopped with it
                return self.proc.poll() is not None

            wait_until(exited, grace_s, 0.2)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._sample()
        left = process.terminate([*self._alive(), *process.group_members(self.pid)], grace_s=10.0)
        self.proc.poll()
        still = self._alive()
        if still:
            print(f"warning: {self.name}: processes still alive after SIGKILL: {still} (of {left})", file=sys.stderr)

    def _alive(self) -> list[int]:
        """Recorded pids still running as the same process (same start time)."""
        return [pid for pid, started in self.known.items()
                if (fields := _stat(pid)) and fields[0] != "Z" and fields[19] == started]


def pipeline_command(args: list[str], python: str = sys.executable) -> list[str]:
    """`python -m pipelines.market --runner=FlinkRunner` with `args`: the pipeline as a user starts it."""
    return [python, "-m", "pipelines.market", "--runner=FlinkRunner", *args]
