"""Market tick producer: a simulated market or a CSV replay, published to Kafka (DESIGN.md §2–§3).

The API the run scripts and end-to-end tests use::

    from producer import FaultInjector, FaultRates, ProducerConfig, TickSimulator, run_producer

    ticks = itertools.islice(TickSimulator(seed=7, start_ms=...), 10_000)
    stats = run_producer(ProducerConfig(topic="raw_stock_ticks"), FaultInjector(ticks, FaultRates(late=0.01)),
                         rate=10_000)
    stats.delivered["late"]   # how many late ticks the broker confirmed

    TickSimulator(market_universe(10_000), seed=7)   # a whole market: the well-known 20, then made-up tickers
"""
from producer.faults import FaultInjector, FaultRates, malformed_record
from producer.pacing import ReplayPacer, TokenBucket
from producer.publisher import ProducerConfig, ProducerError, check_broker, create_producer, kafka_config, run_producer
from producer.records import KINDS, MALFORMED_KINDS, VALID_KINDS, Record, tick_record
from producer.replay import CsvTicks, write_csv
from producer.simulator import DEFAULT_SYMBOLS, DEFAULT_UNIVERSE, SymbolSpec, TickSimulator
from producer.stats import ProduceStats
from producer.universe import MAX_SYMBOL_COUNT, market_universe

__all__ = [
    "CsvTicks", "DEFAULT_SYMBOLS", "DEFAULT_UNIVERSE", "FaultInjector", "FaultRates", "KINDS", "MALFORMED_KINDS",
    "MAX_SYMBOL_COUNT", "ProduceStats", "ProducerConfig", "ProducerError", "Record", "ReplayPacer", "SymbolSpec", "TickSimulator",
    "TokenBucket", "VALID_KINDS", "check_broker", "create_producer", "kafka_config", "malformed_record",
    "market_universe", "run_producer", "tick_record", "write_csv",
]
