"""serving.records: whatever a topic holds, a record is either a bar/alert serving can always encode,
or a MalformedRecord with a reason from the fixed set (never another exception)."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market import codec
from serving.records import REASONS, MalformedRecord, check_alert, check_bar, decode_record
from tests.serving.samples import alert, bar

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30)
FIELD_VALUES = JSON | st.just(5e-324) | st.just(1.7976931348623157e308) | st.just(2**64 - 1) | st.just("AAPL\n")


def outcome(raw: bytes | None, is_bar: bool) -> None:
    try:
        record = decode_record(raw, bar=is_bar)
    except MalformedRecord as exc:
        assert exc.reason in REASONS
        return
    # Accepted: it must encode (REST, snapshots) and have the fields serving reads.
    codec.dumps({"type": "trend", "data": record})
    assert isinstance(record["symbol"], str) and isinstance(record["window_start"], int)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300) | st.none(), is_bar=st.booleans())
def test_any_bytes(raw: bytes | None, is_bar: bool) -> None:
    outcome(raw, is_bar)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON, is_bar=st.booleans())
def test_any_json_value(value: Any, is_bar: bool) -> None:
    outcome(codec.dumps(value), is_bar)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(["bar", "alert"]), changes=st.dictionaries(
    st.sampled_from(sorted(set(bar()) | set(alert()) | {"extra", "note"})), FIELD_VALUES, min_size=1, max_size=3))
def test_a_valid_record_with_any_fields_changed(base: str, changes: dict[str, Any]) -> None:
    record = {**(bar() if base == "bar" else alert()), **changes}
    outcome(codec.dumps(record), base == "bar")


def test_deep_nesting_is_rejected_before_encoding_could_fail() -> None:
    deep = b"[" * 300 + b"1" + b"]" * 300
    for field in ("close", "note", "anomalies"):
        raw = codec.dumps({k: v for k, v in bar().items() if k != field})[:-1] + f',"{field}":'.encode() + deep + b"}"
        try:
            decode_record(raw, bar=True)
        except MalformedRecord as exc:
            assert exc.reason in ("invalid_field", "too_deep")
        else:
            raise AssertionError(f"{field} nested 300 deep was accepted")


def test_the_samples_are_valid() -> None:
    assert check_bar(bar()) and check_alert(alert())
    assert check_bar(bar(pane_index=0, log_return=None, sma_fast=None)) is not None


def test_latency_fields_are_epoch_ms_or_null_and_optional_for_an_older_pipeline() -> None:
    older = {k: v for k, v in bar().items() if k not in ("last_tick_ms", "emitted_at")}
    checked = decode_record(codec.dumps(older), bar=True)
    assert checked["last_tick_ms"] is None and checked["emitted_at"] is None
    assert decode_record(codec.dumps(bar(last_tick_ms=None, emitted_at=0)), bar=True)["emitted_at"] == 0
    for bad in (-1, 1.5, True, "1764063000000", [1], 2**63):
        for field in ("last_tick_ms", "emitted_at"):
            try:
                decode_record(codec.dumps(bar(**{field: bad})), bar=True)
            except MalformedRecord as exc:
                assert exc.reason == "invalid_field" and field in str(exc)
            else:
                raise AssertionError(f"{field}={bad!r} was accepted")


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(sorted(bar())), FIELD_VALUES | st.sampled_from(
    [0, -1, 1.5, True, False, None, "EARLY", "up", ["volatility"], 2**40]), min_size=1, max_size=3))
def test_the_fast_path_accepts_nothing_the_full_check_refuses(changes: dict[str, Any]) -> None:
    from serving import records
    check_bar(bar())                       # the symbol is known: the fast path is taken when it can be
    record = {**bar(), **changes}
    if records._plain_bar(record):
        records._check(dict(record), records.BAR_CHECKS, "bar", records.BAR_OPTIONAL)   # must not raise
