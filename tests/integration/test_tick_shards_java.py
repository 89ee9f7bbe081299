"""The Kafka read's shard of a record (pipelines/java, TickShards) is Python's `shard_of` of its tick.

The batched read routes each record to the state shard of its symbol and the
bar step parses it there; a valid tick the two sides place differently would
be a dead letter (ShardRecords). So for every valid tick, whatever its
spelling (case, escapes, field order, a repeated or nested `symbol`), the
Java rule must give Python's shard, for any shard count. Records that are
not valid ticks may go anywhere; they must not fail the read.
"""
from __future__ import annotations

import json
import random
import subprocess

import pytest

from market import codec
from market.ticks import TickError
from producer.universe import market_universe
from runners.local import fetch
from transforms.ticks import shard_of, tick_fields

pytestmark = [pytest.mark.flink]

T = 1764063000123


def java_shards(values: list[bytes], shards: int) -> list[int]:
    """The shard the Java read gives each value (one per line), from TickShards' main."""
    jar = fetch.current_event_time_read()
    class_path = f"{jar}:{fetch.beam_lib()}/*"
    result = subprocess.run(["java", "-cp", class_path, "org.apache.beam.sdk.io.kafka.TickShards", str(shards)],
                            input=b"\n".join(values) + b"\n", capture_output=True, timeout=120, check=True)
    return [int(line) for line in result.stdout.split()]


def spellings(symbol: str, rng: random.Random) -> list[bytes]:
    """Valid ticks of `symbol`, written as differently as JSON allows."""
    escaped = "".join(f"\\u{ord(c):04x}" if rng.random() < 0.3 else c for c in symbol)
    return [
        json.dumps({"symbol": symbol, "price": 10.5, "volume": 3, "timestamp": T}).encode(),
        json.dumps({"price": 1, "volume": 0, "timestamp": T, "symbol": symbol.lower(), "seq": 7}).encode(),
        b'{ "price" : 2 , "symbol" : "' + escaped.encode() + b'", "volume": 1, "timestamp": 1764063000123 }',
        json.dumps({"symbol": "DECOY", "meta": {"symbol": "NESTED", "list": [{"symbol": "X"}]},
                    "price": 3, "volume": 1, "timestamp": T, "symbol ": "SPACE"}).encode()
        .replace(b'"symbol": "DECOY"', b'"symbol": "DECOY", "symbol": "' + symbol.encode() + b'"'),
        b'{"symbol": {"symbol": "NO", "x": [1]}, "price": 4, "volume": 2, "timestamp": 1764063000123, "symbol": "'
        + symbol.encode() + b'"}',
        # As the producer writes them (the read's shortcut), and two that look so but are not.
        codec.dumps({"symbol": symbol, "price": 5.25, "volume": 1, "timestamp": T, "seq": 3}),
        b'{"symbol":"DECOY","price":1,"volume":1,"timestamp":1764063000123,"symbol":"' + symbol.encode() + b'"}',
        b'{"symbol":"DECOY","price":1,"volume":1,"timestamp":1764063000123,"\\u0073ymbol":"' + symbol.encode() + b'"}',
    ]


@pytest.mark.parametrize("shards", [1, 7, 32, 1000])
def test_every_valid_tick_is_routed_to_pythons_shard(flink_jars, shards):
    rng = random.Random(shards)
    symbols = [spec.symbol for spec in market_universe(3000)]
    symbols += ["A", "brk.b", "EUR/USD", "X:Y=Z^1", "a-b_c", "Z" * 16]
    values = [value for symbol in symbols for value in spellings(symbol, rng)]
    got = java_shards(values, shards)
    assert len(got) == len(values)
    for value, shard in zip(values, got):
        symbol = tick_fields(value)[0]
        assert shard == shard_of(symbol, shards), (value, shard)


def test_records_that_are_not_ticks_are_spread_and_do_not_fail_the_read(flink_jars):
    junk = [b"", b"null", b"[1, 2]", b'"AAPL"', b"{", b'{"symbol": 5, "price": 1}', b'{"symbol": null}',
            b'{"symbol": "AAPL", "price": 1} trailing', b"\xff\xfe not utf-8", b'{"a": ' * 2000,
            b'{"symbol": "\\ud800"}', b'{"symbol": "AAPL", "symbol": {"nested": 1}}']
    got = java_shards(junk, 32)
    assert len(got) == len(junk) and all(0 <= shard < 32 for shard in got)
    for value in junk:
        with pytest.raises(TickError):
            tick_fields(value)
    # Not a tick: by offset (the line number here), so a flood of them does not pile onto one shard.
    assert got[:3] == [0, 1, 2]
