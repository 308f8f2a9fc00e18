"""Views of the kernel the netlink tests compare pycni.netlink against, and a scripted socket.

- `ip -j` and `bridge -j` inside a namespace (ip_link, ip_addresses, ip_routes, ...) and
  pyroute2 opened inside it (`pyroute`, `pyroute_errno`): the independent readers.
- Namespaces set up for a test: `uplink` (a node's eth0 with its addresses), `veth_up`,
  `routed`, `crowded` (many routes, addresses and neighbours, for dumps and lookups).
- A scripted netlink socket (`scripted`, `ScriptedSocket`) that answers each request with the
  datagrams a script returns, and the datagrams themselves (`nlmsg`, `nlmsg_ack`, ...);
  `decode_as` reads a request back with pyroute2's decoder.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteError

from pycni.cni.ip import IP, Prefix
from pycni.lab.netns import Netns
from pycni.netlink import Rtnl, wire
from pycni.netlink import kernel as k


def ip(text: str) -> IP:
    return IP.parse(text)


def net(text: str) -> Prefix:
    return Prefix.parse(text)


def expect(actual: Any, **wanted: Any) -> None:
    """The named fields of `actual` are `wanted`: attributes of a record, keys of a dict
    (missing ones are None), fields of a pyroute2 message's header (not its attributes)."""

    def get(name: str) -> Any:
        if type(actual) is dict:
            return actual.get(name)
        if isinstance(actual, dict):  # pyroute2's messages: .get() would look at attributes
            return actual[name]
        return getattr(actual, name)

    assert {name: get(name) for name in wanted} == wanted


@contextmanager
def pyroute(ns: Netns) -> Iterator[IPRoute]:
    with IPRoute(netns=ns.name, flags=0) as ipr:
        yield ipr


def pyroute_errno(call: Callable[[], object]) -> int:
    with pytest.raises(PyrouteError) as caught:
        call()
    return int(caught.value.code)


def ip_link(ns: Netns, name: str) -> dict[str, Any]:
    (found,) = ns.ip_json("-d", "link", "show", "dev", name)
    return dict(found)


def run_ip(ns: Netns, command: str) -> str:
    """`ip <command>` inside the namespace (arguments split at spaces)."""
    return ns.ip(*command.split())


def ip_names(ns: Netns) -> set[str]:
    return set(ns.link_names())


def ip_addresses(ns: Netns, dev: str) -> list[dict[str, Any]]:
    (found,) = ns.ip_json("addr", "show", "dev", dev)
    return list(found["addr_info"])


def ip_routes(ns: Netns, *args: str) -> list[dict[str, Any]]:
    """`ip -j -d [-6] route show [args]`: options such as -6 go before the object."""
    options = [arg for arg in args if arg.startswith("-")]
    rest = [arg for arg in args if not arg.startswith("-")]
    return list(ns.ip_json("-d", *options, "route", "show", *rest))


def ip_route(routes: list[dict[str, Any]], dst: str, **match: Any) -> dict[str, Any]:
    found = [r for r in routes if r["dst"] == dst and all(r.get(n) == v for n, v in match.items())]
    assert len(found) == 1, (dst, match, routes)
    return found[0]


def ip_batch(ns: Netns, lines: list[str]) -> None:
    ns.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")


def bridge_fdb(ns: Netns, dev: str) -> list[dict[str, Any]]:
    done = ns.run(["bridge", "-j", "fdb", "show", "dev", dev])
    return list(json.loads(done.stdout or "[]"))


def uplink(ns: Netns, *addresses: str) -> None:
    """An eth0 with the node's own `addresses` (CIDRs), as a kind node's: a veth whose peer
    (eth0-peer) stays in the namespace, both up; IPv6 addresses without DAD."""
    ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
    for address in addresses:
        ns.ip("addr", "add", address, "dev", "eth0", *(["nodad"] if ":" in address else []))
    for link in ("eth0", "eth0-peer"):
        ns.ip("link", "set", link, "up")


@contextmanager
def veth_up(ns: Netns) -> Iterator[int]:
    """A veth pair v0/v1, both up (so IPv6 DAD runs); yields v0's index."""
    for command in ("link add v0 type veth peer name v1", "link set v0 up", "link set v1 up"):
        run_ip(ns, command)
    yield ip_link(ns, "v0")["ifindex"]


@contextmanager
def routed(ns: Netns) -> Iterator[int]:
    """v0 up with 10.1.0.5/24 and fd00::5/64; yields its index."""
    with veth_up(ns) as v0:
        ns.ip("addr", "add", "10.1.0.5/24", "dev", "v0")
        ns.ip("addr", "add", "fd00::5/64", "dev", "v0", "nodad")
        yield v0


@contextmanager
def crowded(ns: Netns) -> Iterator[tuple[int, int]]:
    """A node with many pods' worth of routes and addresses: v0 (10.1.0.5/24, fd00::5/64,
    default routes both ways) with 300 /32 host routes out of it, 16 more veth pairs up (an
    fe80 address and fe80::/64 route each), 4 routes of protocol 112, routes in tables 100 and
    1000, permanent neighbours on v0 and w0. Yields (v0, w0)."""
    with routed(ns) as v0:
        lines = ["route add default via 10.1.0.1", "route add ::/0 via fd00::1"]
        lines += [f"route add 10.50.{n // 250}.{n % 250 + 1}/32 dev v0" for n in range(300)]
        lines += [f"route add 10.60.{n}.0/24 via 10.1.0.1 proto 112" for n in range(3)]
        lines += ["route add fd60::/64 via fd00::1 proto 112"]
        lines += ["route add 10.70.0.0/16 via 10.1.0.1 table 100"]
        lines += ["route add 10.71.0.0/16 via 10.1.0.1 table 1000 proto 112"]
        for n in range(16):
            lines += [f"link add w{n} type veth peer name x{n}", f"link set w{n} up",
                      f"link set x{n} up"]  # fmt: skip
        lines += [
            f"neigh add 10.1.0.{n} lladdr 02:00:00:00:00:{n:02x} dev v0" for n in range(6, 16)
        ]
        ip_batch(ns, lines)
        w0 = ip_link(ns, "w0")["ifindex"]
        ns.ip("addr", "add", "10.2.0.5/24", "dev", "w0")
        ns.ip("neigh", "add", "10.2.0.9", "lladdr", "02:00:00:00:01:09", "dev", "w0")
        yield v0, w0


PORT = 4242


MSG_PEEK, MSG_TRUNC = 0x2, 0x20


def nlmsg(msg_type: int, flags: int, seq: int, payload: bytes, port: int = PORT) -> bytes:
    length = wire.NLMSG_HDR.size + len(payload)
    head = wire.NLMSG_HDR.pack(length, msg_type, flags, seq, port)
    return head + payload + b"\0" * (wire.align(length) - length)


def link_payload(index: int) -> bytes:
    return k.IFINFOMSG.pack(0, 1, index, k.IFF_UP, 0) + k.IFLA.encode(
        {"ifname": f"l{index}", "mtu": 1500, "linkinfo": {"kind": "bridge"}}
    )


def nlmsg_ack(seq: int, error: int = 0, flags: int = 0, tail: bytes = b"") -> bytes:
    return nlmsg(k.NLMSG_ERROR, flags, seq, struct.pack("=i", -error) + tail)


def nlmsg_done(seq: int, flags: int = k.NLM_F_MULTI) -> bytes:
    return nlmsg(k.NLMSG_DONE, flags, seq, struct.pack("=i", 0))


def nlmsg_header(request: bytes) -> tuple[int, int, int, int, int]:
    """(len, type, flags, seq, pid) of a request."""
    length, msg_type, flags, seq, pid = wire.NLMSG_HDR.unpack_from(request)
    return length, msg_type, flags, seq, pid


class ScriptedSocket:
    """Answers each request with the datagrams `script(request_number, request)` returns."""

    def __init__(self, script: Callable[[int, bytes], list[bytes]]) -> None:
        self.script = script
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []
        self.options: list[tuple[object, ...]] = []  # setsockopt calls, in order

    def setsockopt(self, *args: object) -> None:
        self.options.append(args)

    def bind(self, address: object) -> None:
        pass

    def getsockname(self) -> tuple[int, int]:
        return (PORT, 0)

    def close(self) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        self.queue += self.script(len(self.sent), bytes(data))
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        datagram = self.queue[0] if flags & MSG_PEEK else self.queue.pop(0)
        size = min(len(buf), len(datagram))
        buf[:size] = datagram[:size]
        return len(datagram) if flags & MSG_TRUNC else size


def scripted(script: Callable[[int, bytes], list[bytes]]) -> tuple[Rtnl, ScriptedSocket]:
    sock = ScriptedSocket(script)
    return Rtnl(sock=sock), sock  # type: ignore[arg-type]


def acking(number: int, request: bytes) -> list[bytes]:
    """Acks everything; answers RTM_GETLINK with link 3 (what a create returns)."""
    _, msg_type, _, seq, _ = nlmsg_header(request)
    if msg_type == k.RTM_GETLINK:
        return [nlmsg(k.RTM_NEWLINK, 0, seq, link_payload(3)), nlmsg_ack(seq)]
    return [nlmsg_ack(seq)]


def decode_as(request: bytes, message_class: Any) -> Any:
    message = message_class(request)
    message.decode()
    return message


def attrs_of(message: Any) -> dict[str, Any]:
    return {name: value for name, value, *_ in message["attrs"]}
