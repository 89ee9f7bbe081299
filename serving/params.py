"""Query-parameter parsing for the REST routes; every failure is a 400 with a message."""
from __future__ import annotations

from datetime import datetime, timezone

from market.schema import ALERT_TYPES, SYMBOL_PATTERN
from serving.errors import ApiError


def parse_time(name: str, value: str | None) -> int | None:
    """Epoch ms from digits or an ISO-8601 string (no offset = UTC); None if absent."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ApiError(400, f"bad_{name}",
                       f"{name} must be epoch milliseconds or an ISO-8601 time, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    """An integer 1..maximum; default if absent."""
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise ApiError(400, "bad_limit", f"limit must be an integer, got {value[:40]!r}") from None
    if not 1 <= limit <= maximum:
        raise ApiError(400, "bad_limit", f"limit must be between 1 and {maximum}, got {limit}")
    return limit


def parse_symbol(value: str) -> str:
    """A symbol in DESIGN.md §3's alphabet, upper-cased."""
    if not SYMBOL_PATTERN.fullmatch(value):
        raise ApiError(400, "bad_symbol", f"symbol must be 1-16 of A-Z a-z 0-9 . - _ / : = ^, got {value[:40]!r}")
    return value.upper()


def parse_alert_type(value: str | None) -> str | None:
    """One of the alert types of DESIGN.md §5; None if absent."""
    if value is None or value == "":
        return None
    if value not in ALERT_TYPES:
        raise ApiError(400, "bad_type", f"type must be one of {', '.join(ALERT_TYPES)}, got {value[:40]!r}")
    return value
