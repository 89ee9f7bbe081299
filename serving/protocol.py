"""The WebSocket protocol of DESIGN.md §8 as plain functions, testable without a socket."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from market import codec
from market.schema import SYMBOL_PATTERN

CHANNEL_TRENDS = "trends"
CHANNEL_ALERTS = "alerts"
CHANNELS = (CHANNEL_TRENDS, CHANNEL_ALERTS)
ALL_SYMBOLS = "*"
ACTIONS = ("subscribe", "unsubscribe", "ping")
# Alerts sent in the snapshot that follows an alerts subscription.
ALERT_SNAPSHOT_SIZE = 100


class ProtocolError(ValueError):
    """A client message the server cannot act on; the message is sent back as an error."""


@dataclass
class Subscription:
    """Which symbols of one channel a client wants: all ("*") minus exclusions, plus named ones."""

    all: bool = False
    include: set[str] = field(default_factory=set)
    exclude: set[str] = field(default_factory=set)

    def matches(self, symbol: str) -> bool:
        """True if a message about `symbol` goes to this client."""
        return (self.all and symbol not in self.exclude) or symbol in self.include

    def add(self, symbols: list[str]) -> None:
        """Subscribe to `symbols` ("*" = every symbol)."""
        if ALL_SYMBOLS in symbols:
            self.all, self.exclude = True, set()
            self.include.clear()
            return
        self.include.update(symbols)
        self.exclude.difference_update(symbols)

    def named_after_add(self, symbols: list[str]) -> int:
        """How many symbols this subscription would name after `add(symbols)` (bounded per client)."""
        if ALL_SYMBOLS in symbols:
            return 0
        return len(self.include) + sum(1 for s in symbols if s not in self.include)

    def named_after_remove(self, symbols: list[str]) -> int:
        """How many symbols "*" would exclude after `remove(symbols)` (bounded per client)."""
        if ALL_SYMBOLS in symbols or not self.all:
            return 0
        return len(self.exclude) + sum(1 for s in symbols if s not in self.exclude)

    def remove(self, symbols: list[str]) -> None:
        """Unsubscribe from `symbols` ("*" = from everything)."""
        if ALL_SYMBOLS in symbols:
            self.all = False
            self.include.clear()
            self.exclude.clear()
            return
        self.include.difference_update(symbols)
        if self.all:
            self.exclude.update(symbols)

    @property
    def empty(self) -> bool:
        """True if no symbol can match."""
        return not self.all and not self.include

    def snapshot_filter(self) -> set[str] | None:
        """Symbols for a snapshot: None means all."""
        return None if self.all and not self.exclude else set(self.include)


@dataclass(frozen=True)
class Action:
    """A validated client message."""

    action: str
    channel: str | None = None
    symbols: tuple[str, ...] = ()


def parse_symbols(value: Any) -> list[str]:
    """Symbols from a list or a comma-separated string, upper-cased; raises ProtocolError on a bad one."""
    if isinstance(value, str):
        items: Iterable[Any] = [s for s in value.split(",") if s.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ProtocolError("symbols must be a list of strings or a comma-separated string")
    # A dict keeps the first-seen order and de-duplicates in O(n): a list's
    # `in` made a 64 KiB subscribe hold the GIL for ~0.9 s.
    out: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise ProtocolError("symbols must be strings")
        item = item.strip()
        if item != ALL_SYMBOLS and not SYMBOL_PATTERN.fullmatch(item):
            raise ProtocolError(f"invalid symbol: {item[:32]!r}")
        out[item.upper()] = None
    if not out:
        raise ProtocolError("symbols is empty")
    return list(out)


def parse_channel(value: Any) -> str:
    """A known channel name; raises ProtocolError otherwise."""
    if value not in CHANNELS:
        raise ProtocolError(f"unknown channel {str(value)[:32]!r}; channels are {', '.join(CHANNELS)}")
    return value


def parse_action(raw: str | bytes) -> Action:
    """Validate one client message; raises ProtocolError with a message for the client."""
    try:
        message = codec.loads(raw)
    except codec.JSONDecodeError:
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    action = message.get("action")
    if action == "ping":
        return Action("ping")
    if action not in ("subscribe", "unsubscribe"):
        raise ProtocolError(f"unknown action {str(action)[:32]!r}; actions are {', '.join(ACTIONS)}")
    channel = parse_channel(message.get("channel"))
    # A subscribe without symbols means every symbol, the dashboard's usual case.
    symbols = parse_symbols(message.get("symbols", [ALL_SYMBOLS]))
    return Action(action, channel, tuple(symbols))


def welcome(heartbeat_s: float) -> dict[str, Any]:
    """The first message of every connection."""
    beat: float | int = int(heartbeat_s) if float(heartbeat_s).is_integer() else heartbeat_s
    return {"type": "welcome", "channels": list(CHANNELS), "heartbeat_s": beat}


def error(message: str) -> dict[str, Any]:
    """An error message; the connection stays open unless the server says otherwise."""
    return {"type": "error", "message": message}


def encode(message: dict[str, Any]) -> str:
    """A server message as WebSocket text (browsers parse text frames directly)."""
    return codec.dumps(message).decode()
