"""pycni-ipip under storms and kills, on an emulated cluster node (Never: the host kernel has
no IPIP): the faults pycni-vxlan gets (tests/plugins/test_vxlan_faults.py), at a smaller size,
and the node's peer routes must survive them."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.cluster import Cluster, ClusterNode
from tests.support.kill import killed_calls
from tests.support.leftovers import leftovers, pod_routes
from tests.support.storm import FULL, pod_storm

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

PODS = 128 if FULL else 32
KILLS = 100 if FULL else 15


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(2, datapath="ipip", encapsulation="Never")


def peer_routes(member: ClusterNode) -> str:
    return member.node.ns.ip("route", "show", "proto", "112")


def test_storm_of_pods_added_deleted_and_added_again(cluster: Cluster) -> None:
    member = cluster.nodes["node1"]
    conf = member.node.conf(cluster.conflist(member))
    with pod_storm(member.node, [conf], PODS, name="istorm", workers=8) as storm:
        addresses = storm.churn()
        assert len(set(addresses)) == PODS
        routes = peer_routes(member)
        assert routes.splitlines() == ["10.244.1.0/24 via 172.18.0.3 dev eth0 "]
        host_routes = pod_routes(member.node.ns, member.pod_cidr)
        assert sorted(r.split()[0] + "/32" for r in host_routes) == sorted(addresses)
        storm.delete_all()
        assert leftovers(member.node, pod_cidr=member.pod_cidr) == []
        assert peer_routes(member) == routes  # pods come and go; the node's routes stay


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_killed_calls_leave_nothing_and_keep_the_peer_routes(
    bundle: Path, cluster: Cluster, verb: str
) -> None:
    member = cluster.nodes["node1"]
    conf = member.node.conf(cluster.conflist(member))
    cluster.reconcile(member)
    routes = peer_routes(member)
    runs = killed_calls(member.node, bundle / "pycni-ipip", verb, conf, runs=KILLS,
                        rng=random.Random(112), name="ikill", cni_path=bundle)  # fmt: skip
    for run in runs:
        assert leftovers(member.node, pod_cidr=member.pod_cidr) == [], f"run {run}"
        assert peer_routes(member) == routes, f"run {run}"


def test_a_pod_namespace_removed_during_add_leaves_nothing(cluster: Cluster) -> None:
    """The namespace goes while ADD runs (the pod was deleted): ADD fails or succeeds, the
    DEL after it cleans up either way."""
    member = cluster.nodes["node1"]
    conf = member.node.conf(cluster.conflist(member))
    runtime = member.node.runtime()
    rng = random.Random(5)
    for run in range(6):
        pod = netns_mod.create("igone")
        path = pod.path

        def add(cid: str = f"igone{run}", path: str = path) -> None:
            try:
                runtime.add(conf, cid, path, "eth0")
            except Exception:
                pass  # code 3, or a kernel error mid-way: the DEL below must still clean up

        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(add)
            time.sleep(rng.uniform(0.0, 0.05))
            pod.delete()
            future.result(timeout=60)
        runtime.delete(conf, f"igone{run}", path, "eth0")
        assert leftovers(member.node, pod_cidr=member.pod_cidr) == [], f"run {run}"
