"""The conflists a kind user installs (conf/kind/00-pycni-*.conflist), as shipped, through their
whole chain (pycni-portmap included) on an emulated kind cluster: pycni.lab.cluster's nodes on
kind's docker network (172.18.0.0/16) with pod CIDRs from kind's 10.244.0.0/16.

Only what the node agent fills in differs from the file (pycni.agent.agent.render_conflist: the
node's pod CIDR as the IPAM range, its InternalIP as localIP), plus the two paths a test keeps
off the host (dataDir, peersFile). Per datapath: a pod with hostPort 8080 (kind's ingress
recipe binds hostPorts the same way) is reached through its node's address from the docker
host and from a pod on the other node; pods reach each other by address; STATUS and CHECK pass;
DEL leaves no veth, no lease and no hostPort element. `bridge` runs on one node (it has no
cross-node routes: docs/install-kind.md says single-node clusters only). `ipip-always` needs the
ipip module, which this host's kernel lacks: there the STATUS and the ADD must refuse with code 50
naming `modprobe ipip` (on a kernel with ipip, pods must talk as for the others)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pycni.agent.agent import NodeInfo, render_conflist
from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.runtime import PluginError
from pycni.lab.testbed import Pod
from tests.support.leftovers import leftovers
from tests.support.paths import KIND

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

HOST_PORT = 8080  # to the ingress pod's connectivity.PORT
MAPPING = {
    "portMappings": [{"hostPort": HOST_PORT, "containerPort": connectivity.PORT, "protocol": "tcp"}]
}

# datapath -> (cluster datapath, nodes); the conflist's own settings (encapsulation...) rule
DATAPATHS = {
    "bridge": ("vxlan", 1),
    "vxlan": ("vxlan", 2),
    "ipip-never": ("ipip", 2),
    "ipip-crosssubnet": ("ipip", 2),
    "ipip-always": ("ipip", 2),
}


def test_every_kind_conflist_is_exercised() -> None:
    shipped = {
        p.name.removeprefix("00-pycni-").removesuffix(".conflist") for p in KIND.glob("*.conflist")
    }
    assert shipped == set(DATAPATHS)


def node_conflist(datapath: str, member: ClusterNode) -> dict[str, Any]:
    """The shipped file as the agent renders it for `member`, written to its conf dir."""
    template = json.loads((KIND / f"00-pycni-{datapath}.conflist").read_text())
    conflist = render_conflist(template, NodeInfo(member.name, (member.ip,), (member.pod_cidr,)))
    for plugin in conflist["plugins"]:
        if "ipam" in plugin:
            plugin["ipam"]["dataDir"] = str(member.node.state_dir / "networks")
        if "peersFile" in plugin:
            plugin["peersFile"] = str(member.peers_file)
    return member.node.conf(conflist)


@contextmanager
def pods_removed(members: list[tuple[ClusterNode, dict[str, Any]]]) -> Iterator[None]:
    """DEL every pod of these nodes through the runtime on the way out, even on failure."""
    try:
        yield
    finally:
        for member, conf in members:
            for name in list(member.node.pods):
                member.node.remove_pod(name, conf)


@pytest.mark.parametrize("datapath", sorted(DATAPATHS))
def test_shipped_conflist_on_an_emulated_kind_cluster(bundle: Path, datapath: str) -> None:
    cluster_datapath, count = DATAPATHS[datapath]
    with Cluster.create(count, bundle, datapath=cluster_datapath) as cluster:
        members = [cluster.nodes[f"node{i + 1}"] for i in range(count)]
        confs = {m.name: node_conflist(datapath, m) for m in members}
        home, other = members[0], members[-1]
        runtime = home.node.runtime()

        if datapath == "ipip-always":
            try:
                runtime.status(confs[home.name])
            except PluginError as err:  # no ipip in this kernel: refused, and says what to do
                assert err.code == 50 and "modprobe ipip" in err.msg, err
                with pytest.raises(PluginError) as caught:
                    home.node.add_pod("ingress", confs[home.name], capability_args=MAPPING)
                assert caught.value.code == 50 and "modprobe ipip" in caught.value.msg
                assert leftovers(home.node) == []
                return
        else:
            runtime.status(confs[home.name])

        with pods_removed([(m, confs[m.name]) for m in members]):
            ingress = home.node.add_pod("ingress", confs[home.name], capability_args=MAPPING)
            client = other.node.add_pod("client", confs[other.name])
            for member, pod in ((home, ingress), (other, client)):
                member.node.runtime().check(
                    confs[member.name], pod.container_id, pod.ns.path, "eth0", **pod.add_args
                )
            probes = reach(cluster, home, ingress, client)
            # what DEL must take away is there to take (so `leftovers` can see it)
            held = leftovers(home.node)
            assert any(x.startswith("hostport") for x in held), held
            assert any(x.startswith("lease") for x in held), held
        assert all(p.ok for p in probes), connectivity.report(probes)
        for member in members:
            assert leftovers(member.node) == [], member.name


def reach(
    cluster: Cluster, home: ClusterNode, ingress: Pod, client: Pod
) -> list[connectivity.Probe]:
    """The hostPort through the node's address from the docker host and from the client pod,
    and the ingress pod by its own address from the client pod (no NAT between pods)."""
    server = connectivity.serve(ingress.ns)
    try:
        return [
            connectivity.probe(
                cluster.underlay, home.ip, "tcp", port=HOST_PORT, name="docker host"
            ),
            connectivity.probe(client.ns, home.ip, "tcp", port=HOST_PORT, name="client pod"),
            connectivity.probe(
                client.ns,
                ingress.addresses(4)[0],
                "tcp",
                expected_source=client.addresses(4)[0],
                name="client pod",
            ),
        ]
    finally:
        server.stop()
