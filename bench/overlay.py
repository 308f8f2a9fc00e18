"""pycni-vxlan against what a Go user runs for the same overlay: flannel's vxlan backend, that
is the Go `bridge` plugin with `host-local` on each node's pod CIDR, and a VXLAN device with a
route, a neighbour and an FDB entry per remote node set by hand (what flanneld programs).

Both run on 2-node emulated clusters (pycni.lab.cluster): one running pycni-vxlan, one whose
nodes get the Go bridge network and the hand-made VXLAN device.

- vxlan: per-call latency and peak RSS of VERSION, ADD, CHECK, STATUS, DEL on node1 of each
  (bench/latency.py's interleaving: CHECK and STATUS run with every pod on the node; STATUS
  against Go's VERSION).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from bench import latency
from bench.common import GO_VERSION, Context, Outcome, Plugin
from bench.routed import single

TITLE = "pycni-vxlan vs Go bridge + host-local, a hand-made VXLAN device (flannel's layout)"
NETWORK = "overlay"
DEVICE = "flannel.1"
VNI = "1"
PORT = "8472"  # flannel's
OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet


def _bridge_conflist(member: Any, state: Path, mtu: int) -> dict[str, Any]:
    """The Go bridge network of a node, as flannel's CNI plugin delegates it."""
    conflist: dict[str, Any] = member.node.conf(
        {
            "cniVersion": GO_VERSION,
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "mtu": mtu,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": member.pod_cidr}]],
                        "dataDir": str(state / member.name),
                    },
                }
            ],
        }
    )
    return conflist


def _vtep_mac(member: Any) -> str:
    return f"02:f1:00:00:00:{member.index + 1:02x}"


def _flannel_overlay(members: list[Any]) -> int:
    """Each node's VXLAN device, its own VTEP address, and per remote node the route, the
    neighbour and the FDB entry; the overlay MTU."""
    mtu = 0
    for member in members:
        ns = member.node.ns
        underlay_mtu = ns.ip_json("link", "show", "eth0")[0]["mtu"]
        mtu = underlay_mtu - OVERHEAD
        ns.ip("link", "add", DEVICE, "address", _vtep_mac(member), "mtu", str(mtu), "type",
              "vxlan", "id", VNI, "local", member.ip, "dev", "eth0", "dstport", PORT,
              "nolearning")  # fmt: skip
        vtep = ip_network(member.pod_cidr).network_address
        ns.ip("addr", "add", f"{vtep}/32", "dev", DEVICE)
        ns.ip("link", "set", DEVICE, "up")
        for other in members:
            if other is member:
                continue
            via = str(ip_network(other.pod_cidr).network_address)
            ns.ip("route", "add", other.pod_cidr, "via", via, "dev", DEVICE, "onlink")
            ns.ip("neigh", "add", via, "lladdr", _vtep_mac(other), "dev", DEVICE, "nud",
                  "permanent")  # fmt: skip
            ns.run(["bridge", "fdb", "append", _vtep_mac(other), "dev", DEVICE, "dst", other.ip,
                    "self", "permanent"])  # fmt: skip
    return mtu


@contextmanager
def clusters(ctx: Context) -> Iterator[tuple[Any, Any, dict[str, Any], Path]]:
    """(the pycni-vxlan cluster, the Go bridge cluster with the hand-made overlay, each Go
    node's bridge conflist by name, a state dir)."""
    from pycni.lab.cluster import Cluster

    with ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="pycni-bench-overlay-"))
        stack.callback(shutil.rmtree, state, True)
        overlay = Cluster.create(2, ctx.bundle)
        stack.callback(overlay.destroy)
        plain = Cluster.create(2, ctx.bundle)  # its nodes and underlay; no pycni network
        stack.callback(plain.destroy)
        members = list(plain.nodes.values())
        mtu = _flannel_overlay(members)
        go = {member.name: _bridge_conflist(member, state, mtu) for member in members}

        def remove_go_pods() -> None:  # before the cluster's teardown, which knows no Go bridge
            for member in members:
                for name in list(member.node.pods):
                    member.node.remove_pod(name, go[member.name])

        stack.callback(remove_go_pods)
        yield overlay, plain, go, state


def latency_suite(ctx: Context) -> Outcome:
    with clusters(ctx) as (overlay, plain, go_conflists, state):
        one, two = overlay.nodes["node1"], plain.nodes["node1"]
        (state / "pycni").mkdir()
        (state / "Go").mkdir()
        py = Plugin(
            "pycni",
            ctx.bundle / "pycni-vxlan",
            single(overlay.conflist(one)),
            one.node.ns.path,
            state / "pycni",
        )
        go = Plugin(
            "Go",
            ctx.go_dir / "bridge",
            single(go_conflists[two.name]),
            two.node.ns.path,
            state / "Go",
            status_verb="VERSION",
        )
        prefix = f"pb{os.getpid()}vx"
        latency.run_cycles(py, go, ctx.sizes.pods, ctx.sizes.rss_rounds, prefix, None)
    result = latency.report(ctx, TITLE, "vxlan", py, go, ctx.sizes.pods, "vxlan")
    result.lines.insert(
        0,
        "Each on node1 of a 2-node emulated cluster: pycni-vxlan (its VXLAN device, route,"
        " neighbour and FDB entry to the other node programmed by the plugin) against Go"
        " bridge + host-local with the same overlay set up by hand, as flanneld does. CHECK"
        " and STATUS run with every pod on the node.",
    )
    result.lines.insert(1, "")
    return result
