"""pycni-vxlan: the overlay datapath — flannel's vxlan backend, as a CNI plugin.

The node's pods are attached to the node bridge exactly as pycni-bridge attaches them (the
steps of pycni.datapath.bridge), with the node's pod CIDR from the IPAM config. Traffic to
another node's pod CIDR leaves through one VXLAN device per network, `pycni.<vni>`, which the
plugin keeps in step with the peer set (`peers`, or the JSON list in `peersFile`). Per remote
node, exactly:

- a route  `<peer pod CIDR> via <peer VTEP address> dev pycni.<vni> onlink`
- a permanent neighbour  `<peer VTEP address> lladdr <peer VTEP MAC>`
- an FDB entry  `<peer VTEP MAC> dst <peer node IP>`

(pycni.datapath.overlay). `pycni reconcile --conf FILE` brings the device, its address,
routes, neighbours and FDB entries to exactly the peer set: joined nodes added, departed ones
removed, drift repaired. Unchanged, it costs five netlink round trips; every ADD runs it.

`"encryption": "ipsec"` (pycni.datapath.encryption, docs/encryption.md): the node agent keys
IPsec ESP for the VXLAN packets between nodes; the plugin leaves ESP room in the MTU, needs an
IPv4 underlay, and on a kernel without ESP answers STATUS and ADD with 50 before making anything.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, Result, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import bridge, encryption, overlay, peers, pod
from pycni.datapath.bridge import DEFAULT_BRIDGE, BridgeConf
from pycni.datapath.overlay import Overlay
from pycni.netlink import Rtnl
from pycni.validators import vxlan as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.datapath.peers import Underlay

NAME = "pycni-vxlan"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local
DEFAULT_VNI = 1
DEFAULT_PORT = 4789


class VxlanConf(Record):
    __slots__ = ("bridge", "dns", "hairpin", "ip_masq", "non_masquerade", "overlay")
    overlay: Overlay  # the node's VXLAN device and what it holds
    bridge: str
    hairpin: bool
    ip_masq: bool
    non_masquerade: list[Prefix]
    dns: DNS | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def parse_config(call: Call) -> VxlanConf:
    return parse_conf(call.config)


def reconcile(config: dict[str, object]) -> list[str]:
    """`pycni reconcile`: this node's datapath (in the current namespace) brought to the peer
    set of one plugin config (a plugin object with cniVersion and name); the changes made."""
    return overlay.reconcile(parse_conf(config).overlay)


def parse_conf(c: dict[str, object]) -> VxlanConf:
    """The config of one network (a plugin object with cniVersion and name), validated."""
    schema.validate(c)
    raw_dns = c.get("dns")
    dns = Result.from_json({"dns": raw_dns}, "$").dns if isinstance(raw_dns, dict) else None
    pod_cidrs = peers.pod_cidrs(c.get("ipam"))
    local = c.get("localIP")
    local_ip = IP.parse(local) if isinstance(local, str) else None
    non_masquerade = [
        parse_prefix(text, f"$.nonMasqueradeCIDRs[{n}]")
        for n, text in enumerate(_list(c.get("nonMasqueradeCIDRs")))
    ]
    vni, port, mtu = c.get("vni"), c.get("port"), c.get("mtu")
    return VxlanConf(
        overlay=Overlay(
            vni=vni if isinstance(vni, int) else DEFAULT_VNI,
            port=port if isinstance(port, int) else DEFAULT_PORT,
            local_ip=local_ip,
            mtu=mtu if isinstance(mtu, int) else None,
            encryption=encryption.parse(c.get("encryption")),
            repair=bool(c.get("repair")),
            peer_source=peers.parse_source(c, schema.check_peer),
            pod_cidrs=pod_cidrs,
        ),
        bridge=str(c.get("bridge") or DEFAULT_BRIDGE),
        hairpin=bool(c.get("hairpinMode")),
        ip_masq=bool(c.get("ipMasq")),
        non_masquerade=non_masquerade,
        dns=dns if dns is not None and not dns.is_empty() else None,
    )


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: VxlanConf) -> Result:
    encrypted = conf.overlay.encryption == encryption.IPSEC
    if encrypted:  # before anything is made: a kernel without ESP gets no half-made pod
        encryption.require_esp()
    # Rollback inside Rtnl: the undo steps use the socket, so it must close after them.
    with Rtnl() as host, Rollback() as undo:
        underlay = peers.find_underlay(host, conf.overlay.local_ip)
        if encrypted:
            encryption.require_ipv4_underlay(underlay.local_ip)
        overlay.sync(host, conf.overlay, underlay, peers.load(conf.overlay.peer_source))
        # the pod, on the node bridge as pycni-bridge attaches it, with the overlay's MTU
        result = bridge.attach(host, undo, call, bridge_conf(conf, underlay))
        undo.commit()
    return result


def cmd_del(call: Call, conf: VxlanConf) -> None:
    """The pod's veth and lease, as pycni-bridge; the overlay is the node's and stays."""
    pod.delete_attachment(call)


def cmd_check(call: Call, conf: VxlanConf) -> None:
    with Rtnl() as host:
        underlay = peers.find_underlay(host, conf.overlay.local_ip)
        attachment = bridge_conf(conf, underlay)
        drift = overlay.sync(
            host, conf.overlay, underlay, peers.load(conf.overlay.peer_source), dry_run=True
        )
    if drift:
        raise CniError(Code.CHECK_FAILED, f"check failed: overlay: {'; '.join(drift)}")
    bridge.check(call, attachment)


def cmd_status(call: Call, conf: VxlanConf) -> None:
    with Rtnl() as host:
        try:
            underlay = peers.find_underlay(host, conf.overlay.local_ip)
            if conf.overlay.encryption == encryption.IPSEC:
                encryption.require_ipv4_underlay(underlay.local_ip)
        except CniError as err:
            raise CniError(Code.NOT_AVAILABLE, err.msg) from None
    if conf.overlay.encryption == encryption.IPSEC:
        encryption.require_esp()
    problem = peers.source_problem(conf.overlay.peer_source)
    if problem is not None:
        raise CniError(Code.NOT_AVAILABLE, problem)
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: VxlanConf) -> None:
    delegate.ipam(call, "GC")


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
        mtu=overlay.overlay_mtu(conf.overlay, underlay),
        hairpin=conf.hairpin,
        promisc=False,
        prefer_ipv6=False,
        dns=conf.dns,
    )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
