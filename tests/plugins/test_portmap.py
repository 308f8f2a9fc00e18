"""pycni-portmap chained after pycni-bridge on one emulated node: hostPorts reached with real
packets from the node's address, from localhost, from another pod and from the pod itself;
rules gone with the pod; parallel churn; conflicts; every verb x version; bad config."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.cni import skel, spawn, versions
from pycni.lab import connectivity
from pycni.lab.runtime import PluginError, invoke
from pycni.lab.testbed import Node, Pod
from pycni.netlink import nftables
from pycni.plugins import portmap
from tests.support.conflists import kubenet
from tests.support.netlink import uplink
from tests.support.paths import EXAMPLES
from tests.support.storm import FULL
from tests.support.validators import INTERESTING_STRINGS, assert_same_verdict, json_values

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

NODE4, NODE6 = "172.31.0.2", "fc00:31::2"
GW4, GW6 = "10.61.0.1", "fd61::1"
HOST_PORT = 8080
# PYCNI_STRESS=full: 192 pods (the most that churn at once in the /24 with room to spare)
STRESS_PODS = 192 if FULL else 64
ICMP = [{"hostPort": 8, "containerPort": 1, "protocol": "icmp"}]
UDP_8080 = {"portMappings": [{"hostPort": 8080, "containerPort": 18080, "protocol": "udp"}]}
TCP_8080 = {"portMappings": [{"hostPort": 8080, "containerPort": 18080, "protocol": "tcp"}]}


def conflist(version: str = "1.1.0", **portmap_keys: Any) -> dict[str, Any]:
    chained = {"type": "pycni-portmap", "capabilities": {"portMappings": True}, **portmap_keys}
    return kubenet(version, ["10.61.0.0/24", "fd61::/64"], chained, hairpinMode=True)


def mappings(host_port: int = HOST_PORT, **extra: Any) -> dict[str, Any]:
    return {
        "portMappings": [
            {"hostPort": host_port, "containerPort": connectivity.PORT, "protocol": p, **extra}
            for p in ("tcp", "udp")
        ]
    }


@pytest.fixture
def node(node: Node) -> Node:
    """The shared node, with its own addresses on an uplink as a kind node's eth0."""
    uplink(node.ns, f"{NODE4}/16", f"{NODE6}/64")
    return node


def ruleset(node: Node) -> str:
    return node.ns.run(["nft", "list", "ruleset"]).stdout


def pod_chains_and_elements(node: Node) -> tuple[list[str], list[str]]:
    listing = json.loads(node.ns.run(["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    chains = [
        i["chain"]["name"] for i in listing if i.get("chain", {}).get("name", "")[:3] == "hp_"
    ]
    elements = [str(e) for i in listing for e in i.get("map", {}).get("elem", [])]
    return chains, elements


def test_host_port_reached_from_node_localhost_other_pod_and_itself(node: Node) -> None:
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings())
    b = node.add_pod("b", conf)
    (a4,), (a6,) = a.addresses(4), a.addresses(6)
    (b4,), (b6,) = b.addresses(4), b.addresses(6)
    server = connectivity.serve(a.ns)
    try:
        # (who, from, to, the source the pod must see)
        cases = [
            ("node", node.ns, NODE4, NODE4),  # the node speaks from the address it dialled
            ("node", node.ns, NODE6, NODE6),
            ("localhost", node.ns, "127.0.0.1", GW4),  # masqueraded (route_localnet)
            ("pod b", b.ns, NODE4, b4),  # another pod keeps its address
            ("pod b", b.ns, NODE6, b6),
            ("pod a", a.ns, NODE4, GW4),  # hairpin: masqueraded, or the reply would bypass NAT
            ("pod a", a.ns, NODE6, GW6),
        ]
        probes = [
            connectivity.probe(
                source, target, proto, port=HOST_PORT, expected_source=seen, name=who
            )
            for who, source, target, seen in cases
            for proto in ("tcp", "udp")
        ]
    finally:
        server.stop()
    assert len(probes) == 14
    assert all(p.ok for p in probes), connectivity.report(probes)
    assert node.ns.run(["sysctl", "-n", "net.ipv4.conf.cbr0.route_localnet"]).stdout.strip() == "1"
    chains, elements = pod_chains_and_elements(node)
    assert len(chains) == 1 and len(elements) == 4  # {ipv4, ipv6} x {tcp, udp}
    assert a4 in ruleset(node) and a6 in ruleset(node)

    node.remove_pod("a", conf)
    assert pod_chains_and_elements(node) == ([], [])
    gone = connectivity.probe(b.ns, NODE4, "tcp", port=HOST_PORT, timeout=1)
    assert not gone.reached


# A UDP client that never stops: one socket, one source port (CLIENT_PORT), a datagram every
# 50 ms; prints the first answer and exits 0, or exits 1 after `seconds`.
CLIENT_PORT = 40404
STEADY_UDP_CLIENT = r"""
import socket, sys, time
source, target, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((source, 40404))
s.settimeout(0.05)
print("sending", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        s.sendto(b"ping", (target, port))
        print(s.recvfrom(64)[0].decode(), flush=True)
        sys.exit(0)
    except (socket.timeout, ConnectionRefusedError):
        pass
sys.exit(1)
"""


def steady_udp_client(pod: Pod, source: str, target: str) -> subprocess.Popen[str]:
    """STEADY_UDP_CLIENT in `pod`, sending to `target`'s port 8080 for up to 20 s."""
    argv = ["ip", "netns", "exec", pod.ns.name, connectivity.python(), "-I", "-c",
            STEADY_UDP_CLIENT, source, target, str(HOST_PORT), "20"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_udp_client_that_kept_sending_reaches_the_pod_that_takes_the_port(node: Node) -> None:
    """Pod a1 holds UDP hostPort 8080 and goes; pod b keeps sending to the node's port from
    one source port all along, so its conntrack entry still points at a1's address; pod a2
    takes the port. The ADD deletes that entry (as the reference portmap does), so b's next
    datagram is a new connection, which the DNAT sends to a2: a2 answers. Without the
    deletion, b's datagrams would follow the stale entry to a1's address for as long as they
    kept coming."""
    conf = node.conf(conflist())
    udp = {"portMappings": [{"hostPort": HOST_PORT, "containerPort": connectivity.PORT,
                             "protocol": "udp"}]}  # fmt: skip
    node.add_pod("a1", conf, capability_args=udp)  # no server: nothing answers b yet
    b = node.add_pod("b", conf)
    (b4,) = b.addresses(4)
    client = steady_udp_client(b, b4, NODE4)
    server = None
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "sending"
        time.sleep(0.5)  # b's entry exists, DNATed to a1
        node.remove_pod("a1", conf)
        time.sleep(0.5)  # b keeps sending into the stale entry
        a2 = node.add_pod("a2", conf, capability_args=udp)
        assert a2.addresses(4) != []
        server = connectivity.serve(a2.ns)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if server is not None:
            server.stop()
    assert client.returncode == 0, f"pod a2 never answered b's datagrams: {err}"
    assert out.strip() == b4  # a2 saw b's own address: DNAT, no masquerade


# The node's UDP conntrack entries to one destination port, as pyroute2 reads them (its socket
# opened in the node's namespace): [family, orig src, orig sport, orig dst, reply src].
PYROUTE2_UDP_ENTRIES = r"""
import json, socket, sys
from pyroute2 import Conntrack
out = []
for family in (socket.AF_INET, socket.AF_INET6):
    with Conntrack(nfgen_family=family) as ct:
        for e in ct.dump_entries():
            orig, reply = e.tuple_orig, e.tuple_reply
            if orig.proto == 17 and orig.dport == int(sys.argv[1]):
                out.append([family, orig.saddr, orig.sport, orig.daddr, reply.saddr])
print(json.dumps(out))
"""


def udp_entries(node: Node, port: int) -> dict[tuple[str, int], str]:
    """(client address, source port) -> where the node's conntrack sends its datagrams to port
    `port` (the reply tuple's source: the node's own address when nothing is DNATed)."""
    done = node.ns.run([sys.executable, "-c", PYROUTE2_UDP_ENTRIES, str(port)])
    return {(src, sport): reply_src for _f, src, sport, _dst, reply_src in json.loads(done.stdout)}


def test_a_udp_client_that_sent_before_the_port_was_mapped_reaches_the_pod(node: Node) -> None:
    """Pod b sends UDP to the node's port 8080, IPv4 and IPv6, before any pod maps it: the
    kernel tracks those datagrams as connections to the node itself (shown through pyroute2).
    Then pod a is added with UDP hostPort 8080. The ADD deletes b's entries, so b's next
    datagrams are new connections, which the DNAT sends to a: a answers both. Without the
    deletion (checked by running this with it disabled: the test fails), b's datagrams would
    keep following the old entries to the node, where nothing listens, for as long as b kept
    sending."""
    conf = node.conf(conflist())
    # A node whose NAT is in use (another pod's hostPort): the kernel tracks connections.
    node.add_pod("c", conf, capability_args=mappings(HOST_PORT + 1))
    b = node.add_pod("b", conf)
    own = {4: b.addresses(4)[0], 6: b.addresses(6)[0]}
    clients = {
        version: steady_udp_client(b, own[version], target)
        for version, target in ((4, NODE4), (6, NODE6))
    }
    server = None
    try:
        for client in clients.values():
            assert client.stdout is not None and client.stdout.readline().strip() == "sending"
        to_nowhere = {(own[4], CLIENT_PORT): NODE4, (own[6], CLIENT_PORT): NODE6}
        for _ in range(50):  # the entries to the node itself, as the kernel holds them
            if udp_entries(node, HOST_PORT) == to_nowhere:
                break
            time.sleep(0.1)
        assert udp_entries(node, HOST_PORT) == to_nowhere
        a = node.add_pod("a", conf, capability_args=UDP_8080)
        server = connectivity.serve(a.ns)
        answers = {version: client.communicate(timeout=30) for version, client in clients.items()}
    finally:
        for client in clients.values():
            if client.poll() is None:
                client.kill()
                client.wait()
        if server is not None:
            server.stop()
    for version, client in clients.items():
        out, err = answers[version]
        assert client.returncode == 0, f"pod a never answered b's IPv{version} datagrams: {err}"
        assert out.strip() == own[version]  # a saw b's own address: DNAT, no masquerade
    to_a = {(own[4], CLIENT_PORT): a.addresses(4)[0], (own[6], CLIENT_PORT): a.addresses(6)[0]}
    assert udp_entries(node, HOST_PORT) == to_a


def test_without_snat_nothing_is_marked_and_pods_still_reach_the_port(node: Node) -> None:
    conf = node.conf(conflist(snat=False))
    a = node.add_pod("a", conf, capability_args=mappings())
    b = node.add_pod("b", conf)
    server = connectivity.serve(a.ns)
    try:
        seen = connectivity.probe(
            b.ns, NODE4, "tcp", port=HOST_PORT, expected_source=b.addresses(4)[0]
        )
    finally:
        server.stop()
    assert seen.ok, seen
    chain = pod_chains_and_elements(node)[0][0]
    rules = node.ns.run(["nft", "list", "chain", "inet", "pycni", chain]).stdout
    assert "dnat ip to" in rules and "mark set" not in rules


def test_host_ip_limits_the_mapping_to_that_address(node: Node) -> None:
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings(hostIP=NODE4))
    b = node.add_pod("b", conf)
    server = connectivity.serve(a.ns)
    try:
        via_node4 = connectivity.probe(b.ns, NODE4, "tcp", port=HOST_PORT)
        via_gateway = connectivity.probe(b.ns, GW4, "tcp", port=HOST_PORT, timeout=1)
    finally:
        server.stop()
    assert via_node4.ok or via_node4.reached, via_node4
    assert not via_gateway.reached  # another node address: not forwarded
    assert NODE6 not in ruleset(node)  # an IPv4 hostIP maps IPv4 only


def test_a_claimed_host_port_is_refused_naming_the_pod_that_holds_it(node: Node) -> None:
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings())
    before = ruleset(node)
    with pytest.raises(PluginError) as err:
        node.add_pod("c", conf, capability_args=mappings())
    assert err.value.code == 102
    assert a.container_id in err.value.msg and "8080/tcp" in err.value.msg
    assert ruleset(node) == before  # the refused pod left nothing, a's rules are untouched
    node.add_pod("d", conf, capability_args=mappings(HOST_PORT + 1))  # another port is free


def test_add_again_changes_nothing(bundle: Path, node: Node) -> None:
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings())
    before = ruleset(node)
    request = {**conf["plugins"][1], "name": "kubenet", "cniVersion": "1.1.0"}
    request.pop("capabilities")
    request.update(runtimeConfig=mappings(), prevResult=a.result)
    inv = invoke(
        str(bundle / "pycni-portmap"),
        "ADD",
        container_id=a.container_id,
        netns=a.ns.path,
        ifname="eth0",
        config=request,
        in_netns=node.ns.path,
    )
    assert inv.exit_status == 0, inv.stdout
    assert json.loads(inv.stdout) == a.result  # prevResult, passed through
    assert ruleset(node) == before


def portmap_call(
    bundle: Path, node: Node, verb: str, pod: Pod, runtime_config: dict[str, Any]
) -> tuple[int, Any]:
    """pycni-portmap alone, as the runtime calls it for `pod`: (exit status, JSON out)."""
    conf = conflist()
    request = {**conf["plugins"][1], "name": "kubenet", "cniVersion": "1.1.0"}
    request.pop("capabilities")
    request.update(runtimeConfig=runtime_config, prevResult=pod.result)
    inv = invoke(
        str(bundle / "pycni-portmap"),
        verb,
        container_id=pod.container_id,
        netns=pod.ns.path,
        ifname="eth0",
        config=request,
        in_netns=node.ns.path,
    )
    return inv.exit_status, json.loads(inv.stdout) if inv.stdout else None


def test_an_add_repeated_with_fewer_mappings_drops_the_others(bundle: Path, node: Node) -> None:
    """a holds 8080/tcp and 8080/udp; an ADD of a again with 8080/tcp only leaves a's TCP
    elements and rules and nothing of the UDP ones, in the same transaction, so another pod
    takes 8080/udp. An ADD of a asking for 8080/udp back is refused (102, naming that pod)
    and changes nothing; a's DEL with its mappings of now leaves only the other pod's."""
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings())
    b = node.add_pod("b", conf)
    chain = pod_chains_and_elements(node)[0][0]
    status, out = portmap_call(bundle, node, "ADD", a, TCP_8080)
    assert (status, out) == (0, a.result)
    assert sorted(pod_chains_and_elements(node)[1]) == sorted(
        str([{"concat": [f"ipv{v}", "tcp", HOST_PORT]}, {"jump": {"target": chain}}])
        for v in (4, 6)
    )
    rules = node.ns.run(["nft", "list", "chain", "inet", "pycni", chain]).stdout
    assert "tcp dport 8080" in rules and "udp" not in rules
    c = node.add_pod("c", conf, capability_args=UDP_8080)  # the dropped port is free
    servers = [connectivity.serve(a.ns), connectivity.serve(c.ns)]
    try:  # TCP still reaches a, UDP reaches c (each sees b's own address)
        (b4,), (b6,) = b.addresses(4), b.addresses(6)
        to_a = connectivity.probe(b.ns, NODE4, "tcp", port=HOST_PORT, expected_source=b4)
        for _ in range(3):  # one datagram a probe: allow for a lost one (seen once, IPv6)
            to_c = connectivity.probe(b.ns, NODE6, "udp", port=HOST_PORT, expected_source=b6)
            if to_c.reached:
                break
    finally:
        for server in servers:
            server.stop()
    assert to_a.ok and to_c.ok, (to_a, to_c, ruleset(node))
    before = ruleset(node)
    status, error = portmap_call(bundle, node, "ADD", a, mappings())
    assert status == 1 and error["code"] == 102, error
    assert c.container_id in error["msg"] and "8080/udp" in error["msg"]
    assert ruleset(node) == before
    status, out = portmap_call(bundle, node, "DEL", a, TCP_8080)
    assert (status, out) == (0, None)
    chains, elements = pod_chains_and_elements(node)
    assert chain not in chains and len(chains) == 1
    assert all("udp" in e and chain not in e for e in elements) and len(elements) == 2


def test_a_stale_del_leaves_the_new_owner_of_the_port_alone(bundle: Path, node: Node) -> None:
    conf = node.conf(conflist())
    a = node.add_pod("a", conf, capability_args=mappings())
    node.remove_pod("a", conf)
    b = node.add_pod("b", conf, capability_args=mappings())
    before = ruleset(node)
    # a DEL of `a` again (a runtime retrying): succeeds, and b keeps the port
    request = {**conf["plugins"][1], "name": "kubenet", "cniVersion": "1.1.0"}
    request.pop("capabilities")
    request["runtimeConfig"] = mappings()
    inv = invoke(
        str(bundle / "pycni-portmap"),
        "DEL",
        container_id=a.container_id,
        netns="",
        ifname="eth0",
        config=request,
        in_netns=node.ns.path,
    )
    assert (inv.exit_status, inv.stdout) == (0, b""), (inv.stdout, inv.stderr)
    assert ruleset(node) == before and b.container_id


def test_parallel_add_and_del_with_and_without_mappings_never_fail(node: Node) -> None:
    """Pods with hostPorts and without, added and deleted all at once, each DEL twice."""
    conf = node.conf(conflist())

    def args(n: int) -> dict[str, Any]:
        return {"capability_args": mappings(9000 + n)} if n % 2 == 0 else {}

    def add(n: int) -> None:
        node.add_pod(f"p{n}", conf, **args(n))

    def delete(n: int) -> None:
        pod = node.pods[f"p{n}"]
        runtime = node.runtime()
        for _ in range(2):  # a runtime's retry: DEL is idempotent
            runtime.delete(conf, pod.container_id, pod.ns.path, "eth0", **args(n))

    half = STRESS_PODS // 2
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(add, range(half)))
        churn = [pool.submit(delete, n) for n in range(half)]
        churn += [pool.submit(add, n) for n in range(half, STRESS_PODS)]
        for future in churn:
            future.result()  # raises the first failure
    chains, elements = pod_chains_and_elements(node)
    assert len(chains) == half // 2 and len(elements) == 4 * (half // 2)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(delete, range(half, STRESS_PODS)))
    assert pod_chains_and_elements(node) == ([], [])
    for n in range(STRESS_PODS):
        node.pods.pop(f"p{n}").ns.delete()


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_verb(bundle: Path, node: Node, version: str) -> None:
    conf = node.conf(conflist(version))
    runtime = node.runtime()
    pod = node.add_pod("a", conf, capability_args=mappings())
    assert pod.result["cniVersion"] == version
    assert [i["name"] for i in pod.result["interfaces"]][2] == "eth0"  # the bridge's, unchanged
    cid = pod.container_id
    if versions.at_least(version, "0.4.0"):
        runtime.check(conf, cid, pod.ns.path, "eth0", capability_args=mappings())
        chain = pod_chains_and_elements(node)[0][0]
        node.ns.run(
            ["nft", "delete", "element", "inet", "pycni", "hostports", "{ ipv4 . udp . 8080 }"]
        )
        with pytest.raises(PluginError) as err:
            runtime.check(conf, cid, pod.ns.path, "eth0", capability_args=mappings())
        assert err.value.code == 104 and "8080/udp" in err.value.msg
        node.ns.run(["nft", "flush", "chain", "inet", "pycni", chain])
        node.ns.run(
            ["nft", "add", "element", "inet", "pycni", "hostports",
             f"{{ ipv4 . udp . 8080 : jump {chain} }}"]
        )  # fmt: skip
        # every DNAT right but IPv4 UDP's, whose port is a prefix of the right one
        port = connectivity.PORT
        (a4,), (a6,) = pod.addresses(4), pod.addresses(6)
        for rule in (
            f"meta nfproto ipv4 tcp dport 8080 dnat ip to {a4}:{port}",
            f"meta nfproto ipv6 tcp dport 8080 dnat ip6 to [{a6}]:{port}",
            f"meta nfproto ipv6 udp dport 8080 dnat ip6 to [{a6}]:{port}",
            f"meta nfproto ipv4 udp dport 8080 dnat ip to {a4}:{str(port)[:-1]}",
        ):
            node.ns.run(["nft", f"add rule inet pycni {chain} {rule}"])
        with pytest.raises(PluginError) as err:
            runtime.check(conf, cid, pod.ns.path, "eth0", capability_args=mappings())
        assert err.value.code == 104 and "DNAT" in err.value.msg and "8080/udp" in err.value.msg
        node.ns.run(["nft", f"add rule inet pycni {chain} meta nfproto ipv4 udp dport 8080"
                     f" dnat ip to {a4}:{port}"])  # fmt: skip
        runtime.check(conf, cid, pod.ns.path, "eth0", capability_args=mappings())
    request = {**conf["plugins"][1], "name": "kubenet", "cniVersion": version}
    request.pop("capabilities")
    if versions.at_least(version, "1.1.0"):
        # GC of another network, or with `a` listed, keeps its rules; an empty list removes them
        listed = [{"containerID": cid, "ifname": "eth0"}]
        for network, valid, left in (("other", [], 1), ("kubenet", listed, 1), ("kubenet", [], 0)):
            inv = invoke(
                str(bundle / "pycni-portmap"),
                "GC",
                config={**request, "name": network, "cni.dev/valid-attachments": valid},
                in_netns=node.ns.path,
            )
            assert (inv.exit_status, inv.stdout) == (0, b""), (inv.stdout, inv.stderr)
            assert len(pod_chains_and_elements(node)[0]) == left
        inv = invoke(str(bundle / "pycni-portmap"), "STATUS", config=request, in_netns=node.ns.path)
        assert inv.exit_status == 0
    node.remove_pod("a", conf)
    assert pod_chains_and_elements(node) == ([], [])
    for netns in (pod.ns.path, ""):  # DEL again, and with the netns gone: both succeed
        inv = invoke(
            str(bundle / "pycni-portmap"),
            "DEL",
            container_id=cid,
            netns=netns,
            ifname="eth0",
            config={**request, "runtimeConfig": mappings()},
            in_netns=node.ns.path,
        )
        assert (inv.exit_status, inv.stdout) == (0, b""), inv.stdout


@pytest.mark.parametrize(
    ("keys", "runtime_config", "path"),
    [
        ({"markMasqBit": 32}, mappings(), "$.markMasqBit"),
        ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, mappings(), "$.externalSetMarkChain"),
        ({"conditionsV4": ["!", "-d", "192.0.2.0/24"]}, mappings(), "$.conditionsV4"),
        ({"backend": "iptables"}, mappings(), "$.backend"),
        ({}, {"portMappings": [{"hostPort": 0, "containerPort": 80}]}, "hostPort"),
        ({}, {"portMappings": ICMP}, "protocol"),
        ({}, {"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "x"}]}, "hostIP"),
        ({}, {"portMappings": [{"containerPort": 80}]}, "hostPort"),
    ],
)  # fmt: skip
def test_bad_config_names_the_field(
    bundle: Path, keys: dict[str, Any], runtime_config: dict[str, Any], path: str
) -> None:
    config = {
        "cniVersion": "1.1.0",
        "name": "kubenet",
        "type": "pycni-portmap",
        "runtimeConfig": runtime_config,
        "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.61.0.2/24"}]},
        **keys,
    }
    inv = invoke(
        str(bundle / "pycni-portmap"),
        "ADD",
        container_id="c1",
        netns="/proc/self/ns/net",
        ifname="eth0",
        config=config,
    )
    error = json.loads(inv.stdout)
    assert inv.exit_status == 1 and error["code"] == 7 and path in error["msg"], error


def test_add_needs_the_previous_result(bundle: Path) -> None:
    config = {"cniVersion": "1.0.0", "name": "n", "type": "pycni-portmap"}
    inv = invoke(
        str(bundle / "pycni-portmap"),
        "ADD",
        container_id="c1",
        netns="/proc/self/ns/net",
        ifname="eth0",
        config=config,
    )
    error = json.loads(inv.stdout)
    assert error["code"] == 7 and "prevResult" in error["msg"]


def test_a_del_without_mappings_does_no_netfilter_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither nft is started nor a netlink socket opened (the seams the plugin reaches the
    firewall through), whatever the prevResult holds."""
    touched: list[str] = []
    monkeypatch.setattr(spawn, "run", lambda *a, **k: touched.append("spawn"))
    monkeypatch.setattr(nftables, "Ruleset", touched.append)
    prev = {"cniVersion": "1.1.0", "ips": [{"address": "10.61.0.2/24"}]}
    runtime_configs: list[dict[str, Any]] = [{}, {"portMappings": []}]
    for runtime_config in runtime_configs:
        config = {"cniVersion": "1.1.0", "name": "n", "type": "pycni-portmap", "prevResult": prev}
        config["runtimeConfig"] = runtime_config
        env = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
        out = io.BytesIO()
        status = skel.run(
            portmap,
            env=env,
            stdin=io.BytesIO(json.dumps(config).encode()),
            stdout=out,
            stderr=io.StringIO(),
        )
        assert (status, out.getvalue()) == (0, b"")
    assert touched == []


# Checks that hold several pods of one conflist at once: the suite gives every pod the same
# capability args, and a hostPort serves one pod per node (the second ADD is refused, code 102).
MULTI_POD_CHECKS = ("add.parallel", "gc.unlisted", "gc.empty-list", "k8s.pod-to-pod")


def test_conformance_with_portmap_chained(bundle: Path, tmp_path: Path) -> None:
    from pycni.conformance import checks, runner
    from pycni.conformance.checks import Verdict

    conf = json.loads((EXAMPLES / "10-pycni-bridge.conflist").read_text())
    conf["plugins"][0]["ipam"]["dataDir"] = str(tmp_path / "ipam")
    conf["plugins"].append({"type": "pycni-portmap", "capabilities": {"portMappings": True}})
    plain = runner.run_suite([str(bundle)], conf)  # pods without hostPorts: pass-through
    single = [c.id for c in checks.CHECKS if c.id not in MULTI_POD_CHECKS]
    mapped = runner.run_suite([str(bundle)], conf, only=single, capability_args=mappings())
    for report in (plain, mapped):
        print(runner.render_table(report))
        failed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
        assert not failed
    assert len(plain.results) == len(checks.CHECKS)
    assert len(mapped.results) == len(checks.CHECKS) - len(MULTI_POD_CHECKS)


def test_kind_ingress_recipe_hostports_80_and_443_behind_the_node_address(bundle: Path) -> None:
    """kind's ingress set-up, as far as it exists here: the ingress controller's pod binds
    hostPorts 80 and 443 on a node of the docker network (the underlay, 172.18.0.0/16), where
    kind's `extraPortMappings` send the host's ports 80/443 (that last DNAT is docker's). Reached
    from the underlay (the docker host) and from a pod on another node, over the overlay."""
    from pycni.lab.cluster import Cluster

    with Cluster.create(2, bundle) as cluster:
        node1, node2 = cluster.nodes["node1"], cluster.nodes["node2"]
        confs = {}
        for member in (node1, node2):
            conf = cluster.conflist(member)
            conf["plugins"].append(
                {"type": "pycni-portmap", "capabilities": {"portMappings": True}}
            )
            confs[member.name] = member.node.conf(conf)
        ingress_ports = {"portMappings": [
            {"hostPort": 80, "containerPort": 18080, "protocol": "TCP"},
            {"hostPort": 443, "containerPort": 18443, "protocol": "TCP"},
        ]}  # fmt: skip
        ingress = node1.node.add_pod("ingress", confs["node1"], capability_args=ingress_ports)
        client = node2.node.add_pod("client", confs["node2"])
        servers = [connectivity.serve(ingress.ns, port) for port in (18080, 18443)]
        try:
            probes = [
                connectivity.probe(
                    source, node1.ip, "tcp", port=port, expected_source=seen, name=who
                )
                for who, source, seen in (
                    ("docker host", cluster.underlay, "172.18.0.1"),
                    ("pod on node2", client.ns, client.addresses(4)[0]),
                )
                for port in (80, 443)
            ]
        finally:
            for server in servers:
                server.stop()
        assert all(p.ok for p in probes), connectivity.report(probes)


# --- the config schema: the generated validator and jsonschema agree --------------------------

PORTMAP_DOC: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "kubenet",
    "type": "pycni-portmap",
    "snat": True,
    "markMasqBit": 13,
    "runtimeConfig": {
        "portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    },
}
PORTMAP_PATHS = [
    ("snat",),
    ("markMasqBit",),
    ("backend",),
    ("conditionsV4",),
    ("externalSetMarkChain",),
    ("runtimeConfig",),
    ("runtimeConfig", "portMappings"),
    ("runtimeConfig", "portMappings", 0),
    ("runtimeConfig", "portMappings", 0, "hostPort"),
    ("runtimeConfig", "portMappings", 0, "containerPort"),
    ("runtimeConfig", "portMappings", 0, "protocol"),
    ("runtimeConfig", "portMappings", 0, "hostIP"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PORTMAP_PATHS), json_values | st.sampled_from(INTERESTING_STRINGS))
def test_portmap_validators_agree(path: tuple[Any, ...], value: object) -> None:
    from pycni.conformance import validate
    from pycni.validators import portmap as generated

    doc = copy.deepcopy(PORTMAP_DOC)
    node: Any = doc
    for step in path[:-1]:
        node = node.setdefault(step, {}) if isinstance(step, str) else node[step]
    node[path[-1]] = value
    assert_same_verdict((generated.validate, validate.validator("portmap")), doc)
