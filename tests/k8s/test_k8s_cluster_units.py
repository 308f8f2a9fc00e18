"""The lane cluster's parts that need no Kubernetes binaries: names, certificates, the node's
namespaces and file system, the RBAC shared with kind-install.sh. (The clusters themselves:
test_k8s_cluster.py, in the Kubernetes lane.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pycni.lab.k8s import cluster, pki
from pycni.lab.k8s import node as node_mod

REPO = Path(__file__).resolve().parents[2]


def test_node_names_and_addresses_are_kinds() -> None:
    assert cluster.node_names(3) == ["pycni-control-plane", "pycni-worker", "pycni-worker2"]
    assert [cluster.node_ip(i) for i in range(3)] == ["172.18.0.2", "172.18.0.3", "172.18.0.4"]
    assert cluster.api_server_url() == "https://172.18.0.2:6443"


def test_node_netpol_rbac_is_the_one_kind_install_grants() -> None:
    script = (REPO / "packaging" / "kind-install.sh").read_text()
    assert 'apply -f - <"$repo/packaging/kind/pycni-node-netpol.yaml"' in script
    assert cluster.NODE_NETPOL_RBAC == REPO / "packaging" / "kind" / "pycni-node-netpol.yaml"
    assert "name: pycni-node-netpol" in cluster.NODE_NETPOL_RBAC.read_text()


def test_every_datapath_has_its_kind_conflist() -> None:
    for datapath, conflist in cluster.DATAPATHS.items():
        assert (REPO / "conf" / "kind" / conflist).is_file(), datapath


def test_api_server_certificate_names_the_service_ip_and_node(tmp_path: Path) -> None:
    ca = pki.make_ca(tmp_path)
    pair = pki.issue(
        ca, tmp_path, "apiserver", common_name="kube-apiserver", server=True,
        dns_names=["kubernetes.default.svc"], ip_addresses=["10.96.0.1", "172.18.0.2"],
    )  # fmt: skip
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.cert), str(pair.cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(pair.cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:10.96.0.1" in text
    assert "IP Address:172.18.0.2" in text
    assert "DNS:kubernetes.default.svc" in text
    assert "TLS Web Server Authentication" in text


def test_node_client_certificate_carries_user_and_group(tmp_path: Path) -> None:
    ca = pki.make_ca(tmp_path)
    pair = pki.issue(
        ca, tmp_path, "kubelet", common_name="system:node:pycni-worker",
        organizations=["system:nodes"],
    )  # fmt: skip
    subject = subprocess.run(
        ["openssl", "x509", "-in", str(pair.cert), "-noout", "-subject"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "O = system:nodes" in subject
    assert "CN = system:node:pycni-worker" in subject
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt",
        "ca.key",
        "kubelet.crt",
        "kubelet.key",
    ]


def test_layout_maps_node_paths_to_the_nodes_directory(tmp_path: Path) -> None:
    layout = node_mod.NodeLayout(tmp_path)
    assert (
        layout.host_path("/etc/kubernetes/kubelet.conf") == tmp_path / "kubernetes" / "kubelet.conf"
    )
    assert layout.host_path("/var/lib/cni/networks/pycni") == (
        tmp_path / "cni-state" / "networks" / "pycni"
    )
    assert (
        layout.host_path("/var/lib/misc/x")
        == tmp_path / "overlay" / "var-lib" / "upper" / "misc" / "x"
    )
    with pytest.raises(ValueError):
        layout.host_path("/usr/bin/true")


@pytest.mark.netns
def test_a_node_has_its_own_namespaces_and_files_and_ends_with_its_init(tmp_path: Path) -> None:
    layout = node_mod.NodeLayout(tmp_path / "node")
    host_panic_on_oops = Path("/proc/sys/kernel/panic_on_oops").read_text()
    holder, init = node_mod.create_node(
        "unit-node", layout, "127.0.0.1 localhost\n", tmp_path / "setup.log"
    )
    try:
        script = (
            "hostname; ls /sys/class/net; cat /proc/sys/kernel/panic_on_oops; echo $$; "
            "mkdir -p /etc/cni/net.d /var/lib/cni/x; touch /etc/cni/net.d/c /var/lib/cni/x/y; "
            "ls /sys/fs/cgroup/memory/cgroup.procs"
        )
        out = node_mod.run(init.pid, ["sh", "-c", script]).stdout.split()
        assert out[:3] == ["unit-node", "lo", "1"]  # UTS, a fresh netns, the kubelet's sysctl
        assert int(out[3]) > 1  # a PID of the node's own PID namespace
        assert out[4] == "/sys/fs/cgroup/memory/cgroup.procs"
        # what the node wrote is in its directory, not in the host's /etc or /var/lib
        assert (layout.root / "cni" / "net.d" / "c").is_file()
        assert not Path("/etc/cni/net.d/c").exists()
        assert layout.host_path("/var/lib/cni/x/y").is_file()
        assert not Path("/var/lib/cni/x").exists()
        # and the machine's own /var/lib/cni (leases of other runtimes) does not show inside
        assert node_mod.run(init.pid, ["ls", "-A", "/var/lib/cni"]).stdout.split() == ["x"]
        assert Path("/proc/sys/kernel/panic_on_oops").read_text() == host_panic_on_oops
    finally:
        init.kill()
        holder.kill()
    assert node_mod.wait_gone([init], 5) == []
