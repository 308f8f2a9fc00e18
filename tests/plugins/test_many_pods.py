"""pycni-ipip and pycni-vxlan with 200 pods on one node, through the frozen executables.

STATUS and CHECK read the node through dumps the kernel filters (one table, routing protocol,
link or family: pycni.netlink), so that their cost does not grow with the pods. With a /32
route, a host veth and an fe80 address per pod (ipip), or 200 ports on the node bridge and
their FDB entries (vxlan), they must still see exactly the node's state: every pod checks
out, drift in one pod among the 200 or in the peer state is reported by name, and STATUS is
ready, or not ready for the node's own reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.runtime import PluginError, Runtime

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

PODS = 200
PEER_PROTO = "112"  # pycni-ipip's peer routes


class Pods:
    """Pods ADDed on one node through its runtime (as containerd would), 8 at a time."""

    def __init__(self, member: ClusterNode, conf: dict[str, Any]) -> None:
        self.runtime: Runtime = member.node.runtime()
        self.conf = conf
        self.namespaces: list[netns_mod.Netns] = []
        self.results: list[dict[str, Any]] = []

    def add(self, count: int) -> None:
        self.namespaces = [netns_mod.create("many") for _ in range(count)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.results = list(pool.map(self._add, range(count)))

    def _add(self, n: int) -> dict[str, Any]:
        return dict(self.runtime.add(self.conf, f"many{n}", self.namespaces[n].path, "eth0"))

    def check(self, n: int) -> None:
        self.runtime.check(self.conf, f"many{n}", self.namespaces[n].path, "eth0")

    def check_all(self) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.check, range(len(self.namespaces))))

    def drift(self, n: int) -> str:
        """CHECK of pod n fails with 104; its message."""
        with pytest.raises(PluginError) as err:
            self.check(n)
        assert err.value.code == 104, err.value
        return err.value.msg

    def status(self) -> None:
        self.runtime.status(self.conf)

    def not_ready(self) -> str:
        with pytest.raises(PluginError) as err:
            self.status()
        assert err.value.code == 50, err.value
        return err.value.msg

    def address(self, n: int) -> str:
        return str(self.results[n]["ips"][0]["address"])

    def host_veth(self, n: int) -> str:
        (name,) = [i["name"] for i in self.results[n]["interfaces"] if i["name"][:4] == "veth"]
        return str(name)


@contextmanager
def crowded_node(cluster: Cluster) -> Iterator[tuple[ClusterNode, Pods]]:
    member = cluster.nodes["node1"]
    pods = Pods(member, member.node.conf(cluster.conflist(member)))
    try:
        pods.add(PODS)
        yield member, pods
    finally:
        for ns in pods.namespaces:
            ns.delete()


def test_ipip_status_and_check_with_200_pods(bundle: Path) -> None:
    with (
        Cluster.create(3, bundle, datapath="ipip", encapsulation="Never") as cluster,
        crowded_node(cluster) as (member, pods),
    ):
        ns = member.node.ns
        assert len(ns.ip("route").splitlines()) >= PODS + 2  # a /32 per pod, the peers'
        assert len(set(map(pods.address, range(PODS)))) == PODS
        pods.status()
        pods.check_all()

        # one pod among 200: its host route gone, then back
        n = 137
        host_route = pods.address(n)
        veth = pods.host_veth(n)
        ns.ip("route", "del", host_route)
        assert f"route {host_route} dev {veth}" in pods.drift(n)
        pods.check(n + 1)  # the others are fine
        ns.ip("route", "add", host_route, "dev", veth)
        pods.check(n)

        # the peer routes, told apart from the 200 pod routes by their protocol
        ns.ip("route", "del", "10.244.2.0/24")
        ns.ip("route", "add", "10.99.0.0/24", "via", "172.18.0.9", "proto", PEER_PROTO)
        drift = pods.drift(0)
        assert "add route 10.244.2.0/24 via 172.18.0.4 dev eth0" in drift
        assert "remove route 10.99.0.0/24" in drift
        pods.status()  # drift is CHECK's to report; the node is ready
        assert sorted(cluster.reconcile(member)) == [
            "add route 10.244.2.0/24 via 172.18.0.4 dev eth0",
            "remove route 10.99.0.0/24",
        ]
        pods.check(0)

        # the underlay, found from the default route among the 200 host routes
        default = ns.ip("route", "show", "default").split()
        ns.ip("route", "del", "default")
        assert "no underlay address" in pods.not_ready()
        ns.ip("route", "add", *default)
        pods.status()
        pods.check_all()


def overlay_fdb(member: ClusterNode) -> list[dict[str, Any]]:
    done = member.node.ns.run(["bridge", "-j", "fdb", "show", "dev", "pycni.1"])
    return list(json.loads(done.stdout or "[]"))


def test_vxlan_status_and_check_with_200_pods(bundle: Path) -> None:
    with Cluster.create(3, bundle) as cluster, crowded_node(cluster) as (member, pods):
        ns = member.node.ns
        bridge_fdb = ns.run(["bridge", "fdb", "show"]).stdout.splitlines()
        assert len(bridge_fdb) > 2 * PODS  # every pod's port has its entries
        pods.status()
        pods.check_all()

        # one pod among 200: its host veth off the bridge, then back
        n = 137
        veth = pods.host_veth(n)
        ns.ip("link", "set", veth, "nomaster")
        assert f"host veth '{veth}' is not on bridge" in pods.drift(n)
        pods.check(n + 1)
        ns.ip("link", "set", veth, "master", "cbr0")
        pods.check(n)

        # the overlay's FDB and neighbours, read apart from the bridge's and the pods'
        node3 = cluster.nodes["node3"]
        (entry,) = [e for e in overlay_fdb(member) if e.get("dst") == node3.ip]
        ns.run(["bridge", "fdb", "del", entry["mac"], "dev", "pycni.1", "dst", node3.ip])
        ns.run(["bridge", "fdb", "append", "02:00:00:00:00:99", "dev", "pycni.1",
                "dst", "172.18.0.99", "self", "permanent"])  # fmt: skip
        ns.ip("neigh", "del", "10.244.2.0", "dev", "pycni.1")
        repairs = [
            f"add fdb entry {entry['mac']} dst {node3.ip}",
            "remove fdb entry 02:00:00:00:00:99 dst 172.18.0.99",
            f"add neighbour 10.244.2.0 lladdr {entry['mac']}",
        ]
        drift = pods.drift(0)
        assert all(repair in drift for repair in repairs), drift
        pods.status()
        assert sorted(cluster.reconcile(member)) == sorted(repairs)
        pods.check(0)

        default = ns.ip("route", "show", "default").split()
        ns.ip("route", "del", "default")
        assert "underlay" in pods.not_ready()
        ns.ip("route", "add", *default)
        pods.status()
        pods.check_all()
