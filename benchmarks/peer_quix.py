"""The Quix Streams peer of benchmarks/compare.py: the same 60 s bars with Quix Streams' own windows.

    .cache/bench-venv/bin/python benchmarks/peer_quix.py --input_topic T --output_topic B --group G

Runs in the benchmark venv (benchmarks/setup.sh), never in the project's:
it imports nothing of the project. A JSON deserializer, the tick's
`timestamp` as event time, `tumbling_window(60 s, grace 30 s).reduce(...)
.final()` per message key (the symbol), each closed bar as JSON to the output
topic. Everything else is Quix Streams' default (RocksDB state with changelog
topics, commits every 5 s): what a user of Quix Streams gets.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile

from quixstreams import Application


def first_tick(tick: dict) -> dict:
    price, volume = tick["price"], tick["volume"]
    ts = tick["timestamp"]
    return {"symbol": tick["symbol"], "open_ts": ts, "open": price, "high": price, "low": price,
            "close_ts": ts, "close": price, "volume": volume, "pv": price * volume,
            "tick_count": 1, "sum_price": price}


def add_tick(bar: dict, tick: dict) -> dict:
    price, volume, ts = tick["price"], tick["volume"], tick["timestamp"]
    if ts < bar["open_ts"]:
        bar["open_ts"], bar["open"] = ts, price
    if ts >= bar["close_ts"]:
        bar["close_ts"], bar["close"] = ts, price
    if price > bar["high"]:
        bar["high"] = price
    elif price < bar["low"]:
        bar["low"] = price
    bar["volume"] += volume
    bar["pv"] += price * volume
    bar["tick_count"] += 1
    bar["sum_price"] += price
    return bar


def closed_bar(window: dict) -> dict:
    """The window Quix closed, with the field names of DESIGN.md §4."""
    bar = window["value"]
    average = bar["sum_price"] / bar["tick_count"]
    return {"symbol": bar["symbol"], "window_start": window["start"], "window_end": window["end"],
            "open": bar["open"], "high": bar["high"], "low": bar["low"], "close": bar["close"],
            "average_price": average, "vwap": bar["pv"] / bar["volume"] if bar["volume"] else average,
            "volume": bar["volume"], "tick_count": bar["tick_count"], "is_final": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap_servers", default="localhost:9092")
    parser.add_argument("--input_topic", required=True)
    parser.add_argument("--output_topic", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()

    state_dir = tempfile.mkdtemp(prefix=f"{args.group}-state-")
    app = Application(broker_address=args.bootstrap_servers, consumer_group=args.group,
                      auto_offset_reset="earliest", state_dir=state_dir, loglevel=logging.WARNING)
    ticks = app.topic(args.input_topic, value_deserializer="json",
                      timestamp_extractor=lambda value, headers, timestamp, kind: value["timestamp"])
    bars = app.topic(args.output_topic, value_serializer="json")
    sdf = app.dataframe(ticks)
    sdf = (sdf.tumbling_window(duration_ms=60_000, grace_ms=30_000)
           .reduce(reducer=add_tick, initializer=first_tick)
           .final())
    sdf = sdf.apply(closed_bar)
    sdf.to_topic(bars)
    app.run()   # until SIGTERM / SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
