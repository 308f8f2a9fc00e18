"""pycni-vxlan under storms and kills, on an emulated cluster node: the same faults as the
bridge plugin gets (tests/plugins/test_bridge_faults.py), and the overlay must survive them."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.cluster import Cluster, ClusterNode
from tests.support.kill import killed_calls
from tests.support.leftovers import leftovers
from tests.support.storm import FULL, pod_storm

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

PODS = 256 if FULL else 64
KILLS = 200 if FULL else 30


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(2)


def second_network(cluster: Cluster, member: ClusterNode) -> dict[str, Any]:
    """Another overlay on the same node: its own VNI, bridge, device and pod subnet."""
    conf = copy.deepcopy(cluster.conflist(member))
    conf["name"] = "overlay-b"
    plugin = conf["plugins"][0]
    plugin.update(
        vni=2,
        bridge="cbr1",
        peers=[],
        ipam={
            "type": "pycni-host-local",
            "ranges": [[{"subnet": "10.250.0.0/23"}]],
        },
    )
    plugin.pop("peersFile", None)
    return member.node.conf(conf)


def overlay(member: ClusterNode) -> str:
    """Routes, permanent neighbours and FDB entries of the node's first overlay."""
    ns = member.node.ns
    return "\n".join(
        [
            ns.ip("route", "show", "dev", "pycni.1"),
            ns.run(["ip", "neigh", "show", "dev", "pycni.1", "nud", "permanent"]).stdout,
            ns.run(["bridge", "fdb", "show", "dev", "pycni.1"]).stdout,
        ]
    )


def test_storm_of_pods_on_two_overlays(cluster: Cluster) -> None:
    member = cluster.nodes["node1"]
    nets = [member.node.conf(cluster.conflist(member)), second_network(cluster, member)]
    before = overlay(member) if member.node.ns.link_names().count("pycni.1") else None
    with pod_storm(member.node, nets, PODS, name="vstorm", workers=16) as storm:
        addresses = storm.churn()
        for parity in (0, 1):
            assert len(set(addresses[parity::2])) == PODS // 2
        state = overlay(member)
        assert before is None or state == before
        storm.delete_all()
        assert leftovers(member.node) == []
        assert overlay(member) == state  # pods come and go; the node's overlay stays


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_killed_calls_leave_nothing_and_keep_the_overlay(
    bundle: Path, cluster: Cluster, verb: str
) -> None:
    member = cluster.nodes["node1"]
    conf = member.node.conf(cluster.conflist(member))
    runtime = member.node.runtime()
    probe = netns_mod.create("vkill")
    try:  # one pod first, so the overlay exists to compare against
        runtime.add(conf, "first", probe.path, "eth0")
        state = overlay(member)
        runtime.delete(conf, "first", probe.path, "eth0")
    finally:
        probe.delete()
    runs = killed_calls(member.node, bundle / "pycni-vxlan", verb, conf, runs=KILLS,
                        rng=random.Random(77), name="vkill", cni_path=bundle)  # fmt: skip
    for run in runs:
        assert leftovers(member.node) == [], f"run {run}"
        assert overlay(member) == state, f"run {run}"
