"""Query and path parameters of the REST routes: each is matched whole against the pattern
/openapi.json publishes for it, then parsed; anything else is a 400 with a message.

The patterns are ASCII and anchored: `fullmatch`, never `match` with `$`
(which lets "AAPL\n" through), and never `str.isdigit()` (true for "²").
"""
from __future__ import annotations

import re

from market import ticks
from market.schema import ALERT_TYPES, SYMBOL_PATTERN, SYMBOL_RULE
from serving.errors import ApiError

# Epoch milliseconds (up to 15 digits: ±31,000 years) or an ISO-8601 date or
# date-time with an optional offset (none: UTC), years 1970-2999. The pattern
# admits exactly the real calendar dates (29 February of leap years only), so
# every value it admits is one market.ticks.iso_ms reads: /openapi.json then
# never promises a value the route refuses.
_DAY_OF_ANY_YEAR = (r"(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
                    r"|(0[13-9]|1[0-2])-(29|30)"
                    r"|(0[13578]|1[02])-31")
_LEAP_YEAR = r"19(7[26]|8[048]|9[26])|2[0-9](0[48]|[2468][048]|[13579][26])|2[048]00"
TIME_PATTERN = (r"-?[0-9]{1,15}"
                rf"|((19[7-9][0-9]|2[0-9]{{3}})-({_DAY_OF_ANY_YEAR})|({_LEAP_YEAR})-02-29)"
                r"(T([01][0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9])(\.[0-9]{1,9})?)?"
                r"(Z|[+-]([01][0-9]|2[0-3]):([0-5][0-9]))?)?")
_TIME = re.compile(TIME_PATTERN)
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")
TIME_MAX_LENGTH = 35

_LIMIT = re.compile(r"[0-9]{1,7}")


def parse_time(name: str, value: str | None) -> int | None:
    """Epoch ms from digits or an ISO-8601 date/date-time (no offset = UTC); None if absent."""
    if value is None:
        return None
    if len(value) > TIME_MAX_LENGTH or not _TIME.fullmatch(value):
        raise ApiError(400, f"bad_{name}", f"{name} must be epoch milliseconds or an ISO-8601 time like "
                                           f"2026-11-25T09:30:00Z, got {value[:40]!r}")
    if _EPOCH_MS.fullmatch(value):
        return int(value)
    try:
        return ticks.iso_ms(value, naive_is_utc=True)
    except ValueError as exc:   # the pattern admits only real dates: not expected
        raise ApiError(400, f"bad_{name}", f"{name} {exc}: {value!r}") from None


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
    if not SYMBOL_PATTERN.fullmatch(value):
        raise ApiError(400, "bad_symbol", f"symbol must be {SYMBOL_RULE}, got {value[:40]!r}")
    return value.upper()


def parse_alert_type(value: str | None) -> str | None:
    """One of the alert types of DESIGN.md §5; None if absent."""
    if value is None:
        return None
    if value not in ALERT_TYPES:
        raise ApiError(400, "bad_type", f"type must be one of {', '.join(ALERT_TYPES)}, got {value[:40]!r}")
    return value


# A dead letter's reason (DESIGN.md §6: a short machine word), the same shape serving.records accepts.
REASON_PATTERN = r"[a-z][a-z0-9_]{0,63}"
_REASON = re.compile(REASON_PATTERN)
# A dead letter carries its rejected record's text (up to 64 KiB): fewer per answer than bars.
DEAD_LETTERS_MAX_LIMIT = 500


def parse_reason(value: str | None) -> str | None:
    """A dead-letter reason word; None if absent."""
    if value is None:
        return None
    if not _REASON.fullmatch(value):
        raise ApiError(400, "bad_reason", f"reason must be a word of a-z 0-9 _ (like invalid_price), got {value[:40]!r}")
    return value


# DESIGN.md §7: `<n>s|m|h|d`, a multiple of the pipeline's window. The
# pattern /openapi.json publishes admits exactly the multiples of the window
# (so a fuzzer never finds a valid-looking interval refused, or the reverse).
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
TRENDS_MAX_LIMIT = 5000


def interval_pattern(window_ms: int) -> str:
    """The intervals accepted with bars of `window_ms`: every multiple of it, written <n>s|m|h|d (n < 10^6)."""
    alternatives = []
    for unit, unit_ms in _UNIT_MS.items():
        if unit_ms % window_ms == 0:
            alternatives.append(f"[1-9][0-9]{{0,5}}{unit}")
        elif window_ms % unit_ms == 0:
            # The multiples of the window below the next unit that it divides, written in this unit.
            step = window_ms // unit_ms
            upper = next((u for u in _UNIT_MS.values() if u > unit_ms and u % window_ms == 0), 0) // unit_ms
            counts = range(step, (upper or step * 100) + 1, step)
            alternatives.append(f"({'|'.join(str(n) for n in counts)}){unit}")
    return "|".join(f"({a})" for a in alternatives)


def parse_interval(value: str | None, window_ms: int) -> tuple[str, int]:
    """(the interval as written, its length in ms); the window if absent. A multiple of the window only."""
    if value is None:
        return interval_name(window_ms), window_ms
    if not re.fullmatch(interval_pattern(window_ms), value):
        raise ApiError(400, "bad_interval", f"interval must be a multiple of the bars' window "
                                            f"({interval_name(window_ms)}) written <n>s, <n>m, <n>h or <n>d "
                                            f"(like 5m or 1h), got {value[:40]!r}")
    ms = int(value[:-1]) * _UNIT_MS[value[-1]]
    if ms % window_ms:    # the pattern admits multiples only: not expected
        raise ApiError(400, "bad_interval", f"interval must be a multiple of {interval_name(window_ms)}")
    return value, ms


def interval_name(ms: int) -> str:
    """`ms` written in the largest unit that divides it: 60000 -> "1m"."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"
