"""`python -m producer`: simulate or replay market ticks into Kafka.

Every flag can also come from the environment variable of the same name in
upper case (`--input_topic` / `INPUT_TOPIC`; Kafka connection settings carry
`KAFKA_`: `KAFKA_BOOTSTRAP_SERVERS`), as in the pipeline and serving
(market/settings.py); a flag given on the command line wins.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from types import FrameType
from typing import Any

from market import codec, config, kafka_security, settings
from market.settings import Setting

from producer.faults import FaultInjector, FaultRates
from producer.pacing import ReplayPacer
from producer.publisher import ProducerConfig, ProducerError, run_producer
from producer.records import MALFORMED_KINDS, Record
from producer.replay import CsvTicks, parse_timestamp, write_csv
from producer.simulator import DEFAULT_SYMBOLS, SymbolSpec, TickSimulator, universe
from producer.universe import MAX_SYMBOL_COUNT, market_universe

log = logging.getLogger("producer")

EXIT_OK = 0
EXIT_UNDELIVERED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_INTERRUPTED = 130


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number") from None


def _rate(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate per tick is within [0, 1], got {text}")
    return value


def _symbol_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer") from None
    if not 1 <= value <= MAX_SYMBOL_COUNT:
        raise argparse.ArgumentTypeError(f"the number of symbols is within 1..{MAX_SYMBOL_COUNT:,}, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


KAFKA: tuple[Setting, ...] = (
    settings.BOOTSTRAP_SERVERS,
    settings.INPUT_TOPIC,
    Setting("compression", config.PRODUCER_COMPRESSION, "compression.type (none, gzip, snappy, lz4, zstd)"),
    Setting("linger_ms", config.PRODUCER_LINGER_MS, "linger.ms: how long librdkafka waits to fill a batch",
            type=int),
    Setting("flush_timeout_s", config.PRODUCER_FLUSH_TIMEOUT_S,
            "on exit, seconds to wait for outstanding deliveries", type=float),
    Setting("broker_timeout_s", config.PRODUCER_BROKER_TIMEOUT_S,
            "give up at start if the broker does not answer within this many seconds", type=float),
    Setting("stats_interval_s", config.PRODUCER_STATS_INTERVAL_S, "seconds between stats lines; 0: none",
            type=float),
)

SOURCE: tuple[Setting, ...] = (
    Setting("symbols", None, "comma-separated symbols to simulate, most active first with --symbol_count; "
            f"unknown ones get a made-up price level (default: {len(DEFAULT_SYMBOLS)} well-known ones, "
            f"{','.join(DEFAULT_SYMBOLS[:3])}...)"),
    Setting("symbol_count", None, "simulate a whole market of this many symbols (1.."
            f"{MAX_SYMBOL_COUNT:,}): those of --symbols first (default: the well-known ones), then made-up "
            "tickers, activity by a Zipf law of rank", type=_symbol_count),
    Setting("rate", config.PRODUCER_RATE, "ticks per second; 0: as fast as possible", type=_non_negative),
    Setting("duration_s", 0.0, "stop after this many seconds; 0: no limit", type=_non_negative),
    Setting("count", 0, "stop after this many simulated or replayed ticks; 0: no limit", type=int),
    Setting("seed", None, "random seed of the simulation (default: random, logged)", type=int),
    Setting("start_time", None, "event time of the first simulated tick, epoch ms or ISO-8601 (default: now)"),
    Setting("event_rate", None, "simulated ticks per second of event time (default: --rate, or "
            f"{config.PRODUCER_RATE} when --rate is 0); above --rate, event time runs faster than the wall clock",
            type=float),
    Setting("jump_rate_per_min", config.PRODUCER_JUMP_RATE_PER_MIN,
            "expected price jumps per symbol per minute of event time", type=_non_negative),
    Setting("jump_size_pct", config.PRODUCER_JUMP_SIZE_PCT, "mean size of a price jump, percent",
            type=_non_negative),
    Setting("seq_base", None, "each symbol's first simulated seq is this + 1 (default: the wall clock in "
            "microseconds, so a restarted producer never reuses a seq)", type=int),
    Setting("replay", None, "replay this CSV file (symbol,timestamp,price,volume[,seq]) instead of simulating"),
    Setting("replay_speed", 1.0, "replay at this multiple of real time (--rate is then ignored); 0: at --rate",
            type=_non_negative),
    Setting("to_csv", None, "write the simulated ticks to this CSV file instead of Kafka (needs --count)"),
)

FAULTS: tuple[Setting, ...] = (
    Setting("out_of_order_rate", 0.0,
            "ticks back-dated by up to --out_of_order_max_s (within the allowed lateness)", type=_rate),
    Setting("out_of_order_max_s", config.PRODUCER_OUT_OF_ORDER_MAX_S, "how far back out-of-order ticks go",
            type=float),
    Setting("late_rate", 0.0, "ticks back-dated by --late_by_s (and up to a third more): the pipeline must "
            "dead-letter them as 'late'", type=_rate),
    Setting("late_by_s", config.PRODUCER_LATE_BY_S,
            "how far back late ticks go, beyond window + allowed lateness", type=float),
    Setting("duplicate_rate", 0.0, "exact re-sends of a tick (same seq)", type=_rate),
    Setting("malformed_rate", 0.0,
            "bad records in total, shared equally by the kinds below unless given one by one", type=_rate),
    *(Setting(f"{kind}_rate", None, f"records the pipeline must reject as {kind} (default: a share of "
              "--malformed_rate)", type=_rate) for kind in MALFORMED_KINDS),
)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags; defaults come from the environment, then `market.config`."""
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="Publish market ticks (DESIGN.md §3) to Kafka: a simulated market "
                    "(geometric Brownian motion with jumps) or a CSV replay, keyed by symbol, "
                    "record timestamp = event time.",
        epilog="Every flag also reads the environment variable shown with it; a flag given wins. "
               "Exit status: 0 all delivered, 1 some record not delivered, 2 bad usage, 3 broker "
               "unreachable or topic unusable, 130 interrupted twice.",
    )
    settings.add_arguments(parser.add_argument_group("Kafka"), KAFKA)
    # DESIGN.md §10: the same names and environment variables in every part.
    kafka_security.add_arguments(parser.add_argument_group("Kafka connection security (DESIGN.md §10)"))
    settings.add_arguments(parser.add_argument_group("what and how fast"), SOURCE)
    settings.add_arguments(parser.add_argument_group("fault injection (probabilities per clean tick)"), FAULTS)
    settings.add_arguments(parser, (settings.LOG_LEVEL,))
    return parser


def fault_rates(args: argparse.Namespace) -> FaultRates:
    """The fault rates the flags ask for."""
    share = args.malformed_rate / len(MALFORMED_KINDS)
    malformed = {}
    for kind in MALFORMED_KINDS:
        given = getattr(args, f"{kind}_rate")
        rate = float(given) if given is not None else share
        if rate:
            malformed[kind] = rate
    return FaultRates(out_of_order=args.out_of_order_rate, late=args.late_rate, duplicate=args.duplicate_rate,
                      malformed=malformed, out_of_order_max_s=args.out_of_order_max_s, late_by_s=args.late_by_s)


def build_ticks(args: argparse.Namespace) -> CsvTicks | TickSimulator:
    """The tick source the flags ask for: a replay file or a seeded simulator; ValueError if they conflict."""
    if args.replay:
        if args.symbol_count:
            raise ValueError("--symbol_count simulates a market; a --replay sends the file's own symbols")
        return CsvTicks(args.replay)
    start_ms = parse_timestamp(str(args.start_time)) if args.start_time is not None else None
    event_rate = args.event_rate or args.rate or config.PRODUCER_RATE
    return TickSimulator(symbol_specs(args), seed=args.seed, start_ms=start_ms, event_rate=event_rate,
                         jump_rate_per_min=args.jump_rate_per_min, jump_size_pct=args.jump_size_pct,
                         seq_base=args.seq_base)


def symbol_specs(args: argparse.Namespace) -> tuple[SymbolSpec, ...]:
    """The simulated instruments: --symbols, filled up to --symbol_count with made-up ones.

    Raises ValueError if --symbols names more than --symbol_count.
    """
    named = [s for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    if args.symbol_count:
        return market_universe(args.symbol_count, named)
    return universe(named)


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set `stop` (the loop then flushes); a second SIGINT interrupts the flush.

    Returns a function that puts the previous handlers back.
    """
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping, flushing outstanding records (Ctrl-C again to abandon them)",
                 signal.Signals(signum).name)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in previous:
        signal.signal(signum, handle)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the producer as the flags say; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rates = fault_rates(args)
        if args.seed is None:
            args.seed = int.from_bytes(os.urandom(4), "big")
        source = build_ticks(args)
        security = kafka_security.from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    ticks: Iterable[dict[str, Any]] = source
    if args.count:
        ticks = islice(ticks, args.count)
    if args.to_csv:
        if not args.count or args.replay:
            log.error("--to_csv writes a simulation and needs --count")
            return EXIT_USAGE
        rows = write_csv(ticks, args.to_csv)
        log.info("wrote %d ticks to %s (seed %d)", rows, args.to_csv, args.seed)
        return EXIT_OK

    records: Iterable[Record] = FaultInjector(ticks, rates, seed=args.seed)
    pacer = None
    rate = args.rate or None
    if args.replay and args.replay_speed:
        rate = None
        pacer = ReplayPacer(records, args.replay_speed)
        records = pacer
    cfg = ProducerConfig(bootstrap_servers=args.bootstrap_servers, topic=args.input_topic, compression=args.compression,
                         linger_ms=args.linger_ms, flush_timeout_s=args.flush_timeout_s,
                         broker_timeout_s=args.broker_timeout_s, security=security)
    what = (f"simulating {len(source.specs):,} symbols" if isinstance(source, TickSimulator)
            else f"replaying {args.replay}")
    pace = f"{rate:g} ticks/s" if rate else f"x{args.replay_speed:g} real time" if pacer else "max rate"
    log.info("%s to %s/%s (%s) at %s (seed %d)", what, cfg.bootstrap_servers, cfg.topic, security.describe(), pace,
             args.seed)
    stop = threading.Event()
    restore_signals = install_signal_handlers(stop)
    try:
        stats = run_producer(cfg, records, rate=rate, pacer=pacer, duration_s=args.duration_s or None, stop=stop,
                             stats_interval_s=args.stats_interval_s)
    except ProducerError as exc:
        log.error("%s", exc)
        return EXIT_BROKER
    except KeyboardInterrupt:
        log.error("interrupted during the final flush: some records may not have been delivered")
        return EXIT_INTERRUPTED
    finally:
        restore_signals()
    if isinstance(source, CsvTicks) and source.bad_rows:
        log.warning("%s: %d bad rows skipped", source.name, source.bad_rows)
    summary = stats.as_dict()
    # The result goes to stdout as one JSON line for scripts; logs go to stderr.
    sys.stdout.write(codec.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    if not stats.ok:
        log.error("%d records failed and %d were not confirmed (delivered %d)",
                  stats.total_failed, stats.undelivered, stats.total_delivered)
        return EXIT_UNDELIVERED
    log.info("done: %d records delivered in %.1f s (%s)", stats.total_delivered, stats.elapsed_s, stats.stopped_by)
    return EXIT_OK
