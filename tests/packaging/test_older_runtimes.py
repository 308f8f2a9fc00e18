"""Every conflist pycni ships or writes, run by a runtime on libcni 1.1.2: `build/cnitool`, the
CNI project's own client, built from Debian's golang-github-appc-cni 1.1.2 (packaging/cnitool.sh).

libcni before 1.2 -- containerd 1.6 (1.1.1, Debian's build 1.1.2) and 1.7 (1.1.2), CRI-O before
1.31 (1.1.2) -- ignores `cniVersions`, sends the list's `cniVersion` and cannot parse a result
newer than 1.0.0. So a conflist that says 1.1.0 breaks every pod on those nodes; one that says
1.0.0 with 1.1.0 in `cniVersions` works there and gives libcni 1.2+ its STATUS and GC.

Each file of conf/kind/ and each conflist of conf/examples/ goes through `cnitool add`,
`check` and `del` inside a node of an emulated cluster (pycni.lab.cluster: kind's 172.18.0.0/16
underlay, node1 with pod CIDR 10.244.0.0/24 for conf/kind, node2 with 10.244.1.0/24 for the
examples, the peers file published), with `hostPort` capability args where the chain has
pycni-portmap. Only the paths a test keeps off the host are changed: the IPAM `dataDir` and the
`peersFile`. The kind files go through twice: as shipped, and as the node agent writes them
(pycni.agent's `Agent` with the node list of a kind cluster; packaging/kind-install.sh fills
the template with the same `render_conflist`, it renders nothing of its own).

Excluded where the kernel has no ipip module (this host's): the configs that need an IPIP
tunnel -- conf/kind and conf/examples `ipip-always`, and the `ipip-crosssubnet` example, whose
peer node3 is on another subnet. There the test asserts instead that libcni 1.1.2 gets pycni's
refusal (code 50, "modprobe ipip") as the error, not a version failure; on a kernel with
ipip they run ADD, CHECK and DEL like the rest. (The kind `ipip-crosssubnet` file runs: its
peers are all on the node's own subnet, so no tunnel is needed.)"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest

from pycni.agent import agent as agent_mod
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.netns import Netns
from tests.support.capture import kernel_has_ipip
from tests.support.cnitool import CniTool, cache_entry, installed
from tests.support.kube_replay import kind_node
from tests.support.leftovers import leftovers
from tests.support.paths import EXAMPLES, KIND

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

SHIPPED = sorted(KIND.glob("*.conflist")) + sorted(EXAMPLES.glob("*.conflist"))
# need an IPIP tunnel on any kernel (see the module's docstring)
NEEDS_IPIP = {
    KIND / "00-pycni-ipip-always.conflist",
    EXAMPLES / "10-pycni-ipip-always.conflist",
    EXAMPLES / "10-pycni-ipip-crosssubnet.conflist",
}
PORT_MAPPINGS = {"portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]}
LEGACY_RESULT_VERSIONS = {"0.3.0", "0.3.1", "0.4.0", "1.0.0"}  # what libcni 1.1.2 can parse


@dataclass(frozen=True)
class Case:
    path: Path
    rendered: bool  # written by the node agent from the file as its template

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}" + (" (agent)" if self.rendered else "")


CASES = [Case(p, False) for p in SHIPPED] + [Case(p, True) for p in sorted(KIND.glob("*.conflist"))]


def test_every_shipped_conflist_is_driven() -> None:
    assert {c.path for c in CASES} == set(KIND.glob("*.conflist")) | set(
        EXAMPLES.glob("*.conflist")
    )
    assert len(SHIPPED) >= 10, SHIPPED
    assert set(SHIPPED) >= NEEDS_IPIP


@pytest.fixture(scope="module")
def has_ipip() -> bool:
    return kernel_has_ipip()


def datapath_of(conflist: dict[str, Any]) -> str:
    types = {p["type"] for p in conflist["plugins"]}
    return "ipip" if "pycni-ipip" in types else "vxlan"


def node_for(case: Case, cluster: Cluster) -> ClusterNode:
    """conf/kind is for kind's first node (10.244.0.0/24); the examples are node2's."""
    return cluster.nodes["node1" if case.path.parent == KIND else "node2"]


def local_paths(conflist: dict[str, Any], member: ClusterNode) -> dict[str, Any]:
    """The conflist with the IPAM state and the peers file in the node's own directory."""
    conflist = json.loads(json.dumps(conflist))
    for plugin in conflist["plugins"]:
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = str(member.node.state_dir / "networks")
        if "peersFile" in plugin:
            plugin["peersFile"] = str(member.peers_file)
    return conflist


class _NodeList:
    """The agent's Kubernetes client, reduced to the list it makes: the cluster's nodes as
    kind's API server shows them."""

    def __init__(self, cluster: Cluster) -> None:
        self.items = [
            kind_node(m.name, m.ip, [m.pod_cidr], 100 + m.index) for m in cluster.nodes.values()
        ]

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        return self.items, "200"


def agent_written(template: dict[str, Any], cluster: Cluster, member: ClusterNode) -> Path:
    """What the node agent writes for `member` (conflist and peers file) from `template`; its
    datapath reconcile is left out (it would run in this process's namespace, the host's)."""
    conf_path = member.node.state_dir / "agent" / "00-pycni.conflist"
    agent = agent_mod.Agent(_NodeList(cluster), member.name, template, conf_path, lambda _: [])
    assert agent_mod.run_once(agent) == 0
    return conf_path


def conflist_for(case: Case, cluster: Cluster, member: ClusterNode) -> dict[str, Any]:
    shipped = local_paths(json.loads(case.path.read_text()), member)
    if not case.rendered:
        return shipped
    written: dict[str, Any] = json.loads(agent_written(shipped, cluster, member).read_text())
    assert written["plugins"][0]["ipam"]["ranges"] == [[{"subnet": member.pod_cidr}]]
    return written


def subnets_of(conflist: dict[str, Any]) -> list[IPv4Network | IPv6Network]:
    ranges = conflist["plugins"][0]["ipam"]["ranges"]
    return [ip_network(r["subnet"]) for range_set in ranges for r in range_set]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_libcni_1_1_runs_the_conflist(
    bundle: Path, has_ipip: bool, pod_ns: Netns, case: Case
) -> None:
    installed()
    template = json.loads(case.path.read_text())
    with Cluster.create(2, bundle, datapath=datapath_of(template)) as cluster:
        member = node_for(case, cluster)
        conflist = conflist_for(case, cluster, member)
        network = conflist["name"]
        net_dir = member.node.state_dir / "cnitool.d"
        net_dir.mkdir()
        (net_dir / case.path.name).write_text(json.dumps(conflist, indent=2))
        # hostPorts for pycni-portmap. Not for the reference portmap (pod-network.conflist):
        # Debian's 1.1.1 fails CHECK on a dual-stack pod, looking for the IPv4 mapping's rules
        # in the ip6tables nat table -- its bug, and no version question.
        has_portmap = any(p["type"] == "pycni-portmap" for p in conflist["plugins"])
        cnitool = CniTool(member.node.ns, net_dir, bundle, PORT_MAPPINGS if has_portmap else {})
        entry = cache_entry(network, pod_ns)
        try:
            if case.path in NEEDS_IPIP and not has_ipip:
                refused = cnitool("add", network, pod_ns)
                assert refused.returncode != 0, refused.stdout
                assert "modprobe ipip" in refused.stderr, refused.stderr
                assert "unsupported CNI result version" not in refused.stderr
                cnitool.ok("del", network, pod_ns)  # what a runtime does after a failed ADD
                assert leftovers(member.node) == []
                return

            result = json.loads(cnitool.ok("add", network, pod_ns))
            assert result["cniVersion"] in LEGACY_RESULT_VERSIONS, result
            address = result["ips"][0]["address"]
            assert any(ip_interface(address).ip in s for s in subnets_of(conflist)), result
            shown = pod_ns.ip_json("addr", "show", "dev", "eth0")[0]["addr_info"]
            assert address in [f"{a['local']}/{a['prefixlen']}" for a in shown], shown
            assert any(x.startswith("lease") for x in leftovers(member.node))
            assert entry.exists(), "libcni cached the ADD result"

            cnitool.ok("check", network, pod_ns)
            cnitool.ok("del", network, pod_ns)
            assert leftovers(member.node) == []
            assert not entry.exists(), "libcni dropped its cache entry"
            assert "eth0" not in pod_ns.link_names()
        finally:
            if entry.exists():
                cnitool("del", network, pod_ns)
                entry.unlink(missing_ok=True)
