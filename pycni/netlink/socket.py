"""`NetlinkSocket`: the exchange every netlink protocol pycni speaks goes through.

One socket of one netlink protocol (NETLINK_ROUTE for pycni.netlink.rtnl's Rtnl,
NETLINK_NETFILTER for pycni.netlink.conntrack's Conntrack) in the current network namespace or
inside another one (pycni.netlink.namespace), and the exchange: every request carries NLM_F_ACK
and waits for its answer, the kernel's error (raised as NetlinkError with the exact errno and,
when the kernel gives one, its extended-ack message) or its ack. Answers are matched by sequence
number and port id; anything else on the socket (the tail of a dump abandoned by an exception)
is skipped. Dumps are read to NLMSG_DONE and run again when the kernel flags them
NLM_F_DUMP_INTR (the tables changed while they were read), up to DUMP_ATTEMPTS times.

Which errnos mean "not there" depends on the request, so each request passes its own set
(`gone`), answered as NetlinkNotFound; `ignore_not_found(missing_ok)` is how a delete with
`missing_ok` lets that pass.
"""

from __future__ import annotations

import _socket
import errno
import struct

from pycni.netlink import kernel as k
from pycni.netlink.errors import NetlinkError, NetlinkExists, NetlinkNotFound
from pycni.netlink.namespace import socket_in_netns
from pycni.netlink.wire import align, iter_messages, pack_message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self, TypeVar

    T = TypeVar("T")

DUMP_ATTEMPTS = 10
RECV_SIZE = 1 << 16  # a dump datagram is at most 32 KiB; larger messages grow the buffer
_ERRNO = struct.Struct("=i")


def _new_socket(protocol: int = k.NETLINK_ROUTE) -> _socket.socket:
    return _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)


class NetlinkSocket:
    """One netlink socket (of protocol PROTOCOL) in the current network namespace or, with
    `netns` (a path such as /run/netns/NAME or /proc/PID/ns/net, or an open namespace fd),
    inside that one; the process itself stays where it is. Use it in a `with` block.

    The exchange every request goes through: NLM_F_ACK on each, answers matched by sequence
    number and port id, the kernel's errno exact (and its extended-ack message), dumps read to
    NLMSG_DONE and run again when interrupted. Rtnl (rtnetlink) and pycni.netlink.conntrack's
    Conntrack (ctnetlink) add the requests.

    `sock` is an open, not yet bound socket to use instead of a new one (`netns` then only
    names it in messages); the tests feed a scripted one through it.
    """

    PROTOCOL = k.NETLINK_ROUTE

    def __init__(
        self, netns: str | int | None = None, *, sock: _socket.socket | None = None
    ) -> None:
        self.netns = netns
        self._where = ""
        if isinstance(netns, str):
            self._where = f" in netns '{netns}'"
        elif netns is not None:
            self._where = f" in netns fd {netns}"
        if sock is None:
            protocol = self.PROTOCOL

            def factory() -> _socket.socket:
                return _new_socket(protocol)

            sock = factory() if netns is None else socket_in_netns(netns, factory)
        try:
            for option in (k.NETLINK_EXT_ACK, k.NETLINK_CAP_ACK):
                try:
                    sock.setsockopt(k.SOL_NETLINK, option, 1)
                except OSError:  # before Linux 4.12 / 4.3: plain errors, whole echoes
                    pass
            sock.bind((0, 0))
            self._port: int = sock.getsockname()[0]
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        self._buf = bytearray(RECV_SIZE)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self,
        msg_type: int,
        flags: int,
        body: bytes,
        what: str,
        gone: frozenset[int] = frozenset(),
        parse: Callable[[memoryview], T | None] | None = None,
    ) -> list[T]:
        """Send one request and wait for its ack; the answers before it, parsed."""
        return self._exchange(msg_type, flags, body, what, gone, parse)[0]

    def _dump(
        self,
        msg_type: int,
        body: bytes,
        what: str,
        parse: Callable[[memoryview], T | None],
        *,
        strict: bool = False,
        nothing: frozenset[int] = frozenset(),
    ) -> list[T]:
        """With `strict`, the request goes out on a strict-checking socket, so the kernel
        applies the filters in its header and attributes (the flag is read when a dump
        starts, and cleared again once it is read). `nothing`: the errnos with which a strict
        dump refuses a filter naming no table or link that exists; the answer is then empty,
        as the whole dump filtered here would be."""
        for _ in range(DUMP_ATTEMPTS):
            if strict:
                self._set_strict(True)
            try:
                found, interrupted = self._exchange(
                    msg_type, k.NLM_F_DUMP, body, what, frozenset(), parse
                )
            except NetlinkError as err:
                if err.errno in nothing:
                    return []
                raise
            finally:
                if strict:
                    self._set_strict(False)
            if not interrupted:
                return found
        raise NetlinkError(
            errno.EINTR,
            f"{what}{self._where}",
            f"the dump was interrupted by changes {DUMP_ATTEMPTS} times in a row",
        )

    def _exchange(
        self,
        msg_type: int,
        flags: int,
        body: bytes,
        what: str,
        gone: frozenset[int],
        parse: Callable[[memoryview], T | None] | None,
    ) -> tuple[list[T], bool]:
        self._seq = self._seq % 0xFFFFFFFF + 1
        seq = self._seq
        dump = flags & k.NLM_F_DUMP == k.NLM_F_DUMP
        request = pack_message(msg_type, flags | k.NLM_F_REQUEST | k.NLM_F_ACK, seq, body)
        try:
            self._sock.send(request)
        except OSError as err:  # ENOBUFS, ...: the request never reached the kernel
            raise NetlinkError(err.errno or errno.EIO, what + self._where) from None
        found: list[T] = []
        interrupted = False
        while True:
            for answer_type, answer_flags, answer_seq, port, payload in iter_messages(
                self._read(what)
            ):
                if answer_seq != seq or port != self._port:
                    continue  # not an answer to this request (e.g. an abandoned dump's tail)
                if answer_flags & k.NLM_F_DUMP_INTR:
                    interrupted = True
                if answer_type == k.NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(payload)[0]
                    if code:
                        raise self._error(code, answer_flags, payload, what, gone, done=False)
                    if not dump:
                        return found, interrupted
                elif answer_type == k.NLMSG_DONE:
                    if dump:
                        code = -_ERRNO.unpack_from(payload)[0] if len(payload) >= 4 else 0
                        if code:
                            raise self._error(code, answer_flags, payload, what, gone, done=True)
                        return found, interrupted
                elif answer_type >= k.NLMSG_MIN_TYPE and parse is not None:
                    item = parse(payload)
                    if item is not None:
                        found.append(item)

    def _set_strict(self, on: bool) -> None:
        try:
            self._sock.setsockopt(k.SOL_NETLINK, k.NETLINK_GET_STRICT_CHK, int(on))
        except OSError:  # before Linux 4.20: no kernel-side filters, ours still apply
            pass

    def _read(self, what: str) -> memoryview:
        """One datagram, whole: peek at its size first and grow the buffer if need be."""
        try:
            size = self._sock.recv_into(self._buf, 0, _socket.MSG_PEEK | _socket.MSG_TRUNC)
            if size > len(self._buf):
                self._buf = bytearray(align(size))
            size = self._sock.recv_into(self._buf)
        except OSError as err:
            raise NetlinkError(err.errno or errno.EIO, what + self._where) from None
        return memoryview(self._buf)[:size]

    def _error(
        self,
        code: int,
        answer_flags: int,
        payload: memoryview,
        what: str,
        gone: frozenset[int],
        *,
        done: bool,
    ) -> NetlinkError:
        message = ""
        if answer_flags & k.NLM_F_ACK_TLVS:  # extended ack: the kernel's own words
            if done:
                offset = 4  # NLMSG_DONE: the errno, then the attributes
            elif answer_flags & k.NLM_F_CAPPED or len(payload) < 8:
                offset = 4 + 16  # NLMSG_ERROR: the errno, the request's header only, ...
            else:
                offset = 4 + align(struct.unpack_from("=I", payload, 4)[0])  # ... or all of it
            message = k.NLMSGERR.decode(payload[offset:]).get("msg", "")
        if code in gone:
            return NetlinkNotFound(code, what + self._where, message)
        if code == errno.EEXIST:
            return NetlinkExists(code, what + self._where, message)
        return NetlinkError(code, what + self._where, message)


class _NotFoundFilter:
    """The context manager `ignore_not_found` returns (no contextlib: it costs an import)."""

    __slots__ = ("_ignore",)

    def __init__(self, ignore: bool) -> None:
        self._ignore = ignore

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return self._ignore and exc_type is not None and issubclass(exc_type, NetlinkNotFound)


_IGNORE_NOT_FOUND = _NotFoundFilter(True)
_RAISE_NOT_FOUND = _NotFoundFilter(False)


def ignore_not_found(missing_ok: bool) -> _NotFoundFilter:
    """`with ignore_not_found(missing_ok): ...`: a NetlinkNotFound raised inside the block is
    swallowed when `missing_ok` is true and raised as is otherwise. The one spelling of a
    delete's "already gone is fine unless the caller says it is not"."""
    return _IGNORE_NOT_FOUND if missing_ok else _RAISE_NOT_FOUND
