"""Pods and probes across the nodes of an emulated cluster (pycni.lab.cluster), and the cluster
with the stand-in API server on its underlay, for tests that run `pycni agent` on its nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod
from tests.support import kube_replay
from tests.support.kube_replay import FakeApiServer, Pki

API_HOST = "172.18.0.1"  # the API server's address on the underlay, as on kind


@contextmanager
def cluster_with_api(
    bundle: Path, tmp: Path, node_count: int, *, bookmark_interval: float, **options: Any
) -> Iterator[tuple[Cluster, FakeApiServer]]:
    """An emulated cluster (`options`: Cluster.create's) whose peers files the agents write, not
    the emulation; and the stand-in API server, started, on its underlay at API_HOST, with its
    PKI under `tmp` (`api.kubeconfig()` for an agent). No Node objects yet. Both removed
    afterwards, also on failure."""
    pki = Pki.create(tmp / "pki", [API_HOST])
    cluster = Cluster.create(node_count, bundle, **options)
    api: FakeApiServer | None = None
    try:
        for member in cluster.nodes.values():
            member.peers_file.unlink()
        api = kube_replay.in_netns(
            pki, cluster.underlay.path, API_HOST, bookmark_interval=bookmark_interval
        )
        api.start()
        yield cluster, api
    finally:
        try:
            if api is not None:
                api.close()
        finally:
            cluster.destroy()


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
