"""A real cluster per datapath (kubelet, containerd, kube-proxy, the API server; pycni as the
CNI), and the checks that need no CoreDNS: pods get addresses from their node's pod CIDR and
reach each other across nodes; a ClusterIP Service and a NodePort reach pods on other nodes; a
pod reaches itself through its Service (hairpin); a hostPort answers on the node's address.
Then `down` leaves nothing, also after a `kill -9` of `up`.

Every answer is checked by who gave it: agnhost's `netexec /hostname` returns the pod's name,
so "reached" means "the pod named X answered", not "something answered".
"""

from __future__ import annotations

import functools
import ipaddress
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycni.lab.k8s import cluster
from pycni.lab.k8s import node as node_mod

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

AGNHOST = "k8s.gcr.io/e2e-test-images/agnhost:2.21"
HTTP_PORT = 8080
HOST_PORT = 30999 - 1000  # 29999: outside the NodePort range, as hostPorts usually are
NODE_PORT = 30080


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    ip: str


def _pod(
    name: str, node: str, labels: dict[str, str], host_port: int | None = None
) -> dict[str, Any]:
    port: dict[str, Any] = {"containerPort": HTTP_PORT, "protocol": "TCP"}
    if host_port is not None:
        port["hostPort"] = host_port
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "agnhost",
                    "image": AGNHOST,
                    "imagePullPolicy": "Never",
                    "args": ["netexec", f"--http-port={HTTP_PORT}"],
                    "ports": [port],
                }
            ],
        },
    }


def _service(name: str, selector: dict[str, str], node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}
    if node_port is not None:
        port["nodePort"] = node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort" if node_port is not None else "ClusterIP",
            "selector": selector,
            "ports": [port],
        },
    }


def _apply(*objects: dict[str, Any]) -> None:
    cluster.kubectl(["apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                             "items": list(objects)}))  # fmt: skip


def _exec(pod: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(["exec", pod, "--", *argv], check=False, timeout=60)


def _hostname_via(pod: str, url: str) -> str:
    """What answers `url`, asked from inside `pod` (curl in the agnhost image)."""
    done = _exec(pod, "curl", "-g", "-q", "-s", "--max-time", "5", url)
    return done.stdout.strip() if done.returncode == 0 else f"<curl exit {done.returncode}>"


def _hostname_from_underlay(url: str) -> str:
    """What answers `url`, asked from the underlay (the kind host's place)."""
    done = subprocess.run(
        cluster.underlay_command(["curl", "-g", "-q", "-s", "--max-time", "5", url]),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else f"<curl exit {done.returncode}>"


def _pods(selector: str) -> list[Pod]:
    done = cluster.kubectl(["get", "pods", "-l", selector, "-o", "json"])
    return [
        Pod(item["metadata"]["name"], item["spec"]["nodeName"], item["status"]["podIP"])
        for item in json.loads(done.stdout)["items"]
    ]


def _node_cidrs() -> dict[str, str]:
    done = cluster.kubectl(["get", "nodes", "-o", "json"])
    return {
        item["metadata"]["name"]: item["spec"]["podCIDR"]
        for item in json.loads(done.stdout)["items"]
    }


def _service_ip(name: str) -> str:
    return cluster.kubectl(
        ["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"]
    ).stdout.strip()


def _answers(ask: Any, tries: int, want: set[str]) -> set[str]:
    """Ask up to `tries` times until every pod in `want` answered; every answer seen."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(ask())
        if want <= seen:
            break
    return seen


def leftovers() -> list[str]:
    """What of the lane is on the machine: processes, the underlay, cgroups, mounts, files."""
    found = []
    for proc in cluster._marked_inits():
        found.append(f"node init pid {proc.pid}")
    if Path(f"/run/netns/{cluster.UNDERLAY_NETNS}").exists():
        found.append(f"netns {cluster.UNDERLAY_NETNS}")
    for hierarchy in cluster.CGROUP_ROOT.iterdir():
        found += [str(path) for path in hierarchy.glob(cluster.cgroup_root_name("*"))]
    found += [f"mount {m}" for m in cluster._mounts_under(cluster.STATE_DIR)]
    for name in ("nodes", "pki", "logs", "kubeconfig", "state.json"):
        if (cluster.STATE_DIR / name).exists():
            found.append(str(cluster.STATE_DIR / name))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if cluster.UNDERLAY_NETNS in line or str(cluster.STATE_DIR) in line:
            found.append(f"mount {line.split()[4]}")
    return found


@pytest.fixture(scope="module", params=[("vxlan", 3), ("ipip-never", 3), ("bridge", 1)],
                ids=["vxlan-3", "ipip-never-3", "bridge-1"])  # fmt: skip
def lane(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    datapath, count = request.param
    assert cluster.down() == [], "a previous lane cluster could not be removed"
    try:
        cluster.up(count, datapath)
        yield datapath, count
    finally:
        problems = cluster.down()
        assert problems == []
        assert leftovers() == []


@pytest.fixture(scope="module")
def echo_pods(lane: tuple[str, int]) -> list[Pod]:
    """One agnhost netexec pod per node, a ClusterIP and a NodePort Service over all of them,
    a Service over the first pod alone (hairpin), and a hostPort pod on the last node."""
    nodes = cluster.node_names(lane[1])
    pods = [
        _pod(f"echo-{i}", node, {"app": "echo", "pod": f"echo-{i}"}) for i, node in enumerate(nodes)
    ]
    host_port_pod = _pod("hostport", nodes[-1], {"app": "hostport"}, host_port=HOST_PORT)
    _apply(
        *pods,
        host_port_pod,
        _service("echo", {"app": "echo"}),
        _service("echo-nodeport", {"app": "echo"}, node_port=NODE_PORT),
        _service("hairpin", {"pod": "echo-0"}),
    )
    cluster.kubectl(
        ["wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s"], timeout=150
    )
    running = _pods("app=echo")
    assert sorted(pod.node for pod in running) == sorted(nodes)
    # Ready pods are in the Endpoints at once, in kube-proxy's rules a moment later (its sync
    # runs at most once a second): the checks start once the Services answer at all.
    _wait_until_answered(f"http://{_service_ip('echo')}/hostname", via=running[0].name)
    for index in range(len(nodes)):
        _wait_until_answered(f"http://{cluster.node_ip(index)}:{NODE_PORT}/hostname")
    return running


def _wait_until_answered(url: str, via: str | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        answer = _hostname_via(via, url) if via else _hostname_from_underlay(url)
        if not answer.startswith("<"):
            return
        time.sleep(0.5)
    pytest.fail(
        f"{url} not answered within {timeout:.0f} s (from {via or 'the underlay'}): {answer}"
    )


def test_pods_get_addresses_from_their_nodes_pod_cidr(echo_pods: list[Pod]) -> None:
    cidrs = _node_cidrs()
    assert len(set(cidrs.values())) == len(cidrs)  # one /24 per node, from 10.244.0.0/16
    for pod in echo_pods:
        network = ipaddress.IPv4Network(cidrs[pod.node])
        assert network.subnet_of(ipaddress.IPv4Network(cluster.CLUSTER_CIDR))
        assert ipaddress.ip_address(pod.ip) in network, (pod, network)


def test_pods_reach_each_other_across_nodes(echo_pods: list[Pod]) -> None:
    answers = {
        (client.name, server.name): _hostname_via(
            client.name, f"http://{server.ip}:{HTTP_PORT}/hostname"
        )
        for client in echo_pods
        for server in echo_pods
    }
    assert answers == {(c.name, s.name): s.name for c in echo_pods for s in echo_pods}


def test_cluster_ip_service_reaches_pods_on_other_nodes(echo_pods: list[Pod]) -> None:
    service = _service_ip("echo")
    everyone = {pod.name for pod in echo_pods}
    client = echo_pods[0]
    seen = _answers(lambda: _hostname_via(client.name, f"http://{service}/hostname"), 40, everyone)
    assert seen == everyone


def test_node_port_reaches_pods_on_other_nodes(echo_pods: list[Pod], lane: tuple[str, int]) -> None:
    everyone = {pod.name for pod in echo_pods}
    for index in range(lane[1]):
        url = f"http://{cluster.node_ip(index)}:{NODE_PORT}/hostname"
        seen = _answers(functools.partial(_hostname_from_underlay, url), 40, everyone)
        assert seen == everyone, url


def test_pod_reaches_itself_through_its_service(echo_pods: list[Pod]) -> None:
    service = _service_ip("hairpin")
    answers = {_hostname_via("echo-0", f"http://{service}/hostname") for _ in range(3)}
    assert answers == {"echo-0"}


def test_host_port_answers_on_the_nodes_address(
    echo_pods: list[Pod], lane: tuple[str, int]
) -> None:
    node_index = lane[1] - 1
    url = f"http://{cluster.node_ip(node_index)}:{HOST_PORT}/hostname"
    assert _hostname_from_underlay(url) == "hostport"
    # and from a pod on another node (or the same one, on a single node)
    assert _hostname_via(echo_pods[0].name, url) == "hostport"


def test_down_after_kill_9_of_up_leaves_nothing() -> None:
    """`up` killed with SIGKILL once its first node runs; `down` removes everything."""
    assert cluster.down() == []
    up = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pycni.lab.k8s import cluster; "
         "sys.exit(cluster.main_up(['--nodes', '2', '--datapath', 'vxlan']))"],
        cwd=cluster.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(proc.name.endswith("/containerd") for proc in cluster.State.load().procs()):
                break
            assert up.poll() is None, "up ended before its first containerd ran"
            time.sleep(0.05)
        else:
            pytest.fail("up did not start a node's containerd within 120 s")
        up.send_signal(signal.SIGKILL)
        up.wait()
        alive = [proc for proc in cluster.State.load().procs() if proc.alive()]
        assert alive, "nothing of the cluster ran when up was killed"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert cluster.down() == []
    assert leftovers() == []
    assert node_mod.wait_gone(alive, 1) == []
    assert cluster.down() == []  # twice: nothing to do


def test_pods_reach_a_service_by_its_dns_name(echo_pods: list[Pod]) -> None:
    """The lane's cluster DNS (pycni.lab.k8s.dns) behind kube-system/kube-dns, 10.96.0.10."""
    dns = cluster.kubectl(["-n", "kube-system", "get", "service", "kube-dns", "-o",
                           "jsonpath={.spec.clusterIP}"], check=False)  # fmt: skip
    assert dns.stdout.strip() == cluster.CLUSTER_DNS, dns.stderr
    everyone = {pod.name for pod in echo_pods}
    url = "http://echo.default.svc.cluster.local/hostname"
    client = echo_pods[-1].name
    assert _answers(functools.partial(_hostname_via, client, url), 40, everyone) == everyone
