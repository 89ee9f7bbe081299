"""Records a source routed to their symbol's shard, parsed in the bar step (ShardRecords).

The batched Kafka read puts each record in the shard of its tick's symbol and
the bar step parses them itself. What it must not do: build a second book of
a symbol from a tick the source placed in another shard, or fail on a batch
it cannot decode. Both are dead letters with a reason; every other tick of
the same batch still makes its bars.
"""
from __future__ import annotations

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from market import schema
from tests.transforms.streams import MINUTE, T0, at, run, tick_json
from transforms import MarketAnalytics, RecordBatch
from transforms.ticks import shard_of

SHARDS = 4


def decode(encoded):
    """The test's source hands over RecordBatches, or bytes it cannot decode."""
    if isinstance(encoded, RecordBatch):
        return encoded
    raise ValueError(f"not a batch: {encoded!r}")


def batch(values: list[bytes], first_offset: int = 0) -> RecordBatch:
    n = len(values)
    return RecordBatch(values, [b"key%d" % i for i in range(n)], "ticks", [0] * n,
                       list(range(first_offset, first_offset + n)), T0 - 1)


def analyze(elements: list[tuple[int, object]]) -> dict[str, list]:
    stream = (TestStream().advance_watermark_to(at(T0))
              .add_elements([TimestampedValue(element, at(T0)) for element in elements])
              .advance_watermark_to(at(T0 + 3 * MINUTE))
              .advance_watermark_to_infinity())

    def build(records):
        out = records | MarketAnalytics(early_firing_s=0, shards=SHARDS, routed_records=decode)
        return {"bars": out.bars, "dead": out.dead_letters}
    return run(stream, build)


def final_volumes(bars: list[dict]) -> dict[str, float]:
    return {bar["symbol"]: bar["volume"] for bar in bars if bar["is_final"]}


def test_routed_ticks_make_bars_and_rejects_are_dead_letters_of_the_bar_step():
    aapl, msft = shard_of("AAPL", SHARDS), shard_of("MSFT", SHARDS)
    out = analyze([
        (aapl, batch([tick_json("AAPL", 10.0, T0 + 1, volume=5), b"not json", tick_json("aapl", 11.0, T0 + 2)])),
        (msft, batch([tick_json("MSFT", 20.0, T0 + 3, volume=7)], first_offset=3)),
    ])
    assert final_volumes(out["bars"]) == {"AAPL": 105.0, "MSFT": 7.0}
    [(key, letter)] = out["dead"]
    assert (key, letter["reason"], letter["raw"]) == (b"key1", schema.REASON_INVALID_JSON, "not json")
    assert letter["source"] == {"topic": "ticks", "partition": 0, "offset": 1}


def test_a_tick_routed_to_another_shard_is_a_dead_letter_not_a_second_book():
    aapl = shard_of("AAPL", SHARDS)
    elsewhere = (aapl + 1) % SHARDS
    out = analyze([
        (aapl, batch([tick_json("AAPL", 10.0, T0 + 1)])),
        (elsewhere, batch([tick_json("AAPL", 99.0, T0 + 2, volume=1)], first_offset=1)),
    ])
    bars = [bar for bar in out["bars"] if bar["is_final"]]
    assert [(bar["symbol"], bar["high"], bar["volume"]) for bar in bars] == [("AAPL", 10.0, 100.0)]
    [(key, letter)] = out["dead"]
    assert key == b"key0" and letter["reason"] == schema.REASON_INTERNAL_ERROR
    assert f"shard {elsewhere}" in letter["detail"] and f"shard {aapl}" in letter["detail"]
    assert letter["source"]["offset"] == 1 and '"price": 99.0' in letter["raw"]


def test_a_batch_that_cannot_be_decoded_is_a_dead_letter_and_the_others_go_on():
    aapl = shard_of("AAPL", SHARDS)
    out = analyze([(aapl, b"\x00garbage"), (aapl, batch([tick_json("AAPL", 10.0, T0 + MINUTE // 2)]))])
    assert final_volumes(out["bars"]) == {"AAPL": 100.0}
    [(key, letter)] = out["dead"]
    assert key is None and letter["reason"] == schema.REASON_INTERNAL_ERROR
    assert "undecodable record batch" in letter["detail"] and "garbage" in letter["raw"]
