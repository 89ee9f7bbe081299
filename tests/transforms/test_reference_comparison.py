"""10,000+ generated ticks through MarketAnalytics, compared with tests/reference.py.

12 symbols × 32 one-minute windows, shuffled arrival inside each window,
late ticks within the allowed lateness, ticks too late, duplicates, bad
records, price jumps and volume spikes. Every final bar, every final pane,
every alert and every dead letter must match the independent reference.
"""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from market import schema
from tests.reference import Batch, analyze, close_enough
from tests.transforms.streams import MINUTE, T0, at, run
from transforms import MarketAnalytics, RecordBatch
from transforms.ticks import shard_of

SHARDS = 8

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "BTC-USD", "ETH-USD", "SPY", "EUR/USD", "BRK.B"]
WINDOWS = 32
TICKS_PER_WINDOW = 27

BAD_VALUES = [
    b'{"symbol": "AAPL", "price": -1.5, "volume": 10, "timestamp": 1764063000000}',
    b'{"symbol": "AAPL", "price": 1.5, "volume": 10}',
    b'{"symbol": "TOO LONG SYMBOL NAME", "price": 1.5, "volume": 10, "timestamp": 1764063000000}',
    b'{"symbol": "AAPL", "price": 1.5, "volume": 10, "timestamp": "not a time"}',
    b'{"symbol": "AAPL", "price": 1.5, "volume": -10, "timestamp": 1764063000000}',
    b'not json at all',
    b'"just a string"',
    b'{"symbol": "AAPL", "price": 1.5, "volume": 10, "timestamp": 1764063000000, "seq": 1.5}',
]


def generate(seed: int = 20251125) -> list[tuple[int, list]]:
    """[(watermark_ms, [(value, event_ts_ms)])] in arrival order."""
    rng = random.Random(seed)
    prices = {s: rng.uniform(20, 2000) for s in SYMBOLS}
    seqs = Counter()
    batches = []
    held_late, held_too_late = [], []
    for k in range(WINDOWS):
        start = T0 + k * MINUTE
        window_ticks = []
        for symbol in SYMBOLS:
            jump = rng.random() < 0.06
            spike = rng.random() < 0.06
            for i in range(TICKS_PER_WINDOW):
                move = rng.gauss(0, 0.0015) + (rng.choice([-0.04, 0.04]) if jump and i == 5 else 0)
                prices[symbol] = max(0.01, prices[symbol] * (1 + move))
                ts = start + rng.randrange(MINUTE)
                seqs[symbol] += 1
                tick = {"symbol": symbol if rng.random() > 0.05 else symbol.lower(),
                        "price": round(prices[symbol], 4),
                        "volume": rng.choice([0, 1, 10, 100, 250.5]) * (12 if spike else 1),
                        "timestamp": ts, "seq": seqs[symbol]}
                window_ticks.append((json.dumps(tick).encode(), ts))
        rng.shuffle(window_ticks)
        late = [t for t in window_ticks if rng.random() < 0.02]
        too_late = [t for t in window_ticks if t not in late and rng.random() < 0.005]
        on_time = [t for t in window_ticks if t not in late and t not in too_late]
        dupes = rng.sample(on_time, 4)
        third = len(on_time) // 3
        parts = [on_time[:third], on_time[third:2 * third] + dupes[:2], on_time[2 * third:] + dupes[2:]]
        for part in parts:
            part.extend((rng.choice(BAD_VALUES), start) for _ in range(rng.randint(0, 2)))
        # Arrival inside window k: the previous window's stragglers interleave.
        batches.append((start + 5_000, parts[0]))
        if held_late:
            batches.append((start + 10_000, held_late))      # late, within 30 s
        batches.append((start + 25_000, parts[1]))
        if held_too_late:
            batches.append((start + 40_000, held_too_late))  # past end + 30 s
        batches.append((start + 45_000, parts[2]))
        held_late, held_too_late = late, too_late
    end = T0 + WINDOWS * MINUTE
    batches.append((end + 10_000, held_late))
    batches.append((end + 40_000, held_too_late))
    return batches


def routed_shard(value: bytes, offset: int) -> int:
    """The shard the Kafka read routes a record to (pipelines/java TickShards): its symbol's, else by offset."""
    try:
        symbol = json.loads(value)["symbol"]
        return shard_of(symbol.upper(), SHARDS)
    except (ValueError, TypeError, KeyError, AttributeError):
        return offset % SHARDS


def routed(batch: RecordBatch) -> list[tuple[int, RecordBatch]]:
    """`batch` split by shard, as the Kafka read delivers a read: (shard, that shard's records)."""
    by_shard: dict[int, list[int]] = {}
    for index, (value, offset) in enumerate(zip(batch.values, batch.offsets)):
        by_shard.setdefault(routed_shard(value, offset), []).append(index)
    return [(shard, RecordBatch([batch.values[i] for i in rows], [batch.keys[i] for i in rows], batch.topic,
                                [batch.partitions[i] for i in rows], [batch.offsets[i] for i in rows],
                                batch.read_watermark_ms))
            for shard, rows in sorted(by_shard.items())]


def the_batch(batch: RecordBatch) -> RecordBatch:
    """A routed batch's decode when the test hands over RecordBatches themselves."""
    return batch


@pytest.mark.e2e
@pytest.mark.parametrize("routed_by_source", [False, True], ids=["parse_step", "routed_by_the_read"])
def test_market_analytics_matches_the_reference(routed_by_source):
    batches = generate()
    n_ticks = sum(1 for _, records in batches for value, _ in records if value not in BAD_VALUES)
    assert n_ticks >= 10_000

    # Each arrival is a RecordBatch carrying the source watermark it was read
    # at, as the Kafka read delivers them: lateness is judged against it.
    # Routed by the source: split by shard, and parsed in the bar step.
    stream = TestStream()
    offset = 0
    for watermark, records in batches:
        n = len(records)
        batch = RecordBatch([value for value, _ in records], [None] * n, "raw_stock_ticks",
                            [0] * n, list(range(offset, offset + n)), watermark)
        offset += n
        elements = routed(batch) if routed_by_source else [batch]
        stream = stream.advance_watermark_to(at(watermark)).add_elements(
            [TimestampedValue(element, at(watermark)) for element in elements])
    stream = stream.advance_watermark_to(at(T0 + (WINDOWS + 2) * MINUTE)).advance_watermark_to_infinity()

    def build(records):
        # No EARLY panes: they depend on processing time, which the reference
        # does not model (a first tick would get one at once, moving pane indexes).
        out = records | MarketAnalytics(early_firing_s=0, shards=SHARDS,
                                        routed_records=the_batch if routed_by_source else None)
        return {"bars": out.bars, "alerts": out.alerts, "dead": out.dead_letters}
    out = run(stream, build)
    expected = analyze([Batch(w, [value for value, _ in records]) for w, records in batches])

    # Every final pane, in its pane_index order, and so every final bar.
    final_panes = {}
    for bar in out["bars"]:
        assert set(bar) == set(schema.BAR_FIELDS)
        if bar["is_final"]:
            final_panes[(bar["symbol"], bar["window_start"], bar["pane_index"])] = bar
    expected_panes = {(b["symbol"], b["window_start"], b["pane_index"]): b for b in expected.panes}
    assert sorted(final_panes) == sorted(expected_panes)
    assert len({(s, w) for s, w, _ in final_panes}) >= 10 * 30
    for key, want in expected_panes.items():
        got = final_panes[key]
        bad = [name for name in want if not close_enough(got[name], want[name])]
        assert not bad, (key, {name: (got[name], want[name]) for name in bad})

    alerts = {a["alert_id"]: a for a in out["alerts"]}
    assert len(alerts) == len(out["alerts"]), "an alert id was emitted twice"
    assert sorted(alerts) == sorted(expected.alerts)
    assert len(alerts) >= 10
    for alert_id, want in expected.alerts.items():
        got = alerts[alert_id]
        assert all(close_enough(got[name], want[name]) for name in want), (got, want)

    got_letters = Counter((key, letter["reason"]) for key, letter in out["dead"])
    want_letters = Counter((letter.key, letter.reason) for letter in expected.dead_letters)
    assert got_letters == want_letters
    assert {r for _, r in want_letters} >= {"late", "duplicate", "invalid_json", "invalid_price"}
    got_raw = Counter(letter["raw"] for _, letter in out["dead"] if letter["reason"] not in ("late", "duplicate"))
    assert got_raw == Counter(l.raw for l in expected.dead_letters if l.reason not in ("late", "duplicate"))
