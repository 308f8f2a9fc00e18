"""pycni.netlink.rtnl's dumps against the kernel: complete when they come in many datagrams,
and filtered by the kernel (strict dumps): each filtered dump is exactly the whole dump
filtered here, as pyroute2's unfiltered dumps confirm, for a fraction of the bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import AF_BRIDGE, AF_INET, AF_INET6, NetlinkNotFound, Rtnl, namespace
from pycni.netlink import kernel as k
from pycni.netlink import socket as netlink_socket
from tests.support.netlink import (
    MSG_PEEK,
    crowded,
    ip,
    ip_batch,
    ip_names,
    ip_routes,
    pyroute,
    routed,
)


class CountingSocket:
    """A real socket that counts the datagrams read from it."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.datagrams = 0
        self.received = 0  # bytes

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        size = int(self.sock.recv_into(buf, nbytes, flags))
        if not flags & MSG_PEEK:
            self.datagrams += 1
            self.received += size
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.netns
def test_dumps_of_300_links_and_300_routes_are_complete(netns: Netns) -> None:
    ip_batch(netns, [f"link add b{i} type bridge" for i in range(300)])
    with routed(netns):
        ip_batch(
            netns,
            [f"route add 10.{100 + i // 200}.{i % 200}.0/24 via 10.1.0.1" for i in range(300)]
            + [f"route add fd10:{i:x}::/64 via fd00::1" for i in range(300)],
        )
        sock = CountingSocket(namespace.socket_in_netns(netns.path, netlink_socket._new_socket))
        with Rtnl(netns=netns.path, sock=sock) as rt:  # type: ignore[arg-type]
            links = rt.links()
            assert len(links) == 303  # lo, v0, v1 and the bridges
            assert {link.name for link in links} == ip_names(netns)
            assert sock.datagrams > 2  # the dump really came in parts
            before = sock.datagrams
            routes = rt.routes()
            assert len([r for r in routes if r.dst.ip.version == 4 and r.gateway]) == 300
            assert len([r for r in routes if r.dst.ip.version == 6 and r.gateway]) == 300
            assert len(routes) == len(ip_routes(netns)) + len(ip_routes(netns, "-6"))
            assert sock.datagrams - before > 2


class RouteKey(NamedTuple):
    """A route as both views can name it: ours (Route) and pyroute2's (rtmsg)."""

    family: int
    dst: str
    oif: int | None
    protocol: int
    table: int
    type: int


def _route_key(route: Any) -> RouteKey:
    return RouteKey(
        route.family, str(route.dst), route.oif, route.protocol, route.table, route.type
    )


def _pyroute_route_key(msg: Any) -> RouteKey:
    anywhere = "0.0.0.0" if msg["family"] == AF_INET else "::"
    dst = f"{msg.get_attr('RTA_DST') or anywhere}/{msg['dst_len']}"
    return RouteKey(
        msg["family"], dst, msg.get_attr("RTA_OIF"), msg["proto"], msg.get_attr("RTA_TABLE"),
        msg["type"],
    )  # fmt: skip


STABLE_ATTEMPTS = 25


def _neighbour_keys(neighbours: Any) -> list[tuple[int, str]]:
    return sorted((n.index, str(n.dst)) for n in neighbours)


@pytest.mark.netns
def test_filtered_dumps_are_the_whole_dump_filtered_and_the_kernel_does_it(netns: Netns) -> None:
    """Each filtered dump returns exactly what the whole dump, filtered here, holds, read by us
    and by pyroute2 (its own socket, whole dumps, nothing filtered by the kernel)."""
    with crowded(netns) as (v0, w0), Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        everything = rt.routes(table=None)
        main = [r for r in everything if r.table == k.RT_TABLE_MAIN]
        assert len(main) > 300 and any(r.table == 1000 for r in everything)
        theirs = [_pyroute_route_key(r) for r in ipr.get_routes()]  # every table
        assert sorted(theirs) == sorted(map(_route_key, everything))
        cases: list[tuple[dict[str, Any], Callable[[RouteKey], bool]]] = [
            ({}, lambda r: r.table == k.RT_TABLE_MAIN),
            ({"protocol": 112}, lambda r: r.table == k.RT_TABLE_MAIN and r.protocol == 112),
            ({"table": None, "protocol": 112}, lambda r: r.protocol == 112),
            ({"oif": v0}, lambda r: r.table == k.RT_TABLE_MAIN and r.oif == v0),
            ({"oif": w0}, lambda r: r.table == k.RT_TABLE_MAIN and r.oif == w0),
            ({"table": None, "oif": w0}, lambda r: r.oif == w0),
            ({"table": 100}, lambda r: r.table == 100),
            ({"table": 1000}, lambda r: r.table == 1000),
            ({"table": 1000, "protocol": 112}, lambda r: r.table == 1000 and r.protocol == 112),
            ({"family": AF_INET, "protocol": 112},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET and r.protocol == 112),
            ({"family": AF_INET6, "oif": v0},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET6 and r.oif == v0),
            ({"dst_len": 0}, lambda r: r.table == k.RT_TABLE_MAIN and r.dst.endswith("/0")),
            ({"family": AF_INET6, "dst_len": 0},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET6
             and r.dst.endswith("/0")),
        ]  # fmt: skip
        for kwargs, wanted in cases:
            got = sorted(map(_route_key, rt.routes(**kwargs)))
            assert got == sorted(r for r in map(_route_key, everything) if wanted(r)), kwargs
            assert got == sorted(r for r in theirs if wanted(r)), kwargs
            assert got, kwargs  # every case selects something: the comparison means something
        addresses = rt.addresses()
        their_addresses = ipr.get_addr()
        for index in (v0, w0):
            for family in (k.AF_UNSPEC, AF_INET, AF_INET6):
                got_a = sorted(str(a.prefix) for a in rt.addresses(index, family))
                want_a = sorted(
                    str(a.prefix) for a in addresses
                    if a.index == index and family in (k.AF_UNSPEC, a.family)
                )  # fmt: skip
                assert got_a == want_a and got_a, (index, family)
                seen_a = sorted(
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in their_addresses
                    if a["index"] == index and family in (k.AF_UNSPEC, a["family"])
                )  # fmt: skip
                assert got_a == seen_a, (index, family)
        # The kernel adds neighbours of its own for a while after a link comes up (IPv6
        # multicast groups it joins: MLD, duplicate address detection): the three views are
        # compared only when taken between two whole dumps that agree.
        for _ in range(STABLE_ATTEMPTS):
            neighbours = rt.neighbours()
            filtered = {index: rt.neighbours(index) for index in (v0, w0)}
            their_neighbours = ipr.get_neighbours()
            if _neighbour_keys(rt.neighbours()) == _neighbour_keys(neighbours):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the neighbour table kept changing over {STABLE_ATTEMPTS} dumps")
        for index in (v0, w0):
            got_n = sorted(str(n.dst) for n in filtered[index])
            assert got_n == sorted(str(n.dst) for n in neighbours if n.index == index) and got_n
            seen_n = sorted(
                n.get_attr("NDA_DST") for n in their_neighbours
                if n["ifindex"] == index and n["family"] in (AF_INET, AF_INET6)
            )  # fmt: skip
            assert got_n == seen_n, index
        # FDBs: a bridge with four ports (each with its own entries) and a VXLAN device's own
        lines = ["link add br0 type bridge", "link set br0 up"]
        lines += [f"link set w{n} master br0" for n in range(1, 5)]
        lines += ["link add vx0 type vxlan id 1 dstport 8472 local 10.1.0.5 nolearning"]
        lines += [f"link set x{n} up" for n in range(1, 5)]
        ip_batch(netns, lines)
        vx0 = rt.get_link("vx0").index
        for n in range(1, 6):
            rt.add_fdb_entry(vx0, f"02:11:22:33:44:{n:02x}", ip(f"10.1.0.{n + 20}"))
        fdb = rt.fdb_entries()
        their_fdb = ipr.get_neighbours(family=AF_BRIDGE)
        for index in (vx0, rt.get_link("w1").index, rt.get_link("br0").index):
            got_f = sorted(f"{e.mac} {e.dst} {e.flags}" for e in rt.fdb_entries(index))
            want_f = sorted(f"{e.mac} {e.dst} {e.flags}" for e in fdb if e.index == index)
            assert got_f == want_f and got_f, index
            seen_f = sorted(
                f"{e.get_attr('NDA_LLADDR')} {e.get_attr('NDA_DST')} {e['flags']}"
                for e in their_fdb if e["ifindex"] == index
            )  # fmt: skip
            assert got_f == seen_f, index


@pytest.mark.netns
def test_the_kernel_does_the_filtering_of_a_strict_dump(netns: Netns) -> None:
    """It sends a fraction of the bytes of the whole dump."""
    sock = CountingSocket(namespace.socket_in_netns(netns.path, netlink_socket._new_socket))
    with crowded(netns) as (v0, _), Rtnl(netns=netns.path, sock=sock) as rt:  # type: ignore[arg-type]
        before = sock.received
        rt.routes()
        whole = sock.received - before
        before = sock.received
        assert len(rt.routes(protocol=112)) == 4
        filtered = sock.received - before
        before = sock.received
        rt.addresses(v0, AF_INET)
        one_link = sock.received - before
    assert filtered * 20 < whole, (filtered, whole)
    assert one_link < 1000, one_link  # v0's one IPv4 address, not every link's


@pytest.mark.netns
def test_a_filter_naming_no_table_or_link_that_exists_lists_nothing(netns: Netns) -> None:
    """A strict dump refuses a table or link that does not exist (ENOENT "FIB table does not
    exist", ENODEV); the whole dump filtered holds nothing for it, and so do we, as pyroute2's
    unfiltered dumps confirm. (A gone link named by name is still NetlinkNotFound.)"""
    with crowded(netns) as (v0, _), Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        missing = max(link.index for link in rt.links()) + 100
        assert rt.routes(AF_INET, table=100) and not rt.routes(AF_INET6, table=100)
        for family in (k.AF_UNSPEC, AF_INET, AF_INET6):
            assert rt.routes(family, table=4242) == [], family
            assert rt.routes(family, table=4242, protocol=112) == [], family
            assert rt.routes(family, oif=missing) == [], family
            assert rt.routes(family, table=None, oif=missing) == [], family
            assert rt.addresses(missing, family) == [], family
        assert rt.routes(AF_INET6, table=100) == []  # table 100 is IPv4's only
        assert rt.neighbours(missing) == [] and rt.fdb_entries(missing) == []
        theirs_routes = list(ipr.get_routes())  # every table: a dump, nothing filtered
        assert not [r for r in theirs_routes if r.get_attr("RTA_TABLE") == 4242]
        assert not [r for r in theirs_routes if r.get_attr("RTA_OIF") == missing]
        assert not [a for a in ipr.get_addr() if a["index"] == missing]
        assert rt.routes(oif=v0) and rt.addresses(v0)  # the same calls do find what exists
        with pytest.raises(NetlinkNotFound):
            rt.addresses("no-such-link")
