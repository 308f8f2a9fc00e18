"""The L2 attachment: a node's pods on one Linux bridge (pycni-bridge's, and pycni-vxlan's for
the pods of its node).

`attach` is the whole attachment, as both plugins' ADD tells it: the node bridge
(`ensure_bridge`), the lease, the host end of the pod's veth as the bridge's port
(`attach_pod`), the pod's addresses and routes (`pod_routes`), the gateway on the bridge
(`ensure_gateway`), masquerade; CHECK as a whole (`check`). The pod's side of the pair, the
result and DEL are pycni.datapath.pod's.
"""

from __future__ import annotations

import os

from pycni.cni import delegate, log
from pycni.cni.errors import ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import Route
from pycni.datapath import node, pod
from pycni.netlink import NetlinkExists, Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.result import DNS, Interface, IPConfig, Result
    from pycni.cni.rollback import Rollback
    from pycni.cni.skel import Call
    from pycni.netlink import Link

DEFAULT_BRIDGE = "cbr0"


class BridgeConf(Record):
    """How pods are attached to the node bridge (pycni-bridge's config, parsed)."""

    __slots__ = (
        "bridge",
        "dns",
        "force_address",
        "hairpin",
        "ip_masq",
        "is_default_gateway",
        "is_gateway",
        "mtu",
        "non_masquerade",
        "prefer_ipv6",
        "promisc",
    )
    bridge: str
    is_gateway: bool
    is_default_gateway: bool
    force_address: bool
    ip_masq: bool
    non_masquerade: list[Prefix]
    mtu: int | None
    hairpin: bool
    promisc: bool
    prefer_ipv6: bool
    dns: DNS | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def attach(host: Rtnl, undo: Rollback, call: Call, conf: BridgeConf) -> Result:
    """The pod on the node bridge, each step's undo pushed on `undo` (the caller commits)."""
    node_bridge = ensure_bridge(host, conf)
    ipam = delegate.ipam_add(call)
    undo.push(delegate.ipam, call, "DEL")
    ips = pod.order_ips(ipam.ips, conf.prefer_ipv6)
    host_veth = attach_pod(host, call, node_bridge, conf)
    undo.push(lambda: host.delete_link(host_veth.name, missing_ok=True))
    routes = pod_routes(ipam, ips, conf)
    pod_link = pod.configure(call, ips, routes)
    if conf.is_gateway:
        ensure_gateway(host, node_bridge, ips, conf)
        node.enable_forwarding({ip.address.version for ip in ips})
    if conf.ip_masq:
        from pycni.datapath import masquerade  # loaded only by networks that masquerade

        masquerade.ensure(call.name, [ip.address.masked() for ip in ips], conf.non_masquerade)
    return pod.result(call, [node_bridge, host_veth], pod_link, ips, routes, conf.dns or ipam.dns)


def ensure_bridge(host: Rtnl, conf: BridgeConf) -> Link:
    """The node bridge, created on first use; refuses a same-named device that is no bridge."""
    bridge = host.find_link(conf.bridge)
    if bridge is None:
        mtu = conf.mtu or node.smallest_mtu(host)
        try:
            # A MAC of its own: a bridge without one takes its lowest port's, which changes as
            # pods come and go (and the ADD results would disagree about it).
            created = host.create_bridge(conf.bridge, mac=_random_mac(), up=True)
            # The MTU set on the bridge, not given at creation: the kernel keeps the one set,
            # but re-derives one given at creation from the ports (1500 when the last pod
            # leaves, the overlay's again when the next one comes).
            if created.mtu != mtu:
                host.set_link(created.index, mtu=mtu)
        except NetlinkExists:
            pass  # a parallel ADD made it first
        bridge = host.get_link(conf.bridge)
    if bridge.kind != "bridge":
        raise ConfigError(
            "$.bridge",
            f"'{conf.bridge}' exists and is a {bridge.kind or 'plain'} device, not a bridge",
        )
    # Bridged traffic through the node's netfilter hooks, as kubenet ensured (services). On
    # every ADD (two small reads), so a call killed right after creating the bridge is mended.
    for family in ("iptables", "ip6tables"):
        if not node.ensure_sysctl(f"net/bridge/bridge-nf-call-{family}", "1", required=False):
            log.write(
                "br_netfilter is not loaded: services between pods of one bridge need it"
                " (modprobe br_netfilter)"
            )
    if conf.mtu is not None and bridge.mtu != conf.mtu:
        host.set_link(bridge.index, mtu=conf.mtu)
    if not bridge.up or (conf.promisc and not bridge.promiscuous):
        host.set_link(bridge.index, up=True, promiscuous=True if conf.promisc else None)
        bridge = host.get_link(bridge.index)
    return bridge


def attach_pod(host: Rtnl, call: Call, bridge: Link, conf: BridgeConf) -> Link:
    """A veth pair (pycni.datapath.pod.create_veth): the pod end inside the pod's namespace
    as CNI_IFNAME, the host end a port of the bridge, up, with hairpin if asked."""
    veth = pod.create_veth(host, call, conf.mtu or bridge.mtu)
    host.set_link(veth.index, master=bridge.index, up=True)
    if conf.hairpin:
        host.set_bridge_port(veth.index, hairpin=True)
    return host.get_link(veth.index)


def ensure_gateway(host: Rtnl, bridge: Link, ips: list[IPConfig], conf: BridgeConf) -> None:
    """The bridge holds each family's gateway, with the subnet's prefix length."""
    have = host.addresses(bridge.index)
    for ip in ips:
        if ip.gateway is None:
            continue
        wanted = ip.address.with_ip(ip.gateway)
        if wanted in {a.prefix for a in have}:
            continue
        clash = [
            a.prefix
            for a in have
            if a.prefix.version == wanted.version and a.prefix.masked() == wanted.masked()
        ]
        if clash and not conf.force_address:
            raise ConfigError(
                "$.isGateway",
                f"bridge '{conf.bridge}' holds {clash[0]}, this network wants {wanted};"
                " set forceAddress to replace it",
            )
        for old in clash:
            host.delete_address(bridge.index, old, missing_ok=True)
        try:
            host.add_address(bridge.index, wanted, nodad=True)
        except NetlinkExists:
            pass  # a parallel ADD added it


def pod_routes(ipam: Result, ips: list[IPConfig], conf: BridgeConf) -> list[Route]:
    """IPAM's routes, through the family's gateway when they name none; with
    isDefaultGateway, a default route per family through its gateway."""
    gateways = {ip.address.version: ip.gateway for ip in ips if ip.gateway is not None}
    routes = [
        Route(dst=r.dst, gw=r.gw or gateways.get(r.dst.version), mtu=r.mtu) for r in ipam.routes
    ]
    if conf.is_default_gateway:
        for version, gw in gateways.items():
            default = Prefix(IP(0, version), 0)
            if not any(r.dst == default for r in routes):
                routes.append(Route(dst=default, gw=gw))
    return routes


def check(call: Call, conf: BridgeConf) -> None:
    """CHECK of an attachment: IPAM's, then the bridge, the host veth on it, and in the pod
    the interface (MAC, MTU, addresses) and the ADD's routes."""
    prev = call.prev_result
    if prev is None:
        raise ConfigError("$.prevResult", "is required for CHECK: the result of the ADD")
    delegate.ipam(call, "CHECK")
    with Rtnl() as host:
        bridge = host.find_link(conf.bridge)
        if bridge is None or bridge.kind != "bridge":
            pod.drift(f"bridge '{conf.bridge}' is missing")
        veth = pod.find_host_veth(host, call)
        if veth.master != bridge.index:
            pod.drift(f"host veth '{veth.name}' is not on bridge '{conf.bridge}'")
        expected_mtu = conf.mtu or bridge.mtu
    pod_if = _find_interface(prev.interfaces, call)
    with pod.pod_netns(call) as netns:
        pod.check_interface(netns, call, expected_mtu, prev.ips, mac=pod_if.mac if pod_if else None)
        pod.check_routes(call, {(r.dst.masked(), r.gateway) for r in netns.routes()}, prev.routes)


def _find_interface(interfaces: list[Interface], call: Call) -> Interface | None:
    return next((i for i in interfaces if i.name == call.ifname and i.sandbox == call.netns), None)


def _random_mac() -> str:
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in octets)
