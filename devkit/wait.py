"""Polling until a condition holds (tests, bench)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.01) -> Any:
    """The first true result of `cond()`, polled every `every` s;
    AssertionError naming `what` once `timeout` s have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cond()
        if r:
            return r
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
