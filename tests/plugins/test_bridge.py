"""pycni-bridge on one emulated node: the frozen executables driven as containerd drives them
(bare environment, loopback first, the conflist, chaining, DEL in reverse with the cached
result), with real packets between pod namespaces."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import versions
from pycni.lab import connectivity
from pycni.lab import netns as netns_mod
from pycni.lab.netns import Netns
from pycni.lab.runtime import PluginError, invoke
from pycni.lab.testbed import Node
from tests.support.calls import assert_deleted_again, assert_refused, taken_default_route
from tests.support.conflists import kubenet
from tests.support.leftovers import leases, leftovers

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

SUBNET4, GW4 = "10.60.0.0/24", "10.60.0.1"
SUBNET6, GW6 = "fd60::/64", "fd60::1"


def conflist(version: str = "1.1.0", *, dual: bool = False, **bridge: Any) -> dict[str, Any]:
    subnets = [SUBNET4, SUBNET6] if dual else [SUBNET4]
    return kubenet(version, subnets, **({"hairpinMode": True} | bridge))


def test_pods_reach_each_other_and_the_node_without_nat(node: Node) -> None:
    conf = node.conf(conflist(dual=True))
    a, b = node.add_pod("a", conf), node.add_pod("b", conf)
    assert a.addresses(4) == ["10.60.0.2"] and b.addresses(4) == ["10.60.0.3"]
    assert a.addresses(6) == ["fd60::2"] and b.addresses(6) == ["fd60::3"]
    servers = [connectivity.serve(p.ns) for p in (a, b)]
    try:
        probes = []
        for version, gw in ((4, GW4), (6, GW6)):
            targets = [(p.name, addr) for p in (a, b) for addr in p.addresses(version)]
            sources = [(p.name, p.ns, p.addresses(version)[0]) for p in (a, b)]
            sources.append(("node", node.ns, gw))  # the node speaks from the bridge's address
            probes += connectivity.matrix(sources, targets)
    finally:
        for server in servers:
            server.stop()
    assert len(probes) == 2 * 2 * (2 + 2)  # families x protos x (pod->other pod, node->pods)
    assert all(p.ok for p in probes), connectivity.report(probes)


def test_ip_masq_hides_pods_behind_the_node_outside_the_pod_network(node: Node) -> None:
    """A pod reaches an address outside the pod network, and is seen there as the node."""
    outside = netns_mod.create("out")
    try:
        node.ns.ip(
            "link", "add", "uplink", "type", "veth", "peer", "name", "wan0", "netns", outside.name
        )
        node.ns.ip("addr", "add", "192.0.2.1/24", "dev", "uplink")
        node.ns.ip("link", "set", "uplink", "up")
        outside.ip("addr", "add", "192.0.2.2/24", "dev", "wan0")
        outside.ip("link", "set", "wan0", "up")
        conf = node.conf(conflist(ipMasq=True))
        pod = node.add_pod("a", conf)
        server = connectivity.serve(outside)
        try:
            seen = [
                connectivity.probe(pod.ns, "192.0.2.2", proto).seen_as for proto in ("tcp", "udp")
            ]
            other = node.add_pod("b", conf)
            inner = connectivity.serve(other.ns)
            try:  # inside the pod network: no NAT
                inside = connectivity.probe(pod.ns, other.addresses(4)[0], "tcp").seen_as
            finally:
                inner.stop()
        finally:
            server.stop()
        assert seen == ["192.0.2.1", "192.0.2.1"]
        assert inside == pod.addresses(4)[0]
        rules = node.ns.run(["nft", "list", "table", "inet", "pycni"]).stdout
        assert "masquerade" in rules and "10.60.0.0/24" in rules
        node.remove_pod("b", conf)
        # the rule belongs to the network, not to a pod: one rule set, whatever the pod count
        assert node.ns.run(["nft", "list", "table", "inet", "pycni"]).stdout == rules
    finally:
        outside.delete()


def test_services_by_dnat_reach_another_pod_and_the_pod_itself(node: Node) -> None:
    """kube-proxy's iptables mode, in nftables: VIP:port -> pod IP:port, masquerading the
    hairpin case (an endpoint reaching itself through its service)."""
    conf = node.conf(conflist())
    a, b = node.add_pod("a", conf), node.add_pod("b", conf)
    vip, b_ip = "10.96.0.10", b.addresses(4)[0]
    port = connectivity.PORT
    node.ns.run(
        ["nft", "-f", "-"],
        input=f"""
table ip kubeproxy {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    ip daddr {vip} tcp dport 80 ip saddr {b_ip} meta mark set 0x4000
    ip daddr {vip} tcp dport 80 dnat to {b_ip}:{port}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    meta mark 0x4000 masquerade
  }}
}}
""",
    )
    server = connectivity.serve(b.ns)
    try:
        from_a = connectivity.probe(a.ns, vip, "tcp", port=80).seen_as
        from_b = connectivity.probe(b.ns, vip, "tcp", port=80).seen_as
    finally:
        server.stop()
    assert from_a == a.addresses(4)[0]  # no NAT for a client that is not the endpoint
    assert from_b == GW4  # hairpin: masqueraded to the node (bridge) address, and it worked


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_lifecycle_and_check_catching_drift(bundle: Path, node: Node, version: str) -> None:
    conf = node.conf(conflist(version, dual=True))
    runtime = node.runtime()
    pod = node.add_pod("a", conf)
    result = pod.result
    assert result["cniVersion"] == version
    names = [i["name"] for i in result["interfaces"]]
    assert names[0] == "cbr0" and names[1].startswith("veth") and names[2] == "eth0"
    assert result["interfaces"][2]["sandbox"] == pod.ns.path
    assert ("mtu" in result["interfaces"][2]) == versions.at_least(version, "1.1.0")
    assert [ip["interface"] for ip in result["ips"]] == [2, 2]
    assert [ip["address"] for ip in result["ips"]] == ["10.60.0.2/24", "fd60::2/64"]  # v4 first
    veth = names[1]
    # IPv6 is usable at once: no duplicate address detection left pending
    v6 = [a for a in pod.ns.ip_json("-6", "addr", "show", "dev", "eth0")[0]["addr_info"]]
    assert [a.get("tentative", False) for a in v6 if a["scope"] == "global"] == [False]
    assert json.loads(node.ns.ip("-j", "-d", "link", "show", veth))[0]["master"] == "cbr0"
    assert (
        json.loads(node.ns.ip("-j", "-d", "link", "show", veth))[0]["linkinfo"]["info_slave_data"][
            "hairpin"
        ]
        is True
    )

    if not versions.at_least(version, "0.4.0"):
        with pytest.raises(Exception, match="CHECK"):
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    else:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        pod.ns.ip("addr", "del", "10.60.0.2/24", "dev", "eth0")
        with pytest.raises(PluginError) as err:
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        assert err.value.code == 104 and "10.60.0.2/24" in err.value.msg
        pod.ns.ip("addr", "add", "10.60.0.2/24", "dev", "eth0")
        pod.ns.ip("route", "add", "default", "via", GW4)
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        node.ns.ip("link", "set", veth, "nomaster")
        with pytest.raises(PluginError) as err:
            runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
        assert err.value.code == 104 and veth in err.value.msg and "cbr0" in err.value.msg

    node.remove_pod("a", conf)
    assert leftovers(node) == []
    assert node.ns.run(["nft", "list", "ruleset"]).stdout.strip() == ""  # no firewall rules
    # DEL again, and containerd's second DEL with an empty netns: both succeed
    assert_deleted_again(bundle / "pycni-bridge", conf, pod, in_netns=node.ns.path, cni_path=bundle)


def test_del_with_the_pod_namespace_gone_removes_the_host_veth_and_lease(
    bundle: Path, node: Node
) -> None:
    conf = node.conf(conflist())
    pod = node.add_pod("a", conf)
    pod.ns.delete()  # the sandbox vanished before the runtime's DEL (the veth pair goes with it)
    node.remove_pod("a", conf)
    assert leftovers(node) == []


def test_the_bridge_keeps_its_mtu_when_the_last_pod_leaves(node: Node) -> None:
    """The kernel re-derives a bridge's MTU from its ports (1500 with none) unless it was set
    on the bridge after creation; an MTU given only at creation made the node differ after
    the first pod's DEL (1500) and after every later one (1400): conformance's
    del.node-as-found found it with pycni-vxlan (the overlay's MTU)."""
    conf = node.conf(conflist(mtu=1400))

    def bridge_mtu() -> int:
        return int(node.ns.ip_json("link", "show", "cbr0")[0]["mtu"])

    for name in ("a", "b"):
        node.add_pod(name, conf)
        assert bridge_mtu() == 1400
        node.remove_pod(name, conf)
        assert bridge_mtu() == 1400, f"after the DEL of pod {name}"


def test_a_failed_add_leaves_nothing_behind(node: Node) -> None:
    conf = copy.deepcopy(conflist())
    # a route whose gateway is on no link: the kernel refuses it after the veth exists
    conf["plugins"][0]["ipam"]["routes"] = [{"dst": "198.51.100.0/24", "gw": "203.0.113.1"}]
    conf = node.conf(conf)
    with pytest.raises(PluginError) as err:
        node.add_pod("a", conf)
    assert err.value.code == 105 and "198.51.100.0/24" in err.value.msg
    assert leftovers(node) == []


def test_any_ipam_plugin_and_its_error_codes_pass_through(
    bundle: Path, reference: Path, node: Node
) -> None:
    conf = copy.deepcopy(conflist("1.0.0"))  # the Go plugins (1.1.1) stop at spec 1.0.0
    conf["plugins"][0]["ipam"] = {
        "type": "host-local",
        "ranges": [[{"subnet": SUBNET4}]],
        "dataDir": str(node.state_dir / "go-ipam"),
    }
    conf = node.conf(conf)
    pod = node.add_pod("a", conf)  # the Go host-local, exec'd from CNI_PATH
    assert pod.addresses(4) == ["10.60.0.2"]
    node.remove_pod("a", conf)
    assert not list((node.state_dir / "go-ipam" / "kubenet").glob("10.*"))
    # a config the Go plugin refuses: its code and message reach the runtime unchanged
    bad = copy.deepcopy(conf)
    bad["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.60.0.0/31"}]]
    plugin = {**bad["plugins"][0], "cniVersion": "1.0.0", "name": "kubenet"}
    direct = invoke(
        str(reference / "host-local"),
        "ADD",
        container_id="x",
        netns=node.ns.path,
        ifname="eth0",
        config=plugin,
        cni_path=str(reference),
    )
    ns = netns_mod.create("pod")
    try:
        through = invoke(
            str(bundle / "pycni-bridge"),
            "ADD",
            container_id="x",
            netns=ns.path,
            ifname="eth0",
            config=plugin,
            in_netns=node.ns.path,
            cni_path=f"{bundle}:{reference}",
        )
    finally:
        ns.delete()
    assert direct.exit_status == through.exit_status == 1
    assert through.output["code"] == direct.output["code"]
    assert through.output["msg"] == direct.output["msg"]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"bridge": "dummy9"}, 7, ["$.bridge", "dummy9", "not a bridge"]),
        ({"mtu": 70000}, 7, ["$.mtu"]),
        ({"bridge": "a-name-too-long-for-linux"}, 7, ["$.bridge"]),
        ({"hairpinMode": True, "promiscMode": True}, 7, ["$.promiscMode"]),
        (
            {
                "ipam": {
                    "type": "pycni-host-local",
                    "ranges": [[{"subnet": SUBNET4, "gateway": "10.61.0.1"}]],
                }
            },
            7,
            ["$.ipam.ranges[0][0].gateway"],
        ),
        ({"ipMasq": "yes"}, 7, ["$.ipMasq"]),
        ({"ipam": {"type": "no-such-ipam"}}, 106, ["no-such-ipam"]),
    ],
)
def test_bad_config_names_the_field(
    bundle: Path, node: Node, change: dict[str, Any], code: int, words: list[str]
) -> None:
    node.ns.ip("link", "add", "dummy9", "type", "veth", "peer", "name", "dummy9p")  # no bridge
    conf = conflist()
    conf["plugins"][0].update(change)
    conf = node.conf(conf)
    assert_refused(lambda: node.add_pod("a", conf), code, words)
    assert leftovers(node, node_veths=("dummy9", "dummy9p")) == []


def test_status_and_gc(bundle: Path, node: Node) -> None:
    conf = node.conf(conflist("1.1.0"))
    runtime = node.runtime()
    a, b = node.add_pod("a", conf), node.add_pod("b", conf)
    runtime.status(conf)
    runtime.gc(conf, [(b.container_id, "eth0")])  # a's cached attachment is DEL'd, then GC
    assert list(leases(node.state_dir / "networks", "kubenet")) == ["10.60.0.3"]
    node.ns.ip("link", "del", "cbr0")
    node.ns.ip("link", "add", "cbr0", "type", "veth", "peer", "name", "cbr0p")
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50 and "not a bridge" in err.value.msg
    del node.pods["a"]
    a.ns.delete()


def test_chained_after_another_plugin_keeps_its_result(
    bundle: Path, node: Node, tmp_path: Path
) -> None:
    """Not first in the list: the previous result's interfaces and IPs stay in front."""
    first = tmp_path / "bin" / "first-plugin"
    first.parent.mkdir()
    first.write_text(
        '#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
        'echo \'{"cniVersion": "1.0.0", "interfaces": [{"name": "tap9"}],'
        ' "ips": [{"address": "192.0.2.9/32", "interface": 0}]}\'\n'
    )
    first.chmod(0o755)
    node.bin_dirs.append(str(first.parent))
    plugins = [{"type": "first-plugin"}, conflist("1.0.0")["plugins"][0]]
    conf = node.conf({"cniVersion": "1.0.0", "name": "kubenet", "plugins": plugins})
    pod = node.add_pod("a", conf)
    names = [i["name"] for i in pod.result["interfaces"]]
    assert names[:2] == ["tap9", "cbr0"] and names[2].startswith("veth") and names[3] == "eth0"
    assert [(ip["address"], ip["interface"]) for ip in pod.result["ips"]] == [
        ("192.0.2.9/32", 0),
        ("10.60.0.2/24", 3),
    ]
    node.remove_pod("a", conf)
    assert leftovers(node) == []


def test_a_failed_add_after_the_veth_was_made_leaves_nothing(node: Node, pod_ns: Netns) -> None:
    """The pod's namespace already has a default route, so the pod's own cannot be added after
    the lease and the veth pair were made: the rollback removes both (it once ran after the
    netlink socket had closed, and left the veth)."""
    conf = node.conf(conflist())
    taken_default_route(pod_ns)
    with pytest.raises(PluginError) as err:
        node.runtime().add(conf, "late", pod_ns.path, "eth0")
    assert err.value.code == 105 and "0.0.0.0/0" in err.value.msg
    assert "eth0" not in pod_ns.link_names()
    assert leftovers(node) == []  # the pod is still there: a veth left would show
