"""What a kind user installs: the conflists in conf/kind, the kind cluster configs, the
DaemonSet manifest (validated offline with kubernetes-validate, strict), the Containerfile."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ci import unavailable
from tests.support.paths import KIND, REPO

CONFLISTS = sorted(KIND.glob("*.conflist"))
CLUSTER_CONFIGS = sorted(KIND.glob("kind-*.yaml"))
MANIFEST = REPO / "packaging" / "kind" / "pycni.yaml"
CONTAINERFILE = REPO / "packaging" / "Containerfile"
# The Kubernetes versions kind's recent node images run, whose schemas the tests check against.
K8S_VERSIONS = ("1.31.0", "1.33.0")


def test_every_datapath_has_a_conflist() -> None:
    names = [c.name for c in CONFLISTS]
    assert names == [
        "00-pycni-bridge.conflist",
        "00-pycni-ipip-always.conflist",
        "00-pycni-ipip-crosssubnet.conflist",
        "00-pycni-ipip-never.conflist",
        "00-pycni-vxlan.conflist",
    ]


@pytest.mark.parametrize("conflist", CONFLISTS, ids=lambda p: p.name)
def test_conflist_passes_pycni_validate(conflist: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pycni.cli import main; sys.exit(main())",
            "validate",
            str(conflist),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(f"{conflist}: OK")


@pytest.mark.parametrize("conflist", CONFLISTS, ids=lambda p: p.name)
def test_conflist_is_what_containerd_and_kind_need(conflist: Path) -> None:
    doc = json.loads(conflist.read_text())
    # libcni before 1.2 (containerd 1.6/1.7, CRI-O before 1.31) ignores cniVersions and sends
    # cniVersion, so that must be a version it can parse results of; libcni 1.2+ picks 1.1.0
    # from cniVersions (containerd 2.x sends STATUS, libcni GC, only at 1.1.0)
    assert doc["cniVersion"] == "1.0.0"
    assert doc["cniVersions"] == ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    # containerd loads the lexically first file: before kindnet's 10-kindnet.conflist and
    # any 05-/10- file a node image or another CNI leaves behind
    assert conflist.name < "05"
    main, *chained = doc["plugins"]
    assert main["ipam"]["type"] == "pycni-host-local"
    assert main["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]  # kind's first node
    assert {"type": "pycni-portmap", "capabilities": {"portMappings": True}} in chained
    if main["type"] != "pycni-bridge":
        assert main["peersFile"] == "/etc/cni/pycni/peers.json"  # where the agent writes it
    if main["type"] == "pycni-ipip":
        mode = conflist.stem.rsplit("-", 1)[1]
        assert main["encapsulation"].lower() == mode


@pytest.mark.parametrize("config", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_kind_cluster_config(config: Path) -> None:
    doc = yaml.safe_load(config.read_text())
    assert doc["kind"] == "Cluster"
    assert doc["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    net = doc["networking"]
    assert net["disableDefaultCNI"] is True
    roles = [n["role"] for n in doc["nodes"]]
    assert roles[0] == "control-plane"
    assert (len(roles) > 1) == ("multi" in config.name)
    subnets = net["podSubnet"].split(",")
    assert subnets[0] == "10.244.0.0/16"  # what the conflists' nonMasqueradeCIDRs name
    if "dual" in config.name:
        assert net["ipFamily"] == "dual"
        assert subnets[1] == "fd00:10:244::/56"
    else:
        assert "ipFamily" not in net and len(subnets) == 1
    allowed = {"kind", "apiVersion", "networking", "nodes"}
    assert set(doc) <= allowed
    assert set(net) <= {"disableDefaultCNI", "ipFamily", "podSubnet", "serviceSubnet"}


# --- the manifest --------------------------------------------------------------------------


def manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


_VALIDATE_OFFLINE = r"""
import json, sys
import kubernetes_validate
docs = json.load(sys.stdin)
for version in sys.argv[1:]:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            print(f"{version} {doc['kind']}/{doc['metadata'].get('name')}: {err.message}")
"""


def validate_offline(docs: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate, strict, in a network namespace of its own (no network at all):
    its schemas are the ones the package ships."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        unavailable("kubernetes-validate is not installed: pip install -e '.[dev]'")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _VALIDATE_OFFLINE, *K8S_VERSIONS],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_manifest_validates_offline_in_strict_mode() -> None:
    docs = manifest()
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    ]
    assert validate_offline(docs) == []


def test_strict_validation_catches_a_misspelled_field() -> None:
    """The check above is worth something: a typo in the pod spec is an error."""
    docs = manifest()
    pod = docs[3]["spec"]["template"]["spec"]
    pod["hostNetwrok"] = pod.pop("hostNetwork")
    problems = validate_offline(docs)
    assert problems and all("hostNetwrok" in p for p in problems), problems


def test_rbac_reads_patches_nodes_and_creates_only_events() -> None:
    """Nodes read for the overlay and patched (the node's own IPsec key annotations);
    NetworkPolicies, Pods and Namespaces read for policy; Events created (a policy that cannot
    be enforced, an IPsec peer without key); nothing else."""
    role = manifest()[1]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]


def test_daemonset_installs_the_bundle_and_runs_the_agent() -> None:
    ds = manifest()[3]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == "pycni"
    assert {"operator": "Exists"} in pod["tolerations"]  # NotReady and control-plane nodes
    install_bundle, install_conf = pod["initContainers"]
    assert install_bundle["command"] == [
        "/pycni/install-bundle.sh",
        "/pycni/cni/bin",
        "/host/opt/cni/bin",
    ]
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert volumes == {
        "cni-bin": "/opt/cni/bin",
        "cni-conf": "/etc/cni/net.d",
        "pycni-state": "/etc/cni/pycni",
        "pycni-run": "/run/pycni",
    }
    assert "--once" in install_conf["args"]
    (agent,) = pod["containers"]
    for container in (install_conf, agent):
        template = next(a for a in container["args"] if a.startswith("--template="))
        assert (KIND / Path(template.split("=", 1)[1]).name).exists()
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        shared = {"/run/pycni": "pycni-run"} if container is agent else {}
        assert mounts == {"/etc/cni/net.d": "cni-conf", "/etc/cni/pycni": "pycni-state", **shared}
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
        assert env == {"NODE_NAME": "spec.nodeName"}
    assert set(agent["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    # NetworkPolicy is on, and the plugin and the agent share the state directory
    assert "--network-policy=true" in agent["args"]
    assert "--policy-state-dir=/run/pycni/netpol" in agent["args"]
    # encryption is opt-in, and the conflist the init container writes says what the agent does
    for container in (install_conf, agent):
        assert [a for a in container["args"] if a.startswith("--encryption")] == [
            "--encryption=none"
        ]
    # `kind load docker-image` images are used only if never pulled
    for container in (install_bundle, install_conf, agent):
        assert container["image"] == "pycni:dev"
        assert container["imagePullPolicy"] == "IfNotPresent"


def test_containerfile_holds_what_the_manifest_runs() -> None:
    lines = [
        line.split()
        for line in CONTAINERFILE.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    copies = {words[-1]: words[1] for words in lines if words[0] == "COPY"}
    assert copies == {
        "/pycni/cni/bin/": "dist/cni/bin/",
        "/pycni/agent/": "dist/pycni-agent/",
        "/pycni/conf/": "conf/kind/*.conflist",
        "/pycni/install-bundle.sh": "packaging/kind/install-bundle.sh",
    }
    assert ["ENTRYPOINT", '["/pycni/agent/pycni-agent"]'] in lines
    for source in copies.values():
        if not source.startswith("dist/"):
            assert list(REPO.glob(source.rstrip("/"))), source
