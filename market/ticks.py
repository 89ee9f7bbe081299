"""A tick's fields and event time, checked one way everywhere (DESIGN.md §3, §6).

The pipeline (transforms/ticks.py), the producer's CSV replay and anything
else that takes ticks from outside use `validate` and `parse_timestamp`:
a tick the replay accepts is one the pipeline accepts, and the reasons are
the dead-letter words of market/schema.py.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from market import schema

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
_MAX_SEQ = 2 ** 63 - 1  # a seq must fit the int64 the coders and Kafka tools use


class TickError(ValueError):
    """A record that is not a valid tick; `reason` is a DESIGN.md §6 word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def describe(value: Any) -> str:
    """A short, safe description of a JSON value for an error message.

    Never a full repr: a value may be nested thousands deep or megabytes
    long, and formatting it must not fail or blow up the dead letter.
    """
    if isinstance(value, str):
        return repr(value[:64]) + ("..." if len(value) > 64 else "")
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 200 else f"an integer of {value.bit_length()} bits"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return f"an object of {len(value)} fields"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `"price": true` is a producer bug.
    kind = type(value)
    return kind is float or kind is int


def iso_ms(text: str, naive_is_utc: bool = False) -> int:
    """Epoch ms of an ISO-8601 date or date-time; ValueError says what is wrong with it.

    The one ISO-8601 reading of the project: ticks (via `parse_timestamp`),
    the CSV replay and serving's `from`/`to`. A tick must say its offset
    (`naive_is_utc=False`); a REST query may leave it out and mean UTC.
    Fractions below a microsecond are cut, not rounded.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not ISO-8601") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if not naive_is_utc:
            raise ValueError("needs a UTC offset")
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return (parsed - _EPOCH) // _ONE_MS
    except OverflowError:
        raise ValueError("is out of range") from None


def parse_timestamp(value: Any) -> int:
    """Event time in epoch ms from an int (epoch ms) or an ISO-8601 string with offset."""
    if type(value) is int:
        millis = value
    elif isinstance(value, str):
        if len(value) > 64:
            raise TickError(schema.REASON_INVALID_TIMESTAMP, f"timestamp is not ISO-8601: {describe(value)}")
        try:
            millis = iso_ms(value)
        except ValueError as exc:
            raise TickError(schema.REASON_INVALID_TIMESTAMP, f"timestamp {exc}: {describe(value)}") from None
    elif type(value) is float:
        # JSON encoders sometimes write 1.764e12 for an integral value: accept
        # that, reject a fractional millisecond count rather than guess.
        if not (math.isfinite(value) and value.is_integer()):
            raise TickError(schema.REASON_INVALID_TIMESTAMP,
                            f"timestamp must be integral epoch ms, got {describe(value)}")
        millis = int(value)
    else:
        raise TickError(schema.REASON_INVALID_TIMESTAMP,
                        f"timestamp must be epoch ms or an ISO-8601 string, got {describe(value)}")
    if not schema.MIN_EVENT_MS <= millis <= schema.MAX_EVENT_MS:
        raise TickError(schema.REASON_INVALID_TIMESTAMP,
                        f"timestamp {describe(value)} is outside the years "
                        f"{schema.MIN_EVENT_YEAR}-{schema.MAX_EVENT_YEAR}")
    return millis


# symbol as sent → normalised symbol, for symbols already validated: a feed
# repeats a few dozen symbols, so the pattern runs once per symbol, not per tick.
_KNOWN_SYMBOLS: dict[str, str] = {}
_KNOWN_SYMBOLS_MAX = 100_000


def _symbol(symbol: Any) -> str:
    known = _KNOWN_SYMBOLS.get(symbol) if type(symbol) is str else None
    if known is not None:
        return known
    if type(symbol) is not str or not schema.SYMBOL_PATTERN.fullmatch(symbol):
        raise TickError(schema.REASON_INVALID_SYMBOL,
                        f"symbol must be {schema.SYMBOL_RULE}, got {describe(symbol)}")
    if len(_KNOWN_SYMBOLS) >= _KNOWN_SYMBOLS_MAX:
        _KNOWN_SYMBOLS.clear()
    _KNOWN_SYMBOLS[symbol] = upper = symbol.upper()
    return upper


def validate(data: dict, latest_ms: int | None = None) -> tuple[str, float, float, int, int | None]:
    """(symbol, price, volume, timestamp_ms, seq) of a tick's fields (DESIGN.md §3), else TickError.

    `symbol` comes back upper case. With `latest_ms`, a timestamp past it is
    invalid_timestamp (the pipeline's --max_future_s).
    """
    get = data.get
    symbol, price, volume, stamp = get("symbol"), get("price"), get("volume"), get("timestamp")
    if symbol is None or price is None or volume is None or stamp is None:
        for field in schema.TICK_REQUIRED:
            if get(field) is None:
                raise TickError(schema.REASON_MISSING_FIELD, f"missing field {field!r}")
    symbol = _symbol(symbol)
    if not _is_number(price) or not schema.MIN_PRICE <= price <= schema.MAX_PRICE:
        raise TickError(schema.REASON_INVALID_PRICE,
                        f"price must be a number in [{schema.MIN_PRICE:g}, {schema.MAX_PRICE:g}], "
                        f"got {describe(price)}")
    if not _is_number(volume) or not 0 <= volume <= schema.MAX_VOLUME:
        raise TickError(schema.REASON_INVALID_VOLUME,
                        f"volume must be a number in [0, {schema.MAX_VOLUME:g}], got {describe(volume)}")
    timestamp = parse_timestamp(stamp)
    if latest_ms is not None and timestamp > latest_ms:
        raise TickError(schema.REASON_INVALID_TIMESTAMP,
                        f"timestamp {timestamp} is {(timestamp - latest_ms) / 1000:.3f} s past the "
                        f"allowed future (--max_future_s) of the clock when it was read")
    seq = get("seq")
    if seq is not None and (type(seq) is not int or seq < 0 or seq > _MAX_SEQ):
        raise TickError(schema.REASON_INVALID_SEQ, f"seq must be an integer in [0, 2^63), got {describe(seq)}")
    return symbol, float(price), float(volume), timestamp, seq


