"""Diagnostics of one call: to stderr and, when the config names one, to `logFile`.

The protocol boundary (pycni.cni.skel) opens the call's `Log` and makes it the current one for
the call; plugins, the datapath and Rollback write through `write(...)`, so what they say
reaches the runtime's log (stderr) and the operator's `logFile` alike, stamped with the plugin,
its PID and the call:

    2024-05-01T10:00:00 pycni-bridge[4242] ADD c1/eth0: br_netfilter is not loaded: ...

Outside a call (a test driving a step directly, the agent) `write` goes to stderr alone.
Not `logging`: it imports `re`, `threading` and `traceback` on every start of every call (see
tests/cni/test_startup_imports.py).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

_active: list[Log] = []  # the call's log (last) while pycni.cni.skel serves a call


def write(message: str) -> None:
    """Say `message` in the current call's log (stderr and logFile), or on stderr outside a
    call."""
    if _active:
        _active[-1].write(message)
        return
    import sys

    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Log:
    """Diagnostics to stderr and, when the config names one, to an absolute `logFile`."""

    def __init__(self, stderr: TextIO, plugin_name: str) -> None:
        self._stderr = stderr
        self._name = plugin_name
        self._file: TextIO | None = None
        self.context = ""

    def activate(self) -> None:
        """Make this the log `write` goes to, until `close`."""
        _active.append(self)

    def open_file(self, path: object) -> None:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            return
        try:
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as err:
            self.write(f"cannot open logFile '{path}': {err}")

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} {self._name}[{os.getpid()}] {self.context}: {message}\n"
        for stream in (self._stderr, self._file):
            if stream is not None:
                try:
                    stream.write(line)
                    stream.flush()
                except (OSError, ValueError):
                    pass

    def close(self) -> None:
        if self in _active:
            _active.remove(self)
        if self._file is not None:
            self._file.close()
            self._file = None
