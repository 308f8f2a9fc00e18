"""The kind bridge conflist under containerd 1.6's CRI: the kubelet's path on the nodes that most
clusters still run (containerd 1.6/1.7 vendor libcni 1.1.x, which ignores `cniVersions` and
cannot parse a 1.1.0 result).

Debian's containerd 1.6.20 (built against libcni 1.1.2) runs inside a namespace standing in for a
kind node (tests/support/cri.py), with conf/kind/00-pycni-bridge.conflist as its only CNI config
(the IPAM dataDir moved off the host) and the frozen plugins plus the reference `loopback` as its
CNI bin dir. Through CRI, as the kubelet calls it: RunPodSandbox (containerd runs loopback, then
pycni-bridge -> pycni-host-local, then pycni-portmap), PodSandboxStatus (the pod IP containerd
parsed from pycni's result), StopPodSandbox (DEL with the netns), RemovePodSandbox (containerd's DEL
without one). What the kernel and the lease store show is checked after each.

The pod asks for a hostPort, as a kubelet pod with `hostPort: 8080` does: containerd (go-cni,
1.6 to 2.1) sends `portMappings` with Go's field names (`HostPort`, `ContainerPort`, `Protocol`,
`HostIP`), which pycni reads as the Go plugins do (pycni.cni.skel); before that, every such pod
failed with "$.runtimeConfig.portMappings[0].hostPort: is required"."""

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

from pycni.lab.netns import Netns
from tests.support import cri
from tests.support.ci import unavailable
from tests.support.leftovers import all_leases, hostports, pod_veths
from tests.support.paths import KIND, REFERENCE

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

CONFLIST = KIND / "00-pycni-bridge.conflist"
LOOPBACK = REFERENCE / "loopback"


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
def node_ns(netns: Netns) -> Netns:
    """The kind node's namespace (the shared `netns`), its loopback up."""
    netns.ip("link", "set", "lo", "up")
    return netns


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
    bundle: Path, pause_image: Path, state: Path, node_ns: Netns
) -> None:
    bin_dir, conf_dir = cni_dirs(bundle, state)
    network = json.loads(CONFLIST.read_text())["name"]
    daemon = cri.Containerd.start(node_ns, state, bin_dir, conf_dir, pause_image)
    client = cri.RuntimeService(daemon.socket)
    pod_netns = ""
    try:
        name, version, _ = client.version()
        assert (name, version.split(".")[:2]) == ("containerd", ["1", "6"]), version
        uid = str(uuid.uuid4())
        try:
            sandbox = client.run_pod_sandbox(
                "web-0", uid, "default", [cri.PortMapping(container_port=80, host_port=8080)]
            )
        except Exception as err:  # the kubelet's view: the CRI error, with CNI's message
            log = daemon.log()
            raise AssertionError(f"RunPodSandbox failed: {err}\ncontainerd log:\n{log}") from err
        status = client.pod_sandbox_status(sandbox)
        pod_netns = netns_path(status)
        assert status.ready, status
        assert ip_address(status.ip) in ip_network("10.244.0.0/24"), status
        assert status.ip in pod_addresses(status.info["pid"])
        assert all_leases(state / "networks") == [f"{network}/{status.ip}"]
        assert len(pod_veths(node_ns, node_veths=())) == 1
        (mapped,) = hostports(node_ns)  # tcp 8080 -> the pod's chain, which DNATs to it
        assert "'tcp', 8080]" in mapped, mapped
        chain = mapped.split("'target': '")[1].split("'")[0]
        rules = node_ns.run(["nft", "list", "chain", "inet", "pycni", chain]).stdout
        assert f"{status.ip}:80" in rules, rules

        client.stop_pod_sandbox(sandbox)  # DEL with the netns
        assert all_leases(state / "networks") == []
        assert pod_veths(node_ns, node_veths=()) == []
        assert hostports(node_ns) == []
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
