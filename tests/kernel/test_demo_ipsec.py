"""`pycni demo --encryption ipsec` where the kernel has ESP (the kernel lane's guest), for both
datapaths that have tunnel packets: every probe passes, every node sent and received ESP
packets (its SAs' counters), and the demo leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.leftovers import namespaces_of

pytestmark = [pytest.mark.frozen, pytest.mark.netns]


@pytest.mark.parametrize("datapath", ["vxlan", "ipip"])
def test_demo_with_ipsec_passes_over_esp(bundle: Path, datapath: str) -> None:
    demo = [sys.executable, "-m", "pycni.cli", "demo", "--bundle", str(bundle)]
    process = subprocess.Popen(
        [*demo, "--datapath", datapath, "--encryption", "ipsec"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    assert "OK: 30 of 30 probes reached their pod" in out, out
    counters = re.findall(r"(node\d): (\d+) packets sent and (\d+) received as ESP", out)
    assert [name for name, _, _ in counters] == ["node1", "node2", "node3"], out
    assert all(int(sent) > 0 and int(received) > 0 for _, sent, received in counters), out
    assert namespaces_of(process.pid) == []
