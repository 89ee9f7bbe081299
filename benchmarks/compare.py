"""Side by side: the market pipeline against the best pure-Python peers, on the same data, at any number of symbols.

    ./benchmarks/setup.sh            # once: Quix Streams and py-spy in .cache/bench-venv
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py drain [--ticks 400000] [--runs 3] \\
        [--symbols 20,500,5000]
    flock /tmp/market-flink.lock .venv/bin/python benchmarks/compare.py live --rate 10000 --duration 300 \\
        [--symbols 10000]

--symbols N[,N...] sets how many symbols the data spans (`python -m producer
--symbol_count N`: made-up tickers, heavy-tailed activity); a list runs each
count in turn and ends with one table by symbol count, to paste into
docs/performance.md. Without it the producer's 20 default symbols are used.

drain: fills one fresh 3-partition topic with --ticks ticks from the project's
producer (event time spread over 60 minutes that end at a window boundary a
minute or two before the fill, record timestamp = event time, keyed by
symbol), then runs on that same topic, one after the other, each from the
beginning with a fresh consumer group:

* raw:      benchmarks/peer_raw.py, one confluent-kafka consumer + orjson +
            a dict of open bars, closed 60 s bars to a topic (the Python ceiling);
* quix:     benchmarks/peer_quix.py, Quix Streams' tumbling_window(60 s,
            grace 30 s).reduce(...).final() to a topic;
* pipeline: `python -m pipelines.market --runner=FlinkRunner` (embedded
            Flink, default flags, --no_resume, topics of its own).

Two rates per system: ticks/s between the moments 10 % and 90 % of the ticks
are in published bars (the sum over (symbol, window) of the newest bar's
tick_count on the system's output topic: the pipeline's EARLY panes count,
the peers publish closed bars only; a constant lag cancels out of a rate),
and ticks/s from the first bar to the last final bar (the whole drain, the
closing of every window included). Times are the broker's: the bar topics
are created with LogAppendTime, so how fast the benchmark reads them does not
change a figure. CPU of each system's process tree (sampled from /proc every
0.1 s, interpolated at the marks) gives µs of CPU per tick in the JVMs and in
Python. Every system's final bars are checked against the ticks (every tick
in a final bar or, for the pipeline, a dead letter).

live: the project's producer at --rate ticks/s into fresh topics with the
pipeline running; every --interval_s it prints offered and processed ticks/s,
the backlog (published − processed), the pipeline's consumer-group lag
(committed offsets, at checkpoints) and how far the benchmark's own readers
trail their topics, then p50/p95/p99 from a tick's event time to the moment
the first bar version that includes it was appended to the bar topic, the p99
delay of ON_TIME panes after their window's end, µs of CPU per tick in the
JVMs and in Python, and what the benchmark's readers cost.

--profile records the pipeline's Python processes with py-spy and the
job-server JVM with JFR (drain: between the 10 % and 90 % marks; live: from
the end of the warm-up) and prints the top frames. A benchmark, not a test:
it prints numbers and asserts nothing. Every process it starts is stopped by
pid when it ends, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.common import require_broker, run_benchmark
from benchmarks.drain import run_drain
from benchmarks.live import run_live
from market import settings
from producer import DEFAULT_SYMBOLS


def main() -> int:
    # Flags every mode takes, accepted after the mode's name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap_servers", default=settings.BOOTSTRAP_SERVERS.value())
    common.add_argument("--symbols", default=None, metavar="N[,N...]",
                        help="symbols the data spans (the producer's --symbol_count: made-up tickers, heavy-tailed "
                             "activity); a list runs each in turn and ends with a table by symbol count (default: "
                             f"the producer's {len(DEFAULT_SYMBOLS)} default symbols)")
    common.add_argument("--out_dir", default="/tmp/market-compare", help="logs, profiles (one folder per run)")
    common.add_argument("--seed", type=int, default=11, help="producer seed: the same data in every run")
    common.add_argument("--keep_topics", action="store_true", help="leave the run's topics for a look")
    common.add_argument("--pipeline_arg", action="append", default=[],
                        help="extra pipeline flag, e.g. --pipeline_arg=--parallelism=3 (default: none)")
    common.add_argument("--profile", action="store_true",
                        help="py-spy the pipeline's Python, JFR its job-server JVM (drain: 10 %%→90 %%; "
                             "live: after the warm-up)")
    common.add_argument("--profile_s", type=int, default=60, help="longest profile")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    drain = sub.add_parser("drain", parents=[common],
                           help="fill a topic, then time raw, Quix Streams and the pipeline on it")
    drain.add_argument("--ticks", type=int, default=400_000)
    drain.add_argument("--runs", type=int, default=1, help="repeat the whole comparison (a new topic each)")
    drain.add_argument("--systems", default="raw,quix,pipeline")
    drain.add_argument("--timeout_s", type=float, default=1200, help="per system, until 90 %%")
    drain.add_argument("--settle_s", type=float, default=3600,
                       help="after 90 %%, how long to wait for every tick to be in a final bar (a system that "
                            "stops making progress is given up on after 30 s, Quix Streams after 10 s)")
    live = sub.add_parser("live", parents=[common],
                          help="the pipeline under the project's producer at a fixed rate")
    live.add_argument("--rate", default="10000", metavar="R[,R...]",
                      help="ticks/s; a list runs each in turn (for each --symbols)")
    live.add_argument("--duration", type=int, default=300, help="seconds at --rate")
    live.add_argument("--interval_s", type=float, default=30)
    live.add_argument("--warmup_s", type=float, default=30,
                      help="seconds at --rate left out of the sustained rate, latency and CPU figures")
    live.add_argument("--timeout_s", type=float, default=300, help="for the pipeline's first bar")
    args = parser.parse_args()

    def body() -> int:
        require_broker(args.bootstrap_servers)
        return run_drain(args) if args.mode == "drain" else run_live(args)
    return run_benchmark(body)


if __name__ == "__main__":
    sys.exit(main())
