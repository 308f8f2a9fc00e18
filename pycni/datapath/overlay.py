"""A node's VXLAN overlay (flannel's vxlan backend): pycni-vxlan's, kept in step with the
peer set by every ADD and by `pycni reconcile`.

One VXLAN device per network, `pycni.<vni>`, and per remote node, exactly:

- a route  `<peer pod CIDR> via <peer VTEP address> dev pycni.<vni> onlink`
- a permanent neighbour  `<peer VTEP address> lladdr <peer VTEP MAC>`
- an FDB entry  `<peer VTEP MAC> dst <peer node IP>`

The VTEP address is the peer pod CIDR's network address (10.244.2.0 for 10.244.2.0/24), and
each node's own VXLAN device holds its own one as a /32; the VTEP MAC is derived from the node
IP (`vtep_mac`): the same derivation on every node, so nothing has to be exchanged besides
the node IP and pod CIDRs Kubernetes already publishes.

`sync` brings the device, its address, routes, neighbours and FDB entries to exactly the peer
set: joined nodes added, departed ones removed, drift repaired. Unchanged, it costs five
netlink round trips.
"""

from __future__ import annotations

from pycni.cni.errors import ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.datapath import encryption, peers
from pycni.netlink import NetlinkExists, Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.datapath.peers import Peer, PeerSource, Underlay
    from pycni.netlink import Link

OVERHEAD = {4: 50, 6: 70}  # outer IP + UDP + VXLAN + inner Ethernet
_VXLAN_PAYLOAD_HEADERS = 8 + 8 + 14  # UDP + VXLAN + inner Ethernet: what ESP sees before the pod's
_RTN_UNICAST = 1
_RTPROT_KERNEL = 2


class Overlay(Record):
    """One network's overlay on this node, as its config describes it."""

    __slots__ = (
        "encryption",
        "local_ip",
        "mtu",
        "peer_source",
        "pod_cidrs",
        "port",
        "repair",
        "vni",
    )
    vni: int
    port: int
    local_ip: IP | None  # `localIP`; None: the default route's interface's address
    mtu: int | None  # the pods' MTU; None: the underlay link's, less OVERHEAD (and ESP's)
    encryption: str  # encryption.NONE or IPSEC (the agent keys ESP; we leave it room)
    repair: bool  # replace a device of ours with other parameters
    peer_source: PeerSource  # inline `peers`, or `peersFile`
    pod_cidrs: list[Prefix]  # this node's, from the IPAM config

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    @property
    def device(self) -> str:
        return f"pycni.{self.vni}"


def reconcile(conf: Overlay) -> list[str]:
    """Bring this node's overlay (in the current namespace) to exactly the peer set; the
    changes made, in words (empty when nothing had to change)."""
    with Rtnl() as host:
        underlay = peers.find_underlay(host, conf.local_ip)
        return sync(host, conf, underlay, peers.load(conf.peer_source))


def sync(
    host: Rtnl,
    conf: Overlay,
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


def _sync_addresses(step: _Step, conf: Overlay) -> None:
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
    host: Rtnl, conf: Overlay, underlay: Underlay, changes: list[str], *, dry_run: bool = False
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


def vtep_mac(node_ip: IP) -> str:
    """02:50 and the last four bytes of the node's address: unicast, locally administered,
    the same on every node that knows the address."""
    tail = node_ip.packed[-4:]
    return "02:50:" + ":".join(f"{b:02x}" for b in tail)


def vtep_address(pod_cidr: Prefix) -> IP:
    """The next hop for a pod CIDR (flannel's): its network address."""
    return pod_cidr.network


def overlay_mtu(conf: Overlay, underlay: Underlay) -> int:
    """The pods' MTU: `mtu`, else the underlay link's less the encapsulation, and with
    encryption less ESP's overhead too (pycni.datapath.encryption: 1416 on a 1500 underlay)."""
    if conf.mtu:
        return conf.mtu
    if conf.encryption == encryption.IPSEC:
        return encryption.esp_payload_mtu(underlay.link.mtu) - _VXLAN_PAYLOAD_HEADERS
    return underlay.link.mtu - OVERHEAD[underlay.local_ip.version]


# --- internals -------------------------------------------------------------------------------


def _vxlan_differences(device: Link, conf: Overlay, underlay: Underlay) -> str:
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
