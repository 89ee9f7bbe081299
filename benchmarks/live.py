"""live: the project's producer at a fixed rate with the pipeline running (see benchmarks/compare.py)."""
from __future__ import annotations

import argparse
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    PYTHON,
    READER_BEHIND_MS,
    BenchError,
    EndOffsets,
    Started,
    by_runtime,
    dead_letter_reasons,
    group_lag,
    per_tick,
    producer_symbol_flags,
    require_symbol_count,
    symbol_counts,
    symbols_label,
)
from benchmarks.profiling import Profiler
from benchmarks.readers import BarProgress, TickLog
from benchmarks.stats import percentiles
from benchmarks.systems import Run, output_topics, pipeline_command
from market import config
from runners.topics import create_topics, delete_topics


@dataclass
class ReadersMark:
    """What the benchmark's own readers had done and cost at one moment."""
    wall: float
    process_cpu: float      # the whole benchmark process: readers, librdkafka's threads, the watchers
    ticks_cpu: float
    ticks_read: int
    ticks_polls: int
    bars_cpu: float
    bars_read: int
    bars_polls: int

    @classmethod
    def take(cls, tick_log: TickLog, progress: BarProgress) -> "ReadersMark":
        return cls(time.time(), time.process_time(), tick_log.cpu_s(), tick_log.messages, len(tick_log.delays),
                   progress.cpu_s(), progress.messages, len(progress.delays))


@dataclass
class LiveResult:
    symbols: int | None
    rate: int
    duration: int
    offered: float = float("nan")
    processed: float = float("nan")
    backlog: tuple[int, int] | None = None
    growth: float = float("nan")
    sustained: bool | None = None
    latency: list[float] = field(default_factory=lambda: [float("nan")] * 3)
    latency_n: int = 0
    on_time_p99: float = float("nan")
    on_time_n: int = 0
    cpu_us_per_tick: dict[str, float] = field(default_factory=dict)   # by kind, the pipeline's processes
    producer_us_per_tick: float = float("nan")
    readers: str = ""
    readers_keep_up: bool | None = None
    dead_letters: Counter = field(default_factory=Counter)


def run_live(args: argparse.Namespace) -> int:
    counts = symbol_counts(args.symbols)
    rates = [int(part) for part in args.rate.replace("_", "").split(",") if part.strip()]
    require_symbol_count(counts)
    results = [live_one(args, symbols, rate) for symbols in counts for rate in rates]
    print_live_summary(results, args)
    return 0


def live_one(args: argparse.Namespace, symbols: int | None, rate: int) -> LiveResult:
    """The pipeline under the producer at `rate` ticks/s over `symbols` symbols, on topics of its own."""
    run_id = f"live{uuid.uuid4().hex[:6]}"
    run_dir = Path(args.out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    bootstrap = args.bootstrap_servers
    ticks_topic = f"{config.TICKS_TOPIC}_{run_id}"
    create_topics(bootstrap, {ticks_topic: config.TICKS.partitions})
    created = [ticks_topic]
    result = LiveResult(symbols, rate, args.duration)
    tick_log = progress = offsets = profiler = None
    try:
        outputs = output_topics(bootstrap, ticks_topic, run_id)
        created += outputs.outputs()
        group = f"{run_id}-pipeline"
        offsets = EndOffsets(bootstrap)
        tick_log = TickLog(bootstrap, ticks_topic)
        progress = BarProgress(bootstrap, outputs.trends, tick_log)
        print(f"== live: {symbols_label(symbols)} symbols at {rate} ticks/s for {args.duration}s ({run_id}, "
              f"logs in {run_dir})", flush=True)
        pipeline = Started("pipeline", pipeline_command(Run(bootstrap, outputs, group, run_dir,
                                                            args.pipeline_arg)), run_dir / "pipeline.log")
        producer_cmd = [PYTHON, "-m", "producer", f"--bootstrap_servers={bootstrap}", f"--input_topic={ticks_topic}",
                        f"--seed={args.seed}", "--stats_interval_s=0", *producer_symbol_flags(symbols)]
        # Warm up: a trickle until the first bar shows the job is running.
        t0 = time.monotonic()
        warm = Started("producer (warm-up)", [*producer_cmd, "--rate=100"], run_dir / "warmup.log")
        while progress.processed == 0:
            pipeline.require_running()
            warm.require_running()
            if time.monotonic() - t0 > args.timeout_s:
                raise BenchError(f"no bar {args.timeout_s:.0f}s after the pipeline started; see {pipeline.log_path}")
            time.sleep(0.2)
        warm.stop()
        print(f"pipeline live after {time.monotonic() - t0:.0f}s", flush=True)

        producer = Started("producer", [*producer_cmd, f"--rate={rate}", f"--duration_s={args.duration}"],
                           run_dir / "producer.log")
        start_wall = time.time()
        print(f"{'t s':>5} {'offered/s':>10} {'processed/s':>12} {'backlog':>9} {'group lag':>10} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'bars/s':>8} {'readers behind (ticks, bars)':>29}", flush=True)
        series: list[tuple[float, int, int, bool]] = []   # (t, published, processed, producer running)
        marks: dict[str, ReadersMark] = {}
        last_t, last_pub, last_done, last_bars = (time.time(), offsets.total(ticks_topic), progress.processed,
                                                   progress.messages)
        lat_index = 0
        while producer.running():
            pipeline.require_running()
            time.sleep(min(args.interval_s, max(0.5, args.duration + start_wall - time.time() + 1)))
            now = time.time()
            # Published from the broker, not from the tick log: a tick log
            # that trails must not shrink the backlog.
            pub, done, bars = offsets.total(ticks_topic), progress.processed, progress.messages
            behind = (pub - tick_log.position, offsets.total(outputs.trends) - progress.position)
            t = now - start_wall
            series.append((t, pub, done, producer.running()))
            lat, lat_index = progress.latencies_from(lat_index)
            lag = group_lag(bootstrap, group, ticks_topic, config.TICKS.partitions)
            p50, p99 = percentiles(lat, (50, 99))
            span = now - last_t
            print(f"{t:>5.0f} {(pub - last_pub) / span:>10,.0f} {(done - last_done) / span:>12,.0f} "
                  f"{pub - done:>9,} {lag if lag is not None else '-':>10} {p50:>7.0f} {p99:>7.0f} "
                  f"{(bars - last_bars) / span:>8,.0f} {f'{behind[0]:,}, {behind[1]:,}':>29}", flush=True)
            last_t, last_pub, last_done, last_bars = now, pub, done, bars
            if t >= args.warmup_s and producer.running():
                # The readers' cost between the first and the last mark
                # taken while the producer still runs.
                marks["start" if "start" not in marks else "end"] = ReadersMark.take(tick_log, progress)
                if args.profile and profiler is None:
                    profiler = Profiler(pipeline, run_dir, args.profile_s)
                    profiler.start()
        # The producer ran at its rate until its last second (then it flushes).
        measured_until = min(time.time(), start_wall + args.duration - 1)
        if profiler is not None:
            profiler.stop()
        end_backlog = offsets.total(ticks_topic) - progress.processed
        # Let the backlog drain to tell "slow" from "lost", and the readers
        # reach the ends of their topics before anything is reported.
        deadline = time.monotonic() + 60
        while offsets.total(ticks_topic) > progress.processed and time.monotonic() < deadline and pipeline.running():
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and readers_behind(offsets, tick_log, progress, ticks_topic, outputs.trends):
            time.sleep(0.5)
        report_live(args, result, series, progress, tick_log, offsets, ticks_topic, outputs.trends, marks,
                    start_wall, measured_until, end_backlog, pipeline, producer)
        if profiler is not None:
            print(profiler.report(), flush=True)
        result.dead_letters = dead_letter_reasons(bootstrap, outputs.dlq)
        print(f"dead letters: {dict(result.dead_letters)}\n", flush=True)
    finally:
        Started.stop_all()
        for watcher in (progress, tick_log):
            if watcher is not None:
                watcher.close()
        if offsets is not None:
            offsets.close()
        if not args.keep_topics:
            delete_topics(bootstrap, created)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return result


def readers_behind(offsets: EndOffsets, tick_log: TickLog, progress: BarProgress, ticks_topic: str,
                   bars_topic: str) -> tuple:
    """(ticks, bar versions) the readers have not read, bar versions waiting for their ticks; () when none."""
    behind = (offsets.total(ticks_topic) - tick_log.position, offsets.total(bars_topic) - progress.position,
              progress.pending())
    return behind if any(behind) else ()


def report_live(args: argparse.Namespace, result: LiveResult, series: list[tuple[float, int, int, bool]],
                progress: BarProgress, tick_log: TickLog, offsets: EndOffsets, ticks_topic: str, bars_topic: str,
                marks: dict[str, ReadersMark], start_wall: float, measured_until: float, end_backlog: int,
                pipeline: Started, producer: Started) -> None:
    """Print the run's figures and fill `result` with them.

    CPU, ticks processed and ON_TIME panes are taken over [start_wall +
    warm-up, measured_until] from the CPU samples and the bars' append
    times; the backlog and the readers' cost at the interval marks.
    """
    # Processed as of each moment from the bars' append times, not from what
    # the bar reader had read then: exact even if the reader trailed.
    timeline = progress.timeline()
    steady = [(t, pub, timeline.processed_at((start_wall + t) * 1000)) for t, pub, _, running in series
              if t >= args.warmup_s and running]
    if len(steady) >= 2:
        (t_a, pub_a, done_a), (t_b, pub_b, done_b) = steady[0], steady[-1]
        b_a, b_b = pub_a - done_a, pub_b - done_b
        result.growth = (b_b - b_a) / (t_b - t_a)
        result.processed = (done_b - done_a) / (t_b - t_a)
        result.offered = (pub_b - pub_a) / (t_b - t_a)
        result.backlog = (b_a, b_b)
        # Sustained: the backlog grows by less than 1 % of the offered rate.
        result.sustained = result.growth < 0.01 * result.rate
        verdict = "sustained" if result.sustained else "NOT sustained (backlog growing)"
        print(f"\nfrom {args.warmup_s:.0f}s to {t_b:.0f}s (the producer running): offered {result.offered:,.0f}/s, "
              f"processed {result.processed:,.0f}/s, backlog {b_a:,} -> {b_b:,} ({result.growth:+,.0f}/s): {verdict}")
    unread = readers_behind(offsets, tick_log, progress, ticks_topic, bars_topic)
    since_ms = (start_wall + args.warmup_s) * 1000
    lat = progress.latencies_between(since_ms)
    result.latency, result.latency_n = percentiles(lat), len(lat)
    p50, p95, p99 = result.latency
    partial = (f" -- PARTIAL: the benchmark's readers had not read {unread[0]:,} ticks and {unread[1]:,} bar "
               f"versions ({unread[2]:,} waiting for their ticks) when it stopped waiting") if unread else ""
    print(f"event time -> first bar version on the bar topic, ticks after {args.warmup_s:.0f}s ({len(lat):,}): "
          f"p50 {p50:,.0f} ms, p95 {p95:,.0f} ms, p99 {p99:,.0f} ms{partial}")
    # Where it goes, split at the bar's emitted_at (the bar step's clock when
    # it emitted the pane; same machine, same clock): the wait for a firing
    # and the stages before it, then the bundle's end, the write and Kafka.
    to_emit, to_append = progress.hops_between(since_ms)
    if len(to_emit):
        e50, e99 = percentiles(to_emit, (50, 99))
        a50, a99 = percentiles(to_append, (50, 99))
        print(f"  of which event time -> bar emitted (emitted_at): p50 {e50:,.0f} ms, p99 {e99:,.0f} ms; "
              f"emitted -> on the bar topic: p50 {a50:,.0f} ms, p99 {a99:,.0f} ms")
    on_time = progress.on_time_delays(since_ms, measured_until * 1000)
    result.on_time_p99, result.on_time_n = percentiles(on_time, (99,))[0], len(on_time)
    print(f"ON_TIME pane on the bar topic after its window's end, windows ending from {args.warmup_s:.0f}s "
          f"while the producer ran ({len(on_time):,} panes): p50 {percentiles(on_time, (50,))[0]:,.0f} ms, "
          f"p99 {result.on_time_p99:,.0f} ms{partial}")
    print(f"backlog when the producer stopped: {end_backlog:,}; after up to 60 s more: "
          f"{offsets.total(ticks_topic) - progress.processed:,} of {offsets.total(ticks_topic):,} published")
    a, b = start_wall + args.warmup_s, measured_until
    if b > a:
        ticks = timeline.processed_at(b * 1000) - timeline.processed_at(a * 1000)
        used = pipeline.cpu_between(a, b)
        result.cpu_us_per_tick = per_tick(used, ticks)
        produced = sum(producer.cpu_between(a, b).values())
        result.producer_us_per_tick = 1e6 * produced / ticks if ticks > 0 else float("nan")
        print(f"CPU per processed tick over {b - a:.0f}s ({ticks:,} ticks in bars appended in that span):")
        for kind in sorted(used):
            if used[kind] > 0:   # not the kinds whose processes did nothing in the span
                print(f"  {kind:45s} {result.cpu_us_per_tick.get(kind, float('nan')):8.1f} µs/tick "
                      f"({used[kind] / (b - a):.2f} cores)")
        for name, us in by_runtime(result.cpu_us_per_tick).items():
            print(f"  {'= ' + name:45s} {us:8.1f} µs/tick")
        print(f"  {'producer (not the pipeline)':45s} {result.producer_us_per_tick:8.1f} µs/tick "
              f"({produced / (b - a):.2f} cores)")
    report_readers(result, marks, tick_log, progress, unread)
    print(flush=True)


def report_readers(result: LiveResult, marks: dict[str, ReadersMark], tick_log: TickLog, progress: BarProgress,
                   unread: tuple) -> None:
    """What the benchmark's own readers cost (they share the cores with the system) and whether they kept up."""
    if "end" not in marks:
        result.readers = "not measured (run too short)"
        print(f"benchmark's readers: {result.readers}")
        return
    a, b = marks["start"], marks["end"]
    span = b.wall - a.wall
    ticks, bars = max(b.ticks_read - a.ticks_read, 1), max(b.bars_read - a.bars_read, 1)
    delays = {"tick log": tick_log.delay_ms(a.ticks_polls), "bar reader": progress.delay_ms(a.bars_polls)}
    late = [name for name, (_, p99, _) in delays.items() if p99 > READER_BEHIND_MS]
    result.readers_keep_up = not unread and not late
    cores = (b.process_cpu - a.process_cpu) / span
    tick_us, bar_us = 1e6 * (b.ticks_cpu - a.ticks_cpu) / ticks, 1e6 * (b.bars_cpu - a.bars_cpu) / bars
    result.readers = (f"{cores:.2f} cores; tick log {tick_us:.1f} µs/tick, bar reader {bar_us:.1f} µs/bar version; "
                      f"{'keep up' if result.readers_keep_up else '**fall behind**'}")
    print(f"benchmark's own readers over {span:.0f}s (on the same cores as the system): the whole process "
          f"{cores:.2f} cores (librdkafka's threads and the CPU sampling included)")
    for name, us, unit, rate, cpu, (p50, p99, worst), since in (
            ("tick log", tick_us, "tick", ticks / span, b.ticks_cpu - a.ticks_cpu, delays["tick log"],
             "a tick's event time to its poll, the producer's linger included"),
            ("bar reader", bar_us, "bar version", bars / span, b.bars_cpu - a.bars_cpu, delays["bar reader"],
             "append time to poll")):
        print(f"  {name:10s} {us:6.1f} µs/{unit} ({rate:,.0f}/s, {cpu / span:.2f} cores), behind its topic "
              f"p50 {p50:,.0f} / p99 {p99:,.0f} / max {worst:,.0f} ms ({since})")
    if result.readers_keep_up:
        print(f"  both kept up (p99 behind ≤ {READER_BEHIND_MS:,} ms, everything read at the end)")
    if late:
        print(f"  WARNING: the {' and the '.join(late)} fell behind (p99 > {READER_BEHIND_MS:,} ms): the interval "
              f"lines above trail; the figures after them are taken at the broker's append times and stand "
              f"if everything was read, but the benchmark competed with the system for the cores")
    if unread:
        print(f"  WARNING: the readers did not reach the ends of their topics ({unread[0]:,} ticks, {unread[1]:,} "
              f"bar versions unread, {unread[2]:,} waiting for their ticks): the latencies and ON_TIME delays "
              f"above are PARTIAL")


def print_live_summary(results: list[LiveResult], args: argparse.Namespace) -> None:
    """One table by symbol count and rate: for docs/performance.md."""
    print(f"live, {args.duration}s at each rate, figures from {args.warmup_s:.0f}s on; latency = event time -> "
          f"first bar version appended to the bar topic; CPU per processed tick")
    print("\n| symbols | rate | processed ticks/s | backlog (start → end, /s) | latency p50 / p95 / p99 ms "
          "| ON_TIME delay p99 ms | CPU µs/tick JVM / Python / producer | benchmark's readers | dead letters |")
    print("|---:|---:|---:|---|---|---:|---|---|---|")
    for r in results:
        backlog = (f"{r.backlog[0]:,} → {r.backlog[1]:,} ({r.growth:+,.0f}/s): "
                   f"{'sustained' if r.sustained else '**not sustained**'}") if r.backlog else "-"
        runtimes = by_runtime(r.cpu_us_per_tick)
        cpu = " / ".join(f"{runtimes.get(name, float('nan')):.1f}" for name in ("JVM", "Python"))
        print(f"| {symbols_label(r.symbols)} | {r.rate:,} | {r.processed:,.0f} | {backlog} "
              f"| {' / '.join(f'{v:,.0f}' for v in r.latency)} | {r.on_time_p99:,.0f} "
              f"| {cpu} / {r.producer_us_per_tick:.1f} | {r.readers} | {dict(r.dead_letters) or 'none'} |")
    print(flush=True)
