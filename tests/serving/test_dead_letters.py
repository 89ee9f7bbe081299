"""The dead-letter ledger (DESIGN.md §6, §7): stored on both engines, listed and summed over REST, checked
record by record. The same against a real broker is in test_dead_letters_kafka.py."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from market import codec
from serving.database import BarDatabase, open_database
from serving.records import MalformedRecord, dead_letter_row, decode_dead_letter
from tests.serving.conftest import serving_of
from tests.serving.samples import BASE_MS, dead_letter, dead_letter_rows

DLQ = "raw_stock_ticks_dlq"


@pytest.fixture
def db(database_url: str) -> Iterator[BarDatabase]:
    store = open_database(database_url)
    yield store
    store.close()


def letters_of(db: BarDatabase, **filters: object) -> list[tuple[str | None, str, int]]:
    return [(d["key"], d["reason"], d["rejected_at"]) for d in db.dead_letters(**filters)]  # type: ignore[arg-type]


def test_stored_with_offsets_once_filtered_newest_first_and_trimmed(db: BarDatabase) -> None:
    rows = dead_letter_rows([
        (b"AAPL", dead_letter("invalid_price", rejected_at=BASE_MS + 1)),
        (b"MSFT", dead_letter("late", '{"symbol": "MSFT"}', rejected_at=BASE_MS + 3)),
        (b"", dead_letter("invalid_json", "\\xff not json", rejected_at=BASE_MS + 2)),
        (b"AAPL", dead_letter("duplicate", rejected_at=BASE_MS + 3)),
    ])
    db.write([], [], {(DLQ, 0): 4}, rows)
    db.write([], [], {(DLQ, 0): 4}, rows[1:])     # a re-read (restart, second process): nothing twice
    assert db.offsets() == {(DLQ, 0): 4}
    # Newest first; equal rejected_at: the later record of the topic first.
    assert letters_of(db) == [("AAPL", "duplicate", BASE_MS + 3), ("MSFT", "late", BASE_MS + 3),
                              ("", "invalid_json", BASE_MS + 2), ("AAPL", "invalid_price", BASE_MS + 1)]
    assert letters_of(db, reason="late") == [("MSFT", "late", BASE_MS + 3)]
    assert letters_of(db, symbol="aapl", start_ms=BASE_MS + 2) == [("AAPL", "duplicate", BASE_MS + 3)]
    assert letters_of(db, start_ms=BASE_MS + 2, end_ms=BASE_MS + 2) == [("", "invalid_json", BASE_MS + 2)]
    assert letters_of(db, limit=1) == [("AAPL", "duplicate", BASE_MS + 3)]
    # Each is the dead letter as the pipeline wrote it, plus its key and symbol.
    first = db.dead_letters(reason="invalid_price")[0]
    assert first == {**dead_letter("invalid_price", rejected_at=BASE_MS + 1), "key": "AAPL", "symbol": "AAPL"}

    assert db.dead_letter_summary() == {"total": 4, "by_reason": {"duplicate": 1, "invalid_json": 1,
                                                                  "invalid_price": 1, "late": 1},
                                        "by_symbol": [{"symbol": "AAPL", "n": 2}, {"symbol": "MSFT", "n": 1}]}
    assert db.dead_letter_summary(BASE_MS + 3)["total"] == 2

    db.prune(BASE_MS + 3)      # --history_days: what was rejected before goes
    assert [d[1] for d in letters_of(db)] == ["duplicate", "late"]


def test_nul_in_a_key_or_raw_text_is_stored_on_both_engines(db: BarDatabase) -> None:
    # PostgreSQL's TEXT refuses NUL: a write that failed would stall the feed on this record for good.
    db.write([], [], {}, dead_letter_rows([(b"A\x00B", dead_letter("invalid_json", "\x00 nul"))]))
    [stored] = db.dead_letters()
    assert (stored["key"], stored["raw"]) == ("A\\x00B", "\x00 nul")


def test_summary_names_the_50_symbols_with_most_dead_letters(db: BarDatabase) -> None:
    letters = [(f"S{i:02d}".encode(), dead_letter("late", rejected_at=BASE_MS + i))
               for i in range(60) for _ in range(1 + i % 7)]
    db.write([], [], {}, dead_letter_rows(letters))
    summary = db.dead_letter_summary()
    assert summary["total"] == len(letters) == summary["by_reason"]["late"]
    expected = sorted(({"symbol": f"S{i:02d}", "n": 1 + i % 7} for i in range(60)), key=lambda e: (-e["n"], e["symbol"]))
    assert summary["by_symbol"] == expected[:50]


@pytest.mark.parametrize(("key", "raw", "symbol"), [
    (b"AAPL", "anything", "AAPL"),
    (b"brk.b", "", "BRK.B"),
    (b"", '{"symbol": "nvda", "price": -1}', "NVDA"),              # from the raw text when it parses
    (None, '  {"price": 1, "symbol": "TSLA"}', "TSLA"),
    (b"AAPL\n", '{"symbol": "AAPL\\n", "price": 10}', None),       # neither is a symbol
    (b"", '{"symbol": ' + "[" * 2000 + "]" * 2000 + "}", None),    # deeper than the JSON reader goes
    (b"", '{"symbol": 5}', None),
    (b"", "\\xff\\xfe not json", None),
    (b"\xff\xfe", "", None),
])
def test_symbol_from_the_key_or_the_raw_text(key: bytes | None, raw: str, symbol: str | None) -> None:
    row = dead_letter_row(DLQ, 0, 7, key, codec.dumps(dead_letter(raw=raw)))
    assert row.symbol == symbol
    assert row.key == (None if key is None else key.decode("utf-8", "backslashreplace"))


@pytest.mark.parametrize(("value", "reason"), [
    (None, "invalid_json"),
    (b"not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (codec.dumps({k: v for k, v in dead_letter().items() if k != "raw"}), "missing_field"),
    (codec.dumps(dead_letter(reason="Invalid Price")), "invalid_field"),
    (codec.dumps(dead_letter(reason="x" * 65)), "invalid_field"),
    (codec.dumps(dead_letter(raw=7)), "invalid_field"),
    (codec.dumps(dead_letter(rejected_at="yesterday")), "invalid_field"),
    (codec.dumps(dead_letter(source={"topic": "t", "partition": -1, "offset": 0})), "invalid_field"),
    (codec.dumps(dead_letter(source=[1])), "invalid_field"),
    (codec.dumps(dead_letter(raw="x" * 600_000)), "too_large"),
    (codec.dumps({**dead_letter(), "note": [[[[["deep"]]]]]}), "too_deep"),
])
def test_a_record_that_is_not_a_dead_letter_is_refused_with_its_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedRecord) as refused:
        decode_dead_letter(value)
    assert refused.value.reason == reason


def test_the_pipelines_own_dead_letters_are_accepted() -> None:
    """Every record the pipeline sends to the dead-letter topic, shaped by its own code, is one serving keeps."""
    from pipelines.kafka_io import encode_dead_letter
    from transforms.ticks import dead_letter as pipeline_dead_letter

    for raw in (b'{"symbol": "AAPL", "price": -3.5}', None, b"\xff\xfe\x00 not json", b"1" * 300_000):
        key, value = encode_dead_letter((b"AAPL", pipeline_dead_letter("invalid_price", "p", raw, ("t", 1, 2))))
        assert decode_dead_letter(value)["reason"] == "invalid_price"
    key, value = encode_dead_letter((None, pipeline_dead_letter("internal_error", "boom", b"x")))
    assert key == b"" and decode_dead_letter(value)["source"] == {"topic": None, "partition": None, "offset": None}


@pytest.fixture
def ledger(app: Flask) -> Flask:
    serving_of(app).updates.publish_dead_letters(dead_letter_rows([
        (b"AAPL", dead_letter("invalid_price", rejected_at=BASE_MS + 1_000)),
        (b"", dead_letter("invalid_json", "\\xff\\xfe not json", "not JSON", rejected_at=BASE_MS + 2_000)),
        (b"", dead_letter("late", '{"symbol": "msft", "price": 1}', "too late", rejected_at=BASE_MS + 3_000)),
        (b"AAPL", dead_letter("late", rejected_at=BASE_MS + 4_000)),
    ]))
    return app


@pytest.mark.parametrize(("query", "expected"), [
    ("", [("AAPL", "late"), ("", "late"), ("", "invalid_json"), ("AAPL", "invalid_price")]),
    ("?reason=late", [("AAPL", "late"), ("", "late")]),
    ("?symbol=msft", [("", "late")]),                        # the symbol of the raw text
    ("?symbol=AAPL&reason=late", [("AAPL", "late")]),
    (f"?from={BASE_MS + 2_000}&to=2025-11-25T09:30:03Z", [("", "late"), ("", "invalid_json")]),
    ("?limit=1", [("AAPL", "late")]),
    ("?reason=duplicate", []),
])
def test_dead_letters_route(ledger: Flask, client: FlaskClient, query: str, expected: list[tuple[str, str]]) -> None:
    response = client.get("/api/v1/dead-letters" + query)
    assert response.status_code == 200
    assert [(d["key"], d["reason"]) for d in response.get_json()["dead_letters"]] == expected


def test_summary_route(ledger: Flask, client: FlaskClient) -> None:
    assert client.get("/api/v1/dead-letters/summary").get_json() == {
        "total": 4, "by_reason": {"invalid_json": 1, "invalid_price": 1, "late": 2},
        "by_symbol": [{"symbol": "AAPL", "n": 2}, {"symbol": "MSFT", "n": 1}]}
    since = client.get(f"/api/v1/dead-letters/summary?from={BASE_MS + 2_500}").get_json()
    assert since == {"total": 2, "by_reason": {"late": 2}, "by_symbol": [{"symbol": "AAPL", "n": 1},
                                                                        {"symbol": "MSFT", "n": 1}]}


def test_concurrent_summaries_share_one_count(ledger: Flask, client: FlaskClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    db = serving_of(ledger).db
    counted: list[int | None] = []
    real = db.dead_letter_summary
    monkeypatch.setattr(db, "dead_letter_summary", lambda start=None: counted.append(start) or real(start))
    for _ in range(5):
        assert client.get(f"/api/v1/dead-letters/summary?from={BASE_MS}").get_json()["total"] == 4
    assert client.get(f"/api/v1/dead-letters/summary?from={BASE_MS + 2_500}").get_json()["total"] == 2
    assert counted == [BASE_MS, BASE_MS + 2_500]


@pytest.mark.parametrize(("url", "code"), [
    ("/api/v1/dead-letters?reason=INVALID", "bad_reason"),
    ("/api/v1/dead-letters?reason=", "bad_reason"),
    ("/api/v1/dead-letters?reason=late%0A", "bad_reason"),
    ("/api/v1/dead-letters?symbol=%24%24", "bad_symbol"),
    ("/api/v1/dead-letters?limit=501", "bad_limit"),
    ("/api/v1/dead-letters?limit=0", "bad_limit"),
    ("/api/v1/dead-letters?from=soon", "bad_from"),
    ("/api/v1/dead-letters?to=2025-02-30", "bad_to"),
    ("/api/v1/dead-letters/summary?from=%C2%B2", "bad_from"),
])
def test_bad_parameters_are_400(ledger: Flask, client: FlaskClient, url: str, code: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
