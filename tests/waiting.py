"""The tests' one wait: poll a condition until it holds, or fail saying what did not happen.

Built on runners/wait.py, the runners' own loop. A test asserts a state only
once it has waited for it: no fixed sleep before an assertion.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import pytest

from runners.wait import wait_until

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str | Callable[[], str], *,
             between: Callable[[], object] | None = None, poll_s: float = 0.2) -> T:
    """Return the first truthy value of `condition()`; fail the test after `timeout_s`.

    `between` runs after each unmet poll, before the `poll_s` sleep (publish
    more ticks, check that a process still runs: it may raise to stop the wait
    early); pass `poll_s=0` when it takes its own time. `what` names the awaited state in the failure (a callable is asked
    only then, for detail such as a log's tail).
    """
    def check() -> T:
        value = condition()
        if not value and between is not None:
            between()
        return value

    value = wait_until(check, timeout_s, poll_s)
    if not value:
        pytest.fail(f"{what() if callable(what) else what}: not within {timeout_s:g} s", pytrace=False)
    return value


def seconds_until(condition: Callable[[], object], timeout_s: float, what: str | Callable[[], str], **kwargs) -> float:
    """`wait_for`, returning how many seconds it took."""
    start = time.monotonic()
    wait_for(condition, timeout_s, what, **kwargs)
    return time.monotonic() - start
