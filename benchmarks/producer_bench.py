"""Producer benchmark: maximum sustained delivered ticks/s from one process, and rate accuracy.

    .venv/bin/python benchmarks/producer_bench.py                       # max rate, 3 runs of 10 s
    .venv/bin/python benchmarks/producer_bench.py --rates 10000 50000  # paced runs: accuracy
    .venv/bin/python benchmarks/producer_bench.py --faults             # with every fault switched on
    .venv/bin/python benchmarks/producer_bench.py --symbol_counts 20 10000          # a whole market
    .venv/bin/python benchmarks/producer_bench.py --simulator_only --symbol_counts 20 10000   # no broker

Each run publishes simulated ticks (the default universe, or with
--symbol_counts a market of that many symbols, as `--symbol_count` gives) to
a fresh topic with 3 partitions, which is deleted afterwards. "delivered/s"
counts records the broker confirmed over the produce loop and its final
flush; CPU is this process's user + system time (librdkafka's threads
included) over the same time, in percent of one core. Runs of the symbol
counts take turns, so a change of load on the shared machine hits them alike;
run it a few times.

--simulator_only times the simulator alone (ticks/s as dicts, and per CPU
second) and the simulator with each tick encoded as its Kafka record, without
a broker: the share of a tick's cost that could grow with the universe.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
import uuid
from itertools import islice

from market import config, settings
from producer import FaultInjector, FaultRates, ProducerConfig, TickSimulator, market_universe, run_producer
from runners import topics


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def simulator(symbol_count: int, seed: int, event_rate: float) -> TickSimulator:
    """The simulator `python -m producer [--symbol_count N]` runs; 0: the default universe."""
    return TickSimulator(market_universe(symbol_count) if symbol_count else None, seed=seed, event_rate=event_rate)


def simulator_run(symbol_count: int, duration_s: float, seed: int) -> dict[str, float]:
    """Ticks/s of the simulator alone, then of the simulator with every tick encoded as its Kafka record."""
    out: dict[str, float] = {}
    for name, source in (("ticks", lambda sim: sim), ("records", lambda sim: FaultInjector(sim, seed=seed))):
        sim = simulator(symbol_count, seed, config.PRODUCER_RATE)
        it = iter(source(sim))
        n = 0
        cpu0, wall0 = cpu_s(), time.perf_counter()
        while time.perf_counter() - wall0 < duration_s / 2:
            for _ in islice(it, 100_000):
                n += 1
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        out[f"{name}_per_s"], out[f"{name}_per_cpu_s"] = n / wall, n / cpu
    return out


def one_run(bootstrap: str, rate: float | None, duration_s: float, faults: bool, seed: int,
            symbol_count: int = 0) -> dict[str, float]:
    topic = f"bench_producer_{uuid.uuid4().hex[:8]}"
    topics.create_topics(bootstrap, {topic: config.TICKS.partitions})
    try:
        ticks = simulator(symbol_count, seed, rate or config.PRODUCER_RATE)
        rates = (FaultRates.spread_malformed(0.01, out_of_order=0.01, late=0.001, duplicate=0.001)
                 if faults else None)
        cfg = ProducerConfig(bootstrap_servers=bootstrap, topic=topic)
        cpu0, wall0 = cpu_s(), time.perf_counter()
        stats = run_producer(cfg, FaultInjector(islice(ticks, 50_000_000), rates, seed=seed), rate=rate,
                             duration_s=duration_s, stats_interval_s=0)
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    finally:
        topics.delete_topics(bootstrap, [topic])
    # The rate is over the produce loop and its final flush (stats.elapsed_s),
    # not the broker check before it, which would bias short runs low.
    return {"delivered": stats.total_delivered, "failed": stats.total_failed, "undelivered": stats.undelivered,
            "wall_s": wall, "per_s": stats.total_delivered / stats.elapsed_s, "cpu_pct": 100 * cpu / wall,
            "cpu_us_per_tick": 1e6 * cpu / max(stats.total_delivered, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default=settings.BOOTSTRAP_SERVERS.value())
    parser.add_argument("--duration_s", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per rate")
    parser.add_argument("--rates", type=float, nargs="*", default=[0],
                        help="target rates to run; 0 = as fast as possible")
    parser.add_argument("--faults", action="store_true", help="inject every fault kind (about 2 %% extra records)")
    parser.add_argument("--symbol_counts", type=int, nargs="*", default=[0],
                        help="markets to simulate, as --symbol_count; 0 = the default 20-symbol universe")
    parser.add_argument("--simulator_only", action="store_true",
                        help="time the simulator (and record encoding) alone, without a broker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    print(f"producer benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{args.duration_s:g} s per run, faults {'on' if args.faults else 'off'}")
    counts = [(count, f"{count:,}" if count else "default") for count in args.symbol_counts]
    if args.simulator_only:
        print(f"{'symbols':>9} {'run':>3} {'ticks/s':>10} {'ticks/CPU-s':>11} {'records/s':>10} {'records/CPU-s':>13}")
        for run in range(1, args.runs + 1):
            for count, label in counts:
                result = simulator_run(count, args.duration_s, seed=run)
                print(f"{label:>9} {run:>3} {result['ticks_per_s']:>10,.0f} {result['ticks_per_cpu_s']:>11,.0f} "
                      f"{result['records_per_s']:>10,.0f} {result['records_per_cpu_s']:>13,.0f}", flush=True)
        return 0
    print(f"{'symbols':>9} {'target/s':>9} {'run':>3} {'delivered':>10} {'delivered/s':>12} {'vs target':>9} "
          f"{'CPU %':>6} {'CPU us/tick':>11} {'failed':>6}")
    worst_ok = True
    for rate in args.rates:
        for run in range(1, args.runs + 1):
            for count, label in counts:
                result = one_run(args.bootstrap_servers, rate or None, args.duration_s, args.faults, seed=run,
                                 symbol_count=count)
                versus = f"{100 * (result['per_s'] / rate - 1):+.1f}%" if rate else "-"
                print(f"{label:>9} {(f'{rate:.0f}' if rate else 'max'):>9} {run:>3} {result['delivered']:>10} "
                      f"{result['per_s']:>12,.0f} {versus:>9} {result['cpu_pct']:>6.0f} "
                      f"{result['cpu_us_per_tick']:>11.1f} {result['failed'] + result['undelivered']:>6}",
                      flush=True)
                worst_ok = worst_ok and result["failed"] == 0 and result["undelivered"] == 0
    return 0 if worst_ok else 1


if __name__ == "__main__":
    sys.exit(main())
