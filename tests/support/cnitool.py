"""cnitool, the CNI project's reference client (libcni 1.1.2, built from Debian's source package
by packaging/cnitool.sh), run inside a node as a runtime on that node runs it.

    tool = CniTool(node.ns, net_dir, bundle)
    result = json.loads(tool.ok("add", network, pod))

cnitool caches each ADD's result under RESULTS (not configurable): `cache_entry` says where.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.lab.netns import Netns
from tests.support.ci import unavailable
from tests.support.paths import REPO

CNITOOL = REPO / "build" / "cnitool"
RESULTS = Path("/var/lib/cni/results")  # cnitool 1.1.2's cache: not configurable


def installed() -> Path:
    """build/cnitool, or unavailable() with the command that builds it."""
    if not CNITOOL.exists():
        unavailable(f"{CNITOOL} missing: run packaging/cnitool.sh (setup.sh does)")
    return CNITOOL


@dataclass
class CniTool:
    """cnitool in the node's namespace, reading conflists from `net_dir` and running plugins
    from `bundle` (then the reference plugins), with `capability_args` as CAP_ARGS."""

    node: Netns
    net_dir: Path
    bundle: Path
    capability_args: dict[str, Any] = field(default_factory=dict)

    def __call__(self, verb: str, network: str, pod: Netns) -> subprocess.CompletedProcess[str]:
        env = {
            "NETCONFPATH": str(self.net_dir),
            "CNI_PATH": f"{self.bundle}:/usr/lib/cni",
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # the reference portmap runs iptables
        }
        if self.capability_args:
            env["CAP_ARGS"] = json.dumps(self.capability_args)
        return subprocess.run(
            ["nsenter", f"--net={self.node.path}", str(CNITOOL), verb, network, pod.path],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def ok(self, verb: str, network: str, pod: Netns) -> str:
        """The call's stdout; the test fails with cnitool's output if it exits non-zero."""
        done = self(verb, network, pod)
        assert done.returncode == 0, (
            f"cnitool {verb} {network}: exit {done.returncode}: {done.stdout} {done.stderr}"
        )
        return done.stdout


def cache_entry(network: str, pod: Netns) -> Path:
    """cnitool 1.1.2's container ID is "cnitool-" + the first 10 bytes of sha512(netns path)."""
    container_id = "cnitool-" + hashlib.sha512(pod.path.encode()).digest()[:10].hex()
    return RESULTS / f"{network}-{container_id}-eth0"
