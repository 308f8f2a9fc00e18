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
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pycni.lab.k8s import cluster
from pycni.lab.k8s import node as node_mod
from tests.support import k8s

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

HOST_PORT = 29999  # outside the NodePort range, as hostPorts usually are
NODE_PORT = 30080


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
        assert k8s.leftovers() == []


@pytest.fixture(scope="module")
def echo_pods(lane: tuple[str, int]) -> list[k8s.Pod]:
    """One agnhost netexec pod per node, a ClusterIP and a NodePort Service over all of them,
    a Service over the first pod alone (hairpin), and a hostPort pod on the last node."""
    nodes = cluster.node_names(lane[1])
    pods = [
        k8s.pod(f"echo-{i}", node, {"app": "echo", "pod": f"echo-{i}"})
        for i, node in enumerate(nodes)
    ]
    host_port_pod = k8s.pod("hostport", nodes[-1], {"app": "hostport"}, host_port=HOST_PORT)
    k8s.apply(
        *pods,
        host_port_pod,
        k8s.service("echo", {"app": "echo"}),
        k8s.service("echo-nodeport", {"app": "echo"}, node_port=NODE_PORT),
        k8s.service("hairpin", {"pod": "echo-0"}),
    )
    cluster.kubectl(
        ["wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s"], timeout=150
    )
    running = k8s.pods("app=echo")
    assert sorted(pod.node for pod in running) == sorted(nodes)
    # Ready pods are in the Endpoints at once, in kube-proxy's rules a moment later (its sync
    # runs at most once a second): the checks start once the Services answer at all.
    _wait_until_answered(f"http://{k8s.service_ip('echo')}/hostname", via=running[0].name)
    for index in range(len(nodes)):
        _wait_until_answered(f"http://{cluster.node_ip(index)}:{NODE_PORT}/hostname")
    return running


def _wait_until_answered(url: str, via: str | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    answer = ""
    while time.monotonic() < deadline:
        answer = k8s.hostname_via(via, url) if via else k8s.hostname_from_underlay(url)
        if not answer.startswith("<"):
            return
        time.sleep(0.5)
    pytest.fail(
        f"{url} not answered within {timeout:.0f} s (from {via or 'the underlay'}): {answer}"
    )


def test_pods_get_addresses_from_their_nodes_pod_cidr(echo_pods: list[k8s.Pod]) -> None:
    cidrs = k8s.node_cidrs()
    assert len(set(cidrs.values())) == len(cidrs)  # one /24 per node, from 10.244.0.0/16
    for pod in echo_pods:
        network = ipaddress.IPv4Network(cidrs[pod.node])
        assert network.subnet_of(ipaddress.IPv4Network(cluster.CLUSTER_CIDR))
        assert ipaddress.ip_address(pod.ip) in network, (pod, network)


def test_pods_reach_each_other_across_nodes(echo_pods: list[k8s.Pod]) -> None:
    answers = {
        (client.name, server.name): k8s.hostname_via(
            client.name, f"http://{server.ip}:{k8s.HTTP_PORT}/hostname"
        )
        for client in echo_pods
        for server in echo_pods
    }
    assert answers == {(c.name, s.name): s.name for c in echo_pods for s in echo_pods}


def test_cluster_ip_service_reaches_pods_on_other_nodes(echo_pods: list[k8s.Pod]) -> None:
    service = k8s.service_ip("echo")
    everyone = {pod.name for pod in echo_pods}
    client = echo_pods[0]
    seen = k8s.answers(
        lambda: k8s.hostname_via(client.name, f"http://{service}/hostname"), 40, everyone
    )
    assert seen == everyone


def test_node_port_reaches_pods_on_other_nodes(
    echo_pods: list[k8s.Pod], lane: tuple[str, int]
) -> None:
    everyone = {pod.name for pod in echo_pods}
    for index in range(lane[1]):
        url = f"http://{cluster.node_ip(index)}:{NODE_PORT}/hostname"
        seen = k8s.answers(functools.partial(k8s.hostname_from_underlay, url), 40, everyone)
        assert seen == everyone, url


def test_pod_reaches_itself_through_its_service(echo_pods: list[k8s.Pod]) -> None:
    service = k8s.service_ip("hairpin")
    answers = {k8s.hostname_via("echo-0", f"http://{service}/hostname") for _ in range(3)}
    assert answers == {"echo-0"}


def test_host_port_answers_on_the_nodes_address(
    echo_pods: list[k8s.Pod], lane: tuple[str, int]
) -> None:
    node_index = lane[1] - 1
    url = f"http://{cluster.node_ip(node_index)}:{HOST_PORT}/hostname"
    assert k8s.hostname_from_underlay(url) == "hostport"
    # and from a pod on another node (or the same one, on a single node)
    assert k8s.hostname_via(echo_pods[0].name, url) == "hostport"


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
    assert k8s.leftovers() == []
    assert node_mod.wait_gone(alive, 1) == []
    assert cluster.down() == []  # twice: nothing to do


def test_pods_reach_a_service_by_its_dns_name(echo_pods: list[k8s.Pod]) -> None:
    """The lane's cluster DNS (pycni.lab.k8s.dns) behind kube-system/kube-dns, 10.96.0.10."""
    dns = cluster.kubectl(["-n", "kube-system", "get", "service", "kube-dns", "-o",
                           "jsonpath={.spec.clusterIP}"], check=False)  # fmt: skip
    assert dns.stdout.strip() == cluster.CLUSTER_DNS, dns.stderr
    everyone = {pod.name for pod in echo_pods}
    url = "http://echo.default.svc.cluster.local/hostname"
    client = echo_pods[-1].name
    assert k8s.answers(functools.partial(k8s.hostname_via, client, url), 40, everyone) == everyone
