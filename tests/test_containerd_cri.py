"""The kind bridge conflist under containerd 1.6's CRI: the kubelet's path on the nodes that most
clusters still run (containerd 1.6/1.7 vendor libcni 1.1.x, which ignores `cniVersions` and
cannot parse a 1.1.0 result).

Debian's containerd 1.6.20 (built against libcni 1.1.2) runs inside a namespace standing in for
a kind node (tests/cri.py), with conf/kind/00-pycni-bridge.conflist as its only CNI config (the
IPAM dataDir moved off the host) and the frozen plugins plus the reference `loopback` as its CNI
bin dir. Through CRI, as the kubelet calls it: RunPodSandbox (containerd runs loopback, then
pycni-bridge -> pycni-host-local, then pycni-portmap), PodSandboxStatus (the pod IP containerd
parsed from pycni's result), StopPodSandbox (DEL with the netns), RemovePodSandbox (containerd's
DEL without one). What the kernel and the lease store show is checked after each.

The pod asks for no hostPort: containerd (go-cni, 1.6 to 2.1) sends `portMappings` with Go's
field names (`HostPort`, `ContainerPort`, `Protocol`, `HostIP`; the reference portmap reads them
case-insensitively), and pycni-portmap refuses them today ("$.runtimeConfig.portMappings[0]
.hostPort: is required"). That is a bug of its own, not one of versions."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from pycni.lab import netns as netns_mod
from tests import cri
from tests.conftest import REPO, unavailable
from tests.support import is_address

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

CONFLIST = REPO / "conf" / "kind" / "00-pycni-bridge.conflist"
LOOPBACK = Path("/usr/lib/cni/loopback")


@pytest.fixture(scope="module")
def pause_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = cri.unavailable_reason()
    if reason:
        unavailable(reason)
    return cri.pause_image(tmp_path_factory.mktemp("pause"))


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pycni-cri-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node() -> Iterator[netns_mod.Netns]:
    ns = netns_mod.create("crinode")
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        ns.delete()


def cni_dirs(bundle: Path, state: Path) -> tuple[Path, Path]:
    """containerd's one CNI bin dir (the bundle and loopback, linked) and its conf dir with
    the kind bridge conflist, dataDir in `state`."""
    if not LOOPBACK.exists():
        unavailable(f"{LOOPBACK} missing: apt-get install containernetworking-plugins")
    bin_dir = state / "opt-cni-bin"
    bin_dir.mkdir()
    for entry in [*bundle.iterdir(), LOOPBACK]:
        (bin_dir / entry.name).symlink_to(entry)
    conf_dir = state / "net.d"
    conf_dir.mkdir()
    conflist = json.loads(CONFLIST.read_text())
    conflist["plugins"][0]["ipam"]["dataDir"] = str(state / "networks")
    (conf_dir / CONFLIST.name).write_text(json.dumps(conflist, indent=2))
    return bin_dir, conf_dir


def leases(state: Path) -> list[str]:
    networks = state / "networks"
    found = networks.rglob("*") if networks.exists() else []
    return sorted(p.name for p in found if p.is_file() and is_address(p.name))


def pod_veths(node: netns_mod.Netns) -> list[str]:
    return [link["ifname"] for link in node.ip_json("link", "show", "type", "veth")]


def netns_path(status: cri.SandboxStatus) -> str:
    namespaces = status.info["runtimeSpec"]["linux"]["namespaces"]
    return str(next(n["path"] for n in namespaces if n["type"] == "network"))


def pod_addresses(pid: int) -> list[str]:
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return [a["local"] for a in json.loads(done.stdout)[0]["addr_info"]]


def test_kind_bridge_conflist_under_containerd_1_6_cri(
    bundle: Path, pause_image: Path, state: Path, node: netns_mod.Netns
) -> None:
    bin_dir, conf_dir = cni_dirs(bundle, state)
    daemon = cri.Containerd.start(node, state, bin_dir, conf_dir, pause_image)
    client = cri.RuntimeService(daemon.socket)
    pod_netns = ""
    try:
        name, version, _ = client.version()
        assert (name, version.split(".")[:2]) == ("containerd", ["1", "6"]), version
        uid = str(uuid.uuid4())
        try:
            sandbox = client.run_pod_sandbox("web-0", uid, "default")
        except Exception as err:  # the kubelet's view: the CRI error, with CNI's message
            log = daemon.log()
            raise AssertionError(f"RunPodSandbox failed: {err}\ncontainerd log:\n{log}") from err
        status = client.pod_sandbox_status(sandbox)
        pod_netns = netns_path(status)
        assert status.ready, status
        assert ip_address(status.ip) in ip_network("10.244.0.0/24"), status
        assert status.ip in pod_addresses(status.info["pid"])
        assert leases(state) == [status.ip]
        assert len(pod_veths(node)) == 1

        client.stop_pod_sandbox(sandbox)  # DEL with the netns
        assert leases(state) == []
        assert pod_veths(node) == []
        client.remove_pod_sandbox(sandbox)  # containerd's DEL without a netns
        with pytest.raises(Exception) as gone:
            client.pod_sandbox_status(sandbox)
        assert client.is_not_found(gone.value), gone.value
        assert client.list_pod_sandboxes() == []
        assert not Path(pod_netns).exists(), "containerd removed the pod's netns"
    finally:
        try:
            cri.remove_every_sandbox(client)  # a failed RunPodSandbox leaves one too
        finally:
            client.close()
        daemon.stop()
        # containerd's netns mounts lived in its own mount namespace; a file it left is ours
        if pod_netns and Path(pod_netns).is_file():
            with contextlib.suppress(OSError):
                Path(pod_netns).unlink()
