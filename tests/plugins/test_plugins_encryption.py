"""`"encryption": "ipsec"` on pycni-vxlan and pycni-ipip, through the frozen executables as a
runtime calls them, on this host's kernel, which has no ESP (nor the AEAD): STATUS is not ready
(50) and ADD is refused (50) before it makes anything, both naming `modprobe esp4`; the node is
left exactly as it was. Config errors are 7. With ESP (the kernel lane) the pods get the MTU
that leaves ESP room: tests/kernel/test_encryption_plugins.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.runtime import PluginError
from tests.support.calls import assert_refused
from tests.support.capture import kernel_has_esp
from tests.support.leftovers import leftovers

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

CASES = {
    "vxlan": {"datapath": "vxlan", "vxlan": {"encryption": "ipsec"}},
    "ipip-always": {"datapath": "ipip", "encapsulation": "Always", "ipip": {"encryption": "ipsec"}},
    "ipip-crosssubnet": {
        "datapath": "ipip",
        "encapsulation": "CrossSubnet",
        "ipip": {"encryption": "ipsec"},
    },
}


def node_state(member: ClusterNode) -> dict[str, Any]:
    """Everything an ADD could make on the node: links, addresses, routes (every table),
    xfrm tables, and the files of the node's state directory (leases, the IPAM's)."""
    ns = member.node.ns
    return {
        "links": sorted(link["ifname"] for link in ns.ip_json("link", "show")),
        "addresses": ns.ip("-br", "addr"),
        "routes": ns.ip("route", "show", "table", "all"),
        "xfrm": (ns.ip("xfrm", "state"), ns.ip("xfrm", "policy")),
        "files": sorted(  # files: the runtime's own (empty) cache directories do not count
            str(p.relative_to(member.node.state_dir))
            for p in member.node.state_dir.rglob("*")
            if not p.is_dir()
        ),
    }


@pytest.mark.parametrize("case", CASES)
def test_a_kernel_without_esp_refuses_status_and_add_and_nothing_is_made(
    cluster_factory: Callable[..., Cluster], case: str
) -> None:
    if kernel_has_esp():
        pytest.fail(
            "this kernel has ESP: the refusal cannot be shown here (the kernel lane shows"
            " encryption working: tests/kernel/test_encryption_plugins.py)"
        )
    cluster = cluster_factory(2, **CASES[case])
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1)
    runtime = node1.node.runtime()
    before = node_state(node1)
    with pytest.raises(PluginError) as err:
        runtime.status(conf)
    assert err.value.code == 50, err.value
    assert "modprobe esp4" in err.value.msg, err.value.msg
    assert "encryption ipsec needs IPsec ESP with rfc4106(gcm(aes))" in err.value.msg
    refused = assert_refused(lambda: node1.node.add_pod("a", conf), 50, ["modprobe esp4"])
    assert "encryption ipsec needs IPsec ESP" in refused.msg
    assert leftovers(node1.node, pod_cidr=node1.pod_cidr) == []
    assert node_state(node1) == before  # no tunnel, bridge, route, address, lease, SA


def test_without_encryption_the_same_clusters_work(cluster_factory: Callable[..., Cluster]) -> None:
    """ "none" is the default, spelt out: the refusal above is encryption's alone."""
    cluster = cluster_factory(2, datapath="vxlan", vxlan={"encryption": "none"})
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1)
    node1.node.runtime().status(conf)
    pod = node1.node.add_pod("a", conf)
    assert pod.result["interfaces"][-1].get("mtu", 1450) == 1450
    assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1450  # 1500 - 50, no ESP room


def test_ipip_never_with_encryption_is_a_config_error(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(2, datapath="ipip", encapsulation="Never")
    node1 = cluster.nodes["node1"]
    cluster.ipip["encryption"] = "ipsec"
    conf = cluster.conflist(node1)
    words = ["$.encryption", "encapsulation Never", "Always or CrossSubnet"]
    assert_refused(lambda: node1.node.add_pod("a", conf), 7, words)
    assert leftovers(node1.node, pod_cidr=node1.pod_cidr) == []


@pytest.mark.parametrize("datapath", ["vxlan", "ipip"])
def test_an_unknown_encryption_is_a_config_error(
    cluster_factory: Callable[..., Cluster], datapath: str
) -> None:
    cluster = cluster_factory(1, datapath=datapath, encapsulation="Never")
    node1 = cluster.nodes["node1"]
    (cluster.ipip if datapath == "ipip" else cluster.vxlan)["encryption"] = "wireguard"
    conf = cluster.conflist(node1)
    words = ["$.encryption", "'none', 'ipsec'", "wireguard"]
    assert_refused(lambda: node1.node.add_pod("a", conf), 7, words)
    assert leftovers(node1.node, pod_cidr=node1.pod_cidr) == []


@pytest.mark.parametrize("datapath", ["vxlan", "ipip"])
def test_pycni_validate_knows_the_key(tmp_path: Path, datapath: str) -> None:
    from pycni.conformance import validate

    def conflist(value: object) -> Path:
        path = tmp_path / f"{datapath}-{value}.conflist"
        plugin = {
            "type": f"pycni-{datapath}",
            "encryption": value,
            "peersFile": "/etc/cni/pycni/peers.json",
            "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
        }
        doc = {"cniVersion": "1.1.0", "name": "net", "plugins": [plugin]}
        path.write_text(json.dumps(doc))
        return path

    for good in ("ipsec", "none"):
        report = validate.check_file(str(conflist(good)))
        assert report.errors == [] and report.notes == [], report
    report = validate.check_file(str(conflist("wireguard")))
    assert [(e.code, "$.plugins[0].encryption" in e.msg) for e in report.errors] == [(7, True)]


def test_turning_encryption_on_under_existing_pods_is_drift_for_check(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """What docs/encryption.md says of pods made before: the tunnel device's MTU is drift
    until a reconcile repairs it, then the older pod's interface is (no ESP needed for CHECK
    or reconcile, so the host kernel shows it)."""
    cluster = cluster_factory(2, datapath="vxlan")
    node1 = cluster.nodes["node1"]
    pod = node1.node.add_pod("a", cluster.conflist(node1))
    assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1450
    cluster.vxlan["encryption"] = "ipsec"
    conf = cluster.conflist(node1)
    runtime = node1.node.runtime()
    with pytest.raises(PluginError) as err:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    assert err.value.code == 104 and "repair vxlan device 'pycni.1' (mtu 1416" in err.value.msg
    cluster.reconcile(node1)
    with pytest.raises(PluginError) as err:
        runtime.check(conf, pod.container_id, pod.ns.path, "eth0")
    assert err.value.code == 104
    assert "interface 'eth0' has MTU 1450, expected 1416" in err.value.msg, err.value.msg
