"""The frozen bundle as it runs on a kind node: installed by packaging/kind/install-bundle.sh
(what the DaemonSet's init container and kind-install.sh run), executed with containerd's
environment (systemd gives containerd PATH and nothing else; libcni adds the CNI_* variables,
TMPDIR pointed at /tmp) from `/`, while /tmp is a fresh `noexec` tmpfs in a private mount
namespace, inside a namespace standing in for the node. The kind bridge conflist (ipMasq: nft)
goes through ADD, CHECK and DEL; the frozen agent starts there too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from tests.support.ci import unavailable
from tests.support.paths import AGENT_DIR, KIND, REPO

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

CONTAINERD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs inside `ip netns exec NODE unshare -m --propagation private`: /tmp becomes a noexec
# tmpfs, which is checked, then each call is made as containerd makes it. Prints a JSON report.
DRIVER = r"""
import json, os, shutil, subprocess, sys
bin_dir, agent, pod_netns, conf_text = sys.argv[1:5]
subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec,nosuid,nodev", "tmpfs", "/tmp"], check=True)
report = {"tmp": [l.split()[3] for l in open("/proc/self/mounts") if l.split()[1] == "/tmp"]}
shutil.copy("/bin/true", "/tmp/probe")
try:
    subprocess.run(["/tmp/probe"])
    report["noexec"] = False
except PermissionError:
    report["noexec"] = True

def call(argv, command, stdin, **extra):
    env = {"PATH": "CONTAINERD_PATH", "TMPDIR": "/tmp", **extra}
    if command:
        env |= {"CNI_COMMAND": command, "CNI_CONTAINERID": "kindnode1", "CNI_NETNS": pod_netns,
                "CNI_IFNAME": "eth0", "CNI_PATH": bin_dir}
    done = subprocess.run(argv, env=env, input=stdin.encode(), capture_output=True, cwd="/",
                          timeout=60)
    return [done.returncode, done.stdout.decode(), done.stderr.decode()[-2000:]]

plugin = os.path.join(bin_dir, "pycni-bridge")
report["VERSION"] = call([plugin], "VERSION", "")
report["ADD"] = call([plugin], "ADD", conf_text)
conf = json.loads(conf_text)
if report["ADD"][0] == 0:
    conf["prevResult"] = json.loads(report["ADD"][1])
report["CHECK"] = call([plugin], "CHECK", json.dumps(conf))
report["DEL"] = call([plugin], "DEL", json.dumps(conf))
report["agent"] = call([agent, "--help"], None, "")
report["tmp_left"] = sorted(os.listdir("/tmp"))
print(json.dumps(report))
""".replace("CONTAINERD_PATH", CONTAINERD_PATH)


@pytest.fixture
def state() -> Iterator[Path]:
    """A directory off /tmp (the driver hides /tmp under its own tmpfs; the checkout itself
    may be under /tmp, so the node gets its own copies of what it runs)."""
    path = Path(tempfile.mkdtemp(prefix="pycni-kind-node-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_bundle_runs_on_a_kind_like_node(bundle: Path, state: Path) -> None:
    if not (AGENT_DIR / "pycni-agent").exists():
        unavailable(f"{AGENT_DIR} missing: run packaging/build.sh")
    bin_dir = state / "opt" / "cni" / "bin"
    install = [
        "sh",
        str(REPO / "packaging" / "kind" / "install-bundle.sh"),
        str(bundle),
        str(bin_dir),
    ]
    # twice: the second over the first, as a DaemonSet upgrade or a re-run does
    for attempt in ("install", "install again"):
        done = subprocess.run(install, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{attempt}: {done.stderr}"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(p.name for p in bundle.iterdir())
    agent_dir = shutil.copytree(AGENT_DIR, state / "usr" / "local" / "lib" / "pycni-agent")

    template = json.loads((KIND / "00-pycni-bridge.conflist").read_text())
    plugin = template["plugins"][0]
    plugin["ipam"]["dataDir"] = str(state / "networks")
    conf = {"cniVersion": template["cniVersion"], "name": template["name"], **plugin}

    node = netns_mod.create("kindnode")
    pod = netns_mod.create("kindpod")
    try:
        node.ip("link", "set", "lo", "up")
        argv = ["ip", "netns", "exec", node.name, "unshare", "-m", "--propagation", "private",
                sys.executable, "-I", "-c", DRIVER, str(bin_dir),
                str(agent_dir / "pycni-agent"), pod.path, json.dumps(conf)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        after_del = pod.ip_json("addr", "show", "dev", "eth0") if _has_eth0(pod) else []
    finally:
        pod.delete()
        node.delete()

    assert report["noexec"] is True, report["tmp"]
    assert "noexec" in report["tmp"][0].split(",")
    assert report["VERSION"][0] == 0, report["VERSION"]
    assert json.loads(report["VERSION"][1])["cniVersion"] == "1.1.0"
    status, out, err = report["ADD"]
    assert status == 0, (out, err)
    result = json.loads(out)
    assert result["ips"][0]["address"].startswith("10.244.0.")
    assert report["CHECK"][0] == 0, report["CHECK"]
    assert report["DEL"][0] == 0, report["DEL"]
    assert after_del == []
    assert report["agent"][0] == 0, report["agent"]
    assert "usage: pycni-agent" in report["agent"][1]
    assert report["tmp_left"] == ["probe"], "nothing but the probe was written to /tmp"


def _has_eth0(pod: netns_mod.Netns) -> bool:
    return "eth0" in pod.link_names()
