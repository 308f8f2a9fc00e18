"""Sockets inside another network namespace, without moving the process.

A socket belongs for its whole life to the network namespace it was created in. So to talk
rtnetlink inside a container, the calling thread enters the container's namespace, creates the
socket, and goes back (`socket_in_netns`); every later request on that socket acts inside the
container while the process stays where it was. setns(2) changes only the calling thread, and
the original namespace is restored in a `finally`, on every path out.

How to call setns(2) from Python 3.11, which has no os.setns (3.12 has):

| way                                          | cost, measured                                |
|----------------------------------------------|-----------------------------------------------|
| os.setns (3.12+)                             | nothing: used whenever it exists              |
| `_ctypes` (the C half of ctypes) directly    | import ≈ 0.35 ms; chosen for 3.11             |
| `import ctypes` + CDLL(None).setns           | import ≈ 2.9 ms (ctypes/__init__, _endian,    |
|                                              | struct): a call's whole budget is ~15 ms      |
| fork a helper that enters and passes the fd  | ≈ 12 ms (pyroute2's IPRoute(netns=...)), and  |
|   back over SCM_RIGHTS                       |   the helper still needs setns                |
| exec `nsenter` / `ip netns exec`             | ≈ 1.7 / 1.9 ms for `true`, but neither hands  |
|                                              |   a socket back: that takes another Python    |
| IFLA_TARGET_NETNSID / IFA_TARGET_NETNSID     | no setns at all, but links and address dumps  |
|                                              |   only: no routes, no neighbours              |
| a C extension module of our own              | nothing at run time, but a compiler in the    |
|                                              |   build and a binary per platform             |

(imports: `python -X importtime`, median of 25 runs; execs: median of 50; CPython 3.11 on the
project's VM.) Frozen (PyInstaller onedir), the first Rtnl(netns=...) of a process costs
≈ 0.7 ms more than importing pycni.netlink (loading _ctypes and libffi); entering a namespace
and creating the socket then takes ≈ 10 µs.

`_ctypes` is what `ctypes/__init__.py` itself is built on: `dlopen`/`dlsym` find setns in the
process's own symbols (libc; also in a frozen executable), and a CFuncPtr subclass with
FUNCFLAG_USE_ERRNO calls it with two C ints and keeps errno for `get_errno()`, exactly as
`CDLL(None, use_errno=True).setns` would, without the 3 ms of Python around it. It is loaded
only when a namespace is first entered, so calls that never enter one pay nothing.

The original namespace is `/proc/thread-self/ns/net`, opened before entering. If going back
ever failed (it cannot, short of the kernel refusing our own namespace's fd) the thread would
stay in the container's namespace: that raises NamespaceError with code INTERNAL, naming both.
"""

from __future__ import annotations

import errno
import os

from pycni.cni.errors import Code
from pycni.netlink.errors import NamespaceError, NamespaceNotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable

CLONE_NEWNET = 0x40000000  # linux/sched.h
OWN_NETNS = "/proc/thread-self/ns/net"

_setns: Callable[[int], int] | None = None  # fd -> 0 or errno, loaded on first use


def open_netns(path: str) -> int:
    """An fd for the namespace at `path` (/run/netns/NAME, /proc/PID/ns/net); the caller
    closes it. A path that does not exist raises NamespaceNotFound."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NamespaceNotFound(path) from None
    except OSError as err:
        raise NamespaceError(path, err.strerror or str(err)) from None


def socket_in_netns(netns: str | int, factory: Callable[[], _socket.socket]) -> _socket.socket:
    """`factory()` run with the calling thread inside `netns` (a path, or an open namespace
    fd), the thread's own namespace restored before returning or raising."""
    target = open_netns(netns) if isinstance(netns, str) else netns
    name = netns if isinstance(netns, str) else f"fd {netns}"
    try:
        own = os.open(OWN_NETNS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _run_inside(target, own, name, factory)
        finally:
            os.close(own)
    finally:
        if isinstance(netns, str):
            os.close(target)


def _run_inside(
    target: int, own: int, name: str, factory: Callable[[], _socket.socket]
) -> _socket.socket:
    setns = _setns or _load_setns()
    sock = None
    entered = False
    try:  # entered inside the `try`: a signal's exception right after setns still restores
        error = setns(target)
        entered = not error
        if error == errno.EINVAL:  # e.g. a /run/netns file whose namespace was unmounted
            raise NamespaceNotFound(name, "not a network namespace")
        if error:
            raise NamespaceError(name, os.strerror(error))
        sock = factory()
        return sock
    finally:  # back to our own namespace on every way out (a no-op if setns failed)
        error = setns(own)
        if error and entered:
            if sock is not None:
                sock.close()
            raise NamespaceError(
                name,
                f"entered it, but could not return to this thread's own namespace"
                f" ({os.strerror(error)}); the thread is still inside it",
                Code.INTERNAL,
            )


def _load_setns() -> Callable[[int], int]:
    global _setns  # noqa: PLW0603 - loaded once, on first use
    os_setns = getattr(os, "setns", None)  # Python 3.12+
    if os_setns is not None:

        def setns(fd: int) -> int:
            try:
                os_setns(fd, CLONE_NEWNET)
            except OSError as err:
                return err.errno or errno.EINVAL
            return 0

    else:
        import _ctypes

        class _LibcFunction(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO  # returns a C int

        libc_setns = _LibcFunction(_ctypes.dlsym(_ctypes.dlopen(None), "setns"))  # type: ignore[arg-type]

        def setns(fd: int) -> int:
            if libc_setns(fd, CLONE_NEWNET) == 0:
                return 0
            return _ctypes.get_errno() or errno.EINVAL

    _setns = setns
    return setns
