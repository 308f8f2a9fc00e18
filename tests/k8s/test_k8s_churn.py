"""Churn on a real 3-node cluster (vxlan): a Deployment scaled 0 -> 60 -> 0 three times; then
a node's kubelet and containerd killed with SIGKILL and started again, and every node's agent
killed and started again. After each step: no Running pod without an address, host-local's
leases on each node are exactly the addresses of the pods running there, one host veth per pod
(none left by a deleted pod), and pods still reach each other across nodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from pycni.lab.k8s import cluster
from tests.support import k8s

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

NODES = 3
PEAK = int(os.environ.get("PYCNI_K8S_CHURN_PEAK", "60"))
ROUNDS = int(os.environ.get("PYCNI_K8S_CHURN_ROUNDS", "3"))
SETTLE_TIMEOUT = 420.0


def _deployment(replicas: int) -> dict[str, object]:
    labels = {"app": "churn"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "agnhost",
                            "image": k8s.AGNHOST,
                            "imagePullPolicy": "Never",
                            "args": ["netexec", f"--http-port={k8s.HTTP_PORT}"],
                        }
                    ],
                },
            },
        },
    }


def _pod_count() -> int:
    done = cluster.kubectl(["get", "pods", "-l", "app=churn", "-o", "json"])
    return len(json.loads(done.stdout)["items"])


def _scale(replicas: int) -> float:
    """Scale to `replicas` and wait until exactly that many pods exist and run; seconds taken."""
    started = time.monotonic()
    cluster.kubectl(["scale", "deployment/churn", f"--replicas={replicas}"])
    deadline = started + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        running = sum(len(ips) for ips in k8s.running_pod_ips("app=churn").values())
        if running == replicas and _pod_count() == replicas:
            return time.monotonic() - started
        time.sleep(1)
    pytest.fail(
        f"scaling to {replicas}: {_pod_count()} pods, "
        f"{sum(len(v) for v in k8s.running_pod_ips('app=churn').values())} Running "
        f"after {SETTLE_TIMEOUT:.0f} s"
    )


def _assert_consistent(expected: int) -> None:
    """Every Running pod has an address; per node, leases == pod IPs; one veth per pod."""
    by_node = k8s.running_pod_ips("app=churn")
    assert sum(len(ips) for ips in by_node.values()) == expected
    assert all("<none>" not in ips for ips in by_node.values()), by_node
    for node in cluster.node_names(NODES):
        pods = by_node.get(node, set())
        # the cluster's other pods (none in this module) would show here too
        assert k8s.leases(node) == pods, node
        assert len(k8s.host_veths(node)) == len(pods), node


def _assert_cross_node_reach() -> None:
    """One pod per node answers /hostname to a pod on another node, by IP."""
    done = cluster.kubectl(["get", "pods", "-l", "app=churn", "-o", "json"])
    one_per_node: dict[str, tuple[str, str]] = {}
    for item in json.loads(done.stdout)["items"]:
        one_per_node.setdefault(
            item["spec"]["nodeName"], (item["metadata"]["name"], item["status"]["podIP"])
        )
    assert len(one_per_node) == NODES, one_per_node
    pods = list(one_per_node.values())
    for i, (client, _) in enumerate(pods):
        server, ip = pods[(i + 1) % len(pods)]
        assert k8s.hostname_via(client, f"http://{ip}:{k8s.HTTP_PORT}/hostname") == server


@pytest.fixture(scope="module")
def churn_cluster() -> Iterator[None]:
    assert cluster.down() == [], "a previous lane cluster could not be removed"
    try:
        cluster.up(NODES, "vxlan")
        k8s.apply(_deployment(0))
        yield
    finally:
        assert cluster.down() == []
        assert k8s.leftovers() == []


def test_scale_0_60_0_three_times_leaves_no_lease_and_no_veth(churn_cluster: None) -> None:
    timings = []
    for _ in range(ROUNDS):
        up = _scale(PEAK)
        _assert_consistent(PEAK)
        down = _scale(0)
        _assert_consistent(0)
        timings.append((round(up), round(down)))
    print(f"0 -> {PEAK} -> 0, seconds per round (up, down): {timings}")


def test_kubelet_containerd_and_agent_killed_and_restarted(churn_cluster: None) -> None:
    _scale(30)
    _assert_consistent(30)
    worker = cluster.node_names(NODES)[1]
    cluster.kill(worker, "kubelet")
    cluster.kill(worker, "containerd")
    cluster.restart(worker, "containerd")
    cluster.restart(worker, "kubelet")
    for node in cluster.node_names(NODES):
        cluster.kill(node, "pycni-agent")
        cluster.restart(node, "pycni-agent")
    cluster.kubectl(
        ["wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"], timeout=150
    )
    # the pods that ran on the worker are still there, with their addresses and leases
    _scale(30)
    _assert_consistent(30)
    _assert_cross_node_reach()
    # and new pods after the restarts get addresses, old ones go without a trace
    _scale(45)
    _assert_consistent(45)
    _assert_cross_node_reach()
    _scale(0)
    _assert_consistent(0)
