"""pycni-portmap's route_localnet step in a node namespace without a single IPv4 route.

/proc/net/route is then empty (not even its header line): reading it must find no interface,
not end the ADD with internal error 100 (StopIteration).
"""

from __future__ import annotations

import sys

import pytest

from pycni.lab.netns import Netns

pytestmark = pytest.mark.netns


def test_route_localnet_step_with_an_empty_route_table(netns: Netns) -> None:
    assert netns.run(["cat", "/proc/net/route"]).stdout == ""
    code = (
        "from pycni.cni.ip import IP\n"
        "from pycni.plugins import portmap\n"
        "portmap._enable_route_localnet(IP.parse('10.1.0.2'))\n"
        "print('done')\n"
    )
    done = netns.run([sys.executable, "-c", code], check=False)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
