"""The Python ceiling of benchmarks/compare.py: one confluent-kafka consumer, orjson, a dict of open bars.

    .venv/bin/python benchmarks/peer_raw.py --input_topic T --output_topic B --group G

Reads the ticks of DESIGN.md §3 from the beginning of `--input_topic`,
keeps one accumulator per (symbol, 60 s event-time window) and publishes each
bar (OHLC, VWAP, volume, tick_count) to `--output_topic`, keyed by symbol,
once the partition's stream time (newest event time seen) passes the window's
end plus the grace period; a partition at its end flushes its open bars (what
an idle watermark does in the pipeline). No validation, no early panes, no
state backend: the least work a Python process can do to turn ticks into
closed bars, so an upper bound for Python stream processors on this machine.
"""
from __future__ import annotations

import argparse
import signal
import sys

import orjson
from confluent_kafka import Consumer, KafkaError, Producer

# One accumulator per open bar, a list for speed:
# [open_ts, open, high, low, close_ts, close, volume, price*volume, tick_count, sum_price]
OPEN_TS, OPEN, HIGH, LOW, CLOSE_TS, CLOSE, VOLUME, PV, COUNT, SUM_PRICE = range(10)


def bar_json(symbol: str, window_start: int, window_ms: int, acc: list) -> bytes:
    """The closed bar as JSON, with the field names of DESIGN.md §4."""
    volume = acc[VOLUME]
    average = acc[SUM_PRICE] / acc[COUNT]
    return orjson.dumps({
        "symbol": symbol, "window_start": window_start, "window_end": window_start + window_ms,
        "open": acc[OPEN], "high": acc[HIGH], "low": acc[LOW], "close": acc[CLOSE],
        "average_price": average, "vwap": acc[PV] / volume if volume else average,
        "volume": volume, "tick_count": acc[COUNT], "is_final": True})


def run(bootstrap: str, input_topic: str, output_topic: str, group: str,
        window_ms: int = 60_000, grace_ms: int = 30_000) -> None:
    """Aggregate until SIGTERM/SIGINT."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.partition.eof": True})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    consumer.subscribe([input_topic])
    # partition -> {(symbol, window_start): acc}; bars close per partition,
    # as one symbol lives on one partition.
    open_bars: dict[int, dict[tuple[str, int], list]] = {}
    stream_time: dict[int, int] = {}
    loads = orjson.loads
    try:
        while not stop:
            batch = consumer.consume(2000, 0.5)
            touched = set()
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        flush(producer, output_topic, open_bars.pop(msg.partition(), {}), window_ms)
                        continue
                    raise RuntimeError(err)
                tick = loads(msg.value())
                ts, price, volume = tick["timestamp"], tick["price"], tick["volume"]
                partition = msg.partition()
                bars = open_bars.get(partition)
                if bars is None:
                    bars = open_bars[partition] = {}
                key = (tick["symbol"], ts - ts % window_ms)
                acc = bars.get(key)
                if acc is None:
                    bars[key] = [ts, price, price, price, ts, price, volume, price * volume, 1, price]
                else:
                    if ts < acc[OPEN_TS]:
                        acc[OPEN_TS], acc[OPEN] = ts, price
                    if ts >= acc[CLOSE_TS]:
                        acc[CLOSE_TS], acc[CLOSE] = ts, price
                    if price > acc[HIGH]:
                        acc[HIGH] = price
                    elif price < acc[LOW]:
                        acc[LOW] = price
                    acc[VOLUME] += volume
                    acc[PV] += price * volume
                    acc[COUNT] += 1
                    acc[SUM_PRICE] += price
                if ts > stream_time.get(partition, 0):
                    stream_time[partition] = ts
                touched.add(partition)
            for partition in touched:
                bars = open_bars.get(partition, {})
                horizon = stream_time[partition] - grace_ms - window_ms
                closed = {key: acc for key, acc in bars.items() if key[1] <= horizon}
                for key in closed:
                    del bars[key]
                flush(producer, output_topic, closed, window_ms)
            producer.poll(0)
    finally:
        producer.flush(30)
        consumer.close()


def flush(producer: Producer, topic: str, bars: dict[tuple[str, int], list], window_ms: int) -> None:
    for (symbol, window_start), acc in sorted(bars.items(), key=lambda item: item[0][1]):
        while True:
            try:
                producer.produce(topic, key=symbol.encode(), value=bar_json(symbol, window_start, window_ms, acc))
                break
            except BufferError:
                producer.poll(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default="localhost:9092")
    parser.add_argument("--input_topic", required=True)
    parser.add_argument("--output_topic", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    run(args.bootstrap_servers, args.input_topic, args.output_topic, args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
