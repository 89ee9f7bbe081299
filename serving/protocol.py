"""The WebSocket protocol of DESIGN.md §8 as plain functions, testable without a socket."""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from market import codec
from market.schema import MIN_EVENT_MS, SYMBOL_PATTERN

CHANNEL_TRENDS = "trends"
CHANNEL_ALERTS = "alerts"
CHANNELS = (CHANNEL_TRENDS, CHANNEL_ALERTS)
ALL_SYMBOLS = "*"
ACTIONS = ("subscribe", "unsubscribe", "ping")
# Alerts sent in the snapshot that follows an alerts subscription.
ALERT_SNAPSHOT_SIZE = 100
# The `type` of a channel's live (and replayed) messages.
MESSAGE_TYPES = {CHANNEL_TRENDS: "trend", CHANNEL_ALERTS: "alert"}
_MESSAGE_HEADS = {channel: b'{"type":"' + kind.encode() + b'","partition":' for channel, kind in MESSAGE_TYPES.items()}
# A resume point names at most this many partitions (the topics have 3): a bound on the work one message asks for.
MAX_RESUME_PARTITIONS = 1024
# How far ahead of this server's clock `since` may be: clocks differ a little, a time in the future is a mistake.
SINCE_FUTURE_MS = 60_000
_PARTITION_KEY = re.compile(r"[0-9]{1,9}")
MAX_OFFSET = 2**63 - 1
# An integer as the query string writes it (`after=0:41`, `since=1764063000000`); its range is checked after.
_QUERY_INTEGER = re.compile(r"-?[0-9]{1,19}")


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
class ResumePoint:
    """Where a resuming subscribe picks up (DESIGN.md §8); exactly one of the two is set.

    `after`: partition -> the highest offset the client saw (-1: none), a partition not named
    meaning from the oldest message the topic retains; `since`: epoch ms, compared with the
    Kafka record timestamps.
    """

    after: Mapping[int, int] | None = None
    since: int | None = None


@dataclass(frozen=True)
class Action:
    """A validated client message; `resume` only on a subscribe that resumes."""

    action: str
    channel: str | None = None
    symbols: tuple[str, ...] = ()
    resume: ResumePoint | None = None


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


def parse_after(value: Any) -> dict[int, int]:
    """`"after": {"<partition>": offset, ...}` as {partition: offset}; raises ProtocolError on a bad one."""
    if not isinstance(value, dict):
        raise ProtocolError('"after" must be an object of partition: highest offset seen, like {"0": 41, "2": 7}')
    if len(value) > MAX_RESUME_PARTITIONS:
        raise ProtocolError(f'"after" names {len(value)} partitions (at most {MAX_RESUME_PARTITIONS})')
    out: dict[int, int] = {}
    for key, offset in value.items():
        if not _PARTITION_KEY.fullmatch(key):
            raise ProtocolError(f'"after": {key[:32]!r} is not a partition number ("0", "1", ...)')
        if not isinstance(offset, int) or isinstance(offset, bool) or not -1 <= offset <= MAX_OFFSET:
            raise ProtocolError(f'"after": the offset of partition {key} must be an integer >= -1 '
                                f"(the highest offset seen), got {str(offset)[:32]}")
        out[int(key)] = offset
    return out


def parse_since(value: Any, now_ms: int) -> int:
    """`"since": <epoch ms>`; raises ProtocolError unless it is a time from 2000 to about now."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f'"since" must be epoch milliseconds (an integer), got {str(value)[:32]}')
    if value < MIN_EVENT_MS:
        raise ProtocolError(f'"since" {value} is before the year 2000: epoch milliseconds, not seconds?')
    if value > now_ms + SINCE_FUTURE_MS:
        raise ProtocolError(f'"since" {value} is in the future (this server\'s clock reads {now_ms})')
    return value


def parse_resume(message: Mapping[str, Any], now_ms: int) -> ResumePoint | None:
    """The resume point of a subscribe message (`after` or `since`), None if it has neither."""
    after, since = message.get("after"), message.get("since")
    if after is not None and since is not None:
        raise ProtocolError('give "after" or "since", not both')
    if after is not None:
        return ResumePoint(after=parse_after(after))
    if since is not None:
        return ResumePoint(since=parse_since(since, now_ms))
    return None


def parse_action(raw: str | bytes, now_ms: int | None = None) -> Action:
    """Validate one client message; raises ProtocolError with a message for the client.

    `now_ms` (default: the clock) bounds a `since`.
    """
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
    if action == "unsubscribe":
        if "after" in message or "since" in message:
            raise ProtocolError('"after" and "since" belong to a subscribe')
        return Action(action, channel, tuple(symbols))
    resume = parse_resume(message, int(time.time() * 1000) if now_ms is None else now_ms)
    return Action(action, channel, tuple(symbols), resume)


def _query_value(query: Mapping[str, list[str]], name: str) -> str | None:
    """The one value of `name` in the query string (None if absent); a second one is refused, not ignored."""
    values = query.get(name) or []
    if len(values) > 1:
        raise ProtocolError(f'"{name}" is given {len(values)} times in the query string')
    return values[0] if values else None


def parse_query_after(text: str) -> dict[int, int]:
    """`after=0:41,2:7` (partition:highest offset seen, `after=` naming none) as {partition: offset}, by the
    rules of `parse_after`; raises ProtocolError on a bad one."""
    pairs: dict[str, int] = {}
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if len(items) > MAX_RESUME_PARTITIONS:
        raise ProtocolError(f'"after" names {len(items)} partitions (at most {MAX_RESUME_PARTITIONS})')
    for item in items:
        partition, colon, offset = item.partition(":")
        if not colon or not _QUERY_INTEGER.fullmatch(offset):
            raise ProtocolError(f'"after": {item[:32]!r} is not partition:offset (after=0:41,2:7)')
        pairs[partition] = int(offset)
    after = parse_after(pairs)
    if len(after) != len(items):
        raise ProtocolError('"after" names a partition twice')
    return after


def parse_query(query: Mapping[str, list[str]], now_ms: int | None = None) -> list[Action]:
    """The subscribes `/ws?channel=trends,alerts&symbols=AAPL&after=0:41|since=<ms>` asks for at connect time
    (`query`: each parameter's values, in order), with the rules of the message form; raises ProtocolError,
    and then nothing is to be subscribed.

    No `channel`: none. `symbols` defaults to "*". `since` resumes every channel named; `after` names offsets
    of one topic, so it takes one channel.
    """
    after_text, since_text = _query_value(query, "after"), _query_value(query, "since")
    channels_text = (query.get("channel") or [""])[0]
    if not channels_text:
        if after_text is not None or since_text is not None:
            raise ProtocolError('"after" and "since" resume a channel: name it (channel=trends)')
        return []
    # A dict: each channel once, in the order named.
    channels = list({parse_channel(name.strip()): None for name in channels_text.split(",")})
    symbols = tuple(parse_symbols((query.get("symbols") or [ALL_SYMBOLS])[0]))
    resume = None
    if after_text is not None and since_text is not None:
        raise ProtocolError('give "after" or "since", not both')
    if after_text is not None:
        if len(channels) > 1:
            raise ProtocolError('"after" in the query string names offsets of one channel\'s topic: give one '
                                'channel, or subscribe by message with an "after" per channel')
        resume = ResumePoint(after=parse_query_after(after_text))
    elif since_text is not None:
        if not _QUERY_INTEGER.fullmatch(since_text):
            raise ProtocolError(f'"since" must be epoch milliseconds (an integer), got {since_text[:32]!r}')
        resume = ResumePoint(since=parse_since(int(since_text),
                                               int(time.time() * 1000) if now_ms is None else now_ms))
    return [Action("subscribe", channel, symbols, resume) for channel in channels]


def welcome(heartbeat_s: float) -> dict[str, Any]:
    """The first message of every connection."""
    beat: float | int = int(heartbeat_s) if float(heartbeat_s).is_integer() else heartbeat_s
    return {"type": "welcome", "channels": list(CHANNELS), "heartbeat_s": beat}


def error(message: str) -> dict[str, Any]:
    """An error message; the connection stays open unless the server says otherwise."""
    return {"type": "error", "message": message}


def record_message(channel: str, partition: int | None, offset: int | None, data: bytes) -> bytes:
    """A `trend` or `alert` message with the Kafka position it came from (null for a record that did not
    come from Kafka), `data` the record's JSON: the same bytes live and replayed."""
    if partition is None or offset is None:
        return b'%snull,"offset":null,"data":%s}' % (_MESSAGE_HEADS[channel], data)
    # One formatting: this runs for every bar version the feed pushes.
    return b'%s%d,"offset":%d,"data":%s}' % (_MESSAGE_HEADS[channel], partition, offset, data)


def replayed(channel: str, count: int, after: Mapping[int, int]) -> dict[str, Any]:
    """The end of a replay: `count` messages were replayed; `after` the position per partition the client now
    has everything up to (a resume point for the next reconnect)."""
    return {"type": "replayed", "channel": channel, "count": count, "after": positions(after)}


def positions(after: Mapping[int, int]) -> dict[str, int]:
    """Positions per partition as the protocol writes them: {"<partition>": offset}."""
    return {str(p): o for p, o in sorted(after.items())}


def encode(message: dict[str, Any]) -> str:
    """A server message as WebSocket text (browsers parse text frames directly)."""
    return codec.dumps(message).decode()
