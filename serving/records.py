"""What serving accepts from its Kafka topics: a bar of DESIGN.md §4, an alert of §5 or a dead letter of §6,
checked whole.

Kafka is shared infrastructure: anything may land on an output topic. A record
is stored (and later encoded for every REST answer and WebSocket snapshot)
only if every field has its contracted type, every number is finite and
every size is bounded, so no record can make encoding fail or grow memory.
Fields beyond the contract are passed through, if they are small and flat.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from market import codec, schema
from market.schema import (
    ALERT_TYPES,
    MAX_EVENT_MS,
    MIN_EVENT_MS,
    PANES,
    SEVERITIES,
    SYMBOL_PATTERN,
    SYMBOL_RULE,
    TRENDS,
)
from serving.database import DeadLetterRow

# Limits of one record. Generous for what the pipeline writes (a bar is ~600
# bytes, an alert ~400), tight enough that a hostile record costs little.
MAX_RECORD_BYTES = 64 * 1024
MAX_FIELDS = 64
MAX_TEXT_CHARS = 4096         # any string: alert messages, ids, extra fields
MAX_EXTRA_DEPTH = 4           # containers inside a field serving does not know
MAX_EXTRA_ITEMS = 256         # items in such a container
MAX_PANE_INDEX = 1_000_000    # one pane per early firing or late tick: a window has ~100

# Reasons, the label values of serving_messages_rejected_total (a fixed set).
REASON_TOO_LARGE = "too_large"
REASON_INVALID_JSON = "invalid_json"
REASON_NOT_AN_OBJECT = "not_an_object"
REASON_MISSING_FIELD = "missing_field"
REASON_INVALID_FIELD = "invalid_field"
REASON_TOO_DEEP = "too_deep"
REASON_INTERNAL_ERROR = "internal_error"
REASONS = (REASON_TOO_LARGE, REASON_INVALID_JSON, REASON_NOT_AN_OBJECT, REASON_MISSING_FIELD,
           REASON_INVALID_FIELD, REASON_TOO_DEEP, REASON_INTERNAL_ERROR)

Record = dict[str, Any]


class MalformedRecord(ValueError):
    """A record that is not a valid bar or alert; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# --- field checkers: each returns None when the value is acceptable, else what is wrong ---
def _is_int(value: Any) -> bool:
    # bool is an int subclass; true/false is not a time or a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> str | None:
    if _is_int(value) or (isinstance(value, float) and math.isfinite(value)):
        return None
    return "must be a finite number"


def _number_or_null(value: Any) -> str | None:
    return None if value is None else _number(value)


def _non_negative(value: Any) -> str | None:
    return _number(value) or (None if value >= 0 else "must be >= 0")


def _epoch_ms(value: Any) -> str | None:
    if not _is_int(value):
        return "must be an integer (epoch ms)"
    return None if MIN_EVENT_MS <= value <= MAX_EVENT_MS else "is outside the years 2000-2100"


def _epoch_ms_or_null(value: Any) -> str | None:
    # The pipeline's wall clock or a tick's event time: any non-negative epoch ms.
    return None if value is None or (_is_int(value) and 0 <= value <= MAX_EVENT_MS) else \
        f"must be null or an integer epoch ms 0..{MAX_EVENT_MS}"


def _count(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "must be a non-negative integer"


def _pane_index(value: Any) -> str | None:
    return None if _is_int(value) and 0 <= value <= MAX_PANE_INDEX else f"must be an integer 0..{MAX_PANE_INDEX}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _symbol(value: Any) -> str | None:
    return None if isinstance(value, str) and SYMBOL_PATTERN.fullmatch(value) else f"must be {SYMBOL_RULE}"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and 0 < len(value) <= MAX_TEXT_CHARS else \
        f"must be a string of 1..{MAX_TEXT_CHARS} characters"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if isinstance(value, str) and value in choices else f"must be one of {', '.join(choices)}"
    return check


def _anomalies(value: Any) -> str | None:
    if isinstance(value, list) and len(value) <= len(ALERT_TYPES) and all(
            isinstance(item, str) and item in ALERT_TYPES for item in value):
        return None
    return f"must be a list of {', '.join(ALERT_TYPES)}"


# The checker of each field kind of market/schema.py.
KIND_CHECKS: dict[str, Callable[[Any], str | None]] = {
    schema.SYMBOL: _symbol, schema.EPOCH_MS: _epoch_ms, schema.EPOCH_MS_OR_NULL: _epoch_ms_or_null,
    schema.NUMBER: _number, schema.NUMBER_OR_NULL: _number_or_null, schema.NON_NEGATIVE: _non_negative,
    schema.COUNT: _count, schema.PANE_INDEX: _pane_index, schema.BOOLEAN: _boolean,
    schema.PANE: _one_of(PANES), schema.TREND: _one_of(TRENDS), schema.ANOMALIES: _anomalies,
    schema.TEXT: _text, schema.ALERT_TYPE: _one_of(ALERT_TYPES), schema.SEVERITY: _one_of(SEVERITIES),
}

# DESIGN.md §4: every field is required; the cross-window ones may be null.
BAR_CHECKS: dict[str, Callable[[Any], str | None]] = {
    name: KIND_CHECKS[kind] for name, kind in schema.BAR_FIELD_KINDS.items()}
# Fields a bar from an older pipeline lacks: accepted as null while the pipeline changes over.
BAR_OPTIONAL = frozenset({"last_tick_ms", "emitted_at"})

# DESIGN.md §5.
ALERT_CHECKS: dict[str, Callable[[Any], str | None]] = {
    name: KIND_CHECKS[kind] for name, kind in schema.ALERT_FIELD_KINDS.items()}


def _check_extra(name: str, value: Any) -> None:
    """A field outside the contract: scalars and small, shallow containers only (iteratively, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool) or _is_int(item):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise MalformedRecord(REASON_INVALID_FIELD, f"{name} holds a non-finite number")
            continue
        if isinstance(item, str):
            if len(item) > MAX_TEXT_CHARS:
                raise MalformedRecord(REASON_TOO_LARGE, f"{name} holds a string over {MAX_TEXT_CHARS} characters")
            continue
        if isinstance(item, (list, dict)):
            if depth >= MAX_EXTRA_DEPTH:
                raise MalformedRecord(REASON_TOO_DEEP, f"{name} is nested deeper than {MAX_EXTRA_DEPTH}")
            if len(item) > MAX_EXTRA_ITEMS:
                raise MalformedRecord(REASON_TOO_LARGE, f"{name} holds over {MAX_EXTRA_ITEMS} items")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
            continue
        raise MalformedRecord(REASON_INVALID_FIELD, f"{name} holds a {type(item).__name__}")


def _check(record: Any, checks: dict[str, Callable[[Any], str | None]], what: str,
           optional: frozenset[str] = frozenset()) -> Record:
    if not isinstance(record, dict):
        raise MalformedRecord(REASON_NOT_AN_OBJECT, f"{what} is not a JSON object")
    if len(record) > MAX_FIELDS:
        raise MalformedRecord(REASON_TOO_LARGE, f"{what} has {len(record)} fields (at most {MAX_FIELDS})")
    for name, check in checks.items():
        if name not in record:
            if name not in optional:
                raise MalformedRecord(REASON_MISSING_FIELD, f"{what} has no {name}")
            record[name] = None
        problem = check(record[name])
        if problem is not None:
            raise MalformedRecord(REASON_INVALID_FIELD, f"{what} field {name} {problem}")
    for name, value in record.items():
        if name not in checks:
            if len(name) > 64:
                raise MalformedRecord(REASON_TOO_LARGE, f"{what} has a field name over 64 characters")
            _check_extra(name, value)
    if record["window_end"] <= record["window_start"]:
        raise MalformedRecord(REASON_INVALID_FIELD, f"{what} window_end is not after window_start")
    return record


# The fast path. A bar exactly as the pipeline writes it (every field, no
# other, plain types) is checked inline without a call per field: at 10,000
# bar versions per second the checker functions above cost ~30 us a bar, most
# of serving's consumer thread at market scale. Anything else takes the full path,
# which explains what is wrong. tests/serving/test_records.py checks that the
# fast path accepts nothing the full one refuses.
_BAR_KEYS = frozenset(BAR_CHECKS)
_FINITE = ("open", "high", "low", "close", "average_price", "vwap", "change_pct", "swing_pct")
_FINITE_OR_NULL = ("log_return", "return_zscore", "volume_ratio", "sma_fast", "sma_slow")
_PANES = frozenset(PANES)
_TRENDS = frozenset(TRENDS)
_ALERT_TYPES = frozenset(ALERT_TYPES)
_KNOWN_SYMBOLS: set[str] = set()    # symbols the full path accepted (bounded)
_KNOWN_SYMBOLS_MAX = 200_000


def _plain_bar(r: dict[str, Any]) -> bool:
    """True if `r` is certainly a valid bar; False means "ask the full check", not "invalid"."""
    if r.keys() != _BAR_KEYS or type(r["symbol"]) is not str or r["symbol"] not in _KNOWN_SYMBOLS:
        return False
    for name in _FINITE:
        v = r[name]
        t = type(v)
        if t is float:
            if v - v != 0.0:        # inf - inf and nan - nan are nan
                return False
        elif t is not int:
            return False
    for name in _FINITE_OR_NULL:
        v = r[name]
        if v is None:
            continue
        t = type(v)
        if t is float:
            if v - v != 0.0:
                return False
        elif t is not int:
            return False
    v = r["volume"]
    if not ((type(v) is float and v - v == 0.0) or type(v) is int) or v < 0:
        return False
    start, end, ticks, pane_index = r["window_start"], r["window_end"], r["tick_count"], r["pane_index"]
    if (type(start) is not int or type(end) is not int or type(ticks) is not int or type(pane_index) is not int
            or not MIN_EVENT_MS <= start < end <= MAX_EVENT_MS or ticks < 0 or not 0 <= pane_index <= MAX_PANE_INDEX):
        return False
    if type(r["is_final"]) is not bool or type(r["is_volatility_anomaly"]) is not bool:
        return False
    pane, trend, anomalies = r["pane"], r["trend"], r["anomalies"]
    if type(pane) is not str or pane not in _PANES or type(trend) is not str or trend not in _TRENDS:
        return False
    if type(anomalies) is not list or len(anomalies) > len(ALERT_TYPES):
        return False
    for item in anomalies:
        if type(item) is not str or item not in _ALERT_TYPES:
            return False
    for name in ("last_tick_ms", "emitted_at"):
        v = r[name]
        if v is not None and (type(v) is not int or not 0 <= v <= MAX_EVENT_MS):
            return False
    return True


def check_bar(record: Any) -> Record:
    """`record` if it is a complete, well-typed bar (DESIGN.md §4); raises MalformedRecord otherwise.

    A bar without `last_tick_ms` / `emitted_at` (an older pipeline) gets them as null, in place.
    """
    if type(record) is dict and _plain_bar(record):
        return record
    checked = _check(record, BAR_CHECKS, "bar", BAR_OPTIONAL)
    if len(_KNOWN_SYMBOLS) >= _KNOWN_SYMBOLS_MAX:
        _KNOWN_SYMBOLS.clear()
    _KNOWN_SYMBOLS.add(checked["symbol"])
    return checked


def check_alert(record: Any) -> Record:
    """`record` if it is a complete, well-typed alert (DESIGN.md §5); raises MalformedRecord otherwise."""
    return _check(record, ALERT_CHECKS, "alert")


# --- dead letters (DESIGN.md §6) -------------------------------------------------
# A dead letter carries the rejected record's original text (the pipeline
# keeps up to 65,536 characters of it, and JSON may write one character as
# six bytes): its bound is larger than a bar's, and still finite.
MAX_DEAD_LETTER_BYTES = 512 * 1024
# `reason` is "a short machine word": the pipeline's (market.schema) and any
# later one, so the check is the word's shape, not a list.
_REASON_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_KEY_CHARS = MAX_TEXT_CHARS      # of an original key kept with its dead letter


def _reason(value: Any) -> str | None:
    return None if isinstance(value, str) and _REASON_WORD.fullmatch(value) else \
        "must be a word of a-z 0-9 _ (1..64 characters, starting with a letter)"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _source(value: Any) -> str | None:
    # Where the rejected record was read: {"topic", "partition", "offset"}, each null when unknown.
    if not isinstance(value, dict) or set(value) != {"topic", "partition", "offset"}:
        return "must be an object of topic, partition and offset"
    topic, partition, offset = value["topic"], value["partition"], value["offset"]
    if topic is not None and (_text(topic) is not None or len(topic) > 249):
        return "topic must be null or a topic name"
    if any(v is not None and not (_is_int(v) and v >= 0) for v in (partition, offset)):
        return "partition and offset must be null or non-negative integers"
    return None


DEAD_LETTER_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "reason": _reason, "detail": _string, "raw": _string, "source": _source, "rejected_at": _epoch_ms,
}


def check_dead_letter(record: Any) -> Record:
    """`record` if it is a well-typed dead letter (DESIGN.md §6); raises MalformedRecord otherwise."""
    if not isinstance(record, dict):
        raise MalformedRecord(REASON_NOT_AN_OBJECT, "dead letter is not a JSON object")
    if len(record) > MAX_FIELDS:
        raise MalformedRecord(REASON_TOO_LARGE, f"dead letter has {len(record)} fields (at most {MAX_FIELDS})")
    for name, check in DEAD_LETTER_CHECKS.items():
        if name not in record:
            raise MalformedRecord(REASON_MISSING_FIELD, f"dead letter has no {name}")
        problem = check(record[name])
        if problem is not None:
            raise MalformedRecord(REASON_INVALID_FIELD, f"dead letter field {name} {problem}")
    for name, value in record.items():
        if name not in DEAD_LETTER_CHECKS:
            if len(name) > 64:
                raise MalformedRecord(REASON_TOO_LARGE, "dead letter has a field name over 64 characters")
            _check_extra(name, value)
    return record


def decode_dead_letter(value: bytes | None) -> Record:
    """The dead letter a record of the dead-letter topic holds; raises MalformedRecord otherwise."""
    if value is None:
        raise MalformedRecord(REASON_INVALID_JSON, "record has no value (a tombstone)")
    if len(value) > MAX_DEAD_LETTER_BYTES:
        raise MalformedRecord(REASON_TOO_LARGE, f"record of {len(value)} bytes (at most {MAX_DEAD_LETTER_BYTES})")
    try:
        record = codec.loads(value)
    except codec.JSONDecodeError as exc:
        raise MalformedRecord(REASON_INVALID_JSON, f"not JSON: {exc}") from None
    return check_dead_letter(record)


def key_text(key: bytes | None) -> str | None:
    """A dead letter's Kafka key (the rejected record's original key) as text; undecodable bytes and NUL are
    written \\xNN."""
    if key is None:
        return None
    text = bytes(key[:MAX_KEY_CHARS * 4]).decode("utf-8", errors="backslashreplace")
    # PostgreSQL's TEXT cannot hold NUL: written as the other unprintable bytes are.
    return text.replace("\x00", "\\x00")[:MAX_KEY_CHARS]


def dead_letter_symbol(key: str | None, record: Record) -> str | None:
    """The symbol a dead letter is about, upper case: its key if that is a symbol, else the `symbol` of its raw
    text when that parses as a JSON object with a valid one; None otherwise (not every rejected record has one)."""
    if key and SYMBOL_PATTERN.fullmatch(key):
        return key.upper()
    raw = record["raw"]
    if raw.lstrip()[:1] != "{" or '"symbol"' not in raw:
        return None     # cheap: most garbage is not even an object
    try:
        parsed = codec.loads(raw)
    except codec.JSONDecodeError:
        return None
    symbol = parsed.get("symbol") if isinstance(parsed, dict) else None
    return symbol.upper() if isinstance(symbol, str) and SYMBOL_PATTERN.fullmatch(symbol) else None


def dead_letter_row(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> DeadLetterRow:
    """The store's row of one record of the dead-letter topic; raises MalformedRecord if it is not a dead letter."""
    if value is None:
        raise MalformedRecord(REASON_INVALID_JSON, "record has no value (a tombstone)")
    record = decode_dead_letter(value)
    text = key_text(key)
    return DeadLetterRow(topic, partition, offset, record["rejected_at"], record["reason"],
                         dead_letter_symbol(text, record), text, value.decode())


def decode_record(value: bytes | None, bar: bool) -> Record:
    """The bar (`bar` true) or alert a Kafka record value holds; raises MalformedRecord otherwise."""
    if value is None:
        raise MalformedRecord(REASON_INVALID_JSON, "record has no value (a tombstone)")
    if len(value) > MAX_RECORD_BYTES:
        raise MalformedRecord(REASON_TOO_LARGE, f"record of {len(value)} bytes (at most {MAX_RECORD_BYTES})")
    try:
        record = codec.loads(value)
    except codec.JSONDecodeError as exc:
        raise MalformedRecord(REASON_INVALID_JSON, f"not JSON: {exc}") from None
    return check_bar(record) if bar else check_alert(record)
