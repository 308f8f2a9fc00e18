"""A routed node (Calico's model, with its IPIP modes): pycni-ipip's tunnel and peer routes,
kept in step with the peer set by every ADD and by `pycni reconcile`.

Traffic to another node's pod CIDR, per peer, as `encapsulation` says:

- `Always` (the default, as in a Calico pool): `<pod CIDR> via <node IP> dev pycni.ipip onlink`
- `CrossSubnet`: like Always when the peer's node IP is outside this node's underlay subnet,
  else like Never
- `Never`: `<pod CIDR> via <node IP> dev <underlay link>` (host-gw / kindnet style)

These peer routes carry the route protocol 112 (`ip route show proto 112`): that is how `sync`
knows its own among the node's routes, and removes exactly the departed ones.

The tunnel is a device of our own, `pycni.ipip` (local = the node's underlay address, no remote:
point-to-multipoint), not the kernel's fallback `tunl0`: `tunl0` appears in every namespace
once the module loads, cannot be deleted, and is what Calico and others configure, so a
second owner would fight over its settings. The kernel hands an incoming IPIP packet to the
tunnel whose local address matches before the fallback one, so `pycni.ipip` receives them.
The tunnel holds the node's pod CIDR network address (10.244.1.0/32): packets from the node
itself to remote pods go out with it as their source, so the replies come back the same way.
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.datapath import encryption, node, peers
from pycni.netlink import NetlinkError, NetlinkExists, Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.datapath.peers import Peer, PeerSource, Underlay
    from pycni.netlink import Link

ALWAYS, CROSS_SUBNET, NEVER = "Always", "CrossSubnet", "Never"
TUNNEL = "pycni.ipip"
OVERHEAD = 20  # the outer IPv4 header
RTPROT_PYCNI = 112  # the protocol of the peer routes: ours to add and remove
_EOPNOTSUPP = 95
_RTN_UNICAST = 1


class Routing(Record):
    """How this node reaches its peers' pods, as one network's config says."""

    __slots__ = ("encapsulation", "encryption", "local_ip", "mtu", "peer_source", "pod_cidrs")
    encapsulation: str  # ALWAYS, CROSS_SUBNET, NEVER
    encryption: str  # encryption.NONE, or IPSEC: every peer through the tunnel, ESP's room
    local_ip: IP | None  # `localIP`; None: the default route's interface's address
    mtu: int | None  # the pods' MTU; None: `node_mtu`'s rule
    peer_source: PeerSource
    pod_cidrs: list[Prefix]  # this node's, from the IPAM config

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def no_ipip_message(conf: Routing) -> str:
    return (
        f"encapsulation {conf.encapsulation} needs an IPIP tunnel and this node's kernel"
        " cannot create one (ip link add type ipip: Unknown device type): load the ipip"
        " module (modprobe ipip), or use encapsulation Never"
    )


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


def reconcile(conf: Routing) -> list[str]:
    """Bring this node's tunnel and peer routes (in the current namespace) to exactly the
    peer set; the changes made, in words (empty when nothing had to change)."""
    with Rtnl() as host:
        return sync(host, conf).changes


def sync(host: Rtnl, conf: Routing, *, dry_run: bool = False) -> Plan:
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


def node_mtu(host: Rtnl, conf: Routing, underlay: Underlay | None = None) -> int:
    """`mtu`, else the underlay link's MTU, less the IPIP header when encapsulation can
    happen (and with encryption, less ESP's overhead: pycni.datapath.encryption). With Never
    and no underlay (no peers), the kubenet rule (pycni.datapath.node)."""
    if conf.mtu is not None:
        return conf.mtu
    if underlay is None:
        try:
            underlay = peers.find_underlay(host, conf.local_ip)
        except CniError:
            if conf.encapsulation != NEVER:
                raise
            return node.smallest_mtu(host)
    if conf.encapsulation == NEVER:
        return underlay.link.mtu
    if conf.encryption == encryption.IPSEC:  # the inner IPv4 packet is ESP's payload
        return encryption.esp_payload_mtu(underlay.link.mtu)
    return underlay.link.mtu - OVERHEAD


def tunnel_works(host: Rtnl) -> bool:
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


def _encapsulate(conf: Routing, underlay: Underlay | None, peer: Peer) -> bool:
    if conf.encapsulation == NEVER or underlay is None:
        return False
    if conf.encapsulation == ALWAYS or conf.encryption == encryption.IPSEC:
        return True  # encrypted: a direct route would carry the pod's packets in the clear
    return not underlay.same_subnet(peer.node_ip)  # CrossSubnet


def _peer_route(
    conf: Routing,
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
    host: Rtnl, conf: Routing, underlay: Underlay, mtu: int, changes: list[str], dry_run: bool
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
