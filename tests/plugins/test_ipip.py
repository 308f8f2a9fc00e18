"""pycni-ipip on the host kernel: the emulated cluster with direct routes (Never, and
CrossSubnet between nodes of one subnet), pods added through the frozen executables as
containerd adds them, real packets between nodes, the underlay captured to show they crossed
it unencapsulated. This kernel has no IPIP: what needs the tunnel must fail plainly here (50),
and is shown working in the real-kernel lane (tests/kernel/test_ipip_tunnel.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import versions
from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.netns import Netns
from pycni.lab.runtime import PluginError
from pycni.lab.testbed import Pod
from tests.support.calls import assert_deleted_again, assert_refused, taken_default_route
from tests.support.capture import assert_not_encapsulated, capture, kernel_has_ipip
from tests.support.cluster import cross_node_matrix, one_pod_per_node
from tests.support.conflists import BAD_PEERS
from tests.support.paths import REPO

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

PROTO = "112"  # the peer routes' protocol


@pytest.fixture
def never(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(3, datapath="ipip", encapsulation="Never")


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def peer_routes(member: ClusterNode) -> list[str]:
    """The node's routes of protocol 112, as `ip route` shows them."""
    return sorted(
        f"{r['dst']} via {r['gateway']} dev {r['dev']}"
        for r in member.node.ns.ip_json("route", "show", "proto", PROTO)
    )


def test_never_pods_on_three_nodes_talk_over_direct_routes(never: Cluster, tmp_path: Path) -> None:
    pods = one_pod_per_node(never)
    assert [pod.addresses(4) for _, pod in pods] == [["10.244.0.2"], ["10.244.1.2"], ["10.244.2.2"]]
    with capture(never.underlay, "underlay") as seen:
        probes = cross_node_matrix(pods)
    assert len(probes) == 3 * 2 * 2  # pods x other pods x protos
    assert all(p.ok for p in probes), connectivity.report(probes)  # reached, and not NATed
    # the pods' packets crossed the underlay bare, pod address to pod address; no IPIP
    assert_not_encapsulated(seen.packets, [pod.addresses(4)[0] for _, pod in pods])
    assert {p.src for p in seen.packets} >= {pod.addresses(4)[0] for _, pod in pods}
    node1 = never.nodes["node1"]
    assert peer_routes(node1) == [
        "10.244.1.0/24 via 172.18.0.3 dev eth0",
        "10.244.2.0/24 via 172.18.0.4 dev eth0",
    ]
    assert "pycni.ipip" not in node1.node.ns.link_names()
    assert [pod.result["interfaces"][1]["mtu"] for _, pod in pods] == [1500] * 3  # underlay's
    assert never.reconcile(node1) == []  # nothing changed: nothing done


def test_crosssubnet_between_nodes_of_one_subnet_routes_directly(bundle: Path) -> None:
    with Cluster.create(2, bundle, datapath="ipip", encapsulation="CrossSubnet") as cluster:
        node1 = cluster.nodes["node1"]
        node1.node.runtime().status(cluster.conflist(node1))  # no tunnel needed: ready
        pods = one_pod_per_node(cluster)
        with capture(cluster.underlay, "underlay") as seen:
            probes = cross_node_matrix(pods)
        assert all(p.ok for p in probes), connectivity.report(probes)
        assert_not_encapsulated(seen.packets, [pod.addresses(4)[0] for _, pod in pods])
        assert {p.src for p in seen.packets} >= {pod.addresses(4)[0] for _, pod in pods}
        assert peer_routes(node1) == ["10.244.1.0/24 via 172.18.0.3 dev eth0"]
        assert "pycni.ipip" not in node1.node.ns.link_names()
        # the MTU leaves room for the IPIP header: a peer may need it later
        assert [pod.result["interfaces"][1]["mtu"] for _, pod in pods] == [1480] * 2


def test_the_routed_pod_the_host_sees_and_the_pod_sees(never: Cluster) -> None:
    node1 = never.nodes["node1"]
    pod = node1.node.add_pod("a", never.conflist(node1))
    host_veth, eth0 = pod.result["interfaces"]
    assert host_veth["mac"] == "ee:ee:ee:ee:ee:ee" and "sandbox" not in host_veth
    assert (eth0["name"], eth0["sandbox"]) == ("eth0", pod.ns.path)
    assert pod.result["ips"] == [
        {"address": "10.244.0.2/32", "gateway": "169.254.1.1", "interface": 1}
    ]
    assert pod.result["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    ns = node1.node.ns
    assert f"10.244.0.2 dev {host_veth['name']} scope link" in lines(ns.ip("route"))
    sysctl = ns.run(["cat", f"/proc/sys/net/ipv4/conf/{host_veth['name']}/proxy_arp"]).stdout
    assert sysctl.strip() == "1"
    assert ns.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert lines(pod.ns.ip("route")) == [
        "default via 169.254.1.1 dev eth0",
        "169.254.1.1 dev eth0 scope link",
    ]
    # the gateway answered by proxy ARP with the host veth's MAC, and the node reached
    server = connectivity.serve(ns)
    try:
        to_node = connectivity.probe(pod.ns, "172.18.0.2", "tcp", expected_source="10.244.0.2")
    finally:
        server.stop()
    assert to_node.ok, connectivity.report([to_node])
    neighbours = pod.ns.ip_json("neigh", "show", "169.254.1.1")
    assert neighbours and neighbours[0]["lladdr"] == "ee:ee:ee:ee:ee:ee"


def test_dual_stack_pods_reach_each_other_over_ipv6_through_the_host(bundle: Path) -> None:
    """IPv6 is routed directly: a /128 on each side, the host veth's link-local address as
    the pods' gateway."""
    with Cluster.create(1, bundle, datapath="ipip", encapsulation="Never") as cluster:
        member = cluster.nodes["node1"]
        conf = cluster.conflist(member)
        conf["plugins"][0]["ipam"]["ranges"].append([{"subnet": "fd00:10:244::/64"}])
        conf = member.node.conf(conf)
        a, b = member.node.add_pod("a", conf), member.node.add_pod("b", conf)
        assert [ip["address"] for ip in a.result["ips"]] == ["10.244.0.2/32", "fd00:10:244::2/128"]
        assert {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"} in a.result["routes"]
        server = connectivity.serve(b.ns)
        try:
            probes = [
                connectivity.probe(
                    a.ns, b.addresses(v)[0], proto, expected_source=a.addresses(v)[0]
                )
                for v in (4, 6)
                for proto in ("tcp", "udp")
            ]
        finally:
            server.stop()
        assert all(p.ok for p in probes), connectivity.report(probes)
        runtime = member.node.runtime()
        runtime.check(conf, a.container_id, a.ns.path, "eth0")


def test_reconcile_follows_the_peer_set_and_repairs_drift(bundle: Path) -> None:
    with Cluster.create(2, bundle, datapath="ipip", encapsulation="Never") as cluster:
        pods = one_pod_per_node(cluster)
        node1, node2 = cluster.nodes["node1"], cluster.nodes["node2"]
        foreign = "198.51.100.0/24 via 172.18.0.1 dev eth0"  # the operator's: not ours
        node1.node.ns.ip("route", "add", *foreign.split())
        node3 = cluster.add_node()  # peers files rewritten; no ADD on node1 or node2
        pod3 = node3.node.add_pod("a", cluster.conflist(node3))  # node3 learns the others
        target = pod3.addresses(4)[0]
        server = connectivity.serve(pod3.ns)
        try:
            before = connectivity.probe(pods[0][1].ns, target, "tcp", timeout=1)
            assert not before.reached
            assert cluster.reconcile(node1) == ["add route 10.244.2.0/24 via 172.18.0.4 dev eth0"]
            cluster.reconcile(node2)
            after = [
                connectivity.probe(pod.ns, target, proto, expected_source=pod.addresses(4)[0])
                for _, pod in pods
                for proto in ("tcp", "udp")
            ]
        finally:
            server.stop()
        assert all(p.ok for p in after), connectivity.report(after)

        ns = node1.node.ns
        ns.ip("route", "del", "10.244.1.0/24")  # drift: a route gone...
        ns.ip("route", "add", "10.99.0.0/24", "via", "172.18.0.9", "proto", PROTO)  # ...one stale
        assert sorted(cluster.reconcile(node1)) == [
            "add route 10.244.1.0/24 via 172.18.0.3 dev eth0",
            "remove route 10.99.0.0/24",
        ]
        cluster.remove_node("node3")
        assert cluster.reconcile(node1) == ["remove route 10.244.2.0/24"]
        assert peer_routes(node1) == ["10.244.1.0/24 via 172.18.0.3 dev eth0"]
        assert foreign in lines(ns.ip("route"))


def test_pycni_reconcile_takes_an_ipip_conflist_from_the_command_line(never: Cluster) -> None:
    """The agent's call: `pycni reconcile --conf FILE` in the node, nothing else."""
    node1 = never.nodes["node1"]
    conf = node1.node.state_dir / "net.d" / "10-routed.conflist"
    never.conflist(node1)
    done = node1.node.ns.run(
        [str(REPO / ".venv" / "bin" / "pycni"), "reconcile", "--conf", str(conf)], check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(done.stdout.splitlines()) == [
        "add route 10.244.1.0/24 via 172.18.0.3 dev eth0",
        "add route 10.244.2.0/24 via 172.18.0.4 dev eth0",
    ]


def test_never_and_crosssubnet_mtu(bundle: Path) -> None:
    with Cluster.create(1, bundle, datapath="ipip", encapsulation="Never", underlay_mtu=1400) as c:
        member = c.nodes["node1"]
        pod = member.node.add_pod("a", c.conflist(member))
        assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1400  # the underlay's
        c.ipip["mtu"] = 1300
        pod = member.node.add_pod("b", c.conflist(member))
        assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1300  # the config's


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_verb_at_every_version(bundle: Path, never: Cluster, version: str) -> None:
    node1 = never.nodes["node1"]
    conf = never.conflist(node1, version)
    runtime = node1.node.runtime()
    pod = node1.node.add_pod("a", conf)
    result = pod.result
    assert result["cniVersion"] == version
    host_veth = result["interfaces"][0]["name"]
    assert host_veth.startswith("veth") and result["interfaces"][1]["name"] == "eth0"
    assert [ip["address"] for ip in result["ips"]] == ["10.244.0.2/32"]
    ns = node1.node.ns
    if not versions.at_least(version, "0.4.0"):
        with pytest.raises(Exception, match="CHECK"):
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    else:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        ns.ip("route", "del", "10.244.1.0/24")  # a peer route
        expect_drift(runtime, conf, pod, "10.244.1.0/24")
        never.reconcile(node1)
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        ns.ip("route", "del", "10.244.0.2/32")  # the host route to the pod
        expect_drift(runtime, conf, pod, "10.244.0.2/32")
        ns.ip("route", "add", "10.244.0.2/32", "dev", host_veth)
        ns.run(["sh", "-c", f"echo 0 > /proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"])
        expect_drift(runtime, conf, pod, "proxy ARP")
        ns.run(["sh", "-c", f"echo 1 > /proc/sys/net/ipv4/conf/{host_veth}/proxy_arp"])
        pod.ns.ip("route", "del", "default")
        expect_drift(runtime, conf, pod, "0.0.0.0/0")
        pod.ns.ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        pod.ns.ip("addr", "del", "10.244.0.2/32", "dev", "eth0")  # pod drift
        expect_drift(runtime, conf, pod, "10.244.0.2/32")
    if versions.at_least(version, "1.1.0"):
        runtime.status(conf)
        runtime.gc(conf, [(pod.container_id, "eth0")])
    node1.node.remove_pod("a", conf)
    assert [n for n in ns.link_names() if n.startswith("veth")] == []
    assert "10.244.0.2" not in ns.ip("route")
    assert not list((node1.node.state_dir / "networks" / "routed").glob("10.*"))
    assert len(peer_routes(node1)) == 2  # the peer routes are the node's, not the pod's
    # DEL again, and containerd's second DEL with an empty netns: both succeed
    assert_deleted_again(
        bundle / "pycni-ipip", conf, pod, in_netns=node1.node.ns.path, cni_path=bundle
    )


def expect_drift(runtime: Any, conf: dict[str, Any], pod: Pod, words: str) -> None:
    with pytest.raises(PluginError) as err:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    assert err.value.code == 104 and words in err.value.msg, err.value


NO_IPIP = (
    "needs an IPIP tunnel and this node's kernel cannot create one (ip link add type ipip:"
    " Unknown device type): load the ipip module (modprobe ipip), or use encapsulation Never"
)


@pytest.mark.parametrize(
    ("encapsulation", "subnets"), [("Always", 1), ("CrossSubnet", 2)], ids=["always", "cross"]
)
def test_a_config_needing_ipip_on_a_kernel_without_it(
    bundle: Path, encapsulation: str, subnets: int
) -> None:
    """This host's kernel is that case: STATUS is not ready (50) and ADD fails with 50, both
    saying why in a sentence; the failed ADD leaves nothing. (On a kernel with IPIP, STATUS
    is ready: the real-kernel lane shows the tunnel at work.)"""
    with Cluster.create(
        2, bundle, datapath="ipip", encapsulation=encapsulation, subnets=subnets
    ) as cluster:
        node1 = cluster.nodes["node1"]
        conf = cluster.conflist(node1)
        runtime = node1.node.runtime()
        if kernel_has_ipip():
            runtime.status(conf)
            return
        with pytest.raises(PluginError) as err:
            runtime.status(conf)
        assert err.value.code == 50
        assert err.value.msg == f"encapsulation {encapsulation} {NO_IPIP}"
        with pytest.raises(PluginError) as err:
            node1.node.add_pod("a", conf)
        assert err.value.code == 50 and NO_IPIP in err.value.msg
        ns = node1.node.ns
        assert [n for n in ns.link_names() if n.startswith(("veth", "pycni"))] == []
        assert not list((node1.node.state_dir / "networks").rglob("10.*"))
        assert ns.ip_json("route", "show", "proto", PROTO) == []


def test_status_needs_a_peer_source_and_a_route_for_the_gateway(never: Cluster) -> None:
    node1 = never.nodes["node1"]
    conf = never.conflist(node1)
    runtime = node1.node.runtime()
    runtime.status(conf)
    node1.peers_file.rename(node1.peers_file.with_suffix(".gone"))
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50 and "peersFile" in err.value.msg
    with pytest.raises(PluginError) as err:  # ADD: try again later
        node1.node.add_pod("a", conf)
    assert err.value.code == 11
    node1.peers_file.with_suffix(".gone").rename(node1.peers_file)
    node1.node.ns.ip("route", "del", "default")
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50 and "no underlay address" in err.value.msg
    never.ipip["localIP"] = node1.ip  # the underlay found without the default route...
    with pytest.raises(PluginError) as err:  # ...but proxy ARP still needs a route
        runtime.status(never.conflist(node1))
    assert err.value.code == 50 and "no route to 169.254.1.1" in err.value.msg


def test_never_refuses_a_peer_behind_a_router_naming_it(bundle: Path) -> None:
    with Cluster.create(2, bundle, datapath="ipip", encapsulation="Never", subnets=2) as c:
        node1 = c.nodes["node1"]
        assert c.nodes["node2"].ip == "172.19.0.3"
        with pytest.raises(PluginError) as err:
            node1.node.add_pod("a", c.conflist(node1))
        assert err.value.code == 7
        assert "$.peersFile[1].nodeIP" in f"{err.value.msg} {err.value.details}"
        assert "outside this node's underlay subnet 172.18.0.0/16" in err.value.msg
        assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []


def test_a_failed_add_after_ipam_gives_the_address_back(never: Cluster) -> None:
    """The pod already has an eth0: the veth cannot be made (103) after the lease was taken;
    the rollback releases it and leaves no link. A range of one address shows it free."""
    node1 = never.nodes["node1"]
    only = {"subnet": "10.244.0.0/24", "rangeStart": "10.244.0.2", "rangeEnd": "10.244.0.2"}
    never.ipip["ipam"] = {"type": "pycni-host-local", "ranges": [[only]]}
    conf = never.conflist(node1)
    from pycni.lab import netns as netns_mod

    pod_ns = netns_mod.create("pod")
    try:
        pod_ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "other")
        with pytest.raises(PluginError) as err:
            node1.node.runtime().add(conf, "dup", pod_ns.path, "eth0")
        assert err.value.code == 103
    finally:
        pod_ns.delete()
    assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []
    assert not list((node1.node.state_dir / "networks" / "routed").glob("10.*"))
    pod = node1.node.add_pod("a", conf)
    assert pod.addresses(4) == ["10.244.0.2"]  # the one address: it was given back


def test_a_failed_add_after_the_veth_was_made_leaves_nothing(never: Cluster, pod_ns: Netns) -> None:
    """The pod's namespace already has a default route: the pod's own cannot be added, after
    the lease and the veth pair were made. The rollback removes both (with the netlink socket
    still open: it once ran after the socket had closed, and left the veth)."""
    node1 = never.nodes["node1"]
    conf = never.conflist(node1)
    taken_default_route(pod_ns)
    with pytest.raises(PluginError) as err:
        node1.node.runtime().add(conf, "late", pod_ns.path, "eth0")
    assert err.value.code == 105 and "0.0.0.0/0" in err.value.msg
    assert "eth0" not in pod_ns.link_names()
    # the pod is still there: a veth left would show
    assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []
    assert "10.244.0.2" not in node1.node.ns.ip("route")
    assert not list((node1.node.state_dir / "networks" / "routed").glob("10.*"))


@pytest.mark.parametrize(
    ("change", "peers_file", "words"),
    [
        ({"encapsulation": "Sometimes"}, None, ["$.encapsulation"]),
        ({"encapsulation": "Always", "mtu": 100}, None, ["$.mtu"]),
        ({"localIP": "not-an-ip"}, None, ["$.localIP"]),
        ({"peersFile": "relative/peers.json"}, None, ["$.peersFile"]),
        (
            {
                "encapsulation": "CrossSubnet",
                "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": "fd00::/64"}]]},
            },
            None,
            ["$.encapsulation", "IPv4 only", "fd00::/64"],
        ),
        (
            {"peers": [{"name": "x", "nodeIP": "172.18.0.9", "podCIDRs": ["fd00:9::/64"]}]},
            None,
            ["$.peers[0].podCIDRs[0]", "IPv6"],
        ),
        *BAD_PEERS,
    ],
)
def test_bad_config_is_code_7_naming_the_field(
    never: Cluster, change: dict[str, Any], peers_file: str | None, words: list[str]
) -> None:
    node1 = never.nodes["node1"]
    if peers_file is not None:
        node1.peers_file.write_text(peers_file)
    never.ipip.update(change)
    conf = never.conflist(node1)
    if "peers" in change:
        conf["plugins"][0].pop("peersFile")
        conf = node1.node.conf(conf)
    assert_refused(lambda: node1.node.add_pod("a", conf), 7, words)
    assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []
    assert not list((node1.node.state_dir / "networks").rglob("10.*"))


@pytest.mark.parametrize("mode", ["always", "crosssubnet", "never"])
def test_the_example_configs_are_valid(mode: str) -> None:
    from pycni.conformance import validate

    report = validate.check_file(str(REPO / f"conf/examples/10-pycni-ipip-{mode}.conflist"))
    assert report.errors == [] and report.notes == []
    doc = json.loads((REPO / f"conf/examples/10-pycni-ipip-{mode}.conflist").read_text())
    assert doc["plugins"][0]["encapsulation"].lower() == mode


def test_nodes_in_two_underlay_subnets_reach_each_other_through_the_router(
    bundle: Path,
) -> None:
    """pycni.lab.cluster's `subnets`: what CrossSubnet tells apart, and what the real-kernel lane
    tunnels through."""
    with Cluster.create(3, bundle, datapath="ipip", encapsulation="Never", subnets=2) as c:
        node1, node2, node3 = (c.nodes[f"node{i}"] for i in (1, 2, 3))
        assert [(m.ip, m.subnet, m.underlay_bridge) for m in (node1, node2, node3)] == [
            ("172.18.0.2", 0, "underlay"),
            ("172.19.0.3", 1, "underlay1"),
            ("172.18.0.4", 0, "underlay"),
        ]
        assert lines(node2.node.ns.ip("route", "show", "default")) == [
            "default via 172.19.0.1 dev eth0"
        ]
        servers = [connectivity.serve(m.node.ns) for m in (node2, node3)]
        try:
            probes = [
                connectivity.probe(node1.node.ns, m.ip, "tcp", expected_source=node1.ip)
                for m in (node2, node3)
            ]
        finally:
            for server in servers:
                server.stop()
        assert all(p.ok for p in probes), connectivity.report(probes)
