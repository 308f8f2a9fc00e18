"""Acceptance: `pycni agent` on every node of an emulated cluster (pycni.lab.cluster), driven by
the replaying API server (tests/support/kube_replay.py), keeps the VXLAN overlay correct — real
packets between pods — through a node joining, a node leaving, a watch that expires (410) and an API
outage.

Laid out as on kind: the API server listens on the underlay (172.18.0.1, the docker network's
gateway, inside the underlay namespace); each agent is a process inside its node's namespace
with a kubelet-style kubeconfig (client certificate), the kind template
conf/kind/00-pycni-vxlan.conflist, and writes the node's conflist and peers file itself; pods
are added through the frozen plugins with the conflist the agent wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod
from tests.support import wait
from tests.support.cluster import CLI, RunningAgent, cluster_with_api, start_agent
from tests.support.kube_replay import FakeApiServer
from tests.support.paths import KIND

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

TEMPLATE = KIND / "00-pycni-vxlan.conflist"
WAIT = 30.0
AGENT_REQUEST_TIMEOUT = 30.0  # pycni.agent.kube.KubeClient's default


class Harness:
    def __init__(self, cluster: Cluster, api: FakeApiServer, tmp: Path) -> None:
        self.cluster, self.api, self.tmp = cluster, api, tmp
        self.agents: dict[str, RunningAgent] = {}
        self.pods: dict[str, Pod] = {}

    def register(self, member: ClusterNode) -> None:
        """The node object the kubelet and the controller manager would create."""
        self.api.put_node(member.name, member.ip, [member.pod_cidr])

    def start_agent(self, member: ClusterNode) -> RunningAgent:
        template = json.loads(TEMPLATE.read_text())  # its chained pycni-portmap stays, as on kind
        log = self.tmp / f"agent-{member.name}.log"
        running = start_agent(member, self.api, template, log, template_name=TEMPLATE.name)
        self.agents[member.name] = running
        return running

    def add_pod(self, name: str) -> Pod:
        running = self.agents[name]
        wait_for(f"{name}'s conflist", running.conf_path.exists)
        pod = running.member.node.add_pod("a", running.conflist())
        self.pods[name] = pod
        return pod

    def remove_node(self, name: str) -> None:
        self.api.delete_node(name)
        running = self.agents.pop(name)
        running.stop()
        if name in self.pods:
            running.member.node.remove_pod("a", running.conflist())
            del self.pods[name]
        self.cluster.remove_node(name, publish=False)

    def converged(self) -> Callable[[], bool]:
        """Every agent's peers file names exactly the other nodes the API holds, and its
        overlay routes match them."""

        def check() -> bool:
            for name, running in self.agents.items():
                others = sorted(n for n in self.api.nodes if n != name)
                if running.peers() != others:
                    return False
                want = sorted(self.cluster.nodes[n].pod_cidr for n in others)
                if overlay_routes(running.member) != want:
                    return False
            return True

        return check

    def assert_pods_talk(self) -> None:
        pods = list(self.pods.items())
        servers = [connectivity.serve(pod.ns) for _, pod in pods]
        try:
            sources = [(name, pod.ns, pod.addresses(4)[0]) for name, pod in pods]
            targets = [(name, pod.addresses(4)[0]) for name, pod in pods]
            probes = connectivity.matrix(sources, targets, protos=("tcp",))
        finally:
            for server in servers:
                server.stop()
        assert probes and all(p.ok for p in probes), connectivity.report(probes)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{r.log.read_text()}" for name, r in sorted(self.agents.items())
        )

    def close(self) -> None:
        for running in self.agents.values():
            running.stop()
        for name, pod in list(self.pods.items()):
            running = self.agents[name]
            try:
                running.member.node.remove_pod(pod.name, running.conflist())
            except Exception:
                pod.ns.delete()


def overlay_routes(member: ClusterNode) -> list[str]:
    try:
        routes = member.node.ns.ip_json("route", "show", "dev", "pycni.1")
    except subprocess.CalledProcessError:
        return []  # no device yet
    return sorted(r["dst"] for r in routes if r["dst"] != "default" and "gateway" in r)


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    """support.wait's, with this file's longer default and slower poll (agents are processes)."""
    wait.wait_for(what, check, timeout, interval=0.1)


@pytest.fixture
def harness(bundle: Path, tmp_path: Path) -> Iterator[Harness]:
    with cluster_with_api(bundle, tmp_path, 3, bookmark_interval=2.0) as (cluster, api):
        h = Harness(cluster, api, tmp_path)
        try:
            yield h
        finally:
            h.close()


def test_agents_keep_the_overlay_correct_through_add_delete_410_and_an_outage(
    harness: Harness,
) -> None:
    h = harness
    try:
        _run_story(h)
    except AssertionError as err:
        raise AssertionError(f"{err}\nagent logs:\n{h.logs()}") from None


def _run_story(h: Harness) -> None:
    cluster, api = h.cluster, h.api
    for member in cluster.nodes.values():
        h.register(member)
    for member in list(cluster.nodes.values()):
        h.start_agent(member)
    wait_for("three agents to converge", h.converged())
    for name in list(cluster.nodes):
        h.add_pod(name)
    h.assert_pods_talk()
    for running in h.agents.values():  # the conflist is the template with the node's CIDR
        plugin = running.conflist()["plugins"][0]
        assert plugin["ipam"]["ranges"] == [[{"subnet": running.member.pod_cidr}]]
        assert plugin["localIP"] == running.member.ip

    # a node joins: the others learn of it through the watch, its agent writes its files
    node4 = cluster.add_node(publish=False)
    h.register(node4)
    h.start_agent(node4)
    wait_for("node4 known everywhere", h.converged())
    h.add_pod(node4.name)
    h.assert_pods_talk()

    # a node leaves: its routes go from every other node
    gone_cidr = cluster.nodes["node2"].pod_cidr
    h.remove_node("node2")
    wait_for("node2 forgotten everywhere", h.converged())
    assert all(gone_cidr not in overlay_routes(r.member) for r in h.agents.values())
    h.assert_pods_talk()

    # the watch expires: every agent lists again; a node joining meanwhile is picked up
    lists = api.requests.count("LIST")
    api.expire_watches()
    node5 = cluster.add_node(publish=False)
    h.register(node5)
    wait_for(
        "every agent to list again after 410",
        lambda: api.requests.count("LIST") >= lists + len(h.agents),
    )
    h.start_agent(node5)
    wait_for("node5 known everywhere", h.converged())
    h.add_pod(node5.name)
    h.assert_pods_talk()
    assert all("the watch expired (410" in r.log.read_text() for name, r in h.agents.items()
               if name != node5.name)  # fmt: skip

    # an outage: the overlay stays as it was, the agents say so; a node that left during
    # the outage is removed once the API server is back
    before = {name: r.member.peers_file.read_text() for name, r in h.agents.items()}
    api.outage()
    wait_for(
        "every agent to report the outage",
        lambda: all(
            "keeping the last good peer set" in r.log.read_text() for r in h.agents.values()
        ),
    )
    assert {name: r.member.peers_file.read_text() for name, r in h.agents.items()} == before
    h.assert_pods_talk()  # still correct: nothing was torn down
    gone_cidr = cluster.nodes["node3"].pod_cidr
    h.remove_node("node3")
    api.restore()
    # An agent whose request gets no answer waits out its request timeout (pycni.agent.kube: 30 s)
    # before the next try; allow for that and a backoff. Seen once in CI (2026-11-22): two
    # agents silent for 30 s after the restore, cause not found; the stand-in server now does
    # TLS handshakes per connection, one suspect (tests/support/kube_replay.py).
    wait_for("node3 forgotten after the outage", h.converged(), timeout=AGENT_REQUEST_TIMEOUT + 15)
    assert all(gone_cidr not in overlay_routes(r.member) for r in h.agents.values())
    h.assert_pods_talk()
    assert sorted(h.agents) == ["node1", "node4", "node5"]
    assert all(r.process.poll() is None for r in h.agents.values()), "an agent died"
    for running in list(h.agents.values()):
        running.stop()
        assert running.process.returncode == 0, running.log.read_text()


def test_agent_cli_refuses_unusable_credentials(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubelet.conf"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "agent",
            "--node-name",
            "n",
            "--template",
            str(TEMPLATE),
            "--kubeconfig",
            str(kubeconfig),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "has no context named 'nowhere'" in done.stderr
