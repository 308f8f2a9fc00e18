"""pycni.netlink.rtnl's addresses against the kernel, cross-checked with pyroute2 and `ip -j`:
added, listed, replaced and deleted, flags (nodad, noprefixroute) and errnos."""

from __future__ import annotations

import errno

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import AF_INET, AF_INET6, NetlinkExists, NetlinkNotFound, Rtnl
from pycni.netlink import kernel as k
from tests.support.netlink import (
    expect,
    ip,
    ip_addresses,
    ip_routes,
    net,
    pyroute,
    pyroute_errno,
    veth_up,
)


@pytest.mark.netns
def test_addresses_we_add_are_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_address(v0, net("10.1.0.5/24"))
        rt.add_address("v0", net("10.2.0.5/31"))
        rt.add_address(v0, net("fd00:1::5/64"), nodad=True, noprefixroute=True)
        rt.add_address(v0, net("fd00::6/64"))
        theirs = {(a["local"], a["prefixlen"]): a for a in ip_addresses(netns, "v0")}
        assert theirs["10.1.0.5", 24]["broadcast"] == "10.1.0.255"
        assert "broadcast" not in theirs["10.2.0.5", 31]
        expect(theirs["fd00:1::5", 64], nodad=True, noprefixroute=True, tentative=None)
        assert theirs["fd00::6", 64].get("tentative") is True  # DAD takes a second or more
        routes6 = {r["dst"] for r in ip_routes(netns, "-6")}
        assert "fd00::/64" in routes6 and "fd00:1::/64" not in routes6
        flags = {a.get_attr("IFA_ADDRESS"): a.get_attr("IFA_FLAGS") for a in ipr.get_addr(index=v0)}
        both = k.IFA_F_NODAD | k.IFA_F_NOPREFIXROUTE
        assert flags["fd00:1::5"] & both == both and not flags["fd00::6"] & both
        with pytest.raises(NetlinkExists) as exists:
            rt.add_address(v0, net("10.1.0.5/24"))
        assert exists.value.errno == errno.EEXIST
        again = lambda: ipr.addr("add", index=v0, address="10.1.0.5", prefixlen=24)  # noqa: E731
        assert pyroute_errno(again) == errno.EEXIST
        rt.add_address(v0, net("10.1.0.5/24"), replace=True)
        rt.add_address(v0, net("fd00:1::5/64"), replace=True, nodad=True)
        assert len(ip_addresses(netns, "v0")) == 5  # with the link-local one


@pytest.mark.netns
def test_addresses_ip_adds_are_what_we_list(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        netns.ip("addr", "add", "10.1.0.5/24", "brd", "+", "dev", "v0")
        netns.ip("addr", "add", "10.3.0.1/16", "dev", "v0", "label", "v0:x", "noprefixroute")
        netns.ip("addr", "add", "fd00::5/64", "dev", "v0", "nodad")
        netns.ip("addr", "add", "10.9.0.1/8", "dev", "v1")
        ours = {str(a.prefix): a for a in rt.addresses(v0)}
        theirs = ip_addresses(netns, "v0")
        assert len(ours) == len(theirs)
        for address in theirs:
            expect(
                ours[f"{address['local']}/{address['prefixlen']}"],
                index=v0,
                family=AF_INET if address["family"] == "inet" else AF_INET6,
                scope={"global": 0, "link": 253, "host": 254}[address["scope"]],
                tentative=bool(address.get("tentative")),
                label=address.get("label"),
                broadcast=ip(address["broadcast"]) if "broadcast" in address else None,
            )
            flags = ours[f"{address['local']}/{address['prefixlen']}"].flags
            assert bool(flags & k.IFA_F_NODAD) == bool(address.get("nodad"))
            assert bool(flags & k.IFA_F_NOPREFIXROUTE) == bool(address.get("noprefixroute"))
        assert [str(a.prefix) for a in rt.addresses("v0", AF_INET)] == [
            "10.1.0.5/24",
            "10.3.0.1/16",
        ]
        everywhere = {str(a.prefix) for a in rt.addresses(family=AF_INET)}
        assert everywhere == {"10.1.0.5/24", "10.3.0.1/16", "10.9.0.1/8"}  # lo is down: no 127/8


@pytest.mark.netns
def test_address_delete_and_its_errnos(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_address(v0, net("10.1.0.5/24"))
        rt.add_address(v0, net("fd00::5/64"), nodad=True)
        rt.delete_address(v0, net("10.1.0.5/24"))
        rt.delete_address("v0", net("fd00::5/64"))
        assert [a["local"] for a in ip_addresses(netns, "v0") if a["scope"] == "global"] == []
        for prefix in (net("10.1.0.5/24"), net("fd00::5/64")):
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_address(v0, prefix)
            assert caught.value.errno == errno.EADDRNOTAVAIL
            rt.delete_address(v0, prefix, missing_ok=True)
        gone = lambda: ipr.addr("del", index=v0, address="10.1.0.5", prefixlen=24)  # noqa: E731
        assert pyroute_errno(gone) == errno.EADDRNOTAVAIL
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_address("v9", net("10.1.0.5/24"))
        assert no_link.value.errno == errno.ENODEV
        with pytest.raises(NetlinkNotFound) as no_index:
            rt.add_address(4242, net("10.1.0.5/24"))
        assert no_index.value.errno == errno.ENODEV
