"""pycni-bridge under what real nodes do to it: storms of parallel pods on two networks, and
calls killed at random moments followed by what a runtime does next."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.testbed import Node

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

# CI runs these sized down; PYCNI_STRESS=full runs the full size (256 pods, 200 kills).
FULL = os.environ.get("PYCNI_STRESS") == "full"
PODS = 256 if FULL else 64
KILLS = 200 if FULL else 30


def network(name: str, bridge: str, subnet: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": name,
        "plugins": [
            {
                "type": "pycni-bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": subnet}]]},
            }
        ],
    }


@pytest.fixture
def node(bundle: Path) -> Iterator[Node]:
    n = Node.create("storm", bundle)
    try:
        yield n
    finally:
        n.destroy()


def leftovers(node: Node, *networks: str) -> dict[str, list[str]]:
    links = [n for n in node.ns.link_names() if n.startswith("veth")]
    leases = [
        p.name
        for net in networks
        for p in (node.state_dir / "networks" / net).glob("*")
        if p.name[0].isdigit()
    ]
    return {"links": links, "leases": leases}


def test_storm_of_parallel_pods_on_two_networks(node: Node) -> None:
    """PODS pods churning in parallel, half on each network: each is added, deleted, added
    again while the others do the same; no failure, no address given twice, nothing left."""
    nets = [
        node.conf(network("storm-a", "cbra", "10.81.0.0/23")),
        node.conf(network("storm-b", "cbrb", "10.82.0.0/23")),
    ]
    pods = [netns_mod.create("storm") for _ in range(PODS)]
    runtime = node.runtime()
    try:

        def churn(n: int) -> str:
            net, pod = nets[n % 2], pods[n].path
            runtime.add(net, f"storm{n}", pod, "eth0")
            runtime.delete(net, f"storm{n}", pod, "eth0")
            result = runtime.add(net, f"storm{n}", pod, "eth0")
            return str(result["ips"][0]["address"])

        with ThreadPoolExecutor(max_workers=16) as pool:
            addresses = list(pool.map(churn, range(PODS)))
        for parity in (0, 1):
            mine = addresses[parity::2]
            assert len(set(mine)) == PODS // 2, mine
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(
                pool.map(
                    lambda n: runtime.delete(nets[n % 2], f"storm{n}", pods[n].path, "eth0"),
                    range(PODS),
                )
            )
        assert leftovers(node, "storm-a", "storm-b") == {"links": [], "leases": []}
    finally:
        for pod in pods:
            pod.delete()


def _spawn(
    node: Node, bundle: Path, verb: str, cid: str, pod: str, conf: dict[str, Any]
) -> subprocess.Popen[bytes]:
    plugin = {**conf["plugins"][0], "cniVersion": conf["cniVersion"], "name": conf["name"]}
    env = {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": pod,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(bundle),
    }
    process = subprocess.Popen(
        ["nsenter", f"--net={node.ns.path}", str(bundle / "pycni-bridge")],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(plugin).encode())
    process.stdin.close()
    return process


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_calls_killed_anywhere_leave_nothing_after_the_runtime_cleans_up(
    bundle: Path, node: Node, verb: str
) -> None:
    """SIGKILL the plugin at a random moment of an ADD (or of a DEL after an ADD), KILLS times,
    then do what a runtime does next: DEL, and a new ADD that must succeed."""
    conf = node.conf(network("kill", "cbrk", "10.83.0.0/28"))  # 13 addresses: a leak shows
    runtime = node.runtime()
    rng = random.Random(1234)
    for run in range(KILLS):
        pod = netns_mod.create("kill")
        cid = f"kill{run}"
        try:
            if verb == "DEL":
                runtime.add(conf, cid, pod.path, "eth0")
            process = _spawn(node, bundle, verb, cid, pod.path, conf)
            time.sleep(rng.uniform(0.0, 0.04))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            runtime.delete(conf, cid, pod.path, "eth0")  # never fails, whatever was left
            runtime.add(conf, f"{cid}b", pod.path, "eth1")  # and the node still works
            runtime.delete(conf, f"{cid}b", pod.path, "eth1")
        finally:
            pod.delete()
        assert leftovers(node, "kill") == {"links": [], "leases": []}, f"run {run}"


def test_pod_namespace_removed_during_add(bundle: Path, node: Node) -> None:
    """The sandbox goes away while ADD runs (a pod deleted right after creation): whatever
    the ADD answers, the runtime's DEL succeeds and nothing is left."""
    conf = node.conf(network("gone", "cbrg", "10.84.0.0/28"))
    runtime = node.runtime()
    rng = random.Random(99)
    for run in range(KILLS // 2):
        pod = netns_mod.create("gone")
        try:
            process = _spawn(node, bundle, "ADD", f"gone{run}", pod.path, conf)
            time.sleep(rng.uniform(0.0, 0.03))
        finally:
            pod.delete()
        process.wait(timeout=30)
        runtime.delete(conf, f"gone{run}", pod.path, "eth0")
        assert leftovers(node, "gone") == {"links": [], "leases": []}, f"run {run}"
