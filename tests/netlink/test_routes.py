"""pycni.netlink.rtnl's routes against the kernel, cross-checked with pyroute2 and `ip -j`:
added (gateways, onlink, tables, metrics), listed, replaced, deleted, errnos, and route_to as
`ip route get` answers it."""

from __future__ import annotations

import errno

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import AF_INET, AF_INET6, NetlinkError, NetlinkExists, NetlinkNotFound, Rtnl
from pycni.netlink import kernel as k
from tests.support.netlink import (
    crowded,
    expect,
    ip,
    ip_link,
    ip_route,
    ip_routes,
    net,
    pyroute,
    pyroute_errno,
    routed,
    run_ip,
)


@pytest.mark.netns
def test_routes_we_add_are_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_route(net("0.0.0.0/0"), gateway=ip("10.1.0.1"))
        rt.add_route(net("::/0"), gateway=ip("fd00::1"), oif=v0)
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"), metric=10, mtu=1300, advmss=1200,
                     src=ip("10.1.0.5"), protocol=k.RTPROT_STATIC)  # fmt: skip
        rt.add_route(net("10.8.0.0/16"), gateway=ip("192.168.7.1"), oif="v0", onlink=True,
                     table=100)  # fmt: skip
        rt.add_route(net("10.7.0.0/16"), oif=v0)
        rt.add_route(net("10.6.0.0/16"), oif=v0, table=1000, scope=k.RT_SCOPE_UNIVERSE)
        rt.add_route(net("fd01::/64"), gateway=ip("fd00::1"), mtu=1280)
        theirs = ip_routes(netns, "table", "all")
    expect(ip_route(theirs, "default", gateway="10.1.0.1"), dev="v0", protocol="boot",
           scope="global", table="main")  # fmt: skip
    expect(ip_route(theirs, "default", gateway="fd00::1"), dev="v0", metric=1024)
    expect(ip_route(theirs, "10.9.0.0/16"), metric=10, prefsrc="10.1.0.5", protocol="static",
           metrics=[{"mtu": 1300, "advmss": 1200}])  # fmt: skip
    expect(ip_route(theirs, "10.8.0.0/16"), table="100", flags=["onlink"], gateway="192.168.7.1")
    expect(ip_route(theirs, "10.7.0.0/16"), scope="link", gateway=None)
    expect(ip_route(theirs, "10.6.0.0/16"), table="1000", scope="global")
    expect(ip_route(theirs, "fd01::/64"), metrics=[{"mtu": 1280}])
    with pyroute(netns) as ipr:  # a dump: get_routes(dst=...) would be a lookup
        routes = {(r.get_attr("RTA_DST"), r.get_attr("RTA_TABLE")): r for r in ipr.get_routes()}
    onlink = routes["10.8.0.0", 100]
    assert onlink["flags"] & k.RTNH_F_ONLINK and onlink.get_attr("RTA_GATEWAY") == "192.168.7.1"
    detailed = routes["10.9.0.0", k.RT_TABLE_MAIN]
    assert detailed.get_attr("RTA_PRIORITY") == 10
    assert detailed.get_attr("RTA_METRICS").get_attr("RTAX_ADVMSS") == 1200


@pytest.mark.netns
def test_routes_ip_adds_are_what_we_list(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        for command in (
            "route add default via 10.1.0.1",
            "route add 10.9.0.0/16 via 10.1.0.1 metric 10 mtu 1300 advmss 1200 src 10.1.0.5"
            " proto static",
            "route add 10.8.0.0/16 via 192.168.7.1 dev v0 onlink table 100",
            "route add 10.7.0.0/16 dev v0",
            "-6 route add default via fd00::1 dev v0",
            "-6 route add fd01::/64 via fd00::1 mtu 1280",
        ):
            run_ip(netns, command)
        ours = rt.routes()
        main = {(str(r.dst), r.family): r for r in ours}
        expect(main["0.0.0.0/0", AF_INET], gateway=ip("10.1.0.1"), oif=v0, protocol=k.RTPROT_BOOT,
               table=k.RT_TABLE_MAIN, scope=k.RT_SCOPE_UNIVERSE)  # fmt: skip
        expect(main["10.9.0.0/16", AF_INET], metric=10, mtu=1300, advmss=1200, src=ip("10.1.0.5"),
               protocol=k.RTPROT_STATIC)  # fmt: skip
        expect(main["10.7.0.0/16", AF_INET], scope=k.RT_SCOPE_LINK, gateway=None, oif=v0)
        expect(main["10.1.0.0/24", AF_INET], protocol=k.RTPROT_KERNEL, src=ip("10.1.0.5"))
        expect(main["::/0", AF_INET6], gateway=ip("fd00::1"), metric=1024)
        expect(main["fd01::/64", AF_INET6], mtu=1280, gateway=ip("fd00::1"))
        assert ("10.8.0.0/16", AF_INET) not in main  # table 100, not main
        (in_100,) = rt.routes(table=100)
        expect(in_100, dst=net("10.8.0.0/16"), onlink=True, gateway=ip("192.168.7.1"), table=100)
        assert len(ours) == len(ip_routes(netns)) + len(ip_routes(netns, "-6"))
        v6 = {str(r.dst) for r in rt.routes(AF_INET6)}
        assert v6 == {"::/0", "fd00::/64", "fd01::/64", "fe80::/64"}
        assert any(r.table == k.RT_TABLE_LOCAL for r in rt.routes(table=None))


@pytest.mark.netns
def test_route_replace_delete_and_errnos(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"))
        with pytest.raises(NetlinkExists) as exists:
            rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"))
        assert exists.value.errno == errno.EEXIST
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"), replace=True)
        assert ip_route(ip_routes(netns), "10.9.0.0/16")["gateway"] == "10.1.0.2"
        with pytest.raises(NetlinkNotFound) as wrong_gateway:
            rt.delete_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"))
        assert wrong_gateway.value.errno == errno.ESRCH
        rt.delete_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"), oif=v0)
        assert not [r for r in ip_routes(netns) if r["dst"] == "10.9.0.0/16"]
        for dst, code in (
            (net("10.9.0.0/16"), errno.ESRCH),
            (net("fd09::/64"), errno.ESRCH),
            (net("0.0.0.0/0"), errno.ESRCH),
            (net("::/0"), errno.ENOENT),  # the lookup ends at the table's null entry
        ):
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_route(dst)
            assert caught.value.errno == code, dst
            rt.delete_route(dst, missing_ok=True)
        v6_default = lambda: ipr.route("del", dst="::/0", family=AF_INET6)  # noqa: E731
        assert pyroute_errno(v6_default) == errno.ENOENT
        assert pyroute_errno(lambda: ipr.route("del", dst="10.9.0.0/16")) == errno.ESRCH
        with pytest.raises(NetlinkError) as host_bits:
            rt.add_route(net("10.9.0.5/16"), oif=v0)
        assert host_bits.value.errno == errno.EINVAL
        assert host_bits.value.kernel_message  # the kernel says what is wrong
        with pytest.raises(ValueError, match="IPv6"):
            rt.add_route(net("10.9.0.0/16"), gateway=ip("fd00::1"))


@pytest.mark.netns
def test_route_to_is_what_ip_route_get_says(netns: Netns, pod_ns: Netns) -> None:
    with crowded(netns), Rtnl(netns=netns.path) as rt:
        for target in ("10.50.0.7", "192.0.2.1", "10.2.0.9", "fd00::77", "2001:db8::1"):
            ours = rt.route_to(ip(target))
            (theirs,) = netns.ip_json("route", "get", target)
            assert ours is not None and ours.oif == ip_link(netns, theirs["dev"])["ifindex"]
            gateway = str(ours.gateway) if ours.gateway else None
            assert gateway == theirs.get("gateway"), (target, theirs)
        local = rt.route_to(ip("10.1.0.5"))
        assert local is not None and local.type == k.RTN_LOCAL
    with Rtnl(netns=pod_ns.path) as bare:  # no routes at all: none to anywhere
        assert bare.route_to(ip("192.0.2.1")) is None
        assert bare.route_to(ip("2001:db8::1")) is None
