"""pycni-ipip's tunnel in a kernel that has IPIP (the kernel lane's guest; the host kernel has
no `ipip` module): Always between two nodes of one subnet, CrossSubnet across the underlay's
router. Few and small: the guest's CPU is slow. Encapsulation is proved on the wire with the
lane's capture (tests/support/capture.py): IP protocol 4 packets carrying the pods' addresses,
and not one packet with a bare pod address, where the tunnel is used; the opposite where
CrossSubnet routes directly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod
from tests.support.capture import assert_ipip_encapsulated, assert_not_encapsulated, capture

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

PROBE_TIMEOUT = 30.0  # seconds; a probe is a fresh Python, 5-20 times slower in the guest


def probes_between(a: Pod, b: Pod) -> list[connectivity.Probe]:
    """TCP from a to b (its answer comes back the other way) and UDP from b to a, each checked
    for its unchanged source."""
    servers = [connectivity.serve(a.ns), connectivity.serve(b.ns)]
    try:
        return [
            connectivity.probe(
                src.ns,
                dst.addresses(4)[0],
                proto,
                expected_source=src.addresses(4)[0],
                timeout=PROBE_TIMEOUT,
            )
            for src, dst, proto in ((a, b, "tcp"), (b, a, "udp"))
        ]
    finally:
        for server in servers:
            server.stop()


def tunnel(member: ClusterNode) -> dict[str, object]:
    (link,) = member.node.ns.ip_json("-d", "link", "show", "pycni.ipip")
    info = link["linkinfo"]
    return {"kind": info["info_kind"], "local": info["info_data"]["local"], "mtu": link["mtu"]}


def peer_routes(member: ClusterNode) -> list[str]:
    return sorted(
        f"{r['dst']} via {r['gateway']} dev {r['dev']}"
        + (" onlink" if "onlink" in r.get("flags", []) else "")
        for r in member.node.ns.ip_json("route", "show", "proto", "112")
    )


@pytest.fixture
def always(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(2, datapath="ipip", encapsulation="Always")


def test_always_tunnels_between_nodes_of_one_subnet(always: Cluster) -> None:
    node1, node2 = always.nodes["node1"], always.nodes["node2"]
    node1.node.runtime().status(always.conflist(node1))  # the kernel has IPIP: ready
    pod1 = node1.node.add_pod("a", always.conflist(node1))
    pod2 = node2.node.add_pod("a", always.conflist(node2))
    assert tunnel(node1) == {"kind": "ipip", "local": "172.18.0.2", "mtu": 1480}
    assert peer_routes(node1) == ["10.244.1.0/24 via 172.18.0.3 dev pycni.ipip onlink"]
    assert pod1.result["interfaces"][1]["mtu"] == 1480  # 1500 - 20
    pods = [pod1.addresses(4)[0], pod2.addresses(4)[0]]
    with capture(always.underlay, "underlay") as seen:
        probes = probes_between(pod1, pod2)
        server = connectivity.serve(pod2.ns)
        try:  # the node itself, from the tunnel's address
            from_node = connectivity.probe(node1.node.ns, pods[1], "tcp", timeout=PROBE_TIMEOUT)
        finally:
            server.stop()
    assert all(p.ok for p in probes), connectivity.report(probes)
    assert from_node.reached and from_node.seen_as == "10.244.0.0", from_node
    assert_ipip_encapsulated(seen.packets, [*pods, "10.244.0.0"])
    outer = {(p.src, p.dst) for p in seen.packets if p.proto == 4}
    assert {("172.18.0.2", "172.18.0.3"), ("172.18.0.3", "172.18.0.2")} <= outer, seen.summary()
    assert always.reconcile(node1) == []


def test_crosssubnet_tunnels_across_the_router_and_not_within_a_subnet(bundle: Path) -> None:
    """node1 and node3 share 172.18.0.0/16; node2 is on 172.19.0.0/16 behind the underlay's
    router: node1-node2 goes through the tunnel, node1-node3 directly."""
    with Cluster.create(
        3, bundle, datapath="ipip", encapsulation="CrossSubnet", subnets=2
    ) as cluster:
        node1, node2, node3 = (cluster.nodes[f"node{i}"] for i in (1, 2, 3))
        assert (node1.ip, node2.ip, node3.ip) == ("172.18.0.2", "172.19.0.3", "172.18.0.4")
        pod1, pod2, pod3 = (m.node.add_pod("a", cluster.conflist(m)) for m in (node1, node2, node3))
        assert peer_routes(node1) == [
            "10.244.1.0/24 via 172.19.0.3 dev pycni.ipip onlink",
            "10.244.2.0/24 via 172.18.0.4 dev eth0",
        ]
        with capture(cluster.underlay, node1.underlay_bridge) as tunnelled:
            across = probes_between(pod1, pod2)
        with capture(cluster.underlay, node1.underlay_bridge) as direct:
            within = probes_between(pod1, pod3)
        assert all(p.ok for p in across + within), connectivity.report(across + within)
        assert_ipip_encapsulated(tunnelled.packets, pod1.addresses(4) + pod2.addresses(4))
        outer = {(p.src, p.dst) for p in tunnelled.packets if p.proto == 4}
        assert {("172.18.0.2", "172.19.0.3"), ("172.19.0.3", "172.18.0.2")} <= outer
        assert_not_encapsulated(direct.packets, pod1.addresses(4) + pod3.addresses(4))
