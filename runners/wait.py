"""The one wait-until loop of the runners: poll a condition until it holds or time runs out."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.5) -> T | None:
    """Call `condition` every `interval_s` until it returns a truthy value; return that value.

    Returns None once `timeout_s` has passed without one (the caller says
    what that means: an error, a warning, a fallback). `condition` is called
    at least once, and may raise to stop the wait early (a process exited).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
