"""The kubelet's pod start, pod created -> Running, with pycni against the Go reference bridge +
host-local, on one real node of the Kubernetes lane (pycni.lab.k8s.cluster).

The cluster is `packaging/k8s.sh up --nodes 1 --datapath bridge`: pycni installed as on kind
(pycni-bridge + pycni-host-local + pycni-portmap, pycni-netpol chained by the agent with
NetworkPolicy on). For the reference, the Go plugins (Debian's containernetworking-plugins) are
linked into the node's /opt/cni/bin and a conflist `00-go-bridge.conflist` (bridge on the same
`cbr0` with the same options, host-local on the node's pod CIDR, portmap), which sorts before
pycni's, makes containerd use them; removing it goes back to pycni. Same node, same kubelet,
same containerd, same images: only the CNI differs.

A round creates `pods` agnhost pods at once (one `kubectl apply`), times each from its ADDED
watch event to the first event that shows it Running (kubectl's watch in the underlay, read as
it arrives: millisecond resolution, where the API's own timestamps have seconds), then deletes
them and waits until they and their leases are gone. Rounds alternate between the two CNIs.

    .venv/bin/python -m bench.k8s_podstart [--pods 60] [--rounds 2]     # as root, alone
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Context, Outcome, Target

TITLE = "Pod start on a real kubelet: pycni against Go bridge + host-local"
GO_CONFLIST = "/etc/cni/net.d/00-go-bridge.conflist"
NODE = "pycni-control-plane"
SETTLE_TIMEOUT = 600.0
# containerd's log lines around a sandbox (the pause container, the netns, the CNI ADD)
_SANDBOX = re.compile(
    r'time="(?P<time>[^"]+)".*msg="RunPodSandbox for &PodSandboxMetadata\{Name:(?P<pod>[^,]+),'
    r".*?\}(?P<end> returns sandbox id)?"
)


def missing() -> str | None:
    """Why the suite cannot run here, or None."""
    from pycni.lab.k8s import build, cluster

    try:
        build.image("agnhost-2.21")
    except build.BuildError as err:
        return str(err)
    if cluster.STATE_FILE.exists():
        return f"a lane cluster is up ({cluster.STATE_FILE}): the benchmark needs its own"
    for plugin in ("bridge", "host-local", "portmap"):
        if not Path(f"/usr/lib/cni/{plugin}").is_file():
            return f"no Go reference plugin /usr/lib/cni/{plugin} (containernetworking-plugins)"
    return None


def _go_conflist(pod_cidr: str) -> str:
    """The reference's conflist with what pycni's bridge conflist asks for (conf/kind)."""
    conflist = {
        "cniVersion": "1.0.0",
        "name": "go-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cbr0",
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "ipMasq": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "dataDir": "/var/lib/cni/networks",
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conflist, indent=2) + "\n"


class _Watch:
    """`kubectl get pods --watch` for one round's label, events timestamped on arrival."""

    def __init__(self, selector: str) -> None:
        from pycni.lab.k8s import cluster

        self.added: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.process = subprocess.Popen(
            cluster.kubectl_command(
                ["get", "pods", "-l", selector, "--watch", "--output-watch-events", "-o", "json"]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self.process.stdout:
            now = time.monotonic()
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break
                buffer = buffer.lstrip()[end:]
                pod = event.get("object", {})
                name = pod.get("metadata", {}).get("name")
                if not name:
                    continue
                self.added.setdefault(name, now)
                if pod.get("status", {}).get("phase") == "Running":
                    self.running.setdefault(name, now)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.thread.join(5)


def _pods(label: str, count: int) -> str:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{label}-{i}", "labels": {"bench": label}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "agnhost",
                        "image": "k8s.gcr.io/e2e-test-images/agnhost:2.21",
                        "imagePullPolicy": "Never",
                        "args": ["pause"],
                    }
                ],
            },
        }
        for i in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _timestamp(text: str) -> float:
    """containerd's RFC 3339 time with nanoseconds -> seconds (only differences matter)."""
    day, clock = text.rstrip("Z").split("T")
    hours, minutes, seconds = clock.split(":")
    return (
        int(day.replace("-", "")) * 86400.0 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    )


def sandbox_seconds(log_text: str, prefix: str) -> list[float]:
    """RunPodSandbox durations of the pods named `prefix`-*, from containerd's log."""
    started: dict[str, float] = {}
    took = []
    for match in _SANDBOX.finditer(log_text):
        pod = match["pod"]
        if not pod.startswith(prefix + "-"):
            continue
        if match["end"]:
            if pod in started:
                took.append(_timestamp(match["time"]) - started.pop(pod))
        else:
            started[pod] = _timestamp(match["time"])
    return sorted(took)


def _round(label: str, count: int) -> tuple[list[float], list[float]]:
    """Start `count` pods; each one's created -> Running seconds, and its sandbox's (what
    containerd logs for RunPodSandbox, the CNI ADD within); then delete them."""
    from pycni.lab.k8s import cluster

    log = cluster.node_log(NODE, "containerd")
    offset = log.stat().st_size
    watch = _Watch(f"bench={label}")
    time.sleep(1)  # the watch is established before the first pod exists
    try:
        cluster.kubectl(["apply", "-f", "-"], input=_pods(label, count))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while len(watch.running) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {len(watch.running)}/{count} pods Running")
            time.sleep(0.2)
    finally:
        watch.stop()
    with log.open(errors="replace") as stream:
        stream.seek(offset)
        sandboxes = sandbox_seconds(stream.read(), label)
    cluster.kubectl(["delete", "pods", "-l", f"bench={label}", "--wait=true"], timeout=900)
    return sorted(watch.running[name] - watch.added[name] for name in watch.running), sandboxes


def _use(cni: str, pod_cidr: str) -> None:
    """Make containerd use `cni` ("pycni" or "go") for new pods."""
    from pycni.lab.k8s import cluster

    node = cluster.running_node(NODE)
    if cni == "go":
        for plugin in ("bridge", "host-local", "portmap"):
            node.run(["ln", "-sf", f"/usr/lib/cni/{plugin}", f"/opt/cni/bin/{plugin}"])
        node.run(["sh", "-c", f"cat > {GO_CONFLIST}.tmp && mv {GO_CONFLIST}.tmp {GO_CONFLIST}"],
                 input=_go_conflist(pod_cidr))  # fmt: skip
    else:
        node.run(["rm", "-f", GO_CONFLIST])
    time.sleep(3)  # containerd reloads the conf dir on its change (fsnotify)


def _leases() -> list[str]:
    from pycni.lab.k8s import cluster

    done = cluster.running_node(NODE).run(
        ["sh", "-c", "ls /var/lib/cni/networks/*/ 2>/dev/null | grep '^[0-9]' || true"]
    )
    return done.stdout.split()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(pods: int = 60, rounds: int = 2) -> dict[str, Any]:
    """Bring a 1-node bridge cluster up, measure, bring it down. Raw seconds per CNI."""
    from pycni.lab.k8s import cluster

    results: dict[str, list[float]] = {"pycni": [], "go": []}
    sandboxes: dict[str, list[float]] = {"pycni": [], "go": []}
    leftovers: dict[str, list[str]] = {}
    try:
        cluster.up(1, "bridge")
        pod_cidr = cluster.kubectl(["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"]).stdout
        order = ["pycni", "go"]
        for index in range(rounds):
            for cni in order if index % 2 == 0 else order[::-1]:
                _use(cni, pod_cidr)
                running, sandbox = _round(f"{cni}-{index}", pods)
                results[cni] += running
                sandboxes[cni] += sandbox
                left = _leases()
                if left:
                    leftovers[f"{cni}-{index}"] = left
        _use("pycni", pod_cidr)
    finally:
        cluster.down()
    return {
        "pods": pods,
        "rounds": rounds,
        "seconds": results,
        "sandbox_seconds": sandboxes,
        "leases_left": leftovers,
    }


def _summary(seconds: list[float]) -> str:
    return (
        f"{statistics.median(seconds):.2f} | {_percentile(seconds, 0.99):.2f} | "
        f"{min(seconds):.2f} | {max(seconds):.2f}"
    )


def outcome_of(result: dict[str, Any], elapsed: float) -> Outcome:
    py, go = result["seconds"]["pycni"], result["seconds"]["go"]
    py_sandbox = result["sandbox_seconds"]["pycni"]
    go_sandbox = result["sandbox_seconds"]["go"]
    outcome = Outcome(TITLE, samples=len(py), data=result)
    outcome.targets.append(
        Target(
            f"pod start on a real kubelet, created -> Running, {result['pods']} pods (p50 / p99)",
            "context: Go bridge + host-local on the same node",
            f"{statistics.median(py):.2f} s / {_percentile(py, 0.99):.2f} s vs"
            f" {statistics.median(go):.2f} s / {_percentile(go, 0.99):.2f} s"
            f" ({statistics.median(py) / statistics.median(go):.2f}x at p50)",
            None,
        )
    )
    outcome.lines += [
        f"One node of the Kubernetes lane (`packaging/k8s.sh up --nodes 1 --datapath bridge`:"
        f" kubelet 1.20.2, containerd 1.6): {result['pods']} agnhost pods created at once,"
        " pod created -> Running per pod (kubectl's watch, timestamped on arrival), then"
        f" deleted; {result['rounds']} rounds per CNI, alternating, on the same node. pycni as"
        " installed on kind (bridge, host-local, portmap, and pycni-netpol: NetworkPolicy on);"
        " Go: bridge + host-local + portmap with the same options. The time includes the"
        " kubelet, containerd, runc and the CNI calls: what a user waits for.",
        "",
        "| CNI | what | p50 s | p99 s | min s | max s | pods |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| pycni | created -> Running | {_summary(py)} | {len(py)} |",
        f"| Go bridge + host-local | created -> Running | {_summary(go)} | {len(go)} |",
        f"| pycni | RunPodSandbox | {_summary(py_sandbox)} | {len(py_sandbox)} |",
        f"| Go bridge + host-local | RunPodSandbox | {_summary(go_sandbox)} | {len(go_sandbox)} |",
        "",
        "RunPodSandbox: from containerd's own log, the pause container, the network namespace and"
        " the CNI ADD of the whole chain, per pod, while the other pods of the round start too."
        " The kubelet reports pod status to the API server at its default 5 requests/s"
        " (`kubeAPIQPS`, as on kind), so with 60 pods at once created -> Running is mostly the"
        " kubelet's status queue: the CNI's share is in the RunPodSandbox row.",
        "",
        f"created -> Running, pycni / Go: {statistics.median(py) / statistics.median(go):.2f}x"
        f" at p50, {_percentile(py, 0.99) / _percentile(go, 0.99):.2f}x at p99; RunPodSandbox:"
        f" {statistics.median(py_sandbox) / statistics.median(go_sandbox):.2f}x at p50,"
        f" {_percentile(py_sandbox, 0.99) / _percentile(go_sandbox, 0.99):.2f}x at p99."
        f" Leases left after the deletes: {result['leases_left'] or 'none'}.",
        "",
        f"(suite `k8s-podstart`, {elapsed:.0f} s)",
    ]
    return outcome


def suite(ctx: Context) -> Outcome:
    if ctx.sizes.pods < 100:  # --smoke: a cluster costs a minute; the suite has its own smoke
        return Outcome(
            TITLE,
            not_measured="smoke run (it brings up a Kubernetes cluster): "
            "`python -m bench.k8s_podstart --pods 6 --rounds 1` is its quick form",
        )
    why = missing()
    if why:
        return Outcome(TITLE, not_measured=why)
    started = time.monotonic()
    result = run(pods=60, rounds=2)
    return outcome_of(result, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.k8s_podstart")
    parser.add_argument("--pods", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    args = parser.parse_args(argv)
    why = missing()
    if why:
        print(f"k8s_podstart: cannot run: {why}", file=sys.stderr)
        return 1
    started = time.monotonic()
    result = run(args.pods, args.rounds)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    outcome = outcome_of(result, time.monotonic() - started)
    print(f"## {outcome.title}\n")
    print("\n".join(outcome.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
