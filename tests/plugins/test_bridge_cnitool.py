"""pycni-bridge under a CNI runtime that is not ours: cnitool, the CNI project's reference
client (libcni), built from Debian's source package by packaging/cnitool.sh."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pycni.lab import connectivity
from pycni.lab.netns import Netns
from pycni.lab.testbed import Node
from tests.support.cnitool import RESULTS, CniTool, installed

pytestmark = [pytest.mark.frozen, pytest.mark.netns]


@pytest.fixture
def node(node: Node) -> Node:
    """The shared node; cnitool must have been built."""
    installed()
    return node


def test_cnitool_adds_checks_and_deletes_pods_that_talk(
    bundle: Path, node: Node, netns_factory: Callable[[], Netns]
) -> None:
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
    cnitool = CniTool(node.ns, node.state_dir / "net.d", bundle)
    pods = [netns_factory() for _ in range(2)]
    try:
        results = [json.loads(cnitool.ok("add", network, pod)) for pod in pods]
        ips = [r["ips"][0]["address"].split("/")[0] for r in results]
        assert ips == ["10.70.0.2", "10.70.0.3"]
        for pod in pods:
            cnitool.ok("check", network, pod)
        server = connectivity.serve(pods[1])
        try:
            probe = connectivity.probe(pods[0], ips[1], "tcp", expected_source=ips[0])
        finally:
            server.stop()
        assert probe.ok, probe
        for pod in pods:
            cnitool.ok("del", network, pod)
        assert [n for n in node.ns.link_names() if n.startswith("veth")] == []
        assert not list(RESULTS.glob(f"{network}-*"))  # libcni dropped its cache entries
    finally:
        for leftover in RESULTS.glob(f"{network}-*"):
            leftover.unlink()
        shutil.rmtree(node.state_dir / "net.d", ignore_errors=True)
