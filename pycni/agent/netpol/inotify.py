"""Wake up when a directory's entries change: inotify through ctypes (the standard library has
no binding), or a poll every `timeout` when inotify cannot be had.

Long-lived path (the agent).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
from pathlib import Path
from types import TracebackType

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE


class DirectoryWatch:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = -1
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                if libc.inotify_add_watch(fd, os.fsencode(directory), MASK) >= 0:
                    self.fd = fd
                else:
                    os.close(fd)
        except (OSError, AttributeError):
            self.fd = -1

    def wait(self, timeout: float) -> bool:
        """Whether something changed within `timeout` seconds (always True when polling, at
        the end of the timeout)."""
        if self.fd < 0:
            select.select([], [], [], timeout)
            return True
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
