"""pycni-bridge: the kubenet datapath — a node's pods on one Linux bridge.

Every pod gets a veth pair: the host end is enslaved to the node bridge (`cbr0` by default),
the other end is created directly inside the pod's namespace under CNI_IFNAME. The pod's
addresses, and the gateway they route through, come from the IPAM plugin in `ipam.type`; with
`isGateway` the bridge holds that gateway. Bridged traffic is passed through the node's
netfilter hooks (bridge-nf-call-iptables), so kube-proxy's DNAT works between pods of one
bridge, and `hairpinMode` lets a pod reach itself through a service IP.

The attachment steps are pycni.datapath.bridge's (the VXLAN overlay attaches its pods with
them too) and pycni.datapath.pod's.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.result import Result, parse_prefix
from pycni.cni.rollback import Rollback
from pycni.datapath import bridge, pod
from pycni.datapath.bridge import DEFAULT_BRIDGE, BridgeConf
from pycni.netlink import Rtnl
from pycni.validators import bridge as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call

NAME = "pycni-bridge"
CNI_ARGS_KEYS = ("IP",)  # passed through to host-local


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
        result = bridge.attach(host, undo, call, conf)
        undo.commit()
    return result


def cmd_del(call: Call, conf: BridgeConf) -> None:
    """The lease and the veth; the bridge is the node's and stays."""
    pod.delete_attachment(call)


def cmd_check(call: Call, conf: BridgeConf) -> None:
    bridge.check(call, conf)


def cmd_status(call: Call, conf: BridgeConf) -> None:
    with Rtnl() as host:
        node_bridge = host.find_link(conf.bridge)
    if node_bridge is not None and node_bridge.kind != "bridge":
        raise CniError(
            Code.NOT_AVAILABLE,
            f"'{conf.bridge}' exists and is a {node_bridge.kind or 'plain'} device, not a bridge",
        )
    if conf.ip_masq:
        from pycni.datapath import masquerade  # loaded only by networks that masquerade

        masquerade.status()
    delegate.ipam(call, "STATUS")


def cmd_gc(call: Call, conf: BridgeConf) -> None:
    delegate.ipam(call, "GC")


# --- internals -------------------------------------------------------------------------------


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
