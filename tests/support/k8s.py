"""Helpers for tests that drive a lane cluster (pycni.lab.k8s.cluster): manifests, kubectl,
asking agnhost who answers, and what of the lane is left on the machine."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycni.lab.k8s import cluster

AGNHOST = "k8s.gcr.io/e2e-test-images/agnhost:2.21"
HTTP_PORT = 8080


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    ip: str


def pod(
    name: str, node: str, labels: dict[str, str], host_port: int | None = None
) -> dict[str, Any]:
    port: dict[str, Any] = {"containerPort": HTTP_PORT, "protocol": "TCP"}
    if host_port is not None:
        port["hostPort"] = host_port
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "agnhost",
                    "image": AGNHOST,
                    "imagePullPolicy": "Never",
                    "args": ["netexec", f"--http-port={HTTP_PORT}"],
                    "ports": [port],
                }
            ],
        },
    }


def service(name: str, selector: dict[str, str], node_port: int | None = None) -> dict[str, Any]:
    port: dict[str, Any] = {"port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"}
    if node_port is not None:
        port["nodePort"] = node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort" if node_port is not None else "ClusterIP",
            "selector": selector,
            "ports": [port],
        },
    }


def apply(*objects: dict[str, Any]) -> None:
    cluster.kubectl(["apply", "-f", "-"], input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                             "items": list(objects)}))  # fmt: skip


def kubectl_exec(pod: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(["exec", pod, "--", *argv], check=False, timeout=60)


def hostname_via(pod: str, url: str) -> str:
    """What answers `url`, asked from inside `pod` (curl in the agnhost image)."""
    done = kubectl_exec(pod, "curl", "-g", "-q", "-s", "--max-time", "5", url)
    if done.returncode != 0:
        return f"<exit {done.returncode}: {done.stderr.strip()[-300:]}>"
    return done.stdout.strip()


def hostname_from_underlay(url: str) -> str:
    """What answers `url`, asked from the underlay (the kind host's place)."""
    done = subprocess.run(
        cluster.underlay_command(["curl", "-g", "-q", "-s", "--max-time", "5", url]),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else f"<curl exit {done.returncode}>"


def pods(selector: str) -> list[Pod]:
    done = cluster.kubectl(["get", "pods", "-l", selector, "-o", "json"])
    return [
        Pod(item["metadata"]["name"], item["spec"]["nodeName"], item["status"]["podIP"])
        for item in json.loads(done.stdout)["items"]
    ]


def node_cidrs() -> dict[str, str]:
    done = cluster.kubectl(["get", "nodes", "-o", "json"])
    return {
        item["metadata"]["name"]: item["spec"]["podCIDR"]
        for item in json.loads(done.stdout)["items"]
    }


def service_ip(name: str) -> str:
    return cluster.kubectl(
        ["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"]
    ).stdout.strip()


def answers(ask: Any, tries: int, want: set[str]) -> set[str]:
    """Ask up to `tries` times until every pod in `want` answered; every answer seen."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(ask())
        if want <= seen:
            break
    return seen


def leftovers() -> list[str]:
    """What of the lane is on the machine: processes, the underlay, cgroups, mounts, files."""
    found = []
    for proc in cluster._marked_inits():
        found.append(f"node init pid {proc.pid}")
    if Path(f"/run/netns/{cluster.UNDERLAY_NETNS}").exists():
        found.append(f"netns {cluster.UNDERLAY_NETNS}")
    for hierarchy in cluster.CGROUP_ROOT.iterdir():
        found += [str(path) for path in hierarchy.glob(cluster.cgroup_root_name("*"))]
    found += [f"mount {m}" for m in cluster._mounts_under(cluster.STATE_DIR)]
    for name in ("nodes", "pki", "logs", "kubeconfig", "state.json"):
        if (cluster.STATE_DIR / name).exists():
            found.append(str(cluster.STATE_DIR / name))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if cluster.UNDERLAY_NETNS in line or str(cluster.STATE_DIR) in line:
            found.append(f"mount {line.split()[4]}")
    return found


def running_pod_ips(selector: str) -> dict[str, set[str]]:
    """Node name -> the pod IPs of the Running pods matching `selector` there (a pod with no
    IP yet shows as "<none>", so that a check for "every pod has an address" sees it)."""
    done = cluster.kubectl(["get", "pods", "-l", selector, "-o", "json"])
    by_node: dict[str, set[str]] = {}
    for item in json.loads(done.stdout)["items"]:
        if item["status"].get("phase") != "Running":
            continue
        node = item["spec"]["nodeName"]
        by_node.setdefault(node, set()).add(item["status"].get("podIP") or "<none>")
    return by_node


def leases(node: str, network: str = "pycni") -> set[str]:
    """The addresses host-local holds on `node` (its lease files, read inside the node)."""
    done = cluster.running_node(node).run(
        ["sh", "-c", f"ls /var/lib/cni/networks/{network} 2>/dev/null || true"]
    )
    return {name for name in done.stdout.split() if name[0].isdigit()}


def host_veths(node: str) -> list[str]:
    """The veths in `node`'s network namespace other than its own eth0: one per pod."""
    done = cluster.running_node(node).run(["ip", "-o", "link", "show", "type", "veth"])
    names = [line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines()]
    return sorted(name for name in names if name != "eth0")
