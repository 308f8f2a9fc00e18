"""IPIP under a real kernel (the kernel lane's guest): our netlink creates the tunnel the kernel
reports, and traffic between two namespaces really crosses the underlay in IP-in-IP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from pycni.cni.ip import IP, Prefix
from pycni.lab import connectivity
from pycni.lab import netns as netns_mod
from pycni.lab.netns import Netns
from pycni.netlink import Rtnl
from tests.support.capture import assert_ipip_encapsulated, capture


def test_create_ipip_makes_the_tunnel_asked_for(netns: Netns) -> None:
    with Rtnl(netns.path) as rt:
        underlay = rt.create_veth("ul0", "ul1", up=True)
        made = rt.create_ipip(
            "tun0",
            local=IP.parse("10.0.0.1"),
            remote=IP.parse("10.0.0.2"),
            underlay=underlay.index,
            ttl=64,
            tos=0,
            pmtudisc=True,
            mtu=1480,
            up=True,
        )
        seen = rt.get_link("tun0")
    assert made.index == seen.index
    assert seen.kind == "ipip" and seen.mtu == 1480 and seen.ipip is not None
    assert (str(seen.ipip.local), str(seen.ipip.remote)) == ("10.0.0.1", "10.0.0.2")
    assert (seen.ipip.ttl, seen.ipip.underlay, seen.ipip.pmtudisc) == (64, underlay.index, True)

    # The same tunnel through two other readers: iproute2 and pyroute2.
    (shown,) = netns.ip_json("-d", "link", "show", "tun0")
    data = shown["linkinfo"]["info_data"]
    assert shown["linkinfo"]["info_kind"] == "ipip" and shown["mtu"] == 1480
    assert (data["local"], data["remote"], data["ttl"], data["pmtudisc"]) == (
        "10.0.0.1",
        "10.0.0.2",
        64,
        True,
    )
    assert shown["link"] == "ul0"  # IFLA_LINK, by name
    with IPRoute(netns=netns.path, flags=0) as ipr:
        (link,) = ipr.get_links(ifname="tun0")
    info = link.get_attr("IFLA_LINKINFO")
    iptun = info.get_attr("IFLA_INFO_DATA")
    assert info.get_attr("IFLA_INFO_KIND") == "ipip"
    assert iptun.get_attr("IFLA_IPIP_LOCAL") == "10.0.0.1"
    assert iptun.get_attr("IFLA_IPIP_REMOTE") == "10.0.0.2"
    assert iptun.get_attr("IFLA_IPIP_LINK") == underlay.index
    assert iptun.get_attr("IFLA_IPIP_TTL") == 64


# Two "nodes" on one underlay link; each has a "pod" address on lo and reaches the other's
# through an IPIP tunnel with no fixed remote (Calico's tunl0 way: the route names the peer).
UNDERLAY = {"a": "172.31.0.1", "b": "172.31.0.2"}
PODS = {"a": "10.250.1.1", "b": "10.250.2.1"}


@pytest.fixture
def two_nodes() -> Iterator[dict[str, Netns]]:
    nodes: dict[str, Netns] = {}
    try:
        for name in ("a", "b"):
            nodes[name] = netns_mod.create(f"ipip{name}")
        with Rtnl(nodes["a"].path) as a:
            a.create_veth("ul0", "ul0", peer_netns=nodes["b"].path)
        for name, ns in nodes.items():
            peer = "b" if name == "a" else "a"
            with Rtnl(ns.path) as rt:
                rt.set_link("lo", up=True)
                rt.add_address(rt.get_link("lo").index, Prefix.parse(f"{PODS[name]}/32"))
                eth = rt.get_link("ul0")
                rt.add_address(eth.index, Prefix.parse(f"{UNDERLAY[name]}/24"), nodad=True)
                rt.set_link(eth.index, up=True)
                tun = rt.create_ipip(
                    "ipip0", local=IP.parse(UNDERLAY[name]), underlay=eth.index, up=True
                )
                rt.add_route(
                    Prefix.parse(f"{PODS[peer].rsplit('.', 1)[0]}.0/24"),
                    gateway=IP.parse(UNDERLAY[peer]),
                    oif=tun.index,
                    onlink=True,
                    src=IP.parse(PODS[name]),
                )
        yield nodes
    finally:
        for ns in nodes.values():
            with contextlib.suppress(Exception):
                ns.delete()


def test_traffic_between_namespaces_crosses_the_underlay_in_ipip(
    two_nodes: dict[str, Netns],
) -> None:
    server = connectivity.serve(two_nodes["b"])
    try:
        with capture(two_nodes["a"], "ul0") as seen:
            probe = connectivity.probe(
                two_nodes["a"], PODS["b"], "tcp", expected_source=PODS["a"], timeout=10
            )
    finally:
        server.stop()
    assert probe.ok, f"pod a did not reach pod b unNATed: {probe.seen_as}"
    assert_ipip_encapsulated(seen.packets, PODS.values())
