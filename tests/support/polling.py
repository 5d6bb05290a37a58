"""The one polling helper: a check's first true value, or a failure that says what was awaited.

    trade = wait_for(lambda: settled(api, 10), 30, "the engine to settle trade 10")
    wait_for(ready, 60, "the api", every=0.5, ignore=(requests.RequestException,))
    value = poll(check, 10)        # None instead of a failure when the time is up

Tests never assert a wall-clock speed: timeouts here are generous upper bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(check: Callable[[], Any], timeout: float, every: float = 0.2,
         ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """check()'s first true value within `timeout` seconds, else None; exceptions of the
    `ignore` types count as "not yet"."""
    value, _ = _poll(check, timeout, every, ignore)
    return value or None


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             every: float = 0.2, ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """check()'s first true value within `timeout` seconds, else an AssertionError naming
    `what` and the last value (or ignored exception) seen."""
    value, last = _poll(check, timeout, every, ignore)
    if value:
        return value
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def _poll(check, timeout, every, ignore) -> tuple[Any, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last, last
        except ignore as exc:
            last = exc
        if time.monotonic() >= deadline:
            return None, last
        time.sleep(every)
