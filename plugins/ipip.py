"""pycni-ipip: the routed datapath — Calico's model, with its IPIP modes, as a CNI plugin.

No bridge. Each pod gets a veth pair: the pod end (CNI_IFNAME) holds the pod's addresses as
/32 and /128 and routes everything through the link-local gateway 169.254.1.1 (IPv6: the host
end's link-local address); the host end has the fixed MAC ee:ee:ee:ee:ee:ee, answers ARP for
169.254.1.1 by proxy ARP, and carries a /32 (/128) route to the pod. The node forwards.

Traffic to another node's pod CIDR, per peer (`peers`/`peersFile`, as pycni-vxlan), goes as
`encapsulation` says (pycni.datapath.routed keeps the node's tunnel and peer routes):

- `Always` (the default, as in a Calico pool): `<pod CIDR> via <node IP> dev pycni.ipip onlink`
- `CrossSubnet`: like Always when the peer's node IP is outside this node's underlay subnet,
  else like Never
- `Never`: `<pod CIDR> via <node IP> dev <underlay link>` (host-gw / kindnet style)

These peer routes carry the route protocol 112 (`ip route show proto 112`): that is how
`pycni reconcile` knows its own among the node's routes, and removes exactly the departed ones.

IPIP carries IPv4 only: a config with an IPv6 pod CIDR and encapsulation other than Never is
refused (code 7); IPv6 is always routed directly. A kernel without IPIP (`ip link add type
ipip` answers "Unknown device type": no `ipip` module) makes STATUS not ready (50) and ADD
fail with 50 when the config needs the tunnel.

`"encryption": "ipsec"` (pycni.datapath.encryption, docs/encryption.md): the node agent keys
IPsec ESP for the IPIP packets between nodes; the plugin sends every peer through the tunnel
(CrossSubnet's direct routes would be clear text; Never is refused, 7), leaves ESP room in the
MTU, and on a kernel without ESP answers STATUS and ADD with 50 before making anything.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, IPConfig, Result, Route, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import encryption, node, peers, pod, routed
from pycni.datapath.routed import ALWAYS, NEVER, Routing
from pycni.netlink import Rtnl
from pycni.validators import ipip as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.netlink import Link

NAME = "pycni-ipip"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local
HOST_MAC = "ee:ee:ee:ee:ee:ee"  # every host-side veth (Calico's); the pod sees it as gateway
GATEWAY4 = IP.parse("169.254.1.1")
GATEWAY6 = IP.parse("fe80::ecee:eeff:feee:eeee")  # HOST_MAC's EUI-64 link-local address
_RTN_UNICAST = 1


class IpipConf(Record):
    __slots__ = ("dns", "ip_masq", "non_masquerade", "routing")
    routing: Routing  # the node's tunnel and peer routes
    ip_masq: bool
    non_masquerade: list[Prefix]
    dns: DNS | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def parse_config(call: Call) -> IpipConf:
    return parse_conf(call.config)


def reconcile(config: dict[str, object]) -> list[str]:
    """`pycni reconcile`: this node's datapath (in the current namespace) brought to the peer
    set of one plugin config (a plugin object with cniVersion and name); the changes made."""
    return routed.reconcile(parse_conf(config).routing)


def parse_conf(c: dict[str, object]) -> IpipConf:
    """The config of one network (a plugin object with cniVersion and name), validated."""
    schema.validate(c)
    raw_dns = c.get("dns")
    dns = Result.from_json({"dns": raw_dns}, "$").dns if isinstance(raw_dns, dict) else None
    encapsulation = str(c.get("encapsulation") or ALWAYS)
    encrypt = encryption.parse(c.get("encryption"))
    if encrypt == encryption.IPSEC and encapsulation == NEVER:
        raise ConfigError(
            "$.encryption",
            "ipsec encrypts the IPIP tunnel's packets and encapsulation Never sends the pods'"
            " packets without a tunnel, in the clear: use encapsulation Always or CrossSubnet",
        )
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
    local_ip = IP.parse(local) if isinstance(local, str) else None
    non_masquerade = [
        parse_prefix(text, f"$.nonMasqueradeCIDRs[{n}]")
        for n, text in enumerate(_list(c.get("nonMasqueradeCIDRs")))
    ]
    return IpipConf(
        routing=Routing(
            encapsulation=encapsulation,
            encryption=encrypt,
            local_ip=local_ip,
            mtu=mtu if isinstance(mtu, int) else None,
            peer_source=peers.parse_source(c, schema.check_peer),
            pod_cidrs=pod_cidrs,
        ),
        ip_masq=bool(c.get("ipMasq")),
        non_masquerade=non_masquerade,
        dns=dns if dns is not None and not dns.is_empty() else None,
    )


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: IpipConf) -> Result:
    if conf.routing.encryption == encryption.IPSEC:
        encryption.require_esp()  # before anything is made: no half-made pod or tunnel
    # Rollback inside Rtnl: the undo steps use the socket, so it must close after them.
    with Rtnl() as host, Rollback() as undo:
        plan = routed.sync(host, conf.routing)  # the node's tunnel and peer routes, as every ADD
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

            masquerade.ensure(call.name, conf.routing.pod_cidrs, conf.non_masquerade)
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
        plan = routed.sync(host, conf.routing, dry_run=True)
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
    problem = peers.source_problem(conf.routing.peer_source)
    if problem is not None:
        raise CniError(Code.NOT_AVAILABLE, problem)
    with Rtnl() as host:
        try:
            plan = routed.sync(host, conf.routing, dry_run=True)
        except CniError as err:
            raise CniError(Code.NOT_AVAILABLE, err.msg, err.details) from None
        missing = []  # what the kernel lacks, all of it at once: the tunnel, ESP
        if plan.needs_tunnel and not routed.tunnel_works(host):
            missing.append(routed.no_ipip_message(conf.routing))
        esp = encryption.esp_problem() if conf.routing.encryption == encryption.IPSEC else None
        if esp is not None:
            missing.append(esp)
        if missing:
            raise CniError(Code.NOT_AVAILABLE, "; ".join(missing))
        if not _routes_gateway_elsewhere(host):
            raise CniError(
                Code.NOT_AVAILABLE,
                f"the node has no route to {GATEWAY4}: proxy ARP answers the pods' gateway"
                " only for an address the node routes out of another link (give the node a"
                " default route)",
            )
    if conf.ip_masq:
        from pycni.datapath import masquerade  # loaded only by networks that masquerade

        masquerade.status()
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: IpipConf) -> None:
    delegate.ipam(call, "GC")


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


# --- internals -------------------------------------------------------------------------------


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


def _routes_gateway_elsewhere(host: Rtnl) -> bool:
    """The node routes 169.254.1.1 somewhere (its default route, usually): proxy ARP answers
    only for such an address."""
    route = host.route_to(GATEWAY4)
    return route is not None and route.type == _RTN_UNICAST


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
