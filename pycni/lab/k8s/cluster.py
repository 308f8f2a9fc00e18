"""`packaging/k8s.sh up|down|kubectl|exec`: a kind-shaped Kubernetes cluster without Docker.

`up` builds, from the binaries `packaging/k8s.sh build` cached (pycni.lab.k8s.build) and
Debian's containerd, runc and etcd:

- an underlay like kind's docker network: a bridge `br-pycni-k8s` with 172.18.0.1/16 in a
  network namespace of the lane's own (`pycni-k8s`; the host's root namespace is never
  touched); `kubectl` and `e2e.test` run there (`underlay_command`), as on a kind host;
- N nodes (pycni.lab.k8s.node: network, mount, PID and UTS namespaces held by a small init),
  named as kind names them (`pycni-control-plane`, `pycni-worker`, `pycni-worker2`, ...), node
  i at 172.18.0.<i+2> on eth0 with a default route via the bridge;
- on every node: containerd 1.6 (CRI with `restrict_oom_score_adj`: this machine denies root
  CAP_SYS_RESOURCE), the images from the cache imported into its `k8s.io` namespace, kubelet
  (cgroupfs, its own --cgroup-root), kube-proxy (iptables mode), and pycni installed as
  docs/install-kind.md tells kind users: packaging/kind/install-bundle.sh copies dist/cni/bin
  into the node's /opt/cni/bin (with the reference `loopback`, which containerd calls itself),
  the frozen agent goes to /opt/pycni/agent and runs with the kubelet's kubeconfig, writing the
  conflist from the node's pod CIDR, NetworkPolicy on (the ClusterRole kind-install.sh grants);
- on the control-plane node: etcd, kube-apiserver (Node,RBAC), kube-controller-manager
  (--allocate-node-cidrs, cluster CIDR 10.244.0.0/16, /24 per node), kube-scheduler.

It writes build/k8s/kubeconfig and returns when every node is Ready. Everything it makes is
recorded in build/k8s/state.json before it is made, so `down` removes it all (processes by
PID and start time, the underlay namespace, the kubelets' cgroups, build/k8s), also after a
`kill -9` of `up`; `down` twice is a no-op.

Operator and test path (the Kubernetes lane), never a plugin's.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.lab.k8s import node as node_mod
from pycni.lab.k8s import pki
from pycni.lab.k8s.node import NodeLayout, Proc

REPO = Path(__file__).resolve().parents[3]
STATE_DIR = REPO / "build" / "k8s"
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "kubeconfig"
# Names the lane gives things outside build/k8s carry a short id of the checkout, so that
# clusters of two checkouts can run side by side and `down` recognises its own.
LANE_ID = hashlib.sha256(str(STATE_DIR).encode()).hexdigest()[:6]
UNDERLAY_NETNS = f"pycni-k8s-{LANE_ID}"
UNDERLAY_BRIDGE = "br-pycni-k8s"
UNDERLAY_GATEWAY = "172.18.0.1"
UNDERLAY_PREFIX = 16
CLUSTER_NAME = "pycni"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # `kubernetes.default`
CLUSTER_DNS = "10.96.0.10"  # what kind's kubelet config says (no CoreDNS in this lane)
API_PORT = 6443
PAUSE_IMAGE = "k8s.gcr.io/pause:3.2"  # test/utils/image/manifest.go's, and the kubelet's
DATAPATHS = {
    "bridge": "00-pycni-bridge.conflist",
    "vxlan": "00-pycni-vxlan.conflist",
    "ipip-never": "00-pycni-ipip-never.conflist",
}
READY_TIMEOUT = 180.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
LOOPBACK = Path("/usr/lib/cni/loopback")  # containernetworking-plugins: the reference loopback
BUNDLE = REPO / "dist" / "cni" / "bin"
AGENT = REPO / "dist" / "pycni-agent"
POLICY_STATE_DIR = "/run/pycni/netpol"

# The NetworkPolicy grant to the nodes, the same file packaging/kind-install.sh applies.
NODE_NETPOL_RBAC = REPO / "packaging" / "kind" / "pycni-node-netpol.yaml"


class ClusterError(RuntimeError):
    """`up`, `down`, `kubectl` or `exec` failed; the message says what to look at."""


def say(message: str) -> None:
    print(f"==> k8s {message}", flush=True)


# --- names and places ------------------------------------------------------------------------


def node_names(count: int) -> list[str]:
    """kind's: `<cluster>-control-plane`, then `<cluster>-worker`, `<cluster>-worker2`, ..."""
    names = [f"{CLUSTER_NAME}-control-plane"]
    names += [f"{CLUSTER_NAME}-worker{'' if i == 1 else i}" for i in range(1, count)]
    return names


def node_ip(index: int) -> str:
    return f"172.18.0.{index + 2}"


def api_server_url() -> str:
    return f"https://{node_ip(0)}:{API_PORT}"


def cgroup_root_name(name: str) -> str:
    """The node's kubelet --cgroup-root (one directory in every cgroup hierarchy)."""
    return f"pycni-k8s-{LANE_ID}-{name}"


def log_dir() -> Path:
    return STATE_DIR / "logs"


def node_log(name: str, component: str) -> Path:
    return log_dir() / name / f"{component}.log"


def underlay_command(argv: Sequence[str]) -> list[str]:
    """`argv` run in the underlay's namespace, where the nodes' addresses (and so the API
    server, the NodePorts and hostPorts) are reached, as from a kind host."""
    return ["ip", "netns", "exec", UNDERLAY_NETNS, *argv]


def kubectl_command(argv: Sequence[str]) -> list[str]:
    from pycni.lab.k8s import build

    return underlay_command([str(build.binary("kubectl")), f"--kubeconfig={KUBECONFIG}", *argv])


# --- the state file --------------------------------------------------------------------------


@dataclass
class State:
    """What `up` made (recorded before it is made), what `down` removes."""

    data: dict[str, Any]

    @classmethod
    def load(cls) -> State:
        try:
            return cls(json.loads(STATE_FILE.read_text()))
        except FileNotFoundError:
            return cls({"nodes": [], "procs": [], "cgroups": [], "netns": []})
        except json.JSONDecodeError as err:
            raise ClusterError(f"failed to read {STATE_FILE}: {err}") from err

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        temporary = STATE_FILE.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n")
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        temporary.replace(STATE_FILE)

    def add(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def procs(self) -> list[Proc]:
        return [Proc.from_json(proc) for proc in self.data.get("procs", [])]

    def node(self, name: str) -> dict[str, Any]:
        for entry in self.data.get("nodes", []):
            if entry["name"] == name:
                return dict(entry)
        known = ", ".join(entry["name"] for entry in self.data.get("nodes", [])) or "none"
        raise ClusterError(f"no node '{name}' in the lane cluster (nodes: {known})")


@dataclass(frozen=True)
class Node:
    """A running node: its name, address, PID 1 (host PID) and directory."""

    name: str
    index: int
    ip: str
    init: Proc
    layout: NodeLayout

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return node_mod.run(self.init.pid, argv, **kwargs)

    def start(self, state: State, component: str, argv: Sequence[str]) -> None:
        state.data.setdefault("commands", {})[f"{self.name}/{component}"] = list(argv)
        log = node_log(self.name, component)
        for proc in node_mod.start_daemon(f"{self.name}/{component}", self.init.pid, argv, log):
            state.add("procs", proc.as_json())


# --- up ----------------------------------------------------------------------------------------


def _check_prerequisites(datapath: str) -> None:
    from pycni.lab.k8s import build

    if os.geteuid() != 0:
        raise ClusterError("the Kubernetes lane needs root (namespaces, mounts, cgroups)")
    for name in ("kube-apiserver", "kubelet", "kubectl"):
        build.binary(name)  # BuildError: run packaging/k8s.sh build
    for tool in ("containerd", "runc", "etcd", "ctr", "nsenter", "unshare", "openssl", "ip"):
        if shutil.which(tool) is None:
            raise ClusterError(f"'{tool}' is not installed: run packaging/k8s.sh build (apt)")
    if not LOOPBACK.is_file():
        raise ClusterError(f"no {LOOPBACK}: apt-get install containernetworking-plugins")
    if not (BUNDLE / "pycni-host-local").is_file() or not (AGENT / "pycni-agent").is_file():
        raise ClusterError(f"no frozen pycni in {BUNDLE} and {AGENT}: run packaging/build.sh")
    if datapath not in DATAPATHS:
        raise ClusterError(f"unknown datapath '{datapath}': choose one of {', '.join(DATAPATHS)}")
    if STATE_FILE.exists():
        raise ClusterError(f"{STATE_FILE} exists: a lane cluster is up; run packaging/k8s.sh down")
    if Path(f"/run/netns/{UNDERLAY_NETNS}").exists():
        raise ClusterError(
            f"network namespace {UNDERLAY_NETNS} exists: left by a cluster of this checkout; "
            "run packaging/k8s.sh down"
        )


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"failed to run `ip {' '.join(args)}`: {done.stderr.strip()}")


def _make_underlay(state: State) -> None:
    state.add("netns", UNDERLAY_NETNS)
    _ip("netns", "add", UNDERLAY_NETNS)
    netns = ("-n", UNDERLAY_NETNS)
    _ip(*netns, "link", "set", "lo", "up")
    _ip(*netns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
    _ip(*netns, "addr", "add", f"{UNDERLAY_GATEWAY}/{UNDERLAY_PREFIX}", "dev", UNDERLAY_BRIDGE)
    _ip(*netns, "link", "set", UNDERLAY_BRIDGE, "up")


def _make_cgroups(name: str) -> None:
    """The kubelet checks that its --cgroup-root exists in every hierarchy."""
    cgroup = cgroup_root_name(name)
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if not hierarchy.is_dir() or not (hierarchy / "cgroup.procs").exists():
            continue
        (hierarchy / cgroup).mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (hierarchy / cgroup / knob).write_text((hierarchy / knob).read_text())


def _hosts_file(names: Sequence[str]) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{node_ip(i)} {name}" for i, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def _make_node(state: State, names: Sequence[str], index: int) -> Node:
    name = names[index]
    layout = NodeLayout(STATE_DIR / "nodes" / name)
    node_log(name, "node").parent.mkdir(parents=True, exist_ok=True)
    state.add("cgroups", cgroup_root_name(name))
    _make_cgroups(name)
    state.add(
        "nodes", {"name": name, "index": index, "ip": node_ip(index), "root": str(layout.root)}
    )
    holder, init = node_mod.create_node(name, layout, _hosts_file(names), node_log(name, "node"))
    state.add("procs", holder.as_json())
    state.add("procs", init.as_json())
    entry = state.data["nodes"][-1]
    entry["init"] = init.as_json()
    state.save()
    port = f"veth-k8s-{index}"
    _ip("-n", UNDERLAY_NETNS, "link", "add", port, "type", "veth",
        "peer", "name", "eth0", "netns", str(init.pid))  # fmt: skip
    _ip("-n", UNDERLAY_NETNS, "link", "set", port, "master", UNDERLAY_BRIDGE, "up")
    node = Node(name, index, node_ip(index), init, layout)
    node.run(["ip", "addr", "add", f"{node.ip}/{UNDERLAY_PREFIX}", "dev", "eth0"])
    node.run(["ip", "link", "set", "eth0", "up"])
    node.run(["ip", "route", "add", "default", "via", UNDERLAY_GATEWAY])
    for sysctl in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1",
                   "net.bridge.bridge-nf-call-ip6tables=1"):  # fmt: skip
        node.run(["sysctl", "-q", "-w", sysctl])
    return node


def _make_pki(names: Sequence[str]) -> dict[str, Path]:
    """Certificates into build/k8s/pki, kubeconfigs into build/k8s/pki/*.conf; returns the
    paths the components are given."""
    directory = STATE_DIR / "pki"
    ca = pki.make_ca(directory)
    cp_ip = node_ip(0)
    apiserver = pki.issue(
        ca, directory, "apiserver", common_name="kube-apiserver", server=True,
        dns_names=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local", "localhost", names[0]],
        ip_addresses=[SERVICE_IP, cp_ip, "127.0.0.1"],
    )  # fmt: skip
    kubelet_client = pki.issue(
        ca, directory, "apiserver-kubelet-client",
        common_name="kube-apiserver-kubelet-client", organizations=["system:masters"],
    )  # fmt: skip
    sa = pki.make_service_account_keys(directory)
    paths = {
        "ca.crt": ca.cert,
        "ca.key": ca.key,
        "apiserver.crt": apiserver.cert,
        "apiserver.key": apiserver.key,
        "kubelet-client.crt": kubelet_client.cert,
        "kubelet-client.key": kubelet_client.key,
        "sa.pub": sa.cert,
        "sa.key": sa.key,
    }
    identities = {
        "admin": ("kubernetes-admin", ["system:masters"]),
        "controller-manager": ("system:kube-controller-manager", []),
        "scheduler": ("system:kube-scheduler", []),
        "kube-proxy": ("system:kube-proxy", []),
    }
    identities.update(
        {f"kubelet-{name}": (f"system:node:{name}", ["system:nodes"]) for name in names}
    )
    for key, (user, groups) in identities.items():
        pair = pki.issue(ca, directory, key, common_name=user, organizations=groups)
        conf = directory / f"{key}.conf"
        conf.write_text(pki.kubeconfig(ca, pair, api_server_url(), user))
        conf.chmod(0o600)
        paths[f"{key}.conf"] = conf
    shutil.copyfile(paths["admin.conf"], KUBECONFIG)
    KUBECONFIG.chmod(0o600)
    return paths


def _containerd_config() -> str:
    """containerd 1.6, CRI as the kubelet 1.20 uses it (v1alpha2), no pulls needed."""
    return f"""\
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc may not write oom_score_adj below the runtime's own here (no CAP_SYS_RESOURCE)
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"""


def _kubelet_config(node: Node) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/" + cgroup_root_name(node.name),
        "failSwapOn": False,
        # read what the node shows (node.py), never write the host's kernel tunables
        "protectKernelDefaults": True,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [CLUSTER_DNS],
        "healthzBindAddress": "127.0.0.1",
        "resolvConf": "/etc/resolv.conf",
        "rotateCertificates": False,
        # as kind: the nodes share one disk, no eviction or image GC for its usage
        "evictionHard": {
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
    }


def _install_node_files(node: Node, paths: dict[str, Path], datapath: str) -> None:
    """/etc/kubernetes (kubeconfigs, kubelet config, CA), containerd's config, pycni."""
    kube = node.layout.host_path("/etc/kubernetes")
    (kube / "pki").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths["ca.crt"], kube / "pki" / "ca.crt")
    shutil.copyfile(paths[f"kubelet-{node.name}.conf"], kube / "kubelet.conf")
    shutil.copyfile(paths["kube-proxy.conf"], kube / "kube-proxy.conf")
    (kube / "kubelet-config.yaml").write_text(json.dumps(_kubelet_config(node), indent=2) + "\n")
    (node.layout.root / "containerd.toml").write_text(_containerd_config())
    if node.index == 0:
        for name in ("admin.conf", "controller-manager.conf", "scheduler.conf"):
            shutil.copyfile(paths[name], kube / name)
        for name in ("ca.key", "apiserver.crt", "apiserver.key", "kubelet-client.crt",
                     "kubelet-client.key", "sa.pub", "sa.key"):  # fmt: skip
            shutil.copyfile(paths[name], kube / "pki" / name)
    # pycni, as docs/install-kind.md (packaging/kind-install.sh) installs it on a kind node
    node.run(["/bin/sh", str(REPO / "packaging" / "kind" / "install-bundle.sh"),
              str(BUNDLE), "/opt/cni/bin"])  # fmt: skip
    node.run(["ln", "-sf", str(LOOPBACK), "/opt/cni/bin/loopback"])
    node.run(["mkdir", "-p", "/opt/pycni/conf", "/etc/cni/net.d", "/etc/cni/pycni"])
    node.run(["cp", "-a", str(AGENT), "/opt/pycni/agent"])
    template = REPO / "conf" / "kind" / DATAPATHS[datapath]
    node.run(["cp", str(template), f"/opt/pycni/conf/{template.name}"])


def _wait(what: str, check: Any, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _start_containerd(state: State, node: Node) -> None:
    node.start(state, "containerd",
               ["containerd", f"--config={node.layout.root / 'containerd.toml'}"])  # fmt: skip


def _containerd_ready(node: Node) -> bool:
    done = node.run(["ctr", "--address=/run/containerd/containerd.sock", "version"], check=False)
    return done.returncode == 0


def _import_images(nodes: Sequence[Node]) -> None:
    """Every cached image into every node's containerd, `k8s.io` namespace (the CRI's)."""
    from pycni.lab.k8s import build

    tarballs = [build.image(name) for name in ("pause-3.2", "agnhost-2.21")]
    running = []
    for node in nodes:
        for tarball in tarballs:
            argv = ["ctr", "--address=/run/containerd/containerd.sock", "-n", "k8s.io",
                    "images", "import", str(tarball)]  # fmt: skip
            running.append((node, tarball, subprocess.Popen(
                node_mod.enter_command(node.init.pid, argv),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={"PATH": node_mod.PATH, "HOME": "/root"},
            )))  # fmt: skip
    for node, tarball, proc in running:
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise ClusterError(f"failed to import {tarball} into {node.name}: {output.strip()}")


def _start_control_plane(state: State, node: Node) -> None:
    kube = "/etc/kubernetes"
    etcd_dir = node.layout.root / "etcd"
    node.start(state, "etcd", [
        "etcd", "--name=control-plane", f"--data-dir={etcd_dir}",
        "--listen-client-urls=http://127.0.0.1:2379",
        "--advertise-client-urls=http://127.0.0.1:2379",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=control-plane=http://127.0.0.1:2380",
        "--listen-metrics-urls=http://127.0.0.1:2381",
    ])  # fmt: skip
    node.start(state, "kube-apiserver", [
        _bin("kube-apiserver"),
        f"--advertise-address={node.ip}", "--bind-address=0.0.0.0",
        f"--secure-port={API_PORT}", "--insecure-port=0",
        "--etcd-servers=http://127.0.0.1:2379",
        f"--client-ca-file={kube}/pki/ca.crt",
        f"--tls-cert-file={kube}/pki/apiserver.crt",
        f"--tls-private-key-file={kube}/pki/apiserver.key",
        f"--kubelet-client-certificate={kube}/pki/kubelet-client.crt",
        f"--kubelet-client-key={kube}/pki/kubelet-client.key",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={kube}/pki/sa.pub",
        f"--service-account-signing-key-file={kube}/pki/sa.key",
        "--profiling=false",
    ])  # fmt: skip
    _wait("the API server (/readyz)", _api_ready, 90, interval=0.5)
    node.start(state, "kube-controller-manager", [
        _bin("kube-controller-manager"),
        f"--kubeconfig={kube}/controller-manager.conf",
        f"--authentication-kubeconfig={kube}/controller-manager.conf",
        f"--authorization-kubeconfig={kube}/controller-manager.conf",
        "--bind-address=127.0.0.1", "--port=0",
        "--leader-elect=false",
        "--allocate-node-cidrs=true", f"--cluster-cidr={CLUSTER_CIDR}",
        "--node-cidr-mask-size=24", f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--root-ca-file={kube}/pki/ca.crt",
        f"--service-account-private-key-file={kube}/pki/sa.key",
        f"--cluster-signing-cert-file={kube}/pki/ca.crt",
        f"--cluster-signing-key-file={kube}/pki/ca.key",
        "--use-service-account-credentials=true",
        "--configure-cloud-routes=false",
        "--profiling=false",
    ])  # fmt: skip
    node.start(state, "kube-scheduler", [
        _bin("kube-scheduler"),
        f"--kubeconfig={kube}/scheduler.conf",
        f"--authentication-kubeconfig={kube}/scheduler.conf",
        f"--authorization-kubeconfig={kube}/scheduler.conf",
        "--bind-address=127.0.0.1", "--port=0", "--leader-elect=false",
        "--profiling=false",
    ])  # fmt: skip


def _start_cluster_dns(state: State, node: Node) -> None:
    """The lane's stand-in for CoreDNS (pycni.lab.k8s.dns, helper k8sbuild's) on the control-
    plane node, behind the Service kube-system/kube-dns at the kubelets' clusterDNS."""
    try:
        dns = importlib.import_module("pycni.lab.k8s.dns")
    except ImportError as err:
        say(f"no cluster DNS ({err}): Services are reached by IP only")
        return
    process = dns.start(
        kubeconfig=KUBECONFIG,
        listen=node.ip,
        log_path=node_log(node.name, "dns"),
        prefix=node_mod.enter_command(node.init.pid, []),
    )
    state.add("procs", Proc.of(f"{node.name}/dns/nsenter", process.pid).as_json())
    for child in node_mod.children(process.pid):
        state.add("procs", Proc.of(f"{node.name}/dns", child).as_json())
    manifests = dns.service_manifests(node.ip)
    kubectl(["apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                    "items": manifests}))  # fmt: skip


def _bin(name: str) -> str:
    from pycni.lab.k8s import build

    return str(build.binary(name))


def _api_ready() -> bool:
    done = subprocess.run(
        kubectl_command(["get", "--raw=/readyz", "--request-timeout=2s"]),
        capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == "ok"


def kubectl(argv: Sequence[str], *, input: str | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """kubectl against the lane cluster (admin), output captured."""
    done = subprocess.run(
        kubectl_command(argv), input=input, capture_output=True, text=True,
        check=False, timeout=timeout,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _start_node_components(state: State, node: Node, datapath: str) -> None:
    kube = "/etc/kubernetes"
    node.start(state, "kubelet", [
        _bin("kubelet"),
        f"--config={kube}/kubelet-config.yaml",
        f"--kubeconfig={kube}/kubelet.conf",
        "--container-runtime=remote",
        "--container-runtime-endpoint=unix:///run/containerd/containerd.sock",
        "--image-service-endpoint=unix:///run/containerd/containerd.sock",
        f"--hostname-override={node.name}",
        f"--node-ip={node.ip}",
        "--root-dir=/var/lib/kubelet",
        f"--pod-infra-container-image={PAUSE_IMAGE}",
        "--v=1",
    ])  # fmt: skip
    node.start(state, "kube-proxy", [
        _bin("kube-proxy"),
        f"--kubeconfig={kube}/kube-proxy.conf",
        f"--hostname-override={node.name}",
        "--proxy-mode=iptables",
        f"--cluster-cidr={CLUSTER_CIDR}",
        # no CAP_SYS_RESOURCE here; leave the kernel's conntrack sizes and timeouts alone
        "--oom-score-adj=0",
        "--conntrack-max-per-core=0",
        "--conntrack-tcp-timeout-established=0s",
        "--conntrack-tcp-timeout-close-wait=0s",
        f"--bind-address={node.ip}",
        "--metrics-bind-address=127.0.0.1:10249",
        "--healthz-bind-address=127.0.0.1:10256",
        "--profiling=false",
    ])  # fmt: skip
    template = DATAPATHS[datapath]
    node.start(state, "pycni-agent", [
        "/opt/pycni/agent/pycni-agent",
        f"--node-name={node.name}",
        f"--template=/opt/pycni/conf/{template}",
        "--conf-dir=/etc/cni/net.d",
        f"--kubeconfig={kube}/kubelet.conf",
        "--network-policy=true",
        f"--policy-state-dir={POLICY_STATE_DIR}",
    ])  # fmt: skip


def _nodes_ready(count: int) -> tuple[list[str], list[str]]:
    """(ready node names, not-ready node names) as the API server sees them."""
    done = kubectl(["get", "nodes", "-o", "json"], check=False, timeout=20)
    if done.returncode != 0:
        return [], []
    ready: list[str] = []
    not_ready: list[str] = []
    for item in json.loads(done.stdout)["items"]:
        conditions = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
        (ready if conditions.get("Ready") == "True" else not_ready).append(item["metadata"]["name"])
    return ready, not_ready


def _wait_ready(nodes: Sequence[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ready: list[str] = []
    while time.monotonic() < deadline:
        ready, _ = _nodes_ready(len(nodes))
        if len(ready) == len(nodes):
            return
        time.sleep(1)
    lagging = [node for node in nodes if node.name not in ready]
    details = []
    for node in lagging:
        for component in ("kubelet", "pycni-agent", "containerd"):
            details.append(node_mod.tail(node_log(node.name, component), 25))
    raise ClusterError(
        f"node(s) {', '.join(n.name for n in lagging)} not Ready after {timeout:.0f} s\n"
        + "\n".join(details)
    )


def up(count: int = 3, datapath: str = "vxlan") -> None:
    """Bring the cluster up (see the module docstring); ClusterError says what failed."""
    if count < 1:
        raise ClusterError(f"--nodes {count}: need at least 1")
    _check_prerequisites(datapath)
    started = time.monotonic()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state = State.load()
    state.data.update({"datapath": datapath, "count": count})
    state.save()
    names = node_names(count)
    say(f"certificates and kubeconfigs for {count} node(s)")
    paths = _make_pki(names)
    say(f"underlay: netns {UNDERLAY_NETNS}, bridge {UNDERLAY_BRIDGE} {UNDERLAY_GATEWAY}/16")
    _make_underlay(state)
    nodes = []
    for index in range(count):
        node = _make_node(state, names, index)
        _install_node_files(node, paths, datapath)
        _start_containerd(state, node)
        nodes.append(node)
    say(f"nodes {', '.join(names)}: namespaces, containerd, pycni ({datapath}) installed")
    for node in nodes:
        _wait(f"containerd on {node.name}", functools.partial(_containerd_ready, node), 30)
    _import_images(nodes)
    say(f"images imported [{time.monotonic() - started:.0f} s]; control plane on {names[0]}")
    _start_control_plane(state, nodes[0])
    kubectl(["apply", "-f", "-"], input=NODE_NETPOL_RBAC.read_text())
    _start_cluster_dns(state, nodes[0])
    for node in nodes:
        _start_node_components(state, node, datapath)
    say(f"kubelet, kube-proxy, pycni-agent started [{time.monotonic() - started:.0f} s]; "
        "waiting for every node to be Ready")  # fmt: skip
    _wait_ready(nodes, READY_TIMEOUT)
    kubectl(["label", "node", names[0], "node-role.kubernetes.io/control-plane=", "--overwrite"])
    say(
        f"{count} node(s) Ready ({datapath}) in {time.monotonic() - started:.0f} s; "
        f"kubeconfig {KUBECONFIG}; packaging/k8s.sh kubectl get nodes -o wide"
    )


# --- down --------------------------------------------------------------------------------------


def _marked_inits() -> Iterator[Proc]:
    """Node init processes of this checkout's lane found by their command line (a node `up`
    started but could not record before it was killed)."""
    prefix = str(STATE_DIR) + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [word.decode(errors="replace") for word in argv]
        if node_mod.INIT_MARKER in words:
            index = words.index(node_mod.INIT_MARKER)
            if index + 1 < len(words) and words[index + 1].startswith(prefix):
                try:
                    yield Proc.of("init (found)", int(entry.name))
                except OSError:
                    continue


def _remove_cgroup(name: str) -> list[str]:
    """rmdir the cgroup `name` in every hierarchy, deepest first; what could not go."""
    left = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / name
        if not top.is_dir():
            continue
        deadline = time.monotonic() + 10
        while top.exists():
            for directory, _, _ in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
            if not top.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if top.exists():
            left.append(str(top))
    return left


def down() -> list[str]:
    """Remove everything `up` made; idempotent. Returns what could not be removed (empty
    when all went)."""
    state = State.load()
    problems = []
    procs = state.procs() + list(_marked_inits())
    for proc in reversed(procs):
        proc.kill(signal.SIGKILL)
    still = node_mod.wait_gone(procs, 15)
    problems += [f"process {p.name} (pid {p.pid}) still alive" for p in still]
    for netns in {*state.data.get("netns", []), UNDERLAY_NETNS}:
        if Path(f"/run/netns/{netns}").exists():
            done = subprocess.run(["ip", "netns", "delete", netns], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            if done.returncode != 0:
                problems.append(f"netns {netns}: {done.stderr.strip()}")
    cgroups = set(state.data.get("cgroups", []))
    for hierarchy in CGROUP_ROOT.iterdir():  # also those `up` made but could not record
        cgroups.update(path.name for path in hierarchy.glob(cgroup_root_name("*")))
    for cgroup in sorted(cgroups):
        problems += [f"cgroup {path} not removed" for path in _remove_cgroup(cgroup)]
    mounts = _mounts_under(STATE_DIR)
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
    for path in ("nodes", "pki", "logs", "kubeconfig", "state.json", "state.tmp"):
        target = STATE_DIR / path
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()
        if target.exists():
            problems.append(f"{target} not removed")
    return problems


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if mountpoint.startswith(prefix):
            found.append(mountpoint)
    return found


# --- kubectl, exec -----------------------------------------------------------------------------


def running_node(name: str) -> Node:
    """The node `name` of the running cluster (ClusterError if there is none)."""
    state = State.load()
    entry = state.node(name)
    if "init" not in entry:
        raise ClusterError(f"node '{name}' was never started")
    init = Proc.from_json(entry["init"])
    if not init.alive():
        raise ClusterError(f"node '{name}' is not running (its init, pid {init.pid}, is gone)")
    return Node(name, int(entry["index"]), str(entry["ip"]), init, NodeLayout(Path(entry["root"])))


def kill(node_name: str, component: str, sig: int = signal.SIGKILL) -> list[Proc]:
    """Send `sig` to a component of a node (e.g. "kubelet", "containerd", "pycni-agent"), as a
    crash or an operator would; the processes it went to (waited for when SIGKILL)."""
    state = State.load()
    state.node(node_name)
    name = f"{node_name}/{component}"
    procs = [proc for proc in state.procs() if proc.name == name and proc.alive()]
    if not procs:
        raise ClusterError(f"{component} is not running on {node_name}")
    for proc in procs:
        proc.kill(sig)
    if sig == signal.SIGKILL and node_mod.wait_gone(procs, 10):
        raise ClusterError(f"{component} on {node_name} survived SIGKILL for 10 s")
    return procs


def restart(node_name: str, component: str) -> None:
    """Start a component of a node again with the command `up` gave it (after `kill`); a
    running one is killed first."""
    state = State.load()
    node = running_node(node_name)
    argv = state.data.get("commands", {}).get(f"{node_name}/{component}")
    if argv is None:
        raise ClusterError(f"no {component} was ever started on {node_name}")
    for proc in state.procs():
        if proc.name in (f"{node_name}/{component}", f"{node_name}/{component}/nsenter"):
            proc.kill()
    node.start(state, component, argv)
    if component == "containerd":
        _wait(f"containerd on {node_name}", functools.partial(_containerd_ready, node), 30)
    elif component == "kubelet":
        # the Node stays Ready in the API for a while after its kubelet died: ask the kubelet
        _wait(
            f"the kubelet's healthz on {node_name}", functools.partial(_kubelet_healthy, node), 60
        )


def _kubelet_healthy(node: Node) -> bool:
    done = node.run(
        ["curl", "-s", "--max-time", "2", "http://127.0.0.1:10248/healthz"], check=False
    )
    return done.stdout.strip() == "ok"


def nodes() -> list[Node]:
    return [running_node(entry["name"]) for entry in State.load().data.get("nodes", [])]


# --- the command line --------------------------------------------------------------------------


def main_up(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="k8s.sh up")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--datapath", choices=sorted(DATAPATHS), default="vxlan")
    args = parser.parse_args(argv)
    try:
        up(args.nodes, args.datapath)
    except Exception as err:  # every failure is reported the same way
        print(f"k8s.sh up: ERROR: {err}", file=sys.stderr)
        print("k8s.sh up: what was made stays up for a look; `packaging/k8s.sh down` removes it",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def main_down(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="k8s.sh down").parse_args(argv)
    problems = down()
    for problem in problems:
        print(f"k8s.sh down: ERROR: {problem}", file=sys.stderr)
    if not problems:
        say("down: nothing of the lane cluster is left")
    return 1 if problems else 0


def main_kubectl(argv: Sequence[str]) -> int:
    if not KUBECONFIG.exists():
        print("k8s.sh kubectl: ERROR: no cluster (packaging/k8s.sh up)", file=sys.stderr)
        return 1
    return subprocess.run(kubectl_command(argv), check=False).returncode


def main_exec(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: k8s.sh exec NODE COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        node = running_node(argv[0])
    except ClusterError as err:
        print(f"k8s.sh exec: ERROR: {err}", file=sys.stderr)
        return 1
    command = node_mod.enter_command(node.init.pid, argv[1:])
    return subprocess.run(
        command, check=False, env={"PATH": node_mod.PATH, "HOME": "/root"}
    ).returncode
