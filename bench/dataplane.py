"""Data plane: TCP throughput between pods with iperf3, configurations interleaved run by run.

- same node: two pods on one node on pycni-bridge, two on another node on the Go bridge (each
  node a namespace, pods added through pycni.lab.runtime as containerd adds them,
  pycni.lab.testbed);
- across nodes: a 2-node emulated cluster (pycni.lab.cluster) on pycni-vxlan with the MTU it
  derives from the underlay (1500 - 50), and a second such cluster whose pods get a naive 1500-byte
  MTU (`"mtu": 1500`): the overlay's packets then exceed the underlay's MTU and are
  fragmented.

Each run is one iperf3 client (in one pod) against a one-off server (in the other), for
`iperf_seconds`; the configurations take turns (A B B A ...) so drift in the machine's speed
hits all alike. Reported: the median Gbit/s per configuration and the ratio of the medians.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from bench import plots
from bench.common import GO_VERSION, Context, Outcome, Target, median
from pycni.lab.netns import Netns

PORT = 5201


@dataclass
class Path2:
    """Two pods to measure between: the client's namespace, the server's namespace and
    address, and the pods' MTU."""

    client: Netns
    server: Netns
    address: str
    mtu: int


def iperf(pair: Path2, seconds: int) -> float:
    """One iperf3 run, client -> server; Gbit/s received."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", pair.server.name, "iperf3", "-s", "-1", "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            done = pair.client.run(
                ["iperf3", "-c", pair.address, "-p", str(PORT), "-t", str(seconds), "-J"],
                check=False,
                timeout=seconds + 30,
            )
            try:
                report = json.loads(done.stdout)
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
            except (ValueError, KeyError):
                pass  # iperf3 says why in report["error"], e.g. not listening yet
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"iperf3 to {pair.address} failed: {done.stdout[-300:]}")
            time.sleep(0.1)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=10)


def compare(configs: dict[str, Path2], seconds: int, repeats: int) -> dict[str, list[float]]:
    """Each configuration `repeats` times, in the order A B B A A B ..."""
    names = list(configs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for n in range(repeats):
        for name in names if n % 2 == 0 else names[::-1]:
            samples[name].append(iperf(configs[name], seconds))
    return samples


def learnt_mtu(pair: Path2) -> str:
    """The path MTU the client's kernel learnt for the server (from ICMP "fragmentation
    needed"), or "-" when it learnt none."""
    route = pair.client.ip("route", "get", pair.address).split()
    return route[route.index("mtu") + 1] if "mtu" in route else "-"


def pod_mtu(ns: Netns) -> int:
    return int(ns.ip_json("link", "show", "eth0")[0]["mtu"])


def _pods(node: Any, conflist: dict[str, Any], names: tuple[str, str]) -> Path2:
    a = node.add_pod(names[0], conflist)
    b = node.add_pod(names[1], conflist)
    return Path2(b.ns, a.ns, a.addresses(4)[0], pod_mtu(a.ns))


@contextmanager
def same_node(ctx: Context) -> Iterator[dict[str, Path2]]:
    from pycni.lab.testbed import Node

    with ExitStack() as stack:
        paths = {}
        for label, kind, ipam in (
            ("pycni-bridge", "pycni-bridge", "pycni-host-local"),
            ("Go bridge", "bridge", "host-local"),
        ):
            node = Node.create(f"bench{kind.replace('-', '')[:8]}", ctx.bundle)
            conflist = node.conf(
                {
                    "cniVersion": GO_VERSION,
                    "name": "dp",
                    "plugins": [
                        {
                            "type": kind,
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipam": {"type": ipam, "ranges": [[{"subnet": "10.96.0.0/24"}]]},
                        }
                    ],
                }
            )
            stack.callback(node.destroy, conflist)
            # a node has an uplink (MTU 1500): pycni-bridge takes its pod MTU from the node's
            # links (kubenet's rule); without one it falls back to 1460. Go's default is 1500.
            node.ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "uplink")
            node.ns.ip("link", "set", "eth0", "up")
            node.ns.ip("link", "set", "uplink", "up")
            paths[label] = _pods(node, conflist, ("server", "client"))
        yield paths


@contextmanager
def vxlan_clusters(ctx: Context) -> Iterator[dict[str, Path2]]:
    from pycni.lab.cluster import Cluster

    with ExitStack() as stack:
        paths = {}
        for label, extra in (("automatic MTU", {}), ("naive MTU 1500", {"mtu": 1500})):
            cluster = Cluster.create(2, ctx.bundle, vxlan=extra)
            stack.callback(cluster.destroy)
            one, two = cluster.nodes["node1"], cluster.nodes["node2"]
            server = one.node.add_pod("server", cluster.conflist(one))
            client = two.node.add_pod("client", cluster.conflist(two))
            paths[label] = Path2(client.ns, server.ns, server.addresses(4)[0], pod_mtu(server.ns))
        yield paths


def throughput_suite(
    title: str,
    setup: Callable[[Context], Any],
    baseline: str,
    target: tuple[str, str, float] | None,
    plot_name: str,
) -> Callable[[Context], Outcome]:
    """A suite comparing configurations from `setup`; ratios against `baseline`. `target`:
    (what, limit text, the lowest acceptable ratio of the first configuration over
    the baseline)."""

    def run(ctx: Context) -> Outcome:
        seconds, repeats = ctx.sizes.iperf_seconds, ctx.sizes.iperf_repeats
        with setup(ctx) as paths:
            samples = compare(paths, seconds, repeats)
            mtus = {name: path.mtu for name, path in paths.items()}
            learnt = {name: learnt_mtu(path) for name, path in paths.items()}
        outcome = Outcome(title, samples=repeats)
        outcome.lines += [
            f"iperf3 TCP, one stream, {seconds} s a run, {repeats} runs per configuration,"
            " interleaved. Gbit/s received.",
            "",
            "| configuration | pod MTU | path MTU learnt | median Gbit/s | runs"
            f" | ratio to {baseline} |",
            "|---|---:|---:|---:|---|---:|",
        ]
        base = median(samples[baseline])
        for name, runs in samples.items():
            outcome.lines.append(
                f"| {name} | {mtus[name]} | {learnt[name]} | {median(runs):.2f}"
                f" | {', '.join(f'{r:.2f}' for r in runs)} | {median(runs) / base:.2f}x |"
            )
        if target is not None:
            what, limit, lowest = target
            first = next(iter(samples))
            ratio = median(samples[first]) / base
            outcome.targets.append(
                Target(
                    what,
                    limit,
                    f"{ratio:.2f}x ({median(samples[first]):.2f} vs {base:.2f} Gbit/s)",
                    ratio >= lowest,
                )
            )
        outcome.plots.append(
            plots.bars(
                ctx.plots / plot_name,
                title,
                "Gbit/s (iperf3, TCP, median of runs)",
                {f"{name}\n(pod MTU {mtus[name]})": runs for name, runs in samples.items()},
            )
        )
        outcome.lines += [
            "",
            "Path MTU learnt: what the client pod's kernel cached for the server after the runs"
            ' (`ip route get`), from ICMP "fragmentation needed" sent back by a device on the'
            ' way whose MTU the packets exceeded; "-": none.',
        ]
        outcome.data = {"gbps": samples, "mtu": mtus, "learnt_mtu": learnt}
        return outcome

    return run


same_node_suite = throughput_suite(
    "Same node: pycni-bridge vs Go bridge",
    same_node,
    "Go bridge",
    ("same-node throughput", "≥ 0.95x Go bridge", 0.95),
    "dataplane-bridge.png",
)
vxlan_suite = throughput_suite(
    "Across nodes: pycni-vxlan, automatic vs naive MTU",
    vxlan_clusters,
    "naive MTU 1500",
    ("cross-node VXLAN, automatic MTU", "≥ 1.0x the naive 1500 MTU", 1.0),
    "dataplane-vxlan.png",
)

__all__ = ["same_node_suite", "vxlan_suite"]
