"""What goes wrong talking to the kernel, as exceptions plugins can act on.

- `NetlinkError`: the kernel refused a request. `errno` is exactly the kernel's (from the
  NLMSG_ERROR answer), `what` says which request ("delete link 'veth1a2b'"), and the message
  reads "failed to delete link 'veth1a2b': No such device", with the kernel's own explanation
  (extended ack, e.g. "Unknown device type") in parentheses when it gives one. It is a CniError
  (code 105, KERNEL), so one that a plugin lets through reaches the runtime as is.
- `NetlinkNotFound`: the object a request names is not there. Which errnos mean that depends on
  the request (see pycni.netlink's docstring); it is also a pycni.cni.errors.NotFound, which DEL and
  GC treat as success.
- `NetlinkExists` (EEXIST): creating something that is already there.
- `NamespaceNotFound`: a network namespace path that does not exist (code 3, "unknown
  container"; also a NotFound). `NamespaceError`: one that cannot be entered.
"""

from __future__ import annotations

import os

from pycni.cni.errors import CniError, Code, NotFound


class NetlinkError(CniError):
    """The kernel answered a request with an error."""

    def __init__(self, errno: int, what: str, kernel_message: str = "") -> None:
        strerror = os.strerror(errno)
        explanation = f" ({kernel_message})" if kernel_message else ""
        super().__init__(Code.KERNEL, f"failed to {what}: {strerror}{explanation}")
        self.errno = errno
        self.strerror = strerror
        self.what = what
        self.kernel_message = kernel_message


class NetlinkNotFound(NetlinkError, NotFound):
    """The link, address, route or neighbour a request names does not exist."""


class NetlinkExists(NetlinkError):
    """The object a create request names already exists (EEXIST)."""


class NamespaceError(CniError):
    """A network namespace path cannot be used (not a namespace, not permitted, ...)."""

    def __init__(self, path: str, problem: str, code: int = Code.KERNEL) -> None:
        super().__init__(code, f"failed to open network namespace '{path}': {problem}")
        self.path = path
        self.problem = problem


class NamespaceNotFound(NamespaceError, NotFound):
    """The network namespace path does not exist: the container is gone or never was."""

    def __init__(self, path: str, problem: str = "no such file or directory") -> None:
        super().__init__(path, problem, Code.UNKNOWN_CONTAINER)
