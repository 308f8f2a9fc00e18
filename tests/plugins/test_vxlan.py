"""pycni-vxlan on an emulated cluster: nodes as namespaces on an underlay namespace, pods added
through the frozen executables as containerd adds them, real packets between nodes — and the
underlay captured to show they crossed it encapsulated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import versions
from pycni.lab import connectivity
from pycni.lab.cluster import UNDERLAY_BRIDGE, Cluster, ClusterNode
from pycni.lab.runtime import PluginError
from tests.support.calls import assert_deleted_again, assert_refused
from tests.support.cluster import cross_node_matrix, one_pod_per_node
from tests.support.conflists import BAD_PEERS
from tests.support.paths import EXAMPLES

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

PORT = 4789


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(3)


def overlay_state(member: ClusterNode) -> dict[str, list[str]]:
    """What the kernel shows on the node's VXLAN device: routes, neighbours, FDB entries."""
    ns = member.node.ns
    routes = [
        f"{r['dst']} via {r.get('gateway')}" for r in ns.ip_json("route", "show", "dev", "pycni.1")
    ]
    neighbours = [
        f"{n['dst']} {n.get('lladdr')}"
        for n in ns.ip_json("neigh", "show", "dev", "pycni.1")
        if "PERMANENT" in n.get("state", [])
    ]
    fdb_text = ns.run(["bridge", "-j", "fdb", "show", "dev", "pycni.1"]).stdout
    fdb = [f"{e['mac']} {e.get('dst')}" for e in (json.loads(fdb_text) if fdb_text.strip() else [])]
    return {"routes": sorted(routes), "neighbours": sorted(neighbours), "fdb": sorted(fdb)}


class Capture:
    """tcpdump on the underlay bridge, inside the underlay namespace, bounded in time and
    packet count; stopped by its PID."""

    def __init__(self, cluster: Cluster, path: Path) -> None:
        self.path = path
        argv = ["ip", "netns", "exec", cluster.underlay.name, "timeout", "-s", "INT", "60"]
        argv += [
            "tcpdump",
            "-i",
            UNDERLAY_BRIDGE,
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-c",
            "5000",
        ]
        argv += ["-w", str(path)]
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE)
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "tcpdump: listening on underlay, ..."
        assert b"listening" in line, line

    def stop(self) -> None:
        time.sleep(0.3)  # the last packets reach the file (-U writes each as it comes)
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=15)

    def read(self, bpf: str) -> list[str]:
        done = subprocess.run(
            ["tcpdump", "-n", "-r", str(self.path), bpf],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.splitlines()


def test_pods_on_three_nodes_talk_through_the_overlay_encapsulated(
    cluster: Cluster, tmp_path: Path
) -> None:
    pods = one_pod_per_node(cluster)
    assert [pod.addresses(4) for _, pod in pods] == [["10.244.0.2"], ["10.244.1.2"], ["10.244.2.2"]]
    capture = Capture(cluster, tmp_path / "underlay.pcap")
    try:
        probes = cross_node_matrix(pods)
    finally:
        capture.stop()
    assert len(probes) == 3 * 2 * 2  # pods x other pods x protos
    assert all(p.ok for p in probes), connectivity.report(probes)  # reached, and not NATed

    # on the underlay: UDP to the VXLAN port between node IPs, carrying the pods' packets...
    vxlan = capture.read(f"udp dst port {PORT}")
    assert vxlan, "no VXLAN packets on the underlay"
    text = "\n".join(vxlan)
    for member, pod in pods:
        assert f"{member.ip}." in text
        assert f"{pod.addresses(4)[0]}" in text  # the inner address, decoded by tcpdump
    assert "VXLAN" in text and "vni 1" in text
    # ...both TCP and UDP inside
    assert f"{connectivity.PORT}: Flags" in text or f".{connectivity.PORT}: Flags" in text
    assert "UDP, length" in text
    # and never a pod address on the underlay unencapsulated
    assert capture.read("net 10.244.0.0/16") == []


def test_nodes_reach_pods_on_other_nodes_from_their_vtep_address(cluster: Cluster) -> None:
    pods = one_pod_per_node(cluster)
    servers = [connectivity.serve(pod.ns) for _, pod in pods]
    try:
        node1 = cluster.nodes["node1"]
        probes = [
            connectivity.probe(node1.node.ns, pod.addresses(4)[0], proto, name="node1")
            for _, pod in pods
            for proto in ("tcp", "udp")
        ]
    finally:
        for server in servers:
            server.stop()
    assert all(p.ok for p in probes), connectivity.report(probes)
    # the remote pods saw node1's VTEP address (its pod CIDR's network address)
    assert {p.seen_as for p in probes if p.target != "10.244.0.2"} == {"10.244.0.0"}


def test_the_overlay_is_one_route_neighbour_and_fdb_entry_per_remote_node(
    cluster: Cluster,
) -> None:
    pods = one_pod_per_node(cluster)
    node1 = cluster.nodes["node1"]
    link = node1.node.ns.ip_json("-d", "link", "show", "pycni.1")[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"], info["learning"]) == (
        1,
        PORT,
        "172.18.0.2",
        False,
    )
    assert link["address"] == "02:50:ac:12:00:02" and link["mtu"] == 1450
    addresses = [a["local"] for a in link.get("addr_info", [])] or [
        a["local"] for a in node1.node.ns.ip_json("addr", "show", "dev", "pycni.1")[0]["addr_info"]
    ]
    assert "10.244.0.0" in addresses
    assert overlay_state(node1) == {
        "routes": ["10.244.1.0/24 via 10.244.1.0", "10.244.2.0/24 via 10.244.2.0"],
        "neighbours": ["10.244.1.0 02:50:ac:12:00:03", "10.244.2.0 02:50:ac:12:00:04"],
        "fdb": ["02:50:ac:12:00:03 172.18.0.3", "02:50:ac:12:00:04 172.18.0.4"],
    }
    assert [pod.result["interfaces"][2]["mtu"] for _, pod in pods] == [1450] * 3
    assert cluster.reconcile(node1) == []  # nothing changed: nothing done


def test_a_node_joining_later_is_reached_after_reconcile_and_a_departed_one_leaves_nothing(
    bundle: Path,
) -> None:
    with Cluster.create(2, bundle) as cluster:
        pods = one_pod_per_node(cluster)
        node1, node2 = cluster.nodes["node1"], cluster.nodes["node2"]
        node3 = cluster.add_node()  # peers files rewritten; no pod ADD on node1 or node2
        pod3 = node3.node.add_pod("a", cluster.conflist(node3))  # node3 learns the others
        target = pod3.addresses(4)[0]
        server = connectivity.serve(pod3.ns)
        try:
            before = connectivity.probe(pods[0][1].ns, target, "tcp", timeout=1)
            assert not before.reached
            assert "add route 10.244.2.0/24 via 10.244.2.0" in cluster.reconcile(node1)
            cluster.reconcile(node2)
            after = [
                connectivity.probe(pod.ns, target, proto, expected_source=pod.addresses(4)[0])
                for _, pod in pods
                for proto in ("tcp", "udp")
            ]
        finally:
            server.stop()
        assert all(p.ok for p in after), connectivity.report(after)

        # drift is repaired: a neighbour deleted behind the plugin's back comes back
        node1.node.ns.ip("neigh", "del", "10.244.1.0", "dev", "pycni.1")
        node1.node.ns.ip("route", "del", "10.244.2.0/24")
        node1.node.ns.run(
            ["bridge", "fdb", "append", "02:50:ac:12:00:09", "dev", "pycni.1", "dst", "172.18.0.9"]
        )
        assert sorted(cluster.reconcile(node1)) == [
            "add neighbour 10.244.1.0 lladdr 02:50:ac:12:00:03",
            "add route 10.244.2.0/24 via 10.244.2.0",
            "remove fdb entry 02:50:ac:12:00:09 dst 172.18.0.9",
        ]

        cluster.remove_node("node3")
        assert "remove route 10.244.2.0/24" in cluster.reconcile(node1)
        for member in (node1, node2):
            if member is node2:
                cluster.reconcile(node2)
            state = overlay_state(member)
            shown = json.dumps(state)
            assert "10.244.2." not in shown and "172.18.0.4" not in shown, state
            assert "02:50:ac:12:00:04" not in shown, state
            assert len(state["routes"]) == len(state["neighbours"]) == len(state["fdb"]) == 1


def test_full_size_tcp_through_a_1400_byte_underlay_without_fragmentation(bundle: Path) -> None:
    with Cluster.create(2, bundle, underlay_mtu=1400) as cluster:
        pods = one_pod_per_node(cluster)
        for member, pod in pods:
            assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1350  # 1400 - 50
            assert member.node.ns.ip_json("link", "show", "pycni.1")[0]["mtu"] == 1350
        before = {m.name: frag_counters(m) for m, _ in pods}
        sent, counted = transfer(pods)
        # full-size segments: the MSS is the overlay MTU's (1350 - 20 IP - 20 TCP - 12 for
        # the timestamp option), and every one of them crossed a 1400-byte underlay whole
        assert sent == [str(SIZE), "1298"]
        assert counted == str(SIZE)
        assert {m.name: frag_counters(m) for m, _ in pods} == before  # nothing fragmented


def test_the_fragment_counters_do_see_an_overlay_mtu_that_is_too_big(bundle: Path) -> None:
    """The control for the test above: `mtu` 1450 on a 1400-byte underlay, and the nodes
    fragment the encapsulated packets (the counters that stayed still there would move)."""
    with Cluster.create(2, bundle, underlay_mtu=1400, vxlan={"mtu": 1450}) as cluster:
        pods = one_pod_per_node(cluster)
        assert pods[0][1].ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1450
        before = {m.name: frag_counters(m) for m, _ in pods}
        transfer(pods)
        after = {m.name: frag_counters(m) for m, _ in pods}
        assert after != before


def transfer(pods: list[tuple[ClusterNode, Any]]) -> tuple[list[str], str]:
    """SIZE bytes over TCP from the first pod to the second: what the sender printed (bytes
    sent, MSS) and the byte count the receiver printed."""
    (_, client), (_, server) = pods
    sink = subprocess.Popen(
        ["ip", "netns", "exec", server.ns.name, connectivity.python(), "-I", "-c", _SINK],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        sent = client.ns.run(
            [connectivity.python(), "-I", "-c", _SOURCE, server.addresses(4)[0], str(SIZE)],
            timeout=60,
        )
        counted = sink.stdout.readline().strip()
    finally:
        sink.kill()
        sink.wait(timeout=10)
    return sent.stdout.split(), counted


SIZE = 8 * 1024 * 1024
SINK_PORT = 18081
# Counts the bytes of one TCP connection until the sender closes it; bounded by a timeout.
_SINK = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {SINK_PORT}))
s.listen(1)
s.settimeout(30)
print("ready", flush=True)
conn, _ = s.accept()
conn.settimeout(30)
total = 0
while data := conn.recv(65536):
    total += len(data)
print(total, flush=True)
"""
# Sends N bytes (DF set: Linux TCP does path MTU discovery) and prints N and the MSS.
_SOURCE = f"""
import socket, sys
s = socket.create_connection((sys.argv[1], {SINK_PORT}), timeout=30)
s.sendall(b"x" * int(sys.argv[2]))
print(sys.argv[2], s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
s.shutdown(socket.SHUT_WR)
s.recv(1)
"""


def frag_counters(member: ClusterNode) -> tuple[int, int]:
    """FragCreates and FragFails of the node (IPv4): fragments made or refused to be made."""
    lines = member.node.ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines()
    header, values = [line.split() for line in lines if line.startswith("Ip:")][:2]
    row = dict(zip(header, values, strict=True))
    return int(row["FragCreates"]), int(row["FragFails"])


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_verb_at_every_version(bundle: Path, cluster: Cluster, version: str) -> None:
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1, version)
    runtime = node1.node.runtime()
    pod = node1.node.add_pod("a", conf)
    result = pod.result
    assert result["cniVersion"] == version
    names = [i["name"] for i in result["interfaces"]]
    assert names[0] == "cbr0" and names[1].startswith("veth") and names[2] == "eth0"
    assert [ip["address"] for ip in result["ips"]] == ["10.244.0.2/24"]
    if not versions.at_least(version, "0.4.0"):
        with pytest.raises(Exception, match="CHECK"):
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    else:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        node1.node.ns.ip("route", "del", "10.244.1.0/24")  # overlay drift
        with pytest.raises(PluginError) as err:
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        assert err.value.code == 104 and "10.244.1.0/24" in err.value.msg
        cluster.reconcile(node1)
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        pod.ns.ip("addr", "del", "10.244.0.2/24", "dev", "eth0")  # pod drift
        with pytest.raises(PluginError) as err:
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        assert err.value.code == 104 and "10.244.0.2/24" in err.value.msg
    if versions.at_least(version, "1.1.0"):
        runtime.status(conf)
        runtime.gc(conf, [(pod.container_id, "eth0")])
    node1.node.remove_pod("a", conf)
    assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []
    assert not list((node1.node.state_dir / "networks" / "overlay").glob("10.*"))
    assert "pycni.1" in node1.node.ns.link_names()  # the overlay is the node's, not the pod's
    # DEL again, and containerd's second DEL with an empty netns: both succeed
    assert_deleted_again(
        bundle / "pycni-vxlan", conf, pod, in_netns=node1.node.ns.path, cni_path=bundle
    )


def test_status_needs_an_underlay_address_and_a_peer_source(cluster: Cluster) -> None:
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1)
    runtime = node1.node.runtime()
    runtime.status(conf)
    node1.peers_file.rename(node1.peers_file.with_suffix(".gone"))
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50 and "peersFile" in err.value.msg
    node1.peers_file.with_suffix(".gone").rename(node1.peers_file)
    runtime.status(conf)
    node1.node.ns.ip("route", "del", "default")
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50 and "underlay" in err.value.msg


def test_a_vxlan_device_with_other_settings_is_reported_and_repaired_only_on_request(
    cluster: Cluster,
) -> None:
    node1 = cluster.nodes["node1"]
    node1.node.ns.ip(
        "link",
        "add",
        "pycni.1",
        "type",
        "vxlan",
        "id",
        "2",
        "dstport",
        "8472",
        "local",
        "172.18.0.2",
        "nolearning",
    )
    with pytest.raises(PluginError) as err:
        node1.node.add_pod("a", cluster.conflist(node1))
    assert err.value.code == 7
    assert "vni 2, config wants 1" in err.value.msg and "port 8472, config wants 4789" in (
        err.value.msg
    )
    cluster.vxlan["repair"] = True
    node1.node.add_pod("a", cluster.conflist(node1))
    info = node1.node.ns.ip_json("-d", "link", "show", "pycni.1")[0]["linkinfo"]["info_data"]
    assert (info["id"], info["port"]) == (1, PORT)


@pytest.mark.parametrize(
    ("change", "peers_file", "words"),
    [
        ({"vni": 0}, None, ["$.vni"]),
        ({"vni": 16777216}, None, ["$.vni"]),
        ({"port": 0}, None, ["$.port"]),
        ({"port": 65536}, None, ["$.port"]),
        ({"localIP": "not-an-ip"}, None, ["$.localIP"]),
        *BAD_PEERS,
    ],
)
def test_bad_config_is_code_7_naming_the_field(
    cluster: Cluster, change: dict[str, Any], peers_file: str | None, words: list[str]
) -> None:
    node1 = cluster.nodes["node1"]
    if peers_file is not None:
        node1.peers_file.write_text(peers_file)
    cluster.vxlan.update(change)
    assert_refused(lambda: node1.node.add_pod("a", cluster.conflist(node1)), 7, words)
    assert [n for n in node1.node.ns.link_names() if n.startswith("veth")] == []


def test_the_example_config_is_valid() -> None:
    from pycni.conformance import validate

    report = validate.check_file(str(EXAMPLES / "10-pycni-vxlan.conflist"))
    assert report.errors == [] and report.notes == []
