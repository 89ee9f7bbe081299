"""Query and path parameters of the REST routes: each is matched whole against the pattern
/openapi.json publishes for it, then parsed; anything else is a 400 with a message.

The patterns are ASCII and anchored: `fullmatch`, never `match` with `$`
(which lets "AAPL\n" through), and never `str.isdigit()` (true for "²").
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from market.schema import ALERT_TYPES
from serving.errors import ApiError

# Epoch milliseconds (up to 15 digits: ±31,000 years) or an ISO-8601 date or
# date-time with an optional offset. The month, day, hour, minute and offset
# ranges are in the pattern; a day past its month's end rolls over.
TIME_PATTERN = (r"-?[0-9]{1,15}"
                r"|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
                r"(T([01][0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9])(\.[0-9]{1,9})?)?"
                r"(Z|[+-]([01][0-9]|2[0-3]):([0-5][0-9]))?)?")
_TIME = re.compile(TIME_PATTERN)
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
                  r"(Z|([+-])(\d{2}):(\d{2}))?)?")
TIME_MAX_LENGTH = 35

# DESIGN.md §3's symbol alphabet, 1-16 characters (the same as market.schema.SYMBOL_PATTERN).
SYMBOL_PATTERN = r"[A-Za-z0-9.\-_/:=^]{1,16}"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_LIMIT = re.compile(r"[0-9]{1,7}")


def _iso_ms(text: str) -> int:
    """Epoch ms of an ISO-8601 text that matched TIME_PATTERN (no offset = UTC)."""
    found = _ISO.fullmatch(text)
    assert found is not None   # TIME_PATTERN admits only this shape
    year, month, day, hour, minute, second, fraction, zone, sign, off_h, off_m = found.groups()
    # date(…, 1) + days: "2023-02-29" is 2023-03-01 rather than an error.
    day_of = date(int(year), int(month), 1) + timedelta(days=int(day) - 1)
    offset = timedelta(0)
    if zone not in (None, "Z"):
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    moment = datetime(day_of.year, day_of.month, day_of.day, int(hour or 0), int(minute or 0), int(second or 0),
                      int((fraction or "0").ljust(6, "0")[:6]), tzinfo=timezone(offset))
    return int(moment.timestamp() * 1000)


def parse_time(name: str, value: str | None) -> int | None:
    """Epoch ms from digits or an ISO-8601 date/date-time (no offset = UTC); None if absent."""
    if value is None:
        return None
    if len(value) > TIME_MAX_LENGTH or not _TIME.fullmatch(value):
        raise ApiError(400, f"bad_{name}", f"{name} must be epoch milliseconds or an ISO-8601 time like "
                                           f"2026-11-25T09:30:00Z, got {value[:40]!r}")
    if _EPOCH_MS.fullmatch(value):
        return int(value)
    return _iso_ms(value)


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    """An integer 1..maximum; default if absent."""
    if value is None:
        return default
    if not _LIMIT.fullmatch(value):
        raise ApiError(400, "bad_limit", f"limit must be an integer 1..{maximum}, got {value[:40]!r}")
    limit = int(value)
    if not 1 <= limit <= maximum:
        raise ApiError(400, "bad_limit", f"limit must be between 1 and {maximum}, got {limit}")
    return limit


def parse_symbol(value: str) -> str:
    """A symbol in DESIGN.md §3's alphabet, upper-cased."""
    if not _SYMBOL.fullmatch(value):
        raise ApiError(400, "bad_symbol", f"symbol must be 1-16 of A-Z a-z 0-9 . - _ / : = ^, got {value[:40]!r}")
    return value.upper()


def parse_alert_type(value: str | None) -> str | None:
    """One of the alert types of DESIGN.md §5; None if absent."""
    if value is None:
        return None
    if value not in ALERT_TYPES:
        raise ApiError(400, "bad_type", f"type must be one of {', '.join(ALERT_TYPES)}, got {value[:40]!r}")
    return value
