"""The README's main job, `pycni demo`, as a person runs it: it works, and leaves nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.leftovers import namespaces_of

pytestmark = [pytest.mark.frozen, pytest.mark.netns]


@pytest.mark.parametrize("datapath", ["vxlan", "bridge"])
def test_demo_passes_and_cleans_up(bundle: Path, datapath: str) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pycni.cli",
            "demo",
            "--bundle",
            str(bundle),
            "--datapath",
            datapath,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    assert "OK: " in out and "probes reached their pod with the sender's own address" in out
    assert namespaces_of(process.pid) == []


def test_demo_cleans_up_when_its_output_is_cut_short(bundle: Path) -> None:
    """`pycni demo | head`: stdout closes under it; the teardown still runs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pycni.cli", "demo", "--bundle", str(bundle)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()
    process.wait(timeout=300)
    assert namespaces_of(process.pid) == []
