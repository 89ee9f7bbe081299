"""An independent validator of DESIGN.md §3, written for the tests from the text, not the producer's code.

`classify(value)` is the dead-letter reason a strict consumer must give a
record value, or None for a valid tick.
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from market import codec

SYMBOL = re.compile(r"^[A-Za-z0-9.\-_/:=^]{1,16}$")
MIN_MS = 946_684_800_000          # 2000-01-01T00:00:00Z
MAX_MS = 4_133_980_799_999        # 2100-12-31T23:59:59.999Z


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _timestamp_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return MIN_MS <= value <= MAX_MS
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return False
        return moment.tzinfo is not None and 2000 <= moment.year <= 2100
    return False


def classify(value: bytes) -> str | None:
    """The dead-letter reason for `value`, or None if it is a valid tick."""
    try:
        tick = codec.loads(value)
    except codec.JSONDecodeError:
        return "invalid_json"
    if not isinstance(tick, dict):
        return "not_an_object"
    for name in ("symbol", "price", "volume", "timestamp"):
        if name not in tick:
            return "missing_field"
    if not isinstance(tick["symbol"], str) or not SYMBOL.match(tick["symbol"]):
        return "invalid_symbol"
    price = tick["price"]
    if not _number(price) or not math.isfinite(price) or price <= 0:
        return "invalid_price"
    volume = tick["volume"]
    if not _number(volume) or not math.isfinite(volume) or volume < 0:
        return "invalid_volume"
    if not _timestamp_ok(tick["timestamp"]):
        return "invalid_timestamp"
    if "seq" in tick and (not isinstance(tick["seq"], int) or isinstance(tick["seq"], bool) or tick["seq"] < 0):
        return "invalid_seq"
    return None
