"""pycni.netlink.rtnl's requests as pyroute2 decodes them (no kernel needed): links,
addresses, routes, neighbours, FDB entries, filtered dumps and route lookups, each field as
intended."""

from __future__ import annotations

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pycni.netlink import AF_BRIDGE, AF_INET, AF_INET6
from pycni.netlink import kernel as k
from tests.support.netlink import (
    acking,
    attrs_of,
    decode_as,
    expect,
    ip,
    net,
    nlmsg_ack,
    nlmsg_done,
    nlmsg_header,
    scripted,
)


def test_link_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(acking)
    rt.create_ipip("tun0", local=ip("10.0.0.1"), remote=ip("10.0.0.2"), underlay=3, ttl=64,
                   pmtudisc=True, mtu=1480, up=True)  # fmt: skip
    request = decode_as(sock.sent[-2], ifinfmsg)
    assert (
        request["header"]["flags"] == k.NLM_F_REQUEST | k.NLM_F_ACK | k.NLM_F_CREATE | k.NLM_F_EXCL
    )
    expect(request, flags=k.IFF_UP, change=k.IFF_UP)
    assert [request.get_attr("IFLA_IFNAME"), request.get_attr("IFLA_MTU")] == ["tun0", 1480]
    info = request.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "ipip"
    assert attrs_of(info.get_attr("IFLA_INFO_DATA")) == {
        "IFLA_IPIP_LINK": 3,
        "IFLA_IPIP_LOCAL": "10.0.0.1",
        "IFLA_IPIP_REMOTE": "10.0.0.2",
        "IFLA_IPIP_TTL": 64,
        "IFLA_IPIP_PMTUDISC": 1,
    }

    rt.create_veth("veth0", "eth0", peer_netns=9, mtu=1400, mac="02:00:00:00:00:01",
                   peer_mac="02:00:00:00:00:02")  # fmt: skip
    request = decode_as(sock.sent[-2], ifinfmsg)
    assert [request.get_attr(f"IFLA_{n}") for n in ("IFNAME", "MTU", "ADDRESS")] == [
        "veth0",
        1400,
        "02:00:00:00:00:01",
    ]
    peer = request.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    expect(peer, flags=0, change=0)
    assert attrs_of(peer) == {
        "IFLA_IFNAME": "eth0",
        "IFLA_MTU": 1400,
        "IFLA_ADDRESS": "02:00:00:00:00:02",
        "IFLA_NET_NS_FD": 9,
    }

    rt.set_link(3, up=False, promiscuous=True, mtu=1300, master=4)
    request = decode_as(sock.sent[-1], ifinfmsg)
    expect(request, index=3, flags=k.IFF_PROMISC, change=k.IFF_UP | k.IFF_PROMISC)
    assert attrs_of(request) == {"IFLA_MTU": 1300, "IFLA_MASTER": 4}

    rt.set_bridge_port(3, hairpin=True, learning=False)
    request = decode_as(sock.sent[-1], ifinfmsg)
    expect(request, family=AF_BRIDGE, index=3)
    assert nlmsg_header(sock.sent[-1])[1] == k.RTM_SETLINK
    protinfo = request.get_attr("IFLA_PROTINFO")
    assert (protinfo.get_attr("IFLA_BRPORT_MODE"), protinfo.get_attr("IFLA_BRPORT_LEARNING")) == (
        1,
        0,
    )


def test_address_route_and_neighbour_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(acking)
    rt.add_address(3, net("fd00::5/64"), nodad=True, noprefixroute=True, replace=True)
    request = decode_as(sock.sent[-1], ifaddrmsg)
    modifiers = request["header"]["flags"] & (k.NLM_F_CREATE | k.NLM_F_REPLACE | k.NLM_F_EXCL)
    assert modifiers == k.NLM_F_CREATE | k.NLM_F_REPLACE
    expect(request, family=AF_INET6, prefixlen=64, index=3)
    expect(attrs_of(request), IFA_FLAGS=k.IFA_F_NODAD | k.IFA_F_NOPREFIXROUTE, IFA_LOCAL="fd00::5")

    rt.add_address(3, net("10.1.0.5/24"))
    expect(attrs_of(decode_as(sock.sent[-1], ifaddrmsg)), IFA_BROADCAST="10.1.0.255")

    rt.add_route(net("10.9.0.0/16"), gateway=ip("192.168.7.1"), oif=3, onlink=True, table=1000,
                 metric=7, mtu=1300, advmss=1200, src=ip("10.1.0.5"))  # fmt: skip
    request = decode_as(sock.sent[-1], rtmsg)
    expect(request, family=AF_INET, dst_len=16, flags=k.RTNH_F_ONLINK, table=0, proto=k.RTPROT_BOOT)
    attrs = attrs_of(request)
    expect(attrs, RTA_TABLE=1000, RTA_DST="10.9.0.0", RTA_GATEWAY="192.168.7.1", RTA_OIF=3)
    expect(attrs, RTA_PREFSRC="10.1.0.5", RTA_PRIORITY=7)
    expect(attrs_of(attrs["RTA_METRICS"]), RTAX_MTU=1300, RTAX_ADVMSS=1200)

    rt.add_route(net("0.0.0.0/0"), gateway=ip("10.1.0.1"))
    request = decode_as(sock.sent[-1], rtmsg)
    expect(request, dst_len=0, table=k.RT_TABLE_MAIN, scope=k.RT_SCOPE_UNIVERSE)
    assert "RTA_DST" not in attrs_of(request)

    rt.add_fdb_entry(3, "02:11:22:33:44:55", ip("10.0.0.2"), append=True)
    request = decode_as(sock.sent[-1], ndmsg)
    assert request["header"]["flags"] & k.NLM_F_APPEND
    expect(request, family=AF_BRIDGE, ifindex=3, flags=k.NTF_SELF, state=k.NUD_PERMANENT)
    expect(attrs_of(request), NDA_LLADDR="02:11:22:33:44:55", NDA_DST="10.0.0.2")

    rt.add_neighbour(3, ip("10.0.0.9"), proxy=True)
    request = decode_as(sock.sent[-1], ndmsg)
    expect(request, family=AF_INET, ifindex=3, flags=k.NTF_PROXY)
    assert attrs_of(request) == {"NDA_DST": "10.0.0.9"}


def _dumping(number: int, request: bytes) -> list[bytes]:
    """Ends every dump at once (NLMSG_DONE); acks anything else."""
    _, _, flags, seq, _ = nlmsg_header(request)
    return [nlmsg_done(seq)] if flags & k.NLM_F_DUMP == k.NLM_F_DUMP else [nlmsg_ack(seq)]


def test_filtered_dump_and_route_get_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(_dumping)
    strict_on = (k.SOL_NETLINK, k.NETLINK_GET_STRICT_CHK, 1)
    strict_off = (k.SOL_NETLINK, k.NETLINK_GET_STRICT_CHK, 0)

    sock.options.clear()
    assert rt.routes(AF_INET, protocol=112, oif=3) == []
    request = decode_as(sock.sent[-1], rtmsg)
    assert request["header"]["flags"] & k.NLM_F_DUMP == k.NLM_F_DUMP
    expect(request, family=AF_INET, dst_len=0, src_len=0, tos=0, table=k.RT_TABLE_MAIN, proto=112)
    expect(request, scope=0, type=0, flags=0)
    assert attrs_of(request) == {"RTA_OIF": 3}
    assert sock.options == [strict_on, strict_off]  # strict for this dump only

    rt.routes(table=1000)
    request = decode_as(sock.sent[-1], rtmsg)
    expect(request, family=0, table=k.RT_TABLE_COMPAT, proto=0)
    assert attrs_of(request) == {"RTA_TABLE": 1000}

    sock.options.clear()
    rt.routes(table=None)  # everything: nothing for the kernel to filter, no strict check
    expect(decode_as(sock.sent[-1], rtmsg), table=0, proto=0)
    assert sock.options == []

    sock.options.clear()
    rt.addresses(3, AF_INET6)
    request = decode_as(sock.sent[-1], ifaddrmsg)
    expect(request, family=AF_INET6, index=3, prefixlen=0, flags=0, scope=0)
    assert sock.options == [strict_on, strict_off]

    rt.neighbours(3)
    request = decode_as(sock.sent[-1], ndmsg)
    expect(request, family=0, ifindex=0, state=0, flags=0)
    assert attrs_of(request) == {"NDA_IFINDEX": 3}

    sock.options.clear()
    rt.fdb_entries(3)
    request = decode_as(sock.sent[-1], ndmsg)
    expect(request, family=AF_BRIDGE, ifindex=3, state=0, flags=0)
    assert attrs_of(request) == {} and sock.options == [strict_on, strict_off]

    assert rt.route_to(ip("10.1.2.3")) is None  # acked without an answer
    request = decode_as(sock.sent[-1], rtmsg)
    assert request["header"]["flags"] & k.NLM_F_DUMP == 0
    assert nlmsg_header(sock.sent[-1])[1] == k.RTM_GETROUTE
    expect(request, family=AF_INET, dst_len=32)
    assert attrs_of(request) == {"RTA_DST": "10.1.2.3"}
