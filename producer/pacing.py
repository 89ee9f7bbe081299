"""When to send: a token bucket for a target rate, and real-time pacing for replays.

Both answer the same two questions of the produce loop, given the time
`now` (seconds, any monotonic origin) — how many records may go now
(`take`) and how long to wait otherwise (`wait_s`) — and never sleep
themselves: the loop waits in `Producer.poll(timeout)`, which serves
delivery callbacks meanwhile. Because tokens accrue from elapsed time, a
late wake-up is made up by the next batch instead of drifting, which a
per-tick `sleep` would.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol

from producer.records import Record


class Pacer(Protocol):
    """What the produce loop asks before sending."""

    def take(self, want: int, now: float) -> int:
        """How many of the next `want` records may be sent at `now` (0 … want)."""

    def wait_s(self, now: float) -> float:
        """Seconds from `now` until `take` can grant at least one record."""


class TokenBucket:
    """`rate` records per second on average, with bursts up to `burst_s` seconds' worth.

    The burst lets the loop catch up after a stall (a slow `poll`, the
    process descheduled on a busy machine) so the long-run rate holds; a
    stall longer than `burst_s` is lost rather than made up in a flood.
    """

    def __init__(self, rate: float, burst_s: float = 0.2) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate * burst_s)
        self._tokens = 0.0
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is None:
            self._last = now
        elif now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def take(self, want: int, now: float) -> int:
        self._refill(now)
        granted = min(want, int(self._tokens))
        self._tokens -= granted
        return granted

    def wait_s(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1.0 - self._tokens) / self.rate)


class ReplayPacer:
    """Send records when their event time comes, at `speed` × real time.

    Wraps the record iterator (iterate the pacer itself): it looks ahead to
    learn the next record's timestamp. The first record is due immediately;
    records earlier than one already sent are due at once (files need not be
    sorted).
    """

    def __init__(self, records: Iterable[Record], speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self._records = iter(records)
        self._ahead: deque[Record] = deque()
        self._origin: tuple[float, int] | None = None  # (wall time, event ms) of the first record
        self._next_due = 0.0
        self._exhausted = False

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        if self._ahead:
            return self._ahead.popleft()
        return next(self._records)

    def _peek(self, index: int) -> Record | None:
        while len(self._ahead) <= index and not self._exhausted:
            try:
                self._ahead.append(next(self._records))
            except StopIteration:
                self._exhausted = True
        return self._ahead[index] if index < len(self._ahead) else None

    def take(self, want: int, now: float) -> int:
        granted = 0
        while granted < want:
            record = self._peek(granted)
            if record is None:
                # Nothing left: let the loop run into the end of the iterator.
                return want if granted == 0 else granted
            if self._origin is None:
                self._origin = (now, record.timestamp_ms)
            due = self._origin[0] + (record.timestamp_ms - self._origin[1]) / 1000.0 / self.speed
            if due > now:
                self._next_due = due
                break
            granted += 1
        return granted

    def wait_s(self, now: float) -> float:
        return max(0.0, self._next_due - now)
