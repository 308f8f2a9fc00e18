"""pycni-vxlan: the overlay datapath — flannel's vxlan backend, as a CNI plugin.

The node's pods are attached to the node bridge exactly as pycni-bridge attaches them (the
steps of pycni.datapath.bridge), with the node's pod CIDR from the IPAM config. Traffic to
another node's pod CIDR leaves through one VXLAN device per network, `pycni.<vni>`, which the
plugin keeps in step with the peer set (`peers`, or the JSON list in `peersFile`). Per remote
node, exactly:

- a route  `<peer pod CIDR> via <peer VTEP address> dev pycni.<vni> onlink`
- a permanent neighbour  `<peer VTEP address> lladdr <peer VTEP MAC>`
- an FDB entry  `<peer VTEP MAC> dst <peer node IP>`

The VTEP address is the peer pod CIDR's network address (10.244.2.0 for 10.244.2.0/24), and
each node's own VXLAN device holds its own one as a /32; the VTEP MAC is derived from the node
IP (`vtep_mac`): the same derivation on every node, so nothing has to be exchanged besides
the node IP and pod CIDRs Kubernetes already publishes.

`reconcile` (also `pycni reconcile --conf FILE`) brings the device, its address, routes,
neighbours and FDB entries to exactly the peer set: joined nodes added, departed ones removed,
drift repaired. Unchanged, it costs five netlink round trips; every ADD runs it.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, Result, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import bridge, node, peers, pod
from pycni.datapath.bridge import DEFAULT_BRIDGE, BridgeConf
from pycni.datapath.peers import Peer, PeerSource, Underlay
from pycni.netlink import NetlinkExists, Rtnl
from pycni.validators import vxlan as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.netlink import Link

NAME = "pycni-vxlan"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local
DEFAULT_VNI = 1
DEFAULT_PORT = 4789
OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet
_RTN_UNICAST = 1
_RTPROT_KERNEL = 2


class VxlanConf(Record):
    __slots__ = (
        "bridge",
        "dns",
        "hairpin",
        "ip_masq",
        "local_ip",
        "mtu",
        "network",
        "non_masquerade",
        "peer_source",
        "pod_cidrs",
        "port",
        "repair",
        "vni",
    )
    network: str
    vni: int
    port: int
    local_ip: IP | None
    mtu: int | None
    bridge: str
    hairpin: bool
    ip_masq: bool
    non_masquerade: list[Prefix]
    repair: bool
    peer_source: PeerSource  # inline `peers`, or `peersFile`
    pod_cidrs: list[Prefix]  # this node's, from the IPAM config
    dns: DNS | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    @property
    def device(self) -> str:
        return f"pycni.{self.vni}"


def parse_config(call: Call) -> VxlanConf:
    return parse_conf(call.config)


def parse_conf(c: dict[str, object]) -> VxlanConf:
    """The config of one network (a plugin object with cniVersion and name), validated."""
    schema.validate(c)
    raw_dns = c.get("dns")
    dns = Result.from_json({"dns": raw_dns}, "$").dns if isinstance(raw_dns, dict) else None
    pod_cidrs = peers.pod_cidrs(c.get("ipam"))
    local = c.get("localIP")
    vni, port, mtu = c.get("vni"), c.get("port"), c.get("mtu")
    return VxlanConf(
        network=str(c.get("name")),
        vni=vni if isinstance(vni, int) else DEFAULT_VNI,
        port=port if isinstance(port, int) else DEFAULT_PORT,
        local_ip=IP.parse(local) if isinstance(local, str) else None,
        mtu=mtu if isinstance(mtu, int) else None,
        bridge=str(c.get("bridge") or DEFAULT_BRIDGE),
        hairpin=bool(c.get("hairpinMode")),
        ip_masq=bool(c.get("ipMasq")),
        non_masquerade=[
            parse_prefix(text, f"$.nonMasqueradeCIDRs[{n}]")
            for n, text in enumerate(_list(c.get("nonMasqueradeCIDRs")))
        ],
        repair=bool(c.get("repair")),
        peer_source=peers.parse_source(c, schema.check_peer),
        pod_cidrs=pod_cidrs,
        dns=dns if dns is not None and not dns.is_empty() else None,
    )


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: VxlanConf) -> Result:
    # Rollback inside Rtnl: the undo steps use the socket, so it must close after them.
    with Rtnl() as host, Rollback() as undo:
        underlay = find_underlay(host, conf)
        reconcile_overlay(host, conf, underlay, load_peers(conf))
        # the pod, on the node bridge: pycni-bridge's steps, with the overlay's MTU
        attachment = bridge_conf(conf, underlay)
        node_bridge = bridge.ensure_bridge(host, attachment)
        ipam = delegate.ipam_add(call)
        undo.push(delegate.ipam, call, "DEL")
        ips = pod.order_ips(ipam.ips, prefer_ipv6=False)
        host_veth = bridge.attach_pod(host, call, node_bridge, attachment)
        undo.push(lambda: host.delete_link(host_veth.name, missing_ok=True))
        routes = bridge.pod_routes(ipam, ips, attachment)
        pod_link = pod.configure(call, ips, routes)
        bridge.ensure_gateway(host, node_bridge, ips, attachment)
        node.enable_forwarding({ip.address.version for ip in ips})
        if conf.ip_masq:
            from pycni.datapath import masquerade  # loaded only by networks that masquerade

            masquerade.ensure(call.name, [ip.address.masked() for ip in ips], conf.non_masquerade)
        undo.commit()
    return pod.result(call, [node_bridge, host_veth], pod_link, ips, routes, conf.dns or ipam.dns)


def cmd_del(call: Call, conf: VxlanConf) -> None:
    """The pod's veth and lease, as pycni-bridge; the overlay is the node's and stays."""
    pod.delete_attachment(call)


def cmd_check(call: Call, conf: VxlanConf) -> None:
    with Rtnl() as host:
        underlay = find_underlay(host, conf)
        attachment = bridge_conf(conf, underlay)
        drift = reconcile_overlay(host, conf, underlay, load_peers(conf), dry_run=True)
    if drift:
        raise CniError(Code.CHECK_FAILED, f"check failed: overlay: {'; '.join(drift)}")
    bridge.check(call, attachment)


def cmd_status(call: Call, conf: VxlanConf) -> None:
    with Rtnl() as host:
        try:
            find_underlay(host, conf)
        except CniError as err:
            raise CniError(Code.NOT_AVAILABLE, err.msg) from None
    problem = peer_source_problem(conf)
    if problem is not None:
        raise CniError(Code.NOT_AVAILABLE, problem)
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: VxlanConf) -> None:
    delegate.ipam(call, "GC")


# --- the overlay -----------------------------------------------------------------------------


def reconcile(conf: VxlanConf) -> list[str]:
    """Bring this node's overlay (in the current namespace) to exactly the peer set; the
    changes made, in words (empty when nothing had to change)."""
    with Rtnl() as host:
        underlay = find_underlay(host, conf)
        return reconcile_overlay(host, conf, underlay, load_peers(conf))


def reconcile_overlay(
    host: Rtnl,
    conf: VxlanConf,
    underlay: Underlay,
    peer_set: list[Peer],
    *,
    dry_run: bool = False,
) -> list[str]:
    """The device, its address, and per peer a route, a neighbour and an FDB entry; anything
    else on the device goes. With `dry_run`, only say what differs."""
    remote = peers.others(peer_set, underlay.local_ip)  # a shared list names us too
    peers.check_overlaps(conf.pod_cidrs, remote)
    changes: list[str] = []
    device = ensure_vxlan(host, conf, underlay, changes, dry_run=dry_run)
    if device is None:  # dry run, no device
        return changes
    step = _Step(host, device.index, changes, dry_run)
    # the device's own address: our pod CIDR's network address, the source of node->pod
    # packets, so that replies come back through the overlay
    _sync_addresses(step, conf)
    _sync_routes(step, {cidr: vtep_address(cidr) for p in remote for cidr in p.pod_cidrs})
    _sync_neighbours(
        step, {vtep_address(cidr): vtep_mac(p.node_ip) for p in remote for cidr in p.pod_cidrs}
    )
    _sync_fdb(step, {vtep_mac(p.node_ip): p.node_ip for p in remote})
    return changes


class _Step:
    """What each sync step needs: the netlink socket, the device, the change log."""

    def __init__(self, host: Rtnl, index: int, changes: list[str], dry_run: bool) -> None:
        self.host, self.index, self.changes, self.dry_run = host, index, changes, dry_run

    def change(self, what: str) -> bool:
        """Log a change; True if it is to be made."""
        self.changes.append(what)
        return not self.dry_run


def _sync_addresses(step: _Step, conf: VxlanConf) -> None:
    host, index = step.host, step.index
    want = {Prefix(cidr.network, cidr.ip.bits) for cidr in conf.pod_cidrs}
    have = {a.prefix for a in host.addresses(index)}
    for own in want - have:
        if step.change(f"add address {own} to {conf.device}"):
            try:
                host.add_address(index, own, nodad=True)
            except NetlinkExists:
                pass  # a parallel ADD added it
    for extra in have - want:
        if extra.version == 6 and extra.ip.value >> 118 == 0x3FA:  # fe80::/10, the kernel's
            continue
        if step.change(f"remove address {extra} from {conf.device}"):
            host.delete_address(index, extra, missing_ok=True)


def _sync_routes(step: _Step, want: dict[Prefix, IP]) -> None:
    host, index = step.host, step.index
    have = {
        r.dst: r
        for r in host.routes(oif=index)
        if r.type == _RTN_UNICAST
        and r.protocol != _RTPROT_KERNEL  # the kernel's own (fe80::/64): not ours to manage
        and r.dst.length
    }
    for dst in have.keys() - want.keys():
        if step.change(f"remove route {dst}"):
            host.delete_route(dst, oif=index, missing_ok=True)
    for dst, via in want.items():
        route = have.get(dst)
        if route is not None and route.gateway == via and route.onlink:
            continue
        if step.change(f"{'add' if route is None else 'repair'} route {dst} via {via}"):
            host.add_route(dst, gateway=via, oif=index, onlink=True, replace=True)


def _sync_neighbours(step: _Step, want: dict[IP, str]) -> None:
    host, index = step.host, step.index
    have = {n.dst: n for n in host.neighbours(index) if n.dst is not None}
    for dst in have.keys() - want.keys():
        if have[dst].permanent and step.change(f"remove neighbour {dst}"):
            host.delete_neighbour(index, dst, missing_ok=True)
    for dst, mac in want.items():
        entry = have.get(dst)
        if entry is not None and (entry.mac or "").lower() == mac and entry.permanent:
            continue
        if step.change(f"{'add' if entry is None else 'repair'} neighbour {dst} lladdr {mac}"):
            host.add_neighbour(index, dst, mac, replace=True)


def _sync_fdb(step: _Step, want: dict[str, IP]) -> None:
    host, index = step.host, step.index
    have: dict[str, list[IP | None]] = {}
    for entry in host.fdb_entries(index):
        if entry.mac is not None:
            have.setdefault(entry.mac.lower(), []).append(entry.dst)
    for mac, destinations in have.items():
        for dst in destinations:
            if want.get(mac) != dst and step.change(f"remove fdb entry {mac} dst {dst}"):
                host.delete_fdb_entry(index, mac, dst, missing_ok=True)
    for mac, node_ip in want.items():
        if node_ip not in have.get(mac, []) and step.change(f"add fdb entry {mac} dst {node_ip}"):
            host.add_fdb_entry(index, mac, node_ip, replace=True)


def ensure_vxlan(
    host: Rtnl, conf: VxlanConf, underlay: Underlay, changes: list[str], *, dry_run: bool = False
) -> Link | None:
    """The network's VXLAN device, created on first use, up, with the derived MAC and the
    overlay MTU. One with another VNI, port or local address is reported as exactly that
    (code 7), and replaced only with `repair`."""
    mtu = overlay_mtu(conf, underlay)
    mac = vtep_mac(underlay.local_ip)
    device = host.find_link(conf.device)
    if device is not None:
        differences = _vxlan_differences(device, conf, underlay)
        if differences:
            if dry_run:
                changes.append(f"vxlan device '{conf.device}' exists with {differences}")
                return None
            if not conf.repair:
                raise ConfigError(
                    "$.repair",
                    f"vxlan device '{conf.device}' exists with {differences}; set repair to"
                    " replace it",
                )
            changes.append(f"replace vxlan device '{conf.device}' ({differences})")
            host.delete_link(device.index, missing_ok=True)
            device = None
    if device is None:
        if dry_run:
            changes.append(f"vxlan device '{conf.device}' is missing")
            return None
        changes.append(f"create vxlan device '{conf.device}'")
        try:
            host.create_vxlan(
                conf.device,
                conf.vni,
                port=conf.port,
                local=underlay.local_ip,
                underlay=underlay.link.index,
                learning=False,
                mtu=mtu,
                mac=mac,
                up=True,
            )
        except NetlinkExists:
            pass  # a parallel ADD made it first
        return host.get_link(conf.device)
    if device.mtu != mtu or (device.mac or "").lower() != mac or not device.up:
        changes.append(f"repair vxlan device '{conf.device}' (mtu {mtu}, mac {mac}, up)")
        if not dry_run:
            host.set_link(device.index, mtu=mtu, mac=mac, up=True)
    return device


def find_underlay(host: Rtnl, conf: VxlanConf) -> Underlay:
    """`localIP` and the link that holds it; else the first global address on the interface
    of the default route (IPv4 first)."""
    return peers.find_underlay(host, conf.local_ip)


def load_peers(conf: VxlanConf) -> list[Peer]:
    """The peer set, from `peers` or `peersFile` (pycni.datapath.peers.load)."""
    return peers.load(conf.peer_source, schema.check_peer)


def peer_source_problem(conf: VxlanConf) -> str | None:
    return peers.source_problem(conf.peer_source)


def vtep_mac(node_ip: IP) -> str:
    """02:50 and the last four bytes of the node's address: unicast, locally administered,
    the same on every node that knows the address."""
    tail = node_ip.packed[-4:]
    return "02:50:" + ":".join(f"{b:02x}" for b in tail)


def vtep_address(pod_cidr: Prefix) -> IP:
    """The next hop for a pod CIDR (flannel's): its network address."""
    return pod_cidr.network


def overlay_mtu(conf: VxlanConf, underlay: Underlay) -> int:
    return conf.mtu or underlay.link.mtu - OVERHEAD[underlay.local_ip.version]


def bridge_conf(conf: VxlanConf, underlay: Underlay) -> BridgeConf:
    """How the pods are attached to the bridge: the gateway on the bridge, the pod's default
    route through it, the overlay MTU."""
    return BridgeConf(
        bridge=conf.bridge,
        is_gateway=True,
        is_default_gateway=True,
        force_address=False,
        ip_masq=conf.ip_masq,
        non_masquerade=conf.non_masquerade,
        mtu=overlay_mtu(conf, underlay),
        hairpin=conf.hairpin,
        promisc=False,
        prefer_ipv6=False,
        dns=conf.dns,
    )


# --- internals -------------------------------------------------------------------------------


def _vxlan_differences(device: Link, conf: VxlanConf, underlay: Underlay) -> str:
    if device.kind != "vxlan" or device.vxlan is None:
        return f"kind {device.kind or 'plain'}, config wants a vxlan device"
    info = device.vxlan
    out = []
    if info.vni != conf.vni:
        out.append(f"vni {info.vni}, config wants {conf.vni}")
    if info.port != conf.port:
        out.append(f"port {info.port}, config wants {conf.port}")
    if info.local != underlay.local_ip:
        out.append(f"local {info.local}, config wants {underlay.local_ip}")
    return ", ".join(out)


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
