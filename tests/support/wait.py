"""Waiting for something another process or thread does: polled, and bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 15.0, *, interval: float = 0.05
) -> None:
    """Poll `check` every `interval` seconds until it is true; after `timeout` seconds, fail
    saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
