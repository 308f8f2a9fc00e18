"""The kernel lane's guest itself: what its kernel has and lacks (as docs/development.md says),
and the project's emulated cluster (namespaces, veth, bridge, the frozen bundle) working inside
it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster
from pycni.lab.netns import Netns

# (what, command run inside a fresh namespace). docs/development.md's "kernel lane" section lists
# these.
HAS = [
    ("ipip", "ip link add t0 type ipip local 10.0.0.1"),
    ("veth", "ip link add v0 type veth peer name v1"),
    ("bridge-vlan-filtering", "ip link add b0 type bridge vlan_filtering 1"),
    ("vxlan", "ip link add x0 type vxlan id 5 dstport 4789 local 10.0.0.1"),
    ("dummy", "ip link add d0 type dummy"),
    ("gre", "ip link add g0 type gre local 10.0.0.1 remote 10.0.0.2"),
    (
        "tc tbf",
        "ip link add v0 type veth peer name v1 && tc qdisc add dev v0 root tbf"
        " rate 1mbit burst 32kbit latency 400ms",
    ),
    (
        "tc ingress + mirred to ifb",
        "ip link add v0 type veth peer name v1 && ip link add i0 type ifb"
        " && tc qdisc add dev v0 ingress && tc filter add dev v0 parent ffff: protocol ip u32"
        " match u32 0 0 action mirred egress redirect dev i0",
    ),
    ("iptables-legacy-nat", "iptables-legacy -t nat -A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE"),
    ("nft-bridge-family", "nft add table bridge f"),
    ("IPv6", "ip link add v0 type veth peer name v1 && ip -6 addr add fd00::1/64 dev v0"),
]
LACKS = [
    ("nft-inet-family", "nft add table inet f"),
    ("nft-ip-family", "nft add table ip f"),
    ("nft-ip6-family", "nft add table ip6 f"),
    ("iptables-nft", "iptables-nft -t nat -A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE"),
    ("wireguard", "ip link add w0 type wireguard"),
]


@pytest.mark.parametrize(("what", "command"), HAS, ids=[h[0] for h in HAS])
def test_guest_kernel_has(netns: Netns, what: str, command: str) -> None:
    done = netns.run(["sh", "-c", command], check=False)
    assert done.returncode == 0, f"{what}: {command}: {done.stderr.strip()}"


@pytest.mark.parametrize(("what", "command"), LACKS, ids=[h[0] for h in LACKS])
def test_guest_kernel_lacks(netns: Netns, what: str, command: str) -> None:
    """If this fails, the guest kernel gained it: update docs/development.md's kernel lane."""
    done = netns.run(["sh", "-c", command], check=False)
    assert done.returncode != 0, f"{what} works in the guest now: {command}"


def test_emulated_cluster_pods_reach_each_other(bundle: Path) -> None:
    """pycni.lab.cluster in the guest: underlay bridge, node namespaces, the frozen pycni-vxlan and
    pycni-host-local, pod to pod across nodes without NAT."""
    with Cluster.create(2, bundle) as cluster:
        node1, node2 = cluster.nodes.values()
        pod1 = node1.node.add_pod("a", cluster.conflist(node1))
        pod2 = node2.node.add_pod("a", cluster.conflist(node2))
        server = connectivity.serve(pod2.ns)
        try:
            probe = connectivity.probe(
                pod1.ns, pod2.addresses(4)[0], "tcp", expected_source=pod1.addresses(4)[0]
            )
        finally:
            server.stop()
        assert probe.ok, f"pod on node1 did not reach pod on node2 unNATed: {probe.seen_as}"


def test_frozen_bundle_runs_in_the_guest(bundle: Path) -> None:
    done = subprocess.run(
        [str(bundle / "pycni-host-local")],
        check=False,
        env={"CNI_COMMAND": "VERSION"},
        input="{}",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "supportedVersions" in done.stdout, done.stderr
