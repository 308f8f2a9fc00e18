"""pycni-bridge under a CNI runtime that is not ours: cnitool, the CNI project's reference
client (libcni), built from Debian's source package by packaging/cnitool.sh."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pycni.lab import connectivity
from pycni.lab import netns as netns_mod
from pycni.lab.testbed import Node
from tests.support.ci import unavailable
from tests.support.paths import REPO

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

CNITOOL = REPO / "build" / "cnitool"
RESULTS = Path("/var/lib/cni/results")  # cnitool 1.1.2's cache: not configurable


@pytest.fixture
def node(node: Node) -> Node:
    """The shared node; cnitool must have been built."""
    if not CNITOOL.exists():
        unavailable(f"{CNITOOL} missing: run packaging/cnitool.sh (setup.sh does)")
    return node


def cnitool(node: Node, bundle: Path, verb: str, network: str, pod: netns_mod.Netns) -> str:
    env = {
        "NETCONFPATH": str(node.state_dir / "net.d"),
        "CNI_PATH": f"{bundle}:/usr/lib/cni",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }
    done = subprocess.run(
        ["nsenter", f"--net={node.ns.path}", str(CNITOOL), verb, network, pod.path],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"cnitool {verb}: {done.stdout} {done.stderr}"
    return done.stdout


def test_cnitool_adds_checks_and_deletes_pods_that_talk(bundle: Path, node: Node) -> None:
    network = f"pycni-cnitool-{uuid.uuid4().hex[:8]}"  # cnitool caches by network name
    node.conf(
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "pycni-bridge",
                    "bridge": "cbr7",
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": "10.70.0.0/24"}]]},
                }
            ],
        }
    )
    pods = [netns_mod.create("pod") for _ in range(2)]
    try:
        results = [json.loads(cnitool(node, bundle, "add", network, pod)) for pod in pods]
        ips = [r["ips"][0]["address"].split("/")[0] for r in results]
        assert ips == ["10.70.0.2", "10.70.0.3"]
        for pod in pods:
            cnitool(node, bundle, "check", network, pod)
        server = connectivity.serve(pods[1])
        try:
            probe = connectivity.probe(pods[0], ips[1], "tcp", expected_source=ips[0])
        finally:
            server.stop()
        assert probe.ok, probe
        for pod in pods:
            cnitool(node, bundle, "del", network, pod)
        assert [n for n in node.ns.link_names() if n.startswith("veth")] == []
        assert not list(RESULTS.glob(f"{network}-*"))  # libcni dropped its cache entries
    finally:
        for pod in pods:
            pod.delete()
        for leftover in RESULTS.glob(f"{network}-*"):
            leftover.unlink()
        shutil.rmtree(node.state_dir / "net.d", ignore_errors=True)
