"""drain: fill one topic, then time each system on it from the beginning (see benchmarks/compare.py)."""
from __future__ import annotations

import argparse
import shutil
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    BENCH_PYTHON,
    BENCH_VENV,
    DRAIN_END_MARGIN_MS,
    EVENT_SPAN_MS,
    FIRST_BAR_TIMEOUT_S,
    PYTHON,
    WINDOW_MS,
    BenchError,
    EndOffsets,
    Started,
    by_runtime,
    dead_letter_reasons,
    end_offsets,
    per_tick,
    producer_symbol_flags,
    require_symbol_count,
    symbol_counts,
    symbols_label,
    topics_containing,
)
from benchmarks.profiling import Profiler
from benchmarks.readers import BarProgress
from benchmarks.stats import median
from benchmarks.systems import Run, output_topics, system_command
from market import config
from runners.topics import create_topics, delete_topics


@dataclass
class DrainResult:
    system: str
    symbols: int | None
    ticks: int
    rate: float = float("nan")                  # ticks/s, 10 % -> 90 % of the ticks in published bars
    seconds: float = float("nan")
    startup_s: float = float("nan")
    cpu_us_per_tick: dict[str, float] = field(default_factory=dict)        # by kind, 10 % -> 90 %
    full_rate: float = float("nan")             # ticks/s, first bar -> last final bar
    full_s: float = float("nan")
    full_cpu_us_per_tick: dict[str, float] = field(default_factory=dict)   # by kind, same span
    processed: int = 0
    final_ticks: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    reader: str = ""                            # what the benchmark's bar reader cost
    note: str = ""

    @property
    def accounted(self) -> int:
        """Ticks that ended somewhere: in a final bar or as a dead letter."""
        return self.final_ticks + sum(self.dead_letters.values())

    @property
    def complete(self) -> bool:
        return self.accounted == self.ticks


def fill(bootstrap: str, topic: str, ticks: int, seed: int, symbols: int | None, run_dir: Path) -> None:
    """`ticks` ticks from the project's producer, event time over 60 minutes that ended a minute or two ago."""
    create_topics(bootstrap, {topic: config.TICKS.partitions})
    end = int(time.time() * 1000) - DRAIN_END_MARGIN_MS
    start = end - end % WINDOW_MS - EVENT_SPAN_MS
    producer = Started("producer (fill)", [
        PYTHON, "-m", "producer", f"--bootstrap_servers={bootstrap}", f"--input_topic={topic}",
        f"--count={ticks}", "--rate=0", f"--start_time={start}", f"--event_rate={ticks * 1000 / EVENT_SPAN_MS}",
        f"--seed={seed}", "--stats_interval_s=0", *producer_symbol_flags(symbols)], run_dir / "fill.log")
    t0 = time.monotonic()
    try:
        code = producer.proc.wait(timeout=max(600.0, ticks / 5000))
    finally:
        producer.stop()
    partitions = end_offsets(bootstrap, topic)
    if code != 0 or sum(partitions) != ticks:
        raise BenchError(f"filling {topic}: producer exited {code}, {sum(partitions)} of {ticks} ticks on the "
                         f"topic; see {run_dir / 'fill.log'}")
    print(f"filled {topic}: {sum(partitions)} ticks over {symbols_label(symbols)} symbols in "
          f"{time.monotonic() - t0:.1f}s (partitions {partitions})", flush=True)


def drain_one(result: DrainResult, cmd: list[str], env: dict | None, bootstrap: str, bars_topic: str,
              run_dir: Path, timeout_s: float, profile: bool = False,
              profile_s: int = 60) -> tuple[BarProgress, Started]:
    """Start one system on the filled topic; measure 10 %→90 %; leave it running for the final check."""
    system, ticks = result.system, result.ticks
    progress = BarProgress(bootstrap, bars_topic)
    proc = Started(system, cmd, run_dir / f"{system}.log", env=env)
    t0 = time.time()
    seen: set[float] = set()
    profiler = None
    deadline = time.monotonic() + timeout_s
    while 0.9 not in seen and time.monotonic() < deadline:
        proc.require_running()
        if progress.bars == 0 and time.time() - t0 > FIRST_BAR_TIMEOUT_S:
            result.note = f"no bar at all {FIRST_BAR_TIMEOUT_S}s after the start: see {proc.log_path}"
            break
        done = progress.processed
        for fraction in (0.1, 0.9):
            if fraction not in seen and done >= fraction * ticks:
                seen.add(fraction)
                print(f"  {system}: {fraction:.0%} at {time.time() - t0:.1f}s", flush=True)
                if fraction == 0.1 and profile:
                    profiler = Profiler(proc, run_dir, profile_s)
                    profiler.start()
                if fraction == 0.9 and profiler is not None:
                    profiler.stop()
        time.sleep(0.05)
    if 0.9 not in seen:
        result.note = result.note or f"timed out after {timeout_s:.0f}s at {progress.processed} ticks"
        if profiler is not None:
            profiler.stop()
    timeline = progress.timeline()
    # The whole curve, not only its 10 % / 90 % marks: a slow start and a
    # fast finish (or the reverse) average out in one rate.
    marks = [timeline.crossed(f / 10 * ticks) for f in range(1, 10)]
    print(f"  {system}: s after start at 10 %, 20 %, ... 90 %: "
          + ", ".join(f"{m[0] / 1000 - t0:.1f}" for m in marks if m is not None), flush=True)
    mark10, mark90 = marks[0], marks[-1]
    if mark10 is not None:
        (t10, n10), (t90, n90) = mark10, mark90 or (int(time.time() * 1000), progress.processed)
        result.startup_s = t10 / 1000 - t0
        result.seconds = (t90 - t10) / 1000
        if n90 > n10 and t90 > t10:
            result.rate = (n90 - n10) / result.seconds
        # Progress moves in steps (the pipeline's EARLY panes every second):
        # the longest step over the span bounds the error.
        step = timeline.longest_gap_ms(t10, t90) / 1000
        error = 100 * step / result.seconds if result.seconds > 0 else float("inf")
        if error > 10:
            result.note = "; ".join(filter(None, [
                result.note, f"10 %→90 % took {result.seconds:.1f}s in steps up to {step:.2f}s: "
                             f"rate ±{error:.0f} %, use more --ticks"]))
        result.cpu_us_per_tick = per_tick(proc.cpu_between(t10 / 1000, t90 / 1000), n90 - n10)
    if profiler is not None:
        print(profiler.report(), flush=True)
    return progress, proc


def wait_complete(progress: BarProgress, proc: Started, expected: int, quiet_s: float, timeout_s: float,
                  dead_letters=lambda: 0) -> None:
    """Until every tick is in a final bar or a dead letter, or nothing new came for `quiet_s`, or the timeout."""
    deadline = time.monotonic() + timeout_s
    last, last_change = None, time.monotonic()
    dlq, next_dlq = 0, 0.0
    while time.monotonic() < deadline and proc.running():
        if time.monotonic() >= next_dlq:
            dlq, next_dlq = dead_letters(), time.monotonic() + 2
        finals = progress.final_ticks()
        if finals + dlq >= expected:
            return
        state = (finals, progress.bars, dlq)
        if state != last:
            last, last_change = state, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.5)


def finish_drain(result: DrainResult, progress: BarProgress, proc: Started, dead_letters: Counter) -> None:
    """The whole-drain figures, once the system has put every tick it will into final bars."""
    result.processed = progress.processed
    result.final_ticks = progress.final_ticks()
    result.dead_letters = dead_letters
    first, last = progress.first_ms, progress.last_final_ms
    if first is not None and last is not None and last > first:
        result.full_s = (last - first) / 1000
        result.full_rate = result.accounted / result.full_s
        result.full_cpu_us_per_tick = per_tick(proc.cpu_between(first / 1000, last / 1000), result.accounted)
        # Where the whole drain's time goes: reading and binning the ticks,
        # or waiting for the watermark to close the last windows.
        timeline = progress.timeline()
        marks = [(share, timeline.crossed(share * result.ticks)) for share in (0.1, 0.5, 0.9, 0.95, 0.99, 1.0)]
        print(f"  {result.system}: s after the first bar at which that share of the ticks was in bars: "
              + ", ".join(f"{share:.0%} {(mark[0] - first) / 1000:.1f}" for share, mark in marks if mark)
              + f"; the last final bar {(last - first) / 1000:.1f}", flush=True)
    _, p99, worst = progress.delay_ms()
    result.reader = (f"bar reader {1e6 * progress.cpu_s() / progress.bars:.1f} µs per bar version "
                     f"({progress.bars:,}), p99 {p99:,.0f} ms behind its topic (max {worst:,.0f})"
                     if progress.bars else "bar reader: no bars")


def drain_run(args: argparse.Namespace, systems: list[str], symbols: int | None, label: str) -> list[DrainResult]:
    """One fill of a fresh topic, then each system on it in turn."""
    run_id = f"cmp{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    created = [ticks_topic]
    results: list[DrainResult] = []
    print(f"== {label} ({run_id}, logs and profiles in {run_dir})", flush=True)
    offsets = EndOffsets(args.bootstrap_servers)
    try:
        fill(args.bootstrap_servers, ticks_topic, args.ticks, args.seed, symbols, run_dir)
        for system in systems:
            outputs = output_topics(args.bootstrap_servers, ticks_topic, f"{run_id}_{system}")
            created += outputs.outputs()
            group = f"{run_id}-{system}"
            cmd = system_command(system, Run(args.bootstrap_servers, outputs, group, run_dir, args.pipeline_arg))
            print(f"-- {system}: {' '.join(cmd[1:3])} ...", flush=True)
            result = DrainResult(system, symbols, args.ticks)
            progress, proc = drain_one(result, cmd, None, args.bootstrap_servers, outputs.trends, run_dir,
                                       args.timeout_s, profile=system == "pipeline" and args.profile,
                                       profile_s=args.profile_s)
            try:
                # Quix never closes the windows of the last 90 s of event
                # time (no newer tick passes their grace period): it stops
                # at the first quiet spell, short of every tick.
                wait_complete(progress, proc, args.ticks, quiet_s=10 if system == "quix" else 30,
                              timeout_s=args.settle_s,
                              dead_letters=lambda: offsets.total(outputs.dlq) if system == "pipeline" else 0)
                reasons = dead_letter_reasons(args.bootstrap_servers, outputs.dlq) if system == "pipeline" \
                    else Counter()
                finish_drain(result, progress, proc, reasons)
            finally:
                progress.close()
                proc.stop()
                created += topics_containing(args.bootstrap_servers, group)
            results.append(result)
            print(f"  {system}: {result.rate:,.0f} ticks/s (10 %→90 %), {result.full_rate:,.0f} ticks/s (first bar "
                  f"→ last final bar, {result.full_s:,.1f}s); final bars hold {result.final_ticks:,} of "
                  f"{args.ticks:,} ticks {result.note}", flush=True)
            print(f"  benchmark's {result.reader}", flush=True)
    finally:
        offsets.close()
        if not args.keep_topics:
            delete_topics(args.bootstrap_servers, created)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return results


def run_drain(args: argparse.Namespace) -> int:
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if "quix" in systems and not BENCH_PYTHON.exists():
        raise BenchError(f"Quix Streams runs in {BENCH_VENV}: run ./benchmarks/setup.sh first")
    counts = symbol_counts(args.symbols)
    require_symbol_count(counts)
    by_count: list[tuple[int | None, list[list[DrainResult]]]] = []
    for symbols in counts:
        runs: list[list[DrainResult]] = []
        for run in range(1, args.runs + 1):
            label = f"{symbols_label(symbols)} symbols, run {run}/{args.runs}"
            results = drain_run(args, systems, symbols, label)
            runs.append(results)
            print_drain_table(results, args.ticks)
        by_count.append((symbols, runs))
    print_drain_summary(by_count, args.ticks)
    return 0


def _cpu_text(per_kind: dict[str, float]) -> str:
    return ", ".join(f"{kind} {us:.1f}" for kind, us in sorted(per_kind.items(), key=lambda i: -i[1])
                     if us >= 0.05) or "-"


def _runtime_text(per_kind: dict[str, float]) -> str:
    """'JVM 4.1 / Python 6.5' (µs/tick), or 'Python 1.2' for a system with no JVM."""
    runtimes = by_runtime(per_kind)
    return " / ".join(f"{name} {runtimes[name]:.1f}" for name in ("JVM", "Python") if name in runtimes) or "-"


def _tick_check(r: DrainResult) -> str:
    done = f"{r.final_ticks:,} in final bars"
    if r.dead_letters:
        done += f" + {sum(r.dead_letters.values()):,} dead letters {dict(r.dead_letters)}"
    return f"{'yes' if r.complete else 'no'}: {done} of {r.ticks:,}"


def print_drain_table(results: list[DrainResult], ticks: int) -> None:
    quix = next((r.rate for r in results if r.system == "quix"), float("nan"))
    print("\n| system | ticks/s (10 %→90 %) | ticks/s (first bar → last final bar) | × Quix | start-up s "
          "| CPU µs/tick (10 %→90 %) | CPU µs/tick (first bar → last final bar) | every tick in a final bar |")
    print("|---|---:|---:|---:|---:|---|---|---|")
    for r in results:
        check = _tick_check(r) + (f" ({r.note})" if r.note else "")
        print(f"| {r.system} | {r.rate:,.0f} | {r.full_rate:,.0f} | {r.rate / quix:.2f} | {r.startup_s:.1f} "
              f"| {_cpu_text(r.cpu_us_per_tick)} | {_runtime_text(r.full_cpu_us_per_tick)} | {check} |")
    print(flush=True)


def print_drain_summary(by_count: list[tuple[int | None, list[list[DrainResult]]]], ticks: int) -> None:
    """One table by symbol count and system, every run's rates and their medians: for docs/performance.md."""
    print(f"drain of {ticks:,} ticks, event time over the 60 minutes before the fill; "
          f"CPU over first bar → last final bar")
    print("\n| symbols | system | ticks/s 10 %→90 % (runs) | median | ticks/s first bar → last final bar (runs) "
          "| median | median × Quix (10→90 / whole) | CPU µs/tick JVM / Python (median) "
          "| every tick in a final bar |")
    print("|---:|---|---|---:|---|---:|---:|---|---|")
    for symbols, runs in by_count:
        by_system: dict[str, list[DrainResult]] = defaultdict(list)
        for results in runs:
            for r in results:
                by_system[r.system].append(r)
        quix = by_system.get("quix", [])
        quix_rate, quix_full = median([r.rate for r in quix]), median([r.full_rate for r in quix])
        for system, rs in by_system.items():
            rate, full = median([r.rate for r in rs]), median([r.full_rate for r in rs])
            cpu: dict[str, float] = {}
            for name in ("JVM", "Python"):
                values = [by_runtime(r.full_cpu_us_per_tick)[name] for r in rs
                          if name in by_runtime(r.full_cpu_us_per_tick)]
                if values:
                    cpu[name] = median(values)
            short = [f"run {i}: {r.accounted:,} of {r.ticks:,}" for i, r in enumerate(rs, 1) if not r.complete]
            check = f"{len(rs) - len(short)} of {len(rs)} runs" + (f" ({'; '.join(short)})" if short else "")
            print(f"| {symbols_label(symbols)} | {system} | {', '.join(f'{r.rate:,.0f}' for r in rs)} | {rate:,.0f} "
                  f"| {', '.join(f'{r.full_rate:,.0f}' for r in rs)} | {full:,.0f} "
                  f"| {rate / quix_rate:.2f} / {full / quix_full:.2f} "
                  f"| {' / '.join(f'{n} {v:.1f}' for n, v in cpu.items()) or '-'} | {check} |")
    print(flush=True)
