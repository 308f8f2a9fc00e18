"""host-local as a node lives with it: next to the reference plugin on the same data, under
parallel calls, and with calls killed half-way."""

from __future__ import annotations

import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pycni.lab.netns import Netns
from pycni.lab.runtime import Invocation, invoke
from tests.support.kill import kill_after, start_call
from tests.support.leftovers import leases

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

NET = "hl-node"


def conf(
    data_dir: Path,
    plugin_type: str = "pycni-host-local",
    subnet: str = "10.30.0.0/24",
    version: str = "1.0.0",
) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": NET,
        "ipam": {"type": plugin_type, "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)},
    }


def call(
    exe: Path, command: str, config: dict[str, Any], ns: Netns, cid: str, ifname: str = "eth0"
) -> Invocation:
    return invoke(
        str(exe),
        command,
        container_id=cid,
        netns=ns.path,
        ifname=ifname,
        config=config,
        cni_path=str(exe.parent),  # the Go skel insists on it even for host-local
        timeout=60,
    )


def address(inv: Invocation) -> str:
    assert inv.exit_status == 0, (inv.stdout, inv.stderr)
    return str(inv.result()["ips"][0]["address"]).split("/")[0]


@pytest.mark.reference
def test_switching_between_the_reference_and_pycni_loses_and_duplicates_nothing(
    bundle: Path, reference: Path, netns: Netns, tmp_path: Path
) -> None:
    ours, go = bundle / "pycni-host-local", reference / "host-local"
    ours_conf, go_conf = conf(tmp_path), conf(tmp_path, "host-local")
    got: dict[str, str] = {}

    # A node runs the reference plugin for a while...
    for n in range(3):
        got[f"go{n}"] = address(call(go, "ADD", go_conf, netns, f"go{n}"))
    # ...then the operator switches the conf to pycni: existing leases are seen and kept.
    assert call(ours, "ADD", ours_conf, netns, "go1").exit_status == 1  # duplicate: go1 holds one
    for n in range(3):
        got[f"py{n}"] = address(call(ours, "ADD", ours_conf, netns, f"py{n}"))
    assert len(set(got.values())) == len(got), got
    # round-robin continues after the reference's last reservation
    assert got["py0"] == "10.30.0.5"
    # pycni releases a lease the reference made, and the reference one pycni made
    assert call(ours, "DEL", ours_conf, netns, "go0").exit_status == 0
    assert call(go, "DEL", go_conf, netns, "py0").exit_status == 0
    assert got["go0"] not in leases(tmp_path, NET) and got["py0"] not in leases(tmp_path, NET)
    # ...and back to the reference, then to pycni again: still no duplicate, CHECK agrees
    got["go9"] = address(call(go, "ADD", go_conf, netns, "go9"))
    got["py9"] = address(call(ours, "ADD", ours_conf, netns, "py9"))
    live = {k: v for k, v in got.items() if k not in ("go0", "py0")}
    assert len(set(live.values())) == len(live), live
    for owner in live:
        assert call(ours, "CHECK", ours_conf, netns, owner).exit_status == 0, owner
        assert call(go, "CHECK", go_conf, netns, owner).exit_status == 0, owner
    files = leases(tmp_path, NET)
    assert {v: k for k, v in live.items()} == {
        ip: text.decode().split("\r\n")[0] for ip, text in files.items()
    }
    # everything released by whichever plugin, nothing left
    for n, owner in enumerate(live):
        exe, cfg = (ours, ours_conf) if n % 2 else (go, go_conf)
        assert call(exe, "DEL", cfg, netns, owner).exit_status == 0
    assert leases(tmp_path, NET) == {}


def test_parallel_churn_on_two_networks_never_shares_an_address(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    """64 attachments churning at once (ADD, DEL, ADD), half on each of two networks sharing a
    dataDir; then all DELs in parallel: no duplicate, no failure, nothing left."""
    exe, n = bundle / "pycni-host-local", 64
    confs = [conf(tmp_path), {**conf(tmp_path, subnet="10.31.0.0/24"), "name": "hl-node-b"}]

    def churn(i: int) -> str:
        config = confs[i % 2]
        address(call(exe, "ADD", config, netns, f"par{i}"))
        assert call(exe, "DEL", config, netns, f"par{i}").exit_status == 0
        return address(call(exe, "ADD", config, netns, f"par{i}"))

    with ThreadPoolExecutor(max_workers=32) as pool:
        ips = list(pool.map(churn, range(n)))
    for parity in (0, 1):
        assert len(set(ips[parity::2])) == n // 2
    assert len(leases(tmp_path, NET)) == n // 2  # network hl-node
    with ThreadPoolExecutor(max_workers=32) as pool:
        dels = list(pool.map(lambda i: call(exe, "DEL", confs[i % 2], netns, f"par{i}"), range(n)))
    assert all(inv.exit_status == 0 and inv.stdout == b"" for inv in dels)
    assert leases(tmp_path, NET) == {}
    assert not [p for p in (tmp_path / "hl-node-b").iterdir() if p.name[0].isdigit()]
    for network in ("hl-node", "hl-node-b"):
        assert os.listdir(tmp_path / network / ".pycni" / "attachments") == []


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_a_call_killed_anywhere_leaves_nothing_that_blocks_or_leaks(
    bundle: Path, netns: Netns, tmp_path: Path, verb: str
) -> None:
    """SIGKILL an ADD (or the DEL after an ADD) at a random moment of its life, then do what a
    runtime does next: DEL the attachment (the call never answered), and ADD again. 60 runs."""
    exe, config = bundle / "pycni-host-local", conf(tmp_path, subnet="10.30.0.0/28")
    rng = random.Random(4242)
    killed_inside = 0
    for run in range(60):
        cid = f"kill{run}"
        if verb == "DEL":
            address(call(exe, "ADD", config, netns, cid))
        proc = start_call(exe, verb, config, container_id=cid, netns=netns.path)
        if kill_after(proc, rng.uniform(0.0, 0.03)) == -signal.SIGKILL:
            killed_inside += 1
        assert call(exe, "DEL", config, netns, cid).exit_status == 0  # never blocks, never fails
        again = call(exe, "ADD", config, netns, f"{cid}b")
        address(again)  # succeeds: no stale lock, no leaked address filling the /28
        assert call(exe, "DEL", config, netns, f"{cid}b").exit_status == 0
        assert leases(tmp_path, NET) == {}, f"run {run} leaked"
    assert killed_inside > 20  # most kills landed while the plugin ran
