"""`"encryption": "ipsec"` on pycni-vxlan and pycni-ipip in a kernel that has ESP (the kernel
lane's guest): STATUS is ready, the pods and the tunnel devices get the MTU that leaves ESP its
34 bytes on the 1500-byte underlay, ipip's CrossSubnet sends even a same-subnet peer through the
tunnel, and the plugins' ESP probe leaves the xfrm tables (an SA and a policy in them) exactly
as they were. The plugins make no SA or policy themselves: the agent keys them (its tests show
the packets encrypted on the wire)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pycni.datapath import encryption
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.netns import Netns

pytestmark = [pytest.mark.frozen, pytest.mark.netns]


def link(member: ClusterNode, name: str) -> dict[str, object]:
    (found,) = member.node.ns.ip_json("-d", "link", "show", name)
    return {"kind": found["linkinfo"]["info_kind"], "mtu": found["mtu"]}


def test_vxlan_with_encryption_is_ready_and_leaves_esp_room(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(2, datapath="vxlan", vxlan={"encryption": "ipsec"})
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1)
    node1.node.runtime().status(conf)  # the kernel has ESP and the AEAD: ready
    pod = node1.node.add_pod("a", conf)
    assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1416  # 1500 - 50 - 34
    assert link(node1, "pycni.1") == {"kind": "vxlan", "mtu": 1416}
    assert node1.node.ns.ip("xfrm", "state") == ""  # the agent's to make, not the plugin's
    node1.node.remove_pod("a", conf)


@pytest.mark.parametrize("encapsulation", ["Always", "CrossSubnet"])
def test_ipip_with_encryption_tunnels_every_peer_and_leaves_esp_room(
    cluster_factory: Callable[..., Cluster], encapsulation: str
) -> None:
    cluster = cluster_factory(
        2, datapath="ipip", encapsulation=encapsulation, ipip={"encryption": "ipsec"}
    )
    node1 = cluster.nodes["node1"]
    conf = cluster.conflist(node1)
    node1.node.runtime().status(conf)
    pod = node1.node.add_pod("a", conf)
    assert pod.ns.ip_json("link", "show", "eth0")[0]["mtu"] == 1446  # 1500 - 20 - 34
    assert link(node1, "pycni.ipip") == {"kind": "ipip", "mtu": 1446}
    routes = [
        f"{r['dst']} via {r['gateway']} dev {r['dev']}"
        for r in node1.node.ns.ip_json("route", "show", "proto", "112")
    ]
    # node2 is on node1's subnet: CrossSubnet would route it directly, in the clear
    assert routes == ["10.244.1.0/24 via 172.18.0.3 dev pycni.ipip"]
    node1.node.remove_pod("a", conf)


def test_the_probe_leaves_existing_xfrm_state_alone(netns: Netns) -> None:
    netns.ip(
        "xfrm", "state", "add", "src", "172.18.0.2", "dst", "172.18.0.3", "proto", "esp",
        "spi", "0x1234", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20,
        "128",
    )  # fmt: skip
    netns.ip(
        "xfrm", "policy", "add", "src", "172.18.0.2", "dst", "172.18.0.3", "proto", "udp",
        "dport", "4789", "dir", "out", "tmpl", "proto", "esp", "mode", "transport",
    )  # fmt: skip
    before = (netns.ip("xfrm", "state"), netns.ip("xfrm", "policy"))
    assert encryption.esp_problem(netns.path) is None
    assert (netns.ip("xfrm", "state"), netns.ip("xfrm", "policy")) == before
    assert "spi 0x00001234" in before[0] and "192.0.2" not in before[0]
