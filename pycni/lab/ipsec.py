"""IPsec ESP keys for an emulated cluster (pycni.lab.cluster), as the node agents would install
them but without an API server: for `pycni demo --encryption ipsec` and the ipsec benchmark.

Every node pair gets one random 20-byte key (AES-128 key + GCM salt) and one SPI per direction,
and each node's pycni-owned xfrm state is reconciled to its peers with pycni.datapath.ipsec, in
the node's namespace. The keys here are random rather than derived (the agent derives them
from X25519 and the nodes' nonces, pycni.agent): the kernel's work per packet, what the demo
shows and the benchmark measures, is the same.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from pycni.cni.ip import IP
from pycni.datapath import ipsec
from pycni.netlink.xfrm import AEAD_KEY_BYTES, Xfrm

if TYPE_CHECKING:
    from pycni.lab.cluster import Cluster

_SPI_FIRST = 0x1000  # SPIs below 0x100 are reserved (RFC 4303); start well above


def key_cluster(cluster: Cluster) -> dict[str, list[str]]:
    """Key every node pair of `cluster` (its tunnel kind: the cluster's datapath) and
    reconcile every node; what was added on each node, by name."""
    members = list(cluster.nodes.values())
    tunnel = ipsec.Tunnel(cluster.datapath, int(cluster.vxlan.get("port", ipsec.VXLAN_PORT)))
    spis: set[int] = set()
    # (sender, receiver) -> (SPI, key): the sender's `out` SA is the receiver's `in` SA
    directions: dict[tuple[str, str], tuple[int, bytes]] = {}
    for a in members:
        for b in members:
            if a is not b:
                directions[(a.name, b.name)] = (_new_spi(spis), secrets.token_bytes(AEAD_KEY_BYTES))
    added: dict[str, list[str]] = {}
    for member in members:
        peers = []
        for other in members:
            if other is member:
                continue
            out_spi, out_key = directions[(member.name, other.name)]
            in_spi, in_key = directions[(other.name, member.name)]
            keys = ipsec.PairKeys(out_spi=out_spi, out_key=out_key, in_spi=in_spi, in_key=in_key)
            peers.append(ipsec.Peer(IP.parse(other.ip), keys))
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


def _new_spi(taken: set[int]) -> int:
    while True:
        spi = _SPI_FIRST + secrets.randbelow(0xFFFFFFFF - _SPI_FIRST)
        if spi not in taken:
            taken.add(spi)
            return spi
