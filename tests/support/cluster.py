"""Pods and probes across the nodes of an emulated cluster (pycni.lab.cluster)."""

from __future__ import annotations

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod


def one_pod_per_node(cluster: Cluster) -> list[tuple[ClusterNode, Pod]]:
    """A pod named "a" on each node, added with the node's conflist."""
    return [(m, m.node.add_pod("a", cluster.conflist(m))) for m in cluster.nodes.values()]


def cross_node_matrix(pods: list[tuple[ClusterNode, Pod]]) -> list[connectivity.Probe]:
    """TCP and UDP from every pod to every other pod, by IPv4 address (servers stopped after)."""
    servers = [connectivity.serve(pod.ns) for _, pod in pods]
    try:
        sources = [(f"{m.name}/a", pod.ns, pod.addresses(4)[0]) for m, pod in pods]
        targets = [(f"{m.name}/a", pod.addresses(4)[0]) for m, pod in pods]
        return connectivity.matrix(sources, targets)
    finally:
        for server in servers:
            server.stop()
