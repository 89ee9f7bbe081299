"""Where the time goes: py-spy on the pipeline's Python and JFR on its job-server JVM, summarized as top frames."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

from benchmarks.common import PY_SPY, BenchError, Started


class Profiler:
    """py-spy on the pipeline's Python processes and JFR on its job-server JVM, started and stopped on demand."""

    def __init__(self, system: Started, out_dir: Path, max_s: int) -> None:
        self.system = system
        self.out_dir = out_dir
        self.max_s = max_s
        self.spy: Started | None = None
        self.jvm: int | None = None
        self.spy_out = out_dir / "pipeline-python.pyspy.txt"
        self.jfr_out = out_dir / "job-server.jfr"

    def start(self) -> None:
        if not PY_SPY.exists():
            raise BenchError(f"--profile needs py-spy: run ./benchmarks/setup.sh ({PY_SPY} is missing)")
        # --nonblocking: never pause the pipeline to sample it; --subprocesses:
        # Python SDK workers the job server starts (PROCESS environment) too.
        self.spy = Started("py-spy", [str(PY_SPY), "record", "--pid", str(self.system.pid), "--rate", "100",
                                      "--nonblocking", "--subprocesses", "--function", "--format", "raw",
                                      "--duration", str(self.max_s), "--output", str(self.spy_out)],
                           self.out_dir / "py-spy.log")
        jvms = self.system.pids_of("job-server JVM")
        if jvms:
            self.jvm = jvms[0]
            subprocess.run(["jcmd", str(self.jvm), "JFR.start", "name=compare", "settings=profile",
                            f"duration={self.max_s}s", f"filename={self.jfr_out}"],
                           capture_output=True, timeout=60, check=False)

    def stop(self) -> None:
        if self.jvm is not None:
            subprocess.run(["jcmd", str(self.jvm), "JFR.stop", "name=compare", f"filename={self.jfr_out}"],
                           capture_output=True, timeout=120, check=False)
        if self.spy is not None and self.spy.running():
            os.kill(self.spy.pid, signal.SIGINT)   # py-spy writes its output on Ctrl-C
            try:
                self.spy.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        if self.spy is not None:
            self.spy.stop(grace_s=5)

    def report(self, top: int = 20) -> str:
        parts = []
        if self.spy_out.exists():
            parts.append(summarize_py_spy(self.spy_out, top))
        else:
            parts.append(f"(no py-spy output; see {self.out_dir / 'py-spy.log'})")
        if self.jfr_out.exists():
            parts.append(summarize_jfr(self.jfr_out, top))
        else:
            parts.append("(no JFR recording)")
        return "\n".join(parts)


def _frame_name(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'fn (module.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})" if where else name


def summarize_py_spy(path: Path, top: int) -> str:
    """Top frames by self and by total samples of a py-spy raw (collapsed stacks) file."""
    own: Counter = Counter()
    total: Counter = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n
    lines = [f"py-spy, pipeline Python processes: {samples} samples (non-idle), raw stacks in {path}",
             "  self %  frame"]
    lines += [f"  {100 * n / samples:6.1f}  {name}" for name, n in own.most_common(top)] if samples else []
    lines += ["  total %  frame (inclusive)"]
    lines += [f"  {100 * n / samples:6.1f}  {name}" for name, n in total.most_common(top)] if samples else []
    return "\n".join(lines)


def summarize_jfr(path: Path, top: int) -> str:
    """Top threads, self and inclusive methods of the JFR execution samples."""
    result = subprocess.run(["jfr", "print", "--json", "--events", "jdk.ExecutionSample", str(path)],
                            capture_output=True, timeout=300, check=False)
    if result.returncode != 0:
        return f"(jfr print failed: {result.stderr.decode(errors='replace')[:300]})"
    events = json.loads(result.stdout)["recording"]["events"]
    threads: Counter = Counter()
    own: Counter = Counter()
    total: Counter = Counter()
    for event in events:
        values = event["values"]
        thread = (values.get("sampledThread") or {}).get("javaName") or "?"
        threads[thread.rstrip("0123456789").rstrip("-#")] += 1
        frames = ((values.get("stackTrace") or {}).get("frames")) or []
        names = [f"{f['method']['type']['name'].rsplit('.', 1)[-1]}.{f['method']['name']}" for f in frames]
        if names:
            own[names[0]] += 1
            for name in set(names):
                total[name] += 1
    n = len(events) or 1
    lines = [f"JFR, job-server JVM: {len(events)} execution samples (Java code only), recording {path}",
             "  samples %  thread"]
    lines += [f"  {100 * c / n:6.1f}  {name}" for name, c in threads.most_common(10)]
    lines += ["  self %  method"] + [f"  {100 * c / n:6.1f}  {name}" for name, c in own.most_common(top)]
    lines += ["  total %  method (inclusive)"] + [f"  {100 * c / n:6.1f}  {name}"
                                                 for name, c in total.most_common(top)]
    return "\n".join(lines)
