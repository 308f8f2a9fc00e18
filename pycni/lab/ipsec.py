"""IPsec ESP keys for an emulated cluster (pycni.lab.cluster), as the node agents make them but
without an API server: for `pycni demo --encryption ipsec` and the ipsec benchmark.

Every node gets what its agent would have at start (pycni.agent.ipsec_keys.NodeKey: an X25519
key pair and a per-boot nonce); every node pair's two SAs are derived from them exactly as the
agents derive them (pycni.agent.ipsec_keys.pair_keys: HKDF-SHA256, SPIs from the same output),
and each node's pycni-owned xfrm state is reconciled to its peers with pycni.datapath.ipsec, in
the node's namespace. What the agents exchange through Node annotations is handed over here
directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycni.cni.ip import IP
from pycni.datapath import ipsec
from pycni.netlink.xfrm import Xfrm

if TYPE_CHECKING:
    from pycni.lab.cluster import Cluster


def key_cluster(cluster: Cluster) -> dict[str, list[str]]:
    """Key every node pair of `cluster` (its tunnel kind: the cluster's datapath) and
    reconcile every node; what was added on each node, by name."""
    from pycni.agent import ipsec_keys  # cryptography: the agent's and the lab's, not a plugin's

    members = list(cluster.nodes.values())
    tunnel = ipsec.Tunnel(cluster.datapath, int(cluster.vxlan.get("port", ipsec.VXLAN_PORT)))
    keys = {member.name: ipsec_keys.NodeKey() for member in members}
    added: dict[str, list[str]] = {}
    for member in members:
        own = keys[member.name]
        peers = [
            ipsec.Peer(IP.parse(other.ip), ipsec_keys.pair_keys(own, keys[other.name].published))
            for other in members
            if other is not member
        ]
        with Xfrm(member.node.ns.path) as xfrm:
            changes = ipsec.reconcile(xfrm, IP.parse(member.ip), tunnel, peers)
        added[member.name] = changes.added
    return added


def esp_counters(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Per node: (ESP packets it sent, ESP packets it received), from its SAs' counters."""
    counts = {}
    for member in cluster.nodes.values():
        local = IP.parse(member.ip)
        with Xfrm(member.node.ns.path) as xfrm:
            sas = [sa for sa in xfrm.sas() if sa.owned]
        sent = sum(sa.packets for sa in sas if sa.src == local)
        received = sum(sa.packets for sa in sas if sa.dst == local)
        counts[member.name] = (sent, received)
    return counts
