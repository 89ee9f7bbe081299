"""Scaling on the Flink session cluster: one filled topic drained at parallelism 1, 2 and 4.

    .venv/bin/python -m runners.flink_cluster start --taskmanagers 2      # 4 slots
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/cluster_scaling.py \\
        [--ticks 3000000] [--symbols 20,10000] [--parallelism 1,2,4] [--runs 1]
    .venv/bin/python -m runners.flink_cluster stop

For each symbol count, the project's producer fills one fresh topic (as
`compare.py drain` does: event time over the 60 minutes before the fill),
then `python -m pipelines.market --runner=FlinkRunner
--flink_master=localhost:8081 --parallelism=P` drains it from the start, once
per parallelism, each time with a fresh consumer group, output topics and
job name. The figure is ticks/s from the first bar to the last final bar
(the bars' broker append times; the whole drain, the closing of every window
included, so a burst of bars does not make it meaningless), beside the
10 %→90 % rate and the seconds from submission to the first bar. Every tick
must end in a final bar or a dead letter.

The pipeline runs in the cluster's processes, not under the command that
submitted it, so CPU is sampled there (/proc, every 0.5 s, interpolated at
the first and last bar): the TaskManager JVMs and the worker pool with its
Python SDK workers, in µs per tick and in cores, beside the Kafka broker,
this benchmark's own reader, and how many of the machine's cores were busy
(/proc/stat, whoever used them) over the same span. A benchmark, not a test:
it prints numbers and asserts nothing. It uses the cluster it finds (start
it first; it refuses one with jobs running) and stops every job and process
it started.
"""
from __future__ import annotations

import argparse
import bisect
import os
import shutil
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    BenchError,
    EndOffsets,
    dead_letter_reasons,
    per_tick,
    require_broker,
    require_symbol_count,
    run_benchmark,
    symbol_counts,
    symbols_label,
)
from benchmarks.drain import DrainResult, drain_one, fill, finish_drain, wait_complete
from benchmarks.stats import median
from benchmarks.systems import Run, output_topics, pipeline_command
from market import config, settings
from runners.flink_cluster import cluster, conf
from runners.flink_rest import ACTIVE_STATES, FlinkRest
from runners.local import kafka, process
from runners.local.supervised import cpu_seconds
from runners.topics import delete_topics

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.5


@dataclass
class ScalingResult:
    parallelism: int
    drain: DrainResult
    submit_to_first_bar_s: float = float("nan")
    taskmanagers: int = 0                     # TaskManagers the job's subtasks ran on
    cpu: CpuSpan = field(default_factory=lambda: CpuSpan())   # first bar -> last final bar


class MachineCPU:
    """Where the machine's cores go, sampled every SAMPLE_S: the cluster's processes, the broker, this benchmark.

    Kinds: the TaskManager JVMs, the JobManager JVM, the worker pool with
    the Python SDK workers it starts (one per job per TaskManager), the Kafka
    broker, and this process (the benchmark's bar reader); "busy" is every
    core's non-idle time from /proc/stat, whoever used it. A process that
    ends keeps its last reading, so a span's CPU is exact for the SDK workers
    of a job that stopped since.
    """

    def __init__(self) -> None:
        # (time, machine busy s, machine total s, CPU s by process): a process is (pid, start time, kind)
        self.samples: list[tuple[float, float, float, dict[tuple[int, str, str], float]]] = []
        self._last: dict[tuple[int, str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machine-cpu", daemon=True)

    def start(self) -> "MachineCPU":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():   # not when a prerequisite failed before start()
            self._thread.join(5)

    @staticmethod
    def _roots() -> dict[int, str]:
        kinds = {os.getpid(): "benchmark"}
        broker = process.read_pid(kafka.NAME)
        if broker is not None:
            kinds[broker] = "Kafka broker"
        for name, pid in cluster.status().items():
            if pid is not None:
                kinds[pid] = ("TaskManager JVM" if name.startswith(cluster.TASKMANAGER_PREFIX) else
                              "JobManager JVM" if name == cluster.JOBMANAGER else "Python SDK workers")
        return kinds

    def _sample(self) -> None:
        for root, kind in self._roots().items():
            for pid in [root, *(process.descendants(root) if kind != "benchmark" else [])]:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                self._last[(pid, fields[19], kind)] = cpu_seconds(fields)
        jiffies = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = jiffies[3] + jiffies[4]      # idle + iowait
        self.samples.append((time.time(), (sum(jiffies) - idle) / CLK_TCK, sum(jiffies) / CLK_TCK,
                             dict(self._last)))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def _at(self, when: float) -> tuple[float, float, dict]:
        """(busy s, total s, CPU s by process) at wall time `when`, interpolated between samples."""
        times = [s[0] for s in self.samples]
        i = min(max(bisect.bisect_left(times, when), 1), len(self.samples) - 1)
        (t_a, busy_a, total_a, a), (t_b, busy_b, total_b, b) = self.samples[i - 1], self.samples[i]
        share = min(max((when - t_a) / (t_b - t_a), 0.0), 1.0) if t_b > t_a else 1.0
        return (busy_a + share * (busy_b - busy_a), total_a + share * (total_b - total_a),
                {proc: a.get(proc, 0.0) + share * (b[proc] - a.get(proc, 0.0)) for proc in b})

    def between(self, start: float, end: float) -> "CpuSpan":
        """What the cores did between two wall times."""
        if len(self.samples) < 2 or end <= start:
            return CpuSpan()
        busy_a, total_a, a = self._at(start)
        busy_b, total_b, b = self._at(end)
        used = {proc: b[proc] - a.get(proc, 0.0) for proc in b}
        by_kind: dict[str, float] = defaultdict(float)
        for (_, _, kind), seconds in used.items():
            by_kind[kind] += seconds
        busiest = max(((kind, seconds) for (_, _, kind), seconds in used.items() if kind == "Python SDK workers"),
                      key=lambda item: item[1], default=("", 0.0))
        span = end - start
        return CpuSpan(span_s=span, cores=(total_b - total_a) / span, busy=(busy_b - busy_a) / span,
                       seconds_by_kind=dict(by_kind), busiest_sdk_worker=busiest[1] / span)


@dataclass
class CpuSpan:
    span_s: float = float("nan")
    cores: float = float("nan")                  # the machine's cores (CPU s per s)
    busy: float = float("nan")                   # cores busy, whoever used them
    seconds_by_kind: dict[str, float] = field(default_factory=dict)
    busiest_sdk_worker: float = float("nan")     # cores used by the busiest Python SDK worker process


def require_cluster(rest: FlinkRest, parallelisms: list[int]) -> None:
    try:
        overview = rest.overview(timeout_s=5)
        active = [job for job in rest.jobs() if job["state"] in ACTIVE_STATES]
    except OSError as exc:
        raise BenchError(f"no Flink JobManager answers at {rest.url} ({exc}): start the cluster with "
                         f"`python -m runners.flink_cluster start --taskmanagers 2`") from None
    if overview["slots-total"] < max(parallelisms):
        raise BenchError(f"parallelism {max(parallelisms)} needs {max(parallelisms)} slots, the cluster has "
                         f"{overview['slots-total']}: `python -m runners.flink_cluster start --taskmanagers 2`")
    if active:
        raise BenchError("jobs already run on the cluster and would share its cores: "
                         + ", ".join(f"{job['name']} ({job['state']})" for job in active))


def end_job(rest: FlinkRest, job_name: str) -> None:
    """The job is over once its submitter has stopped it; cancel it if not (a benchmark leaves no job)."""
    job = rest.active_job(job_name)
    if job is not None:
        print(f"  {job_name} still {job['state']} after its submitter stopped: cancelling it", flush=True)
        rest.cancel(job["jid"])


def taskmanagers_used(rest: FlinkRest, job_name: str) -> int:
    """How many TaskManagers run the subtasks of the job (Flink fills one TaskManager's slots before the next)."""
    job = rest.active_job(job_name)
    if job is None:
        return 0
    used = set()
    for vertex in rest.job(job["jid"])["vertices"]:
        for subtask in rest.call(f"/jobs/{job['jid']}/vertices/{vertex['id']}")["subtasks"]:
            used.add(subtask.get("taskmanager-id") or subtask.get("host"))
    return len(used)


def drain_at(args: argparse.Namespace, rest: FlinkRest, cpu: MachineCPU, ticks_topic: str, symbols: int | None,
             parallelism: int, run_id: str, run_dir: Path, created: list[str]) -> ScalingResult:
    """One drain of the filled topic by the pipeline on the cluster at `parallelism`."""
    label = f"p{parallelism}"
    outputs = output_topics(args.bootstrap_servers, ticks_topic, f"{run_id}_{label}")
    created += outputs.outputs()
    job_name = f"scaling-{run_id}-{label}"
    cmd = pipeline_command(Run(args.bootstrap_servers, outputs, f"{run_id}-{label}", run_dir / label, [
        f"--flink_master={args.flink_master}", f"--parallelism={parallelism}", f"--job_name={job_name}",
        *args.pipeline_arg]))
    print(f"-- parallelism {parallelism}: job {job_name}", flush=True)
    result = ScalingResult(parallelism, DrainResult(f"cluster-{label}", symbols, args.ticks))
    submitted = time.time()
    offsets = EndOffsets(args.bootstrap_servers)
    progress, proc = drain_one(result.drain, cmd, None, args.bootstrap_servers, outputs.trends, run_dir,
                               args.timeout_s)
    try:
        wait_complete(progress, proc, args.ticks, quiet_s=30, timeout_s=args.settle_s,
                      dead_letters=lambda: offsets.total(outputs.dlq))
        finish_drain(result.drain, progress, proc, dead_letter_reasons(args.bootstrap_servers, outputs.dlq))
        result.taskmanagers = taskmanagers_used(rest, job_name)
    finally:
        progress.close()
        offsets.close()
        # SIGTERM to the submitter alone: it stops its cluster job (savepoint), then its JVMs.
        proc.stop(grace_s=120, whole_group=False)
        end_job(rest, job_name)
    first, last = progress.first_ms, progress.last_final_ms
    if first is not None:
        result.submit_to_first_bar_s = first / 1000 - submitted
    if first is not None and last is not None and last > first:
        result.cpu = cpu.between(first / 1000, last / 1000)
    d = result.drain
    print(f"  p={parallelism}: {d.full_rate:,.0f} ticks/s first bar → last final bar ({d.full_s:,.1f}s), "
          f"{d.rate:,.0f} ticks/s 10 %→90 %, first bar {result.submit_to_first_bar_s:.0f}s after submitting; "
          f"on {result.taskmanagers} TaskManager(s); "
          f"cores used {cores_text(result.cpu)}; CPU µs/tick {cpu_text(result)}; "
          f"{d.final_ticks:,} ticks in final bars + {sum(d.dead_letters.values()):,} dead letters "
          f"{dict(d.dead_letters) if d.dead_letters else ''}of {d.ticks:,} {d.note}", flush=True)
    return result


def scaling_run(args: argparse.Namespace, rest: FlinkRest, cpu: MachineCPU, symbols: int | None,
                parallelisms: list[int], label: str) -> list[ScalingResult]:
    run_id = f"scl{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    created = [ticks_topic]
    print(f"== {label} ({run_id}, logs in {run_dir})", flush=True)
    try:
        fill(args.bootstrap_servers, ticks_topic, args.ticks, args.seed, symbols, run_dir)
        return [drain_at(args, rest, cpu, ticks_topic, symbols, p, run_id, run_dir, created) for p in parallelisms]
    finally:
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, created)
        for p in parallelisms:
            shutil.rmtree(run_dir / f"p{p}" / "checkpoints", ignore_errors=True)


KINDS = ("TaskManager JVM", "Python SDK workers", "JobManager JVM", "Kafka broker", "benchmark")


def cpu_text(result: ScalingResult) -> str:
    """µs of CPU per tick: TaskManager JVM / Python SDK workers / JobManager JVM."""
    per = per_tick(result.cpu.seconds_by_kind, result.drain.accounted)
    return " / ".join(f"{per.get(kind, float('nan')):.1f}" for kind in KINDS[:3])


def cores_text(span: CpuSpan) -> str:
    """Where the cores went over the span: '1.85 of 2 busy: TaskManager JVM 0.52, ..., others 0.10'."""
    if not span.seconds_by_kind:
        return "-"
    used = {kind: span.seconds_by_kind.get(kind, 0.0) / span.span_s for kind in KINDS}
    parts = [f"{kind} {cores:.2f}" + (f" (busiest process {span.busiest_sdk_worker:.2f})"
                                      if kind == "Python SDK workers" else "")
             for kind, cores in used.items()]
    return f"{span.busy:.2f} of {span.cores:.0f} busy: {', '.join(parts)}, others {span.busy - sum(used.values()):.2f}"


def print_summary(by_count: list[tuple[int | None, list[list[ScalingResult]]]], ticks: int) -> None:
    """One table by symbol count and parallelism, for docs/performance.md."""
    print(f"\ndrain of {ticks:,} ticks on the Flink session cluster, event time over the 60 minutes before the fill; "
          f"rates and CPU over first bar → last final bar")
    print("\n| symbols | parallelism | TaskManagers | ticks/s first bar → last final bar (runs) | median | × p=1 "
          "| ticks/s 10 %→90 % (median) | s submit → first bar | cores busy of 2 | of which TaskManager JVMs / "
          "Python SDK workers (busiest process) / Kafka broker | CPU µs/tick TaskManager JVM / Python SDK workers / "
          "JobManager | every tick in a final bar or dead letter |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|---|")
    for symbols, runs in by_count:
        by_p: dict[int, list[ScalingResult]] = defaultdict(list)
        for results in runs:
            for r in results:
                by_p[r.parallelism].append(r)
        base = median([r.drain.full_rate for r in by_p.get(min(by_p), [])])
        for p, rs in sorted(by_p.items()):
            full = median([r.drain.full_rate for r in rs])
            complete = sum(r.drain.complete for r in rs)

            def cores(kind: str) -> float:
                return median([r.cpu.seconds_by_kind.get(kind, float("nan")) / r.cpu.span_s for r in rs])

            per = {kind: median([per_tick(r.cpu.seconds_by_kind, r.drain.accounted).get(kind, float("nan"))
                                  for r in rs]) for kind in KINDS[:3]}
            print(f"| {symbols_label(symbols)} | {p} | {'/'.join(sorted({str(r.taskmanagers) for r in rs}))} "
                  f"| {', '.join(f'{r.drain.full_rate:,.0f}' for r in rs)} "
                  f"| {full:,.0f} | {full / base:.2f} | {median([r.drain.rate for r in rs]):,.0f} "
                  f"| {median([r.submit_to_first_bar_s for r in rs]):.0f} "
                  f"| {median([r.cpu.busy for r in rs]):.2f} "
                  f"| {cores('TaskManager JVM'):.2f} / {cores('Python SDK workers'):.2f} "
                  f"({median([r.cpu.busiest_sdk_worker for r in rs]):.2f}) / {cores('Kafka broker'):.2f} "
                  f"| {' / '.join(f'{v:.1f}' for v in per.values())} | {complete} of {len(rs)} runs |")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default=settings.BOOTSTRAP_SERVERS.value())
    parser.add_argument("--flink_master", default=f"{conf.HOST}:{conf.REST_PORT}")
    parser.add_argument("--ticks", type=int, default=3_000_000)
    parser.add_argument("--symbols", default="20,10000", metavar="N[,N...]",
                        help="symbols the data spans, each count its own fill (the producer's --symbol_count)")
    parser.add_argument("--parallelism", default="1,2,4", metavar="P[,P...]")
    parser.add_argument("--runs", type=int, default=1, help="repeat each fill and its drains")
    parser.add_argument("--out_dir", default="/tmp/market-cluster-scaling", help="logs (one folder per run)")
    parser.add_argument("--seed", type=int, default=11, help="producer seed: the same data in every run")
    parser.add_argument("--keep_topics", action="store_true", help="leave the run's topics for a look")
    parser.add_argument("--timeout_s", type=float, default=1800, help="per drain, until 90 %%")
    parser.add_argument("--settle_s", type=float, default=1800,
                        help="after 90 %%, how long to wait for every tick to be in a final bar")
    parser.add_argument("--pipeline_arg", action="append", default=[],
                        help="extra pipeline flag for every drain, e.g. --pipeline_arg=--sdk_worker_parallelism=2")
    args = parser.parse_args()
    parallelisms = [int(p) for p in args.parallelism.split(",") if p.strip()]

    rest = FlinkRest.at(args.flink_master)
    cpu = MachineCPU()

    def body() -> int:
        require_broker(args.bootstrap_servers)
        require_cluster(rest, parallelisms)
        counts = symbol_counts(args.symbols)
        require_symbol_count(counts)
        cpu.start()
        by_count = []
        for symbols in counts:
            runs = [scaling_run(args, rest, cpu, symbols, parallelisms,
                                f"{symbols_label(symbols)} symbols, run {run}/{args.runs}")
                    for run in range(1, args.runs + 1)]
            by_count.append((symbols, runs))
        print_summary(by_count, args.ticks)
        return 0

    def cleanup() -> None:
        cpu.stop()
        try:
            for job in rest.jobs():     # a drain interrupted before its submitter stopped its job
                if job["name"].startswith("scaling-scl") and job["state"] in ACTIVE_STATES:
                    rest.cancel(job["jid"])
        except OSError:
            pass
    return run_benchmark(body, cleanup)


if __name__ == "__main__":
    sys.exit(main())
