"""pycni-bridge under what real nodes do to it: storms of parallel pods on two networks, and
calls killed at random moments followed by what a runtime does next."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.testbed import Node
from tests.support.calls import plugin_config
from tests.support.kill import killed_calls, start_call
from tests.support.leftovers import leftovers
from tests.support.storm import FULL, pod_storm

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

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


def test_storm_of_parallel_pods_on_two_networks(node: Node) -> None:
    """PODS pods churning in parallel, half on each network: each is added, deleted, added
    again while the others do the same; no failure, no address given twice, nothing left."""
    nets = [
        node.conf(network("storm-a", "cbra", "10.81.0.0/23")),
        node.conf(network("storm-b", "cbrb", "10.82.0.0/23")),
    ]
    with pod_storm(node, nets, PODS, name="storm", workers=16) as storm:
        addresses = storm.churn()
        for parity in (0, 1):
            mine = addresses[parity::2]
            assert len(set(mine)) == PODS // 2, mine
        storm.delete_all()
        assert leftovers(node) == []


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_calls_killed_anywhere_leave_nothing_after_the_runtime_cleans_up(
    bundle: Path, node: Node, verb: str
) -> None:
    """SIGKILL the plugin at a random moment of an ADD (or of a DEL after an ADD), KILLS times,
    then do what a runtime does next: DEL, and a new ADD that must succeed."""
    conf = node.conf(network("kill", "cbrk", "10.83.0.0/28"))  # 13 addresses: a leak shows
    runs = killed_calls(node, bundle / "pycni-bridge", verb, conf, runs=KILLS,
                        rng=random.Random(1234), name="kill", cni_path=bundle)  # fmt: skip
    for run in runs:
        assert leftovers(node) == [], f"run {run}"


def test_pod_namespace_removed_during_add(bundle: Path, node: Node) -> None:
    """The sandbox goes away while ADD runs (a pod deleted right after creation): whatever
    the ADD answers, the runtime's DEL succeeds and nothing is left."""
    conf = node.conf(network("gone", "cbrg", "10.84.0.0/28"))
    runtime = node.runtime()
    rng = random.Random(99)
    for run in range(KILLS // 2):
        pod = netns_mod.create("gone")
        try:
            process = start_call(bundle / "pycni-bridge", "ADD", plugin_config(conf),
                                 container_id=f"gone{run}", netns=pod.path, cni_path=bundle,
                                 in_netns=node.ns.path)  # fmt: skip
            time.sleep(rng.uniform(0.0, 0.03))
        finally:
            pod.delete()
        process.wait(timeout=30)
        runtime.delete(conf, f"gone{run}", pod.path, "eth0")
        assert leftovers(node) == [], f"run {run}"
