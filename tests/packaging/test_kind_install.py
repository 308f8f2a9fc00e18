"""packaging/kind-install.sh against a fake `docker` (or `podman`) and `kubectl` on PATH.

There is no container engine here. The fakes record every call and act it out on a directory
per node (`<root>/<node>/...` standing for the node container's file system): `cp` copies as
`docker cp` does, `exec` runs mkdir/rm/mv and the node's own executables (the copied
install-bundle.sh) with every absolute path moved under the node's directory, and answers
`systemctl` with success; `kubectl get nodes -o json` answers a kind-shaped NodeList. So the
script's logic runs for real: what lands where, the conflist each node gets, the order of the
steps, the errors it reports."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import unavailable
from tests.support.kube_replay import kind_node
from tests.support.paths import AGENT_DIR, REPO

SCRIPT = REPO / "packaging" / "kind-install.sh"
AGENT = AGENT_DIR / "pycni-agent"

pytestmark = [pytest.mark.frozen]

FAKE_ENGINE = r'''#!{python}
"""A stand-in container engine: records the call, acts it out under $FAKE_KIND_ROOT/<node>."""
import json, os, shutil, subprocess, sys
from pathlib import Path

root = Path(os.environ["FAKE_KIND_ROOT"])
argv = sys.argv[1:]
with open(root / "calls.log", "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *argv]) + "\n")
nodes = (root / "containers").read_text().split()

def inside(node, path):
    if node not in nodes:
        sys.exit(f"Error response from daemon: No such container: {{node}}")
    assert path.startswith("/"), path
    return root / node / path.lstrip("/")

if argv[0] == "cp":
    src, dst = Path(argv[1]), argv[2]
    node, path = dst.split(":", 1)
    target = inside(node, path)
    if not target.parent.is_dir():
        sys.exit(f"Error response from daemon: Could not find the file {{path}} in container")
    if target.is_dir():
        target = target / src.name
    if src.is_dir():
        shutil.copytree(src, target, symlinks=True)
    else:
        shutil.copy2(src, target)
elif argv[0] == "exec":
    args = argv[1:]
    while args[0].startswith("-"):
        args = args[1:]
    node, command = args[0], args[1:]
    mapped = [str(inside(node, a)) if a.startswith("/") else a for a in command]
    if command[0] == "systemctl":
        pass
    elif command[0] in ("mkdir", "rm", "mv"):
        sys.exit(subprocess.run(mapped).returncode)
    elif command[0].startswith("/") and os.access(mapped[0], os.X_OK):
        sys.exit(subprocess.run(mapped).returncode)
    else:
        sys.exit(f"OCI runtime exec failed: {{command[0]}}: not found")
else:
    sys.exit(f"fake engine: unexpected call {{argv}}")
'''

FAKE_KUBECTL = r'''#!{python}
"""A stand-in kubectl: records the call; `get nodes -o json` answers the canned NodeList."""
import json, os, sys
from pathlib import Path

root = Path(os.environ["FAKE_KIND_ROOT"])
argv = sys.argv[1:]
with open(root / "calls.log", "a") as log:
    log.write(json.dumps(["kubectl", *argv]) + "\n")
if argv[:2] != ["--context", "kind-" + os.environ.get("FAKE_KIND_NAME", "kind")]:
    sys.exit("error: context was not found")
if argv[2:] == ["get", "nodes", "-o", "json"]:
    print((root / "nodes.json").read_text())
elif argv[2:] == ["apply", "-f", "-"]:
    with open(root / "applied.yaml", "a") as applied:
        applied.write(sys.stdin.read())
elif argv[2:4] == ["delete", "clusterrolebinding,clusterrole"]:
    print("clusterrole.rbac.authorization.k8s.io pycni-node-netpol deleted")
elif argv[2:4] == ["wait", "--for=condition=Ready"]:
    print("node/kind-control-plane condition met")
else:
    sys.exit(f"fake kubectl: unexpected call {{argv}}")
'''

NODES = [
    ("kind-control-plane", "172.18.0.3", ["10.244.0.0/24"]),
    ("kind-worker", "172.18.0.2", ["10.244.1.0/24"]),
    ("kind-worker2", "172.18.0.4", ["10.244.2.0/24"]),
]


def fake_kind(
    tmp_path: Path, engine: str, nodes: list[tuple[str, str, list[str]]]
) -> dict[str, str]:
    root = tmp_path / "kind"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    root.mkdir()
    for name, fake in ((engine, FAKE_ENGINE), ("kubectl", FAKE_KUBECTL)):
        path = bin_dir / name
        path.write_text(fake.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    (root / "containers").write_text(" ".join(n for n, _, _ in nodes))
    node_list = {
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1234"},
        "items": [kind_node(n, ip, cidrs, 1000 + i) for i, (n, ip, cidrs) in enumerate(nodes)],
    }
    (root / "nodes.json").write_text(json.dumps(node_list))
    for name, _, _ in nodes:  # what a kind node image holds before pycni
        (root / name / "opt" / "cni" / "bin").mkdir(parents=True)
        (root / name / "etc" / "systemd" / "system").mkdir(parents=True)
        (root / name / "etc" / "cni" / "net.d").mkdir(parents=True)
        (root / name / "etc" / "cni" / "net.d" / "00-pycni-bridge.conflist").write_text("{}")
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_KIND_ROOT": str(root),
        "HOME": str(tmp_path),
    }


def run_script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_KIND_ROOT"]) / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def built(bundle: Path) -> Path:
    if not AGENT.exists():
        unavailable(f"{AGENT} missing: run packaging/build.sh")
    return bundle


def test_installs_every_node_through_docker_and_kubectl(built: Path, tmp_path: Path) -> None:
    env = fake_kind(tmp_path, "docker", NODES)
    done = run_script(env)
    assert done.returncode == 0, done.stdout + done.stderr
    root = Path(env["FAKE_KIND_ROOT"])
    for name, ip, cidrs in NODES:
        node = root / name
        # the plugins, runnable where they landed, as containerd runs them
        for exe in sorted(built.glob("pycni-*")):
            assert (node / "opt/cni/bin" / exe.name).exists(), exe.name
        version = subprocess.run(
            [str(node / "opt/cni/bin/pycni-vxlan")],
            env={"CNI_COMMAND": "VERSION"},
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
        )
        assert json.loads(version.stdout)["cniVersion"], version.stderr
        assert not (node / "opt/cni/bin/.pycni-staging").exists()
        assert not (node / "opt/pycni/bundle").exists()
        # the conflist: the template with this node's pod CIDR and InternalIP
        conf_dir = node / "etc/cni/net.d"
        assert sorted(p.name for p in conf_dir.iterdir()) == ["00-pycni-vxlan.conflist"]
        conf = json.loads((conf_dir / "00-pycni-vxlan.conflist").read_text())
        plugin = conf["plugins"][0]
        assert plugin["ipam"]["ranges"] == [[{"subnet": c} for c in cidrs]]
        assert plugin["localIP"] == ip
        # NetworkPolicy is on by default: pycni-netpol is chained last
        assert conf["plugins"][-1] == {"type": "pycni-netpol", "stateDir": "/run/pycni/netpol"}
        validate = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pycni.cli import main; sys.exit(main())",
                "validate",
                str(conf_dir / "00-pycni-vxlan.conflist"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert validate.returncode == 0, validate.stdout
        # the agent and its service
        assert (node / "opt/pycni/agent/pycni-agent").exists()
        assert not (node / "opt/pycni/agent.new").exists()
        assert (node / "opt/pycni/conf/00-pycni-vxlan.conflist").exists()
        unit = (node / "etc/systemd/system/pycni-agent.service").read_text()
        assert (
            f"ExecStart=/opt/pycni/agent/pycni-agent --node-name {name}"
            " --template /opt/pycni/conf/00-pycni-vxlan.conflist --conf-dir /etc/cni/net.d"
            " --kubeconfig /etc/kubernetes/kubelet.conf"
            " --network-policy=true --policy-state-dir /run/pycni/netpol"
        ) in unit
    # the nodes' own credentials may read what NetworkPolicy needs, and nothing more
    import yaml

    role, binding = yaml.safe_load_all((root / "applied.yaml").read_text())
    assert role["kind"] == "ClusterRole" and binding["kind"] == "ClusterRoleBinding"
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {
        "get",
        "list",
        "watch",
        "create",
    }
    assert [r["resources"] for r in role["rules"] if "create" in r["verbs"]] == [["events"]]
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
    ]
    made = calls(env)
    assert made[0] == ["kubectl", "--context", "kind-kind", "get", "nodes", "-o", "json"]
    assert made[-1][:4] == ["kubectl", "--context", "kind-kind", "wait"]
    for name, _, _ in NODES:
        systemctl = [
            c[3:] for c in made if c[:3] == ["docker", "exec", name] and c[3] == "systemctl"
        ]
        assert systemctl == [
            ["systemctl", "stop", "pycni-agent.service"],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "pycni-agent.service"],
        ]
        # the conflist appears under its final name only by a rename inside the node
        assert ["docker", "exec", name, "mv", "-f", "/etc/cni/net.d/.00-pycni-vxlan.conflist.tmp",
                "/etc/cni/net.d/00-pycni-vxlan.conflist"] in made  # fmt: skip


def test_podman_datapath_and_cluster_name(built: Path, tmp_path: Path) -> None:
    env = fake_kind(tmp_path, "podman", NODES[:1])
    env |= {"KIND_EXPERIMENTAL_PROVIDER": "podman", "FAKE_KIND_NAME": "dev"}
    done = run_script(env, "--name", "dev", "--datapath", "ipip-crosssubnet", "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    made = calls(env)
    assert {c[0] for c in made} == {"podman", "kubectl"}
    assert not any(c[3:4] == ["wait"] for c in made)
    conf_dir = Path(env["FAKE_KIND_ROOT"]) / "kind-control-plane/etc/cni/net.d"
    assert [p.name for p in conf_dir.iterdir()] == ["00-pycni-ipip-crosssubnet.conflist"]
    plugin = json.loads(next(conf_dir.iterdir()).read_text())["plugins"][0]
    assert plugin["encapsulation"] == "CrossSubnet"
    assert plugin["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]


def test_a_node_without_pod_cidr_stops_before_touching_any_node(
    built: Path, tmp_path: Path
) -> None:
    env = fake_kind(tmp_path, "docker", [*NODES[:2], ("kind-worker2", "172.18.0.4", [])])
    done = run_script(env)
    assert done.returncode != 0
    assert "no pod CIDR on node(s) kind-worker2" in done.stderr
    assert [c[0] for c in calls(env)] == ["kubectl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--datapath", "flannel"], "unknown datapath 'flannel'"),
        (["--bogus"], "unknown argument '--bogus'"),
    ],
)
def test_usage_errors(built: Path, tmp_path: Path, args: list[str], message: str) -> None:
    env = fake_kind(tmp_path, "docker", NODES)
    done = run_script(env, *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert not (Path(env["FAKE_KIND_ROOT"]) / "calls.log").exists()


def test_no_engine_no_kubectl(tmp_path: Path, built: Path) -> None:
    env: dict[str, Any] = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if any(Path(d, "docker").exists() or Path(d, "podman").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("this machine has a container engine")
    done = run_script(env)
    assert done.returncode != 0
    assert "neither docker nor podman is installed" in done.stderr


def test_network_policy_false_leaves_it_out(built: Path, tmp_path: Path) -> None:
    env = fake_kind(tmp_path, "docker", NODES[:1])
    done = run_script(env, "--network-policy=false", "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    node = Path(env["FAKE_KIND_ROOT"]) / NODES[0][0]
    conf = json.loads((node / "etc/cni/net.d/00-pycni-vxlan.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["pycni-vxlan", "pycni-portmap"]
    unit = (node / "etc/systemd/system/pycni-agent.service").read_text()
    assert "--network-policy=false" in unit
    deleted = ["kubectl", "--context", "kind-kind", "delete", "clusterrolebinding,clusterrole",
               "pycni-node-netpol", "--ignore-not-found"]  # fmt: skip
    assert deleted in calls(env)
    bad = run_script(env, "--network-policy", "maybe")
    assert bad.returncode != 0 and "expected true or false" in bad.stderr


def test_encryption_is_opt_in(built: Path, tmp_path: Path) -> None:
    """Off unless asked: no `encryption` in the conflist and --encryption=none for the agent;
    --encryption ipsec puts it in both, for the datapaths that have tunnel packets to
    encrypt, and nothing is touched when the choice makes no sense."""
    env = fake_kind(tmp_path, "docker", NODES[:1])
    node = Path(env["FAKE_KIND_ROOT"]) / NODES[0][0]
    done = run_script(env, "--no-wait")
    assert done.returncode == 0, done.stdout + done.stderr
    conf = json.loads((node / "etc/cni/net.d/00-pycni-vxlan.conflist").read_text())
    assert all("encryption" not in p for p in conf["plugins"])
    unit = (node / "etc/systemd/system/pycni-agent.service").read_text()
    assert "--encryption=none" in unit
    for datapath in ("vxlan", "ipip-always"):
        done = run_script(env, "--datapath", datapath, "--encryption", "ipsec", "--no-wait")
        assert done.returncode == 0, done.stdout + done.stderr
        path = node / f"etc/cni/net.d/00-pycni-{datapath}.conflist"
        conf = json.loads(path.read_text())
        assert conf["plugins"][0]["encryption"] == "ipsec"
        assert "--encryption=ipsec" in (node / "etc/systemd/system/pycni-agent.service").read_text()
        from pycni.conformance import validate

        report = validate.check_file(str(path))
        assert report.errors == [], report.errors
    (Path(env["FAKE_KIND_ROOT"]) / "calls.log").unlink()
    for args, message in (
        (["--encryption", "wireguard"], "--encryption 'wireguard': expected none or ipsec"),
        (["--datapath", "bridge", "--encryption=ipsec"], "datapath 'bridge' has none"),
        (["--datapath", "ipip-never", "--encryption=ipsec"], "datapath 'ipip-never' has none"),
    ):
        bad = run_script(env, *args)
        assert bad.returncode != 0 and message in bad.stderr, bad.stderr
        assert not (Path(env["FAKE_KIND_ROOT"]) / "calls.log").exists()
