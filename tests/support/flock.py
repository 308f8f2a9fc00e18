"""Another process holding flock(2) on a file, as a stuck plugin would."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_HOLD_FLOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def flock_held(path: Path) -> Iterator[int]:
    """Another process holds flock(2) on `path` (as a stuck plugin would); yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_FLOCK, str(path)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
