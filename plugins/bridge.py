"""pycni-bridge: the kubenet datapath — a node's pods on one Linux bridge.

Every pod gets a veth pair: the host end is enslaved to the node bridge (`cbr0` by default),
the other end is created directly inside the pod's namespace under CNI_IFNAME. The pod's
addresses, and the gateway they route through, come from the IPAM plugin in `ipam.type`; with
`isGateway` the bridge holds that gateway. Bridged traffic is passed through the node's
netfilter hooks (bridge-nf-call-iptables), so kube-proxy's DNAT works between pods of one
bridge, and `hairpinMode` lets a pod reach itself through a service IP.

The attachment helpers here (ensure_bridge, attach_pod, configure_pod, ...) are what the VXLAN
overlay reuses for its pods.
"""

from __future__ import annotations

import os

from pycni.cni import delegate, log
from pycni.cni.errors import CniError, Code, ConfigError, NotFound
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, Interface, IPConfig, Result, Route, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import node
from pycni.netlink import NamespaceNotFound, NetlinkExists, NetlinkNotFound, Rtnl
from pycni.validators import bridge as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.netlink import Link

NAME = "pycni-bridge"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local
DEFAULT_BRIDGE = "cbr0"


class BridgeConf(Record):
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


def parse_config(call: Call) -> BridgeConf:
    schema.validate(call.config)
    c = call.config
    if c.get("hairpinMode") and c.get("promiscMode"):
        raise ConfigError("$.promiscMode", "cannot be used together with hairpinMode")
    raw_dns = c.get("dns")
    dns = Result.from_json({"dns": raw_dns}, "$").dns if isinstance(raw_dns, dict) else None
    return BridgeConf(
        bridge=str(c.get("bridge") or DEFAULT_BRIDGE),
        is_gateway=bool(c.get("isGateway") or c.get("isDefaultGateway")),
        is_default_gateway=bool(c.get("isDefaultGateway")),
        force_address=bool(c.get("forceAddress")),
        ip_masq=bool(c.get("ipMasq")),
        non_masquerade=[
            parse_prefix(text, f"$.nonMasqueradeCIDRs[{n}]")
            for n, text in enumerate(_list(c.get("nonMasqueradeCIDRs")))
        ],
        mtu=c.get("mtu") if isinstance(c.get("mtu"), int) else None,
        hairpin=bool(c.get("hairpinMode")),
        promisc=bool(c.get("promiscMode")),
        prefer_ipv6=bool(c.get("preferIPv6")),
        dns=dns if dns is not None and not dns.is_empty() else None,
    )


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: BridgeConf) -> Result:
    # Rollback inside Rtnl: the undo steps use the socket, so it must close after them.
    with Rtnl() as host, Rollback() as undo:
        bridge = ensure_bridge(host, conf)
        ipam = delegate.ipam_add(call)
        undo.push(delegate.ipam, call, "DEL")
        ips = order_ips(ipam.ips, conf.prefer_ipv6)
        host_veth = attach_pod(host, call, bridge, conf)
        undo.push(lambda: host.delete_link(host_veth.name, missing_ok=True))
        pod_link = configure_pod(call, ips, pod_routes(ipam, ips, conf), conf)
        if conf.is_gateway:
            ensure_gateway(host, bridge, ips, conf)
            node.enable_forwarding({ip.address.version for ip in ips})
        if conf.ip_masq:
            from pycni.datapath import masquerade  # loaded only by networks that masquerade

            masquerade.ensure(call.name, [ip.address.masked() for ip in ips], conf.non_masquerade)
        undo.commit()
    return _result(call, conf, bridge, host_veth, pod_link, ipam, ips)


def cmd_del(call: Call, conf: BridgeConf) -> None:
    """Best effort and idempotent: every step runs, whatever is already gone."""
    failures: list[str] = []
    try:
        delegate.ipam(call, "DEL")
    except CniError as err:
        failures.append(f"IPAM: {err}")
    try:
        remove_veth(call)
    except CniError as err:
        failures.append(str(err))
    if failures:
        raise CniError(Code.KERNEL, f"failed to delete attachment: {'; '.join(failures)}")


def cmd_check(call: Call, conf: BridgeConf) -> None:
    prev = call.prev_result
    if prev is None:
        raise ConfigError("$.prevResult", "is required for CHECK: the result of the ADD")
    delegate.ipam(call, "CHECK")
    with Rtnl() as host:
        bridge = host.find_link(conf.bridge)
        if bridge is None or bridge.kind != "bridge":
            _drift(f"bridge '{conf.bridge}' is missing")
        assert bridge is not None
        pod_if = _find_interface(prev, call.ifname, call.netns)
        host_name = host_veth_name(call)
        veth = host.find_link(host_name)
        if veth is None:
            _drift(f"host veth '{host_name}' is missing")
        assert veth is not None
        if veth.master != bridge.index:
            _drift(f"host veth '{host_name}' is not on bridge '{conf.bridge}'")
        expected_mtu = conf.mtu or bridge.mtu
    with pod_netns(call) as pod:
        link = pod.find_link(call.ifname)
        if link is None:
            _drift(f"interface '{call.ifname}' is missing in {call.netns}")
        assert link is not None
        if pod_if is not None and pod_if.mac and (link.mac or "").lower() != pod_if.mac.lower():
            _drift(f"interface '{call.ifname}' has MAC {link.mac}, the ADD said {pod_if.mac}")
        if link.mtu != expected_mtu:
            _drift(f"interface '{call.ifname}' has MTU {link.mtu}, expected {expected_mtu}")
        have = {a.prefix for a in pod.addresses(link.index)}
        for ip in prev.ips:
            if ip.address not in have:
                _drift(f"address {ip.address} is missing from '{call.ifname}'")
        routes = {(r.dst.masked(), r.gateway) for r in pod.routes()}
        for route in prev.routes:
            if (route.dst.masked(), route.gw) not in routes:
                via = f" via {route.gw}" if route.gw else ""
                _drift(f"route {route.dst}{via} is missing in {call.netns}")


def cmd_status(call: Call, conf: BridgeConf) -> None:
    with Rtnl() as host:
        bridge = host.find_link(conf.bridge)
    if bridge is not None and bridge.kind != "bridge":
        raise CniError(
            Code.NOT_AVAILABLE,
            f"'{conf.bridge}' exists and is a {bridge.kind or 'plain'} device, not a bridge",
        )
    if conf.ip_masq and _nft_missing():
        raise CniError(Code.NOT_AVAILABLE, "ipMasq needs nftables: no nft on this node")
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: BridgeConf) -> None:
    delegate.ipam(call, "GC")


# --- attachment steps (shared with the overlay plugins) -------------------------------------


def ensure_bridge(host: Rtnl, conf: BridgeConf) -> Link:
    """The node bridge, created on first use; refuses a same-named device that is no bridge."""
    bridge = host.find_link(conf.bridge)
    if bridge is None:
        mtu = conf.mtu or node.smallest_mtu(host)
        try:
            # A MAC of its own: a bridge without one takes its lowest port's, which changes as
            # pods come and go (and the ADD results would disagree about it).
            host.create_bridge(conf.bridge, mtu=mtu, mac=_random_mac(), up=True)
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


def host_veth_name(call: Call) -> str:
    """A name derived from the attachment, so DEL finds the host end even when the pod's
    namespace is gone: "veth" + 11 hex digits of sha256(containerID/ifname)."""
    import _sha256

    digest: str = _sha256.sha256(f"{call.container_id}/{call.ifname}".encode()).hexdigest()
    return "veth" + digest[:11]


def attach_pod(host: Rtnl, call: Call, bridge: Link, conf: BridgeConf) -> Link:
    """A veth pair: the pod end created inside the pod's namespace as CNI_IFNAME, the host end
    on the bridge, up, with hairpin if asked."""
    name = host_veth_name(call)
    try:
        veth = host.create_veth(
            name, call.ifname, peer_netns=call.netns, mtu=conf.mtu or bridge.mtu
        )
    except NamespaceNotFound:
        raise CniError(
            Code.UNKNOWN_CONTAINER, f"container network namespace '{call.netns}' is gone"
        ) from None
    except NetlinkExists:
        raise CniError(
            Code.DUPLICATE_ATTACHMENT,
            f"failed to create interface '{call.ifname}' in {call.netns}: an interface of"
            f" that name (or host veth '{name}') already exists",
        ) from None
    host.set_link(veth.index, master=bridge.index, up=True)
    if conf.hairpin:
        host.set_bridge_port(veth.index, hairpin=True)
    return host.get_link(veth.index)


def configure_pod(call: Call, ips: list[IPConfig], routes: list[Route], conf: BridgeConf) -> Link:
    """Inside the pod: addresses (no IPv6 DAD wait), the link up, the routes."""
    with pod_netns(call) as pod:
        link = pod.get_link(call.ifname)
        for ip in ips:
            pod.add_address(link.index, ip.address, nodad=True)
        pod.set_link(link.index, up=True)
        for route in routes:
            pod.add_route(route.dst, gateway=route.gw, oif=link.index, mtu=route.mtu)
        return pod.get_link(link.index)


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


def order_ips(ips: list[IPConfig], prefer_ipv6: bool) -> list[IPConfig]:
    """IPv4 first (kubelet takes the first IP as the pod IP), unless preferIPv6."""
    first = 6 if prefer_ipv6 else 4
    return sorted(ips, key=lambda ip: ip.address.version != first)


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


# --- internals -------------------------------------------------------------------------------


def _result(
    call: Call,
    conf: BridgeConf,
    bridge: Link,
    host_veth: Link,
    pod_link: Link,
    ipam: Result,
    ips: list[IPConfig],
) -> Result:
    prev = call.prev_result or Result()
    interfaces = [
        *prev.interfaces,
        Interface(name=bridge.name, mac=bridge.mac or ""),
        Interface(name=host_veth.name, mac=host_veth.mac or ""),
        Interface(name=pod_link.name, mac=pod_link.mac or "", sandbox=call.netns, mtu=pod_link.mtu),
    ]
    pod_index = len(interfaces) - 1
    return Result(
        interfaces=interfaces,
        ips=[*prev.ips, *(IPConfig(ip.address, ip.gateway, pod_index) for ip in ips)],
        routes=[*prev.routes, *pod_routes(ipam, ips, conf)],
        dns=conf.dns or ipam.dns,
    )


def remove_veth(call: Call) -> None:
    """Delete the pair from the pod's side if its namespace is there, else the host end."""
    try:
        if call.netns:
            with pod_netns(call) as pod:
                pod.delete_link(call.ifname, missing_ok=True)
                return
    except NotFound:
        pass  # the namespace is gone: so is the pod end, and with it the pair, usually
    try:
        with Rtnl() as host:
            host.delete_link(host_veth_name(call), missing_ok=True)
    except NetlinkNotFound:
        pass


class pod_netns:  # noqa: N801 - reads as a function at the call site
    """An Rtnl inside the pod's namespace; a namespace that vanished is code 3 (for ADD/CHECK)
    or NotFound (which DEL treats as done)."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._rtnl: Rtnl | None = None

    def __enter__(self) -> Rtnl:
        try:
            self._rtnl = Rtnl(netns=self._call.netns)
        except NamespaceNotFound:
            if self._call.command == "DEL":
                raise NotFound(self._call.netns) from None
            raise CniError(
                Code.UNKNOWN_CONTAINER,
                f"container network namespace '{self._call.netns}' is gone",
                "CNI_NETNS",
            ) from None
        return self._rtnl

    def __exit__(self, *exc: object) -> None:
        if self._rtnl is not None:
            self._rtnl.close()


def _find_interface(prev: Result, ifname: str, netns: str) -> Interface | None:
    return next((i for i in prev.interfaces if i.name == ifname and i.sandbox == netns), None)


def _nft_missing() -> bool:
    from pycni.datapath import masquerade

    return masquerade.nft_path() is None


def _random_mac() -> str:
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in octets)


def _drift(what: str) -> None:
    raise CniError(Code.CHECK_FAILED, f"check failed: {what}")


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
