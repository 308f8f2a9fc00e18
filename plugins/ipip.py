"""pycni-ipip: the routed datapath — Calico's model, with its IPIP modes, as a CNI plugin.

No bridge. Each pod gets a veth pair: the pod end (CNI_IFNAME) holds the pod's addresses as
/32 and /128 and routes everything through the link-local gateway 169.254.1.1 (IPv6: the host
end's link-local address); the host end has the fixed MAC ee:ee:ee:ee:ee:ee, answers ARP for
169.254.1.1 by proxy ARP, and carries a /32 (/128) route to the pod. The node forwards.

Traffic to another node's pod CIDR, per peer (`peers`/`peersFile`, as pycni-vxlan), as
`encapsulation` says:

- `Always` (the default, as in a Calico pool): `<pod CIDR> via <node IP> dev pycni.ipip onlink`
- `CrossSubnet`: like Always when the peer's node IP is outside this node's underlay subnet,
  else like Never
- `Never`: `<pod CIDR> via <node IP> dev <underlay link>` (host-gw / kindnet style)

These peer routes carry the route protocol 112 (`ip route show proto 112`): that is how
`reconcile` knows its own among the node's routes, and removes exactly the departed ones.

The tunnel is a device of our own, `pycni.ipip` (local = the node's underlay address, no remote:
point-to-multipoint), not the kernel's fallback `tunl0`: `tunl0` appears in every namespace
once the module loads, cannot be deleted, and is what Calico and others configure, so a
second owner would fight over its settings. The kernel hands an incoming IPIP packet to the
tunnel whose local address matches before the fallback one, so `pycni.ipip` receives them.
The tunnel holds the node's pod CIDR network address (10.244.1.0/32): packets from the node
itself to remote pods go out with it as their source, so the replies come back the same way.

IPIP carries IPv4 only: a config with an IPv6 pod CIDR and encapsulation other than Never is
refused (code 7); IPv6 is always routed directly. A kernel without IPIP (`ip link add type
ipip` answers "Unknown device type": no `ipip` module) makes STATUS not ready (50) and ADD
fail with 50 when the config needs the tunnel.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, IPConfig, Result, Route, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import node, peers, pod
from pycni.datapath.peers import Peer, PeerSource, Underlay
from pycni.netlink import NetlinkError, NetlinkExists, Rtnl
from pycni.validators import ipip as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.netlink import Link

NAME = "pycni-ipip"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local
ALWAYS, CROSS_SUBNET, NEVER = "Always", "CrossSubnet", "Never"
TUNNEL = "pycni.ipip"
OVERHEAD = 20  # the outer IPv4 header
RTPROT_PYCNI = 112  # the protocol of the peer routes: ours to add and remove
HOST_MAC = "ee:ee:ee:ee:ee:ee"  # every host-side veth (Calico's); the pod sees it as gateway
GATEWAY4 = IP.parse("169.254.1.1")
GATEWAY6 = IP.parse("fe80::ecee:eeff:feee:eeee")  # HOST_MAC's EUI-64 link-local address
_EOPNOTSUPP = 95
_RTN_UNICAST = 1


class IpipConf(Record):
    __slots__ = (
        "dns",
        "encapsulation",
        "ip_masq",
        "local_ip",
        "mtu",
        "network",
        "non_masquerade",
        "peer_source",
        "pod_cidrs",
    )
    network: str
    encapsulation: str  # ALWAYS, CROSS_SUBNET, NEVER
    local_ip: IP | None
    mtu: int | None
    ip_masq: bool
    non_masquerade: list[Prefix]
    peer_source: PeerSource
    pod_cidrs: list[Prefix]  # this node's, from the IPAM config
    dns: DNS | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def parse_config(call: Call) -> IpipConf:
    return parse_conf(call.config)


def parse_conf(c: dict[str, object]) -> IpipConf:
    """The config of one network (a plugin object with cniVersion and name), validated."""
    schema.validate(c)
    raw_dns = c.get("dns")
    dns = Result.from_json({"dns": raw_dns}, "$").dns if isinstance(raw_dns, dict) else None
    encapsulation = str(c.get("encapsulation") or ALWAYS)
    pod_cidrs = peers.pod_cidrs(c.get("ipam"))
    if encapsulation != NEVER:
        for n, cidr in enumerate(pod_cidrs):
            if cidr.version == 6:
                raise ConfigError(
                    "$.encapsulation",
                    f"IPIP carries IPv4 only: pod CIDR {cidr} (ipam range {n}) cannot use"
                    f" encapsulation {encapsulation}; IPv6 needs encapsulation Never (direct"
                    " routes)",
                )
    local, mtu = c.get("localIP"), c.get("mtu")
    return IpipConf(
        network=str(c.get("name")),
        encapsulation=encapsulation,
        local_ip=IP.parse(local) if isinstance(local, str) else None,
        mtu=mtu if isinstance(mtu, int) else None,
        ip_masq=bool(c.get("ipMasq")),
        non_masquerade=[
            parse_prefix(text, f"$.nonMasqueradeCIDRs[{n}]")
            for n, text in enumerate(_list(c.get("nonMasqueradeCIDRs")))
        ],
        peer_source=peers.parse_source(c, schema.check_peer),
        pod_cidrs=pod_cidrs,
        dns=dns if dns is not None and not dns.is_empty() else None,
    )


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: IpipConf) -> Result:
    # Rollback inside Rtnl: the undo steps use the socket, so it must close after them.
    with Rtnl() as host, Rollback() as undo:
        plan = reconcile_node(host, conf)  # the node's tunnel and peer routes, as every ADD
        ipam = delegate.ipam_add(call)
        undo.push(delegate.ipam, call, "DEL")
        ips = pod_ips(ipam)
        versions = {ip.address.version for ip in ips}
        host_veth = create_pod_veth(host, call, plan.mtu, ipv6=6 in versions)
        undo.push(lambda: host.delete_link(host_veth.name, missing_ok=True))
        routes = pod_routes(ipam, ips)
        pod_link = pod.configure(call, ips, [*gateway_routes(ips), *routes])
        for ip in ips:  # the node's way to the pod
            host.add_route(ip.address, oif=host_veth.index, replace=True)
        node.enable_forwarding(versions)
        if conf.ip_masq:
            from pycni.datapath import masquerade  # loaded only by networks that masquerade

            masquerade.ensure(call.name, conf.pod_cidrs, conf.non_masquerade)
        undo.commit()
    # The IPv6 gateway is in the route alone: a link-local address means nothing in ips[]
    # without its interface (whoever takes it for an address to reach fails).
    listed = [IPConfig(ip.address, ip.gateway if ip.address.version == 4 else None) for ip in ips]
    return pod.result(call, [host_veth], pod_link, listed, routes, conf.dns or ipam.dns)


def cmd_del(call: Call, conf: IpipConf) -> None:
    """The lease and the veth (its host route goes with it); the node's peer routes and
    tunnel are the node's and stay."""
    pod.delete_attachment(call)


def cmd_check(call: Call, conf: IpipConf) -> None:
    prev = call.prev_result
    if prev is None:
        raise ConfigError("$.prevResult", "is required for CHECK: the result of the ADD")
    delegate.ipam(call, "CHECK")
    ips = [ip for ip in prev.ips if _in_pod(prev, ip, call)]
    with Rtnl() as host:
        plan = reconcile_node(host, conf, dry_run=True)
        if plan.changes:
            pod.drift(f"node: {'; '.join(plan.changes)}")
        _check_host_side(host, call, ips)
    with pod.pod_netns(call) as netns:
        link = pod.check_interface(netns, call, plan.mtu, ips)
        routes = {(r.dst.masked(), r.gateway) for r in netns.routes() if r.oif == link.index}
        gateway_route = (Prefix(GATEWAY4, 32), None)
        if any(ip.address.version == 4 for ip in ips) and gateway_route not in routes:
            pod.drift(f"route {GATEWAY4} dev {call.ifname} (the gateway, on-link) is missing")
        pod.check_routes(call, routes, prev.routes)


def cmd_status(call: Call, conf: IpipConf) -> None:
    problem = peers.source_problem(conf.peer_source)
    if problem is not None:
        raise CniError(Code.NOT_AVAILABLE, problem)
    with Rtnl() as host:
        try:
            plan = reconcile_node(host, conf, dry_run=True)
        except CniError as err:
            raise CniError(Code.NOT_AVAILABLE, err.msg, err.details) from None
        if plan.needs_tunnel and not _tunnel_works(host):
            raise CniError(Code.NOT_AVAILABLE, no_ipip_message(conf))
        if not _routes_gateway_elsewhere(host):
            raise CniError(
                Code.NOT_AVAILABLE,
                f"the node has no route to {GATEWAY4}: proxy ARP answers the pods' gateway"
                " only for an address the node routes out of another link (give the node a"
                " default route)",
            )
    if conf.ip_masq and _nft_missing():
        raise CniError(Code.NOT_AVAILABLE, "ipMasq needs nftables: no nft on this node")
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: IpipConf) -> None:
    delegate.ipam(call, "GC")


def no_ipip_message(conf: IpipConf) -> str:
    return (
        f"encapsulation {conf.encapsulation} needs an IPIP tunnel and this node's kernel"
        " cannot create one (ip link add type ipip: Unknown device type): load the ipip"
        " module (modprobe ipip), or use encapsulation Never"
    )


# --- the pod ---------------------------------------------------------------------------------


def create_pod_veth(host: Rtnl, call: Call, mtu: int, *, ipv6: bool) -> Link:
    """The pair (pycni.datapath.pod.create_veth); the host end with HOST_MAC, proxy ARP on
    and no proxy delay (the first packet of a pod waits for that answer), up; for an IPv6
    pod, holding GATEWAY6 at once (no DAD wait), whatever the node's way of making
    link-local addresses."""
    veth = pod.create_veth(host, call, mtu, mac=HOST_MAC)
    name = veth.name
    try:
        node.ensure_sysctl(f"net/ipv4/conf/{name}/proxy_arp", "1")
        node.ensure_sysctl(f"net/ipv4/neigh/{name}/proxy_delay", "0")
        if ipv6:
            node.ensure_sysctl(f"net/ipv6/conf/{name}/accept_dad", "0")
            host.add_address(veth.index, Prefix(GATEWAY6, 64), nodad=True, replace=True)
        host.set_link(veth.index, up=True)
    except BaseException:
        host.delete_link(veth.index, missing_ok=True)
        raise
    return host.get_link(veth.index)


def pod_ips(ipam: Result) -> list[IPConfig]:
    """IPAM's addresses as /32 and /128 (IPv4 first), each with its family's gateway."""
    return [
        IPConfig(Prefix(ip.address.ip, ip.address.ip.bits), _gateway(ip.address.version))
        for ip in pod.order_ips(ipam.ips, False)
    ]


def gateway_routes(ips: list[IPConfig]) -> list[Route]:
    """The IPv4 gateway on-link (a route to it out of the pod's interface), for an IPv4 pod;
    the IPv6 one is link-local, on-link already."""
    return [Route(dst=Prefix(GATEWAY4, 32))] if any(ip.address.version == 4 for ip in ips) else []


def pod_routes(ipam: Result, ips: list[IPConfig]) -> list[Route]:
    """A default route per family through its gateway, and IPAM's other routes through it
    too (a pod has no other next hop)."""
    families = {ip.address.version for ip in ips}
    routes = [
        Route(dst=Prefix(IP(0, version), 0), gw=_gateway(version)) for version in sorted(families)
    ]
    for r in ipam.routes:
        if r.dst.length and r.dst.version in families:
            routes.append(Route(dst=r.dst, gw=_gateway(r.dst.version), mtu=r.mtu))
    return routes


def _gateway(version: int) -> IP:
    return GATEWAY4 if version == 4 else GATEWAY6


def _check_host_side(host: Rtnl, call: Call, ips: list[IPConfig]) -> Link:
    veth = pod.find_host_veth(host, call)
    name = veth.name
    if (veth.mac or "").lower() != HOST_MAC or not veth.up:
        pod.drift(f"host veth '{name}' has MAC {veth.mac} and is {'up' if veth.up else 'down'}")
    with open(f"/proc/sys/net/ipv4/conf/{name}/proxy_arp", "rb") as f:
        if f.read().strip() != b"1":
            pod.drift(f"proxy ARP is off on host veth '{name}'")
    routes = {r.dst for r in host.routes(oif=veth.index) if r.gateway is None}
    for ip in ips:
        if ip.address not in routes:
            pod.drift(f"route {ip.address} dev {name} (to the pod) is missing")
    return veth


def _in_pod(prev: Result, ip: IPConfig, call: Call) -> bool:
    if ip.interface is None or ip.interface >= len(prev.interfaces):
        return True
    return prev.interfaces[ip.interface].sandbox == call.netns


# --- the node: tunnel and peer routes ----------------------------------------------------------


class Plan(Record):
    """What reconcile found and did: the changes (in words), whether the tunnel is needed,
    the pods' MTU, the underlay (None when nothing needed one)."""

    __slots__ = ("changes", "mtu", "needs_tunnel", "underlay")
    changes: list[str]
    needs_tunnel: bool
    mtu: int
    underlay: Underlay | None

    def __init__(
        self, changes: list[str], needs_tunnel: bool, mtu: int, underlay: Underlay | None
    ) -> None:
        self._init(changes=changes, needs_tunnel=needs_tunnel, mtu=mtu, underlay=underlay)


class _Hop(Record):
    """Where a peer route points: the peer's node IP, out of the tunnel (onlink) or the
    underlay link; `oif` None while the tunnel is still to be made (dry run)."""

    __slots__ = ("dev", "oif", "onlink", "via")
    via: IP
    oif: int | None
    dev: str
    onlink: bool

    def __init__(self, via: IP, oif: int | None, dev: str, onlink: bool) -> None:
        self._init(via=via, oif=oif, dev=dev, onlink=onlink)


def reconcile(conf: IpipConf) -> list[str]:
    """Bring this node's tunnel and peer routes (in the current namespace) to exactly the
    peer set; the changes made, in words (empty when nothing had to change)."""
    with Rtnl() as host:
        return reconcile_node(host, conf).changes


def reconcile_node(host: Rtnl, conf: IpipConf, *, dry_run: bool = False) -> Plan:
    """The tunnel (when some peer needs it; removed when none does), and per peer pod CIDR
    one route with protocol RTPROT_PYCNI; any other route of that protocol goes. With
    `dry_run`, only say what differs."""
    peer_set = peers.load(conf.peer_source)
    underlay = None
    if peer_set or conf.encapsulation != NEVER:
        underlay = peers.find_underlay(host, conf.local_ip)
    remote = peers.others(peer_set, underlay.local_ip if underlay else None)
    peers.check_overlaps(conf.pod_cidrs, remote)
    encapsulated = [p for p in remote if _encapsulate(conf, underlay, p)]
    needs_tunnel = conf.encapsulation == ALWAYS or bool(encapsulated)
    if needs_tunnel and underlay is not None and underlay.local_ip.version != 4:
        raise ConfigError(
            "$.localIP",
            f"IPIP needs an IPv4 underlay address; this node's is {underlay.local_ip}",
        )
    mtu = node_mtu(host, conf, underlay)
    changes: list[str] = []
    tunnel = None
    if needs_tunnel:
        assert underlay is not None
        tunnel = _ensure_tunnel(host, conf, underlay, mtu, changes, dry_run)
    else:
        _remove_tunnel(host, changes, dry_run)
    want: dict[Prefix, _Hop] = {}
    for peer in remote:
        assert underlay is not None
        for m, cidr in enumerate(peer.pod_cidrs):
            want[cidr] = _peer_route(conf, underlay, tunnel, peer, peer in encapsulated, cidr, m)
    _sync_routes(host, want, changes, dry_run)
    return Plan(changes, needs_tunnel, mtu, underlay)


def node_mtu(host: Rtnl, conf: IpipConf, underlay: Underlay | None = None) -> int:
    """`mtu`, else the underlay link's MTU, less the IPIP header when encapsulation can
    happen. With Never and no underlay (no peers), the kubenet rule (pycni.datapath.node)."""
    if conf.mtu is not None:
        return conf.mtu
    if underlay is None:
        try:
            underlay = peers.find_underlay(host, conf.local_ip)
        except CniError:
            if conf.encapsulation != NEVER:
                raise
            return node.smallest_mtu(host)
    return underlay.link.mtu - (0 if conf.encapsulation == NEVER else OVERHEAD)


def _encapsulate(conf: IpipConf, underlay: Underlay | None, peer: Peer) -> bool:
    if conf.encapsulation == NEVER or underlay is None:
        return False
    if conf.encapsulation == ALWAYS:
        return True
    return not underlay.same_subnet(peer.node_ip)  # CrossSubnet


def _peer_route(
    conf: IpipConf,
    underlay: Underlay,
    tunnel: Link | None,
    peer: Peer,
    encapsulated: bool,
    cidr: Prefix,
    m: int,
) -> _Hop:
    """The next hop of the route to one of a peer's pod CIDRs."""
    where = f"{peer.path}.podCIDRs[{m}]"
    if cidr.version != peer.node_ip.version:
        raise ConfigError(
            where,
            f"peer '{peer.name}' pod CIDR {cidr} is IPv{cidr.version} and its node IP"
            f" {peer.node_ip} IPv{peer.node_ip.version}: pod CIDRs are routed via the node IP"
            " of their own family",
        )
    if cidr.version == 4 and encapsulated:
        return _Hop(peer.node_ip, tunnel.index if tunnel else None, TUNNEL, True)
    if not underlay.same_subnet(peer.node_ip):
        raise ConfigError(
            f"{peer.path}.nodeIP",
            f"peer '{peer.name}' node IP {peer.node_ip} is outside this node's underlay subnet"
            f" {underlay.prefix.masked()}: a direct route needs it on the same subnet (use"
            " encapsulation CrossSubnet or Always for nodes behind a router)",
        )
    return _Hop(peer.node_ip, underlay.link.index, underlay.link.name, False)


def _ensure_tunnel(
    host: Rtnl, conf: IpipConf, underlay: Underlay, mtu: int, changes: list[str], dry_run: bool
) -> Link | None:
    """`pycni.ipip`, up, local = the underlay address, our MTU, holding the pod CIDRs'
    network addresses. A device of that name with another kind or local address is ours
    (the name says so) and replaced."""
    device = host.find_link(TUNNEL)
    if device is not None:
        local = device.ipip.local if device.ipip is not None else None
        if device.kind != "ipip" or local != underlay.local_ip:
            what = f"kind {device.kind}" if device.kind != "ipip" else f"local {local}"
            changes.append(f"replace {TUNNEL} ({what}, config wants local {underlay.local_ip})")
            if dry_run:
                return None
            host.delete_link(device.index, missing_ok=True)
            device = None
    if device is None:
        changes.append(f"create ipip tunnel '{TUNNEL}' local {underlay.local_ip}")
        if dry_run:
            return None
        try:
            host.create_ipip(TUNNEL, local=underlay.local_ip, mtu=mtu, up=True)
        except NetlinkExists:
            pass  # a parallel ADD made it first
        except NetlinkError as err:
            if err.errno == _EOPNOTSUPP:
                raise CniError(Code.NOT_AVAILABLE, no_ipip_message(conf)) from None
            raise
        device = host.get_link(TUNNEL)
    if device.mtu != mtu or not device.up:
        changes.append(f"repair {TUNNEL} (mtu {mtu}, up)")
        if not dry_run:
            host.set_link(device.index, mtu=mtu, up=True)
    want = {Prefix(cidr.network, 32) for cidr in conf.pod_cidrs if cidr.version == 4}
    have = {a.prefix for a in host.addresses(device.index)}
    for own in sorted(want - have, key=str):
        changes.append(f"add address {own} to {TUNNEL}")
        if not dry_run:
            try:
                host.add_address(device.index, own)
            except NetlinkExists:
                pass  # a parallel ADD added it
    for extra in sorted(have - want, key=str):
        changes.append(f"remove address {extra} from {TUNNEL}")
        if not dry_run:
            host.delete_address(device.index, extra, missing_ok=True)
    return device


def _remove_tunnel(host: Rtnl, changes: list[str], dry_run: bool) -> None:
    device = host.find_link(TUNNEL)
    if device is not None:
        changes.append(f"remove {TUNNEL} (no peer needs encapsulation)")
        if not dry_run:
            host.delete_link(device.index, missing_ok=True)


def _sync_routes(
    host: Rtnl,
    want: dict[Prefix, _Hop],
    changes: list[str],
    dry_run: bool,
) -> None:
    have = {
        r.dst: r
        for r in host.routes(protocol=RTPROT_PYCNI)
        if r.type == _RTN_UNICAST and r.dst.length
    }
    for dst in sorted(have.keys() - want.keys(), key=str):
        changes.append(f"remove route {dst}")
        if not dry_run:
            host.delete_route(dst, protocol=RTPROT_PYCNI, missing_ok=True)
    for dst, hop in want.items():
        route = have.get(dst)
        if route is not None and (route.gateway, route.oif, route.onlink) == (
            hop.via,
            hop.oif,
            hop.onlink,
        ):
            continue
        verb = "add" if route is None else "repair"
        onlink = " onlink" if hop.onlink else ""
        changes.append(f"{verb} route {dst} via {hop.via} dev {hop.dev}{onlink}")
        if not dry_run and hop.oif is not None:
            host.add_route(
                dst,
                gateway=hop.via,
                oif=hop.oif,
                onlink=hop.onlink,
                protocol=RTPROT_PYCNI,
                replace=True,
            )


def _tunnel_works(host: Rtnl) -> bool:
    """The tunnel exists, or the kernel can create one (a throwaway device; creating it loads
    the ipip module where there is one)."""
    device = host.find_link(TUNNEL)
    if device is not None and device.kind == "ipip":
        return True
    probe = "pycni.ipipchk"
    try:  # TEST-NET addresses: parameters no real tunnel has
        host.create_ipip(probe, local=IP.parse("192.0.2.1"), remote=IP.parse("192.0.2.2"))
    except NetlinkExists:
        return True  # a parallel STATUS made it: the kernel can
    except NetlinkError as err:
        if err.errno == _EOPNOTSUPP:
            return False
        raise
    host.delete_link(probe, missing_ok=True)
    return True


def _routes_gateway_elsewhere(host: Rtnl) -> bool:
    """The node routes 169.254.1.1 somewhere (its default route, usually): proxy ARP answers
    only for such an address."""
    route = host.route_to(GATEWAY4)
    return route is not None and route.type == _RTN_UNICAST


def _nft_missing() -> bool:
    from pycni.datapath import masquerade

    return masquerade.nft_path() is None


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
