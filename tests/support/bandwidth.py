"""pycni-bandwidth's tests' network (pycni-bridge, then pycni-bandwidth) and the kernel's
traffic-control state as they read it: qdiscs, redirect filters and IFB devices (`tc -j`,
`ip -j`) on the emulated node."""

from __future__ import annotations

import json
from typing import Any

from pycni.lab.testbed import Node, Pod
from tests.support.conflists import kubenet

SUBNET, GW = "10.62.0.0/24", "10.62.0.1"
SUBNET6, GW6 = "fd62::/64", "fd62::1"
MBIT = 1_000_000
# Rates a 2-core machine, shared, sustains with room to spare; different per direction,
# so a swapped direction cannot pass. Bursts of 20 ms at the rate.
LIMITS = {
    "ingressRate": 30 * MBIT,
    "ingressBurst": 30 * MBIT // 50,
    "egressRate": 15 * MBIT,
    "egressBurst": 15 * MBIT // 50,
}


def conflist(version: str = "1.1.0", *, dual: bool = False, **bandwidth: Any) -> dict[str, Any]:
    """pycni-bridge, then pycni-bandwidth with the `bandwidth` capability and `bandwidth`."""
    chained = {"type": "pycni-bandwidth", "capabilities": {"bandwidth": True}, **bandwidth}
    return kubenet(version, [SUBNET, SUBNET6] if dual else [SUBNET], chained)


def qdiscs(node: Node, dev: str) -> dict[str, dict[str, Any]]:
    """A device's qdiscs by place: "root", "ingress"."""
    shown = json.loads(node.ns.run(["tc", "-j", "qdisc", "show", "dev", dev]).stdout or "[]")
    return {("ingress" if q["kind"] == "ingress" else "root"): q for q in shown}


def redirects(node: Node, dev: str) -> list[str]:
    """The devices a filter of the ingress qdisc redirects to (egress), per `tc -j`."""
    text = node.ns.run(["tc", "-j", "filter", "show", "dev", dev, "parent", "ffff:"]).stdout
    return [
        action["to_dev"]
        for f in json.loads(text or "[]")
        for action in f.get("options", {}).get("actions", [])
        if action.get("mirred_action") == "redirect" and action.get("direction") == "egress"
    ]


def ifbs(node: Node) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in node.ns.ip_json("-d", "link", "show", "type", "ifb")}


def host_veth(pod: Pod) -> str:
    (name,) = [i["name"] for i in pod.result["interfaces"] if i["name"].startswith("veth")]
    return str(name)


def ifb_of(pod: Pod) -> str:
    (name,) = [i["name"] for i in pod.result["interfaces"] if i["name"].startswith("pbw")]
    return str(name)
