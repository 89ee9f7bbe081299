"""Gap-free resume (DESIGN.md §8) as plain logic, without sockets or Kafka: where a replay starts, which replayed
records are new, and how the replay meets the live stream (`Handoff`).

serving.replay reads Kafka and drives these; serving.hub routes the live messages of a replaying client here.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from serving import protocol
from serving.store import bar_version

NO_OFFSET = 2**63   # above every Kafka offset


class ResumeError(Exception):
    """A resume point the topic cannot serve whole (no longer retained, beyond the end, no such partition);
    the message is for the client."""


def start_offsets(point: protocol.ResumePoint, watermarks: Mapping[int, tuple[int, int]],
                  by_time: Mapping[int, int] | None = None) -> dict[int, int]:
    """The first offset to replay of every partition; raises ResumeError if messages after `point` are gone.

    `watermarks`: partition -> (low, high) of the topic now (low: the oldest offset retention kept, high: the
    next offset to be written). `by_time` (for `since`): partition -> the first offset whose record timestamp is
    at or after `since`, -1 if none (Consumer.offsets_for_times).
    """
    out: dict[int, int] = {}
    if point.after is not None:
        unknown = sorted(set(point.after) - set(watermarks))
        if unknown:
            raise ResumeError(f"the topic has no partition {unknown[0]} (it has {len(watermarks)}: "
                              f"0-{len(watermarks) - 1})")
        for partition, (low, high) in sorted(watermarks.items()):
            seen = point.after.get(partition)
            # A partition the client names no offset for: from the oldest message the topic retains.
            start = low if seen is None else seen + 1
            if start < low:
                raise ResumeError(f"offset {seen} of partition {partition} is no longer retained: retention "
                                  f"deleted partition {partition} up to offset {low - 1}")
            if start > high:
                raise ResumeError(f"offset {seen} of partition {partition} is beyond its end (its last offset "
                                  f"is {high - 1}): was the topic recreated?")
            out[partition] = start
        return out
    assert point.since is not None and by_time is not None
    for partition, (low, high) in sorted(watermarks.items()):
        first = by_time.get(partition, -1)
        if first < 0:
            out[partition] = high     # nothing at or after `since` yet
            continue
        if first <= low and low > 0:
            # The oldest retained message is already at or after `since`, and older ones were deleted:
            # some of those may have been after `since` too.
            raise ResumeError(f"since {point.since} is older than what partition {partition} retains: retention "
                              f"deleted partition {partition} up to offset {low - 1}")
        out[partition] = first
    return out


class NewVersions:
    """The live stream's rule for what is new, over the records one replay has seen (serving.store: a bar only if
    it is a newer version of its window, an alert only if its id is new). Memory: one entry per record sent."""

    def __init__(self) -> None:
        self._bars: dict[tuple[str, int], tuple[int, bool, int]] = {}
        self._alerts: set[str] = set()

    def is_new(self, channel: str, record: dict[str, Any]) -> bool:
        """True (and remembered) if `record` (checked by serving.records) would be pushed live."""
        if channel == protocol.CHANNEL_ALERTS:
            ident = record["alert_id"]
            if ident in self._alerts:
                return False
            self._alerts.add(ident)
            return True
        key, version = (record["symbol"].upper(), record["window_start"]), bar_version(record)
        current = self._bars.get(key)
        if current is not None and version <= current:
            return False
        self._bars[key] = version
        return True


class Handoff:
    """Where one client's replay of one channel meets the live stream.

    Per partition of the channel's topic, `covered[p]` is the highest offset
    whose fate is settled for this client: at or below it, every message was
    either seen by the client before (its resume point) or decided by the
    replay (sent, or not for this client). Two rules, under `lock`, give every
    offset exactly one owner:

    * the live stream (`live`, from the fan-out) drops what is at or below
      `covered` and buffers the rest, noting the first offset it buffered on
      each partition;
    * the replay (`claim`) may decide an offset only below that first buffered
      one, and deciding it raises `covered`.

    Whichever reaches an offset first owns it. The replay of a partition ends
    at its first refused claim (the buffer has everything from there on), or
    at the end offset read after the client joined the fan-out (every message
    from there on is fanned out later, so buffered). The buffer then goes to
    the client in order (`take`, `go_direct`), and live messages go straight
    to it, still dropping what is at or below `covered` until serving's feed
    has passed it on every partition (`settled`): a feed behind the broker
    fans out again what the replay already sent.
    """

    def __init__(self, start: Mapping[int, int], max_bytes: int) -> None:
        """`start`: the first offset the replay reads on each partition; `max_bytes`: the bound of the buffer."""
        self.lock = threading.Lock()
        self.covered: dict[int, int] = {p: o - 1 for p, o in start.items()}
        self.first_live: dict[int, int] = {}
        self.max_bytes = max_bytes
        self._buffer: deque[bytes] = deque()
        self.buffered_bytes = 0
        self.direct = False

    def live(self, items: Iterable[tuple[int | None, int | None, bytes]]) -> list[bytes] | None:
        """Take live (partition, offset, frame)s for this client, in Kafka order: the frames to write now (once
        direct), or None if buffering them would pass `max_bytes` (the client cannot keep up)."""
        out: list[bytes] = []
        with self.lock:
            for partition, offset, frame in items:
                if partition is not None and offset is not None and offset <= self.covered.get(partition, -1):
                    continue    # the client has it, or the replay decided it
                if self.direct:
                    out.append(frame)
                    continue
                if self.buffered_bytes + len(frame) > self.max_bytes:
                    return None
                self._buffer.append(frame)
                self.buffered_bytes += len(frame)
                if partition is not None and offset is not None and partition not in self.first_live:
                    self.first_live[partition] = offset
        return out

    def claim(self, partition: int, offset: int) -> bool:
        """May the replay decide (send or skip) `offset` of `partition`? False once the live stream has buffered
        that offset or a later one of the partition: the replay of that partition is over. Call under `lock`,
        in Kafka order per partition."""
        if offset >= self.first_live.get(partition, NO_OFFSET):
            return False
        if offset > self.covered.get(partition, -1):
            self.covered[partition] = offset
        return True

    def take(self, max_bytes: int) -> list[bytes]:
        """The oldest buffered frames, up to `max_bytes` (at least one if any). Call under `lock`."""
        out: list[bytes] = []
        size = 0
        while self._buffer and (not out or size + len(self._buffer[0]) <= max_bytes):
            frame = self._buffer.popleft()
            size += len(frame)
            out.append(frame)
        self.buffered_bytes -= size
        return out

    def go_direct(self) -> list[bytes]:
        """The rest of the buffer; from now on `live` hands frames back to write at once. Call under `lock`,
        and write what it returns before any later live message (serving.hub does both under its lock)."""
        rest = list(self._buffer)
        self._buffer.clear()
        self.buffered_bytes = 0
        self.direct = True
        return rest

    def settled(self, reached: Mapping[int, int]) -> bool:
        """True once direct and serving's feed has handled every partition up to `covered` (`reached`:
        partition -> the highest offset it handled): no live message can be at or below `covered` any more."""
        return self.direct and all(reached.get(p, -1) >= offset for p, offset in self.covered.items())
