"""Pods and probes across the nodes of an emulated cluster (pycni.lab.cluster); and, for tests
that run `pycni agent` on its nodes, the cluster with the stand-in API server on its underlay
and the agents started as on a kind node."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod
from tests.support import kube_replay
from tests.support.kube_replay import FakeApiServer, Pki

API_HOST = "172.18.0.1"  # the API server's address on the underlay, as on kind
CLI = "import sys; from pycni.cli import main; sys.exit(main())"


@contextmanager
def cluster_with_api(
    bundle: Path, tmp: Path, node_count: int, *, bookmark_interval: float, **options: Any
) -> Iterator[tuple[Cluster, FakeApiServer]]:
    """An emulated cluster (`options`: Cluster.create's) whose peers files the agents write, not
    the emulation; and the stand-in API server, started, on its underlay at API_HOST, with its
    PKI under `tmp` (`api.kubeconfig()` for an agent). No Node objects yet. Both removed
    afterwards, also on failure."""
    pki = Pki.create(tmp / "pki", [API_HOST])
    cluster = Cluster.create(node_count, bundle, **options)
    api: FakeApiServer | None = None
    try:
        for member in cluster.nodes.values():
            member.peers_file.unlink()
        api = kube_replay.in_netns(
            pki, cluster.underlay.path, API_HOST, bookmark_interval=bookmark_interval
        )
        api.start()
        yield cluster, api
    finally:
        try:
            if api is not None:
                api.close()
        finally:
            cluster.destroy()


@dataclass
class RunningAgent:
    """`pycni agent` on an emulated node (start_agent)."""

    member: ClusterNode
    process: subprocess.Popen[bytes]
    log: Path
    conf_path: Path  # the conflist it writes
    policy_state_dir: Path | None = None  # NetworkPolicy on: its --policy-state-dir
    stop_timeout: float = 15.0

    def conflist(self) -> dict[str, Any]:
        conflist: dict[str, Any] = json.loads(self.conf_path.read_text())
        return conflist

    def peers(self) -> list[str]:
        """The names in the node's peers file; none before the agent wrote it."""
        try:
            return [p["name"] for p in json.loads(self.member.peers_file.read_text())]
        except (OSError, ValueError):
            return []

    def status(self) -> dict[str, Any]:
        """The NetworkPolicy controller's status.json; {} before it wrote one."""
        if self.policy_state_dir is None:
            return {}
        try:
            status: dict[str, Any] = json.loads((self.policy_state_dir / "status.json").read_text())
            return status
        except (OSError, ValueError):
            return {}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_agent(
    member: ClusterNode,
    api: FakeApiServer,
    template: dict[str, Any],
    log: Path,
    *extra: str,
    template_name: str = "00-pycni.conflist",
    command: Sequence[str] = (),
    policy_state_dir: Path | None = None,
    stop_timeout: float = 15.0,
) -> RunningAgent:
    """`pycni agent` in the node's namespace as on a kind node: `template` (its first plugin
    the overlay's) with the node's own peers file and IPAM data dir instead of /etc/cni/pycni
    and /var/lib/cni (one machine, many emulated nodes), a kubelet-style kubeconfig for `api`,
    the conflist written into the node's net.d. `command` runs the agent (default: the source
    tree's `pycni agent`); `extra` are more arguments; its output is appended to `log`."""
    state = member.node.state_dir
    plugin = template["plugins"][0]
    plugin["peersFile"] = str(member.peers_file)
    plugin["ipam"]["dataDir"] = str(state / "networks")
    template_file = state / template_name
    template_file.write_text(json.dumps(template))
    kubeconfig = state / "kubelet.conf"
    kubeconfig.write_text(api.kubeconfig())
    policy = ["--policy-state-dir", str(policy_state_dir)] if policy_state_dir else []
    argv = ["ip", "netns", "exec", member.node.ns.name,
            *(command or [connectivity.python(), "-c", CLI, "agent"]),
            "--node-name", member.name, "--template", str(template_file),
            "--conf-dir", str(state / "net.d"), "--kubeconfig", str(kubeconfig),
            "--backoff-limit", "1", *policy, *extra]  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    conf_path = state / "net.d" / template_name
    return RunningAgent(member, process, log, conf_path, policy_state_dir, stop_timeout)


def one_pod_per_node(cluster: Cluster) -> list[tuple[ClusterNode, Pod]]:
    """A pod named "a" on each node, added with the node's conflist."""
    return [(m, m.node.add_pod("a", cluster.conflist(m))) for m in cluster.nodes.values()]


def cross_node_matrix(pods: list[tuple[ClusterNode, Pod]]) -> list[connectivity.Probe]:
    """TCP and UDP from every pod to every other pod, by IPv4 address (servers stopped after)."""
    servers = [connectivity.serve(pod.ns) for _, pod in pods]
    try:
        sources = [(f"{m.name}/a", pod.ns, pod.addresses(4)[0]) for m, pod in pods]
        targets = [(f"{m.name}/a", pod.addresses(4)[0]) for m, pod in pods]
        return connectivity.matrix(sources, targets)
    finally:
        for server in servers:
            server.stop()
