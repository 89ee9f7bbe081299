"""`ProduceStats`: what a producer run sent, per record kind, as the broker confirmed it."""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from producer.records import KINDS

log = logging.getLogger(__name__)

# Delivery failures usually come in floods (a broker gone away): log the first
# few in full, then only count them.
MAX_LOGGED_FAILURES = 10


def _zero_counts() -> Counter[str]:
    # A Counter, so records of a kind of the caller's own are counted too.
    return Counter({kind: 0 for kind in KINDS})


@dataclass
class ProduceStats:
    """Counts per record kind: handed to librdkafka, confirmed by the broker, failed.

    `delivered` counts only what a delivery report confirmed; records still
    queued when the final flush timed out are `undelivered`.
    """

    produced: Counter[str] = field(default_factory=_zero_counts)
    delivered: Counter[str] = field(default_factory=_zero_counts)
    failed: Counter[str] = field(default_factory=_zero_counts)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    stopped_by: str = ""
    """Why the run ended: "exhausted", "duration" or "stopped"."""
    first_errors: list[str] = field(default_factory=list)
    _callbacks: dict[str, Callable[[Any, Any], None]] = field(default_factory=dict, repr=False)

    def on_delivery(self, kind: str) -> Callable[[Any, Any], None]:
        """The delivery callback for records of `kind`.

        librdkafka gives a callback no per-message context, so the kind is
        bound into one closure per kind, made once and reused for every record.
        """
        callback = self._callbacks.get(kind)
        if callback is None:
            delivered, failed, first_errors = self.delivered, self.failed, self.first_errors

            def callback(err: Any, msg: Any, kind: str = kind) -> None:
                if err is None:
                    delivered[kind] += 1
                    return
                failed[kind] += 1
                if len(first_errors) < MAX_LOGGED_FAILURES:
                    first_errors.append(str(err))
                    log.error("delivery failed (%s) to %s: %s", kind, msg.topic(), err)

            self._callbacks[kind] = callback
        return callback

    @property
    def total_produced(self) -> int:
        return sum(self.produced.values())

    @property
    def total_delivered(self) -> int:
        return sum(self.delivered.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())

    @property
    def undelivered(self) -> int:
        """Records handed to librdkafka with no delivery report (yet)."""
        return self.total_produced - self.total_delivered - self.total_failed

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def ok(self) -> bool:
        """True when every record produced was confirmed delivered."""
        return self.total_failed == 0 and self.undelivered == 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; per-kind maps leave out kinds never sent."""
        elapsed = self.elapsed_s
        return {
            "produced": self.total_produced,
            "delivered": self.total_delivered,
            "failed": self.total_failed,
            "undelivered": self.undelivered,
            "elapsed_s": round(elapsed, 3),
            "delivered_per_s": round(self.total_delivered / elapsed, 1) if elapsed > 0 else 0.0,
            "stopped_by": self.stopped_by,
            "delivered_by_kind": {k: n for k, n in self.delivered.items() if n},
            "failed_by_kind": {k: n for k, n in self.failed.items() if n},
            "produced_by_kind": {k: n for k, n in self.produced.items() if n},
            "first_errors": list(self.first_errors),
        }
