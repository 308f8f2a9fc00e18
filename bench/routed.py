"""pycni-ipip in Never mode (direct routes, no tunnel) against what a Go user would run for the
same routed model: the Go `ptp` plugin with `host-local`, and the routes to the other nodes'
pod CIDRs set by hand (`ip route add <pod CIDR> via <node IP>`, what kube-router or a cloud
route controller programs).

Both run on 2-node emulated clusters (pycni.lab.cluster): one running pycni-ipip with
`encapsulation: Never`, one whose nodes get the Go ptp network and the hand-made routes.

- ipip: per-call latency and peak RSS of VERSION, ADD, CHECK, STATUS, DEL on node1 of each
  (bench/latency.py's interleaving; STATUS against Go's VERSION);
- dataplane-ipip: iperf3 from a pod on node2 to a pod on node1, each cluster in turn.

Until pycni-ipip and the cluster's ipip datapath exist on this checkout, both suites say so and
measure nothing.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench import dataplane, latency
from bench.common import GO_VERSION, Context, Outcome, Plugin

LATENCY_TITLE = "pycni-ipip (encapsulation: Never) vs Go ptp + host-local, hand-made routes"
NETWORK = "routed"


def missing(ctx: Context) -> str | None:
    """Why the ipip suites cannot run here, or None."""
    from pycni.lab.cluster import Cluster

    if not (ctx.bundle / "pycni-ipip").is_file():
        return "pycni-ipip is not in the bundle: it has not landed on this checkout"
    if "datapath" not in inspect.signature(Cluster.create).parameters:
        return "pycni.lab.cluster has no ipip datapath on this checkout"
    return None


def _ptp_conflist(member: Any, state: Path) -> dict[str, Any]:
    """The Go ptp network of a node: its pod CIDR to host-local, a default route."""
    conflist: dict[str, Any] = member.node.conf(
        {
            "cniVersion": GO_VERSION,
            "name": NETWORK,
            "plugins": [
                {
                    "type": "ptp",
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": member.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(state / member.name),
                    },
                }
            ],
        }
    )
    return conflist


def single(conflist: dict[str, Any]) -> dict[str, Any]:
    """A conflist's one plugin as the network config a runtime hands it."""
    return {"cniVersion": GO_VERSION, "name": conflist["name"], **conflist["plugins"][0]}


@contextmanager
def clusters(ctx: Context) -> Iterator[tuple[Any, Any, dict[str, Any], Path]]:
    """(the pycni-ipip Never cluster, the Go ptp cluster with hand-made routes, each Go
    node's ptp conflist by name, a state dir)."""
    from pycni.lab.cluster import Cluster

    with ExitStack() as stack:
        state = Path(tempfile.mkdtemp(prefix="pycni-bench-routed-"))
        stack.callback(shutil.rmtree, state, True)
        never: dict[str, Any] = {"datapath": "ipip", "encapsulation": "Never"}
        routed = Cluster.create(2, ctx.bundle, **never)
        stack.callback(routed.destroy)
        plain = Cluster.create(2, ctx.bundle)  # its nodes and underlay; no pycni network
        stack.callback(plain.destroy)
        ptp = {}
        for member in plain.nodes.values():
            ptp[member.name] = _ptp_conflist(member, state)
            for other in plain.nodes.values():
                if other is not member:
                    member.node.ns.ip("route", "add", other.pod_cidr, "via", other.ip)

        def remove_ptp_pods() -> None:  # before the cluster's teardown, which knows no ptp
            for member in plain.nodes.values():
                for name in list(member.node.pods):
                    member.node.remove_pod(name, ptp[member.name])

        stack.callback(remove_ptp_pods)
        yield routed, plain, ptp, state


def latency_suite(ctx: Context) -> Outcome:
    why = missing(ctx)
    if why:
        return Outcome(LATENCY_TITLE, not_measured=why)
    with clusters(ctx) as (routed, plain, ptp, state):
        one, two = routed.nodes["node1"], plain.nodes["node1"]
        (state / "pycni").mkdir()
        (state / "Go").mkdir()
        py = Plugin(
            "pycni",
            ctx.bundle / "pycni-ipip",
            single(routed.conflist(one)),
            one.node.ns.path,
            state / "pycni",
        )
        go = Plugin(
            "Go",
            ctx.go_dir / "ptp",
            single(ptp[two.name]),
            two.node.ns.path,
            state / "Go",
            status_verb="VERSION",
        )
        prefix = f"pb{os.getpid()}ip"
        latency.run_cycles(py, go, ctx.sizes.pods, ctx.sizes.rss_rounds, prefix, None)
    result = latency.report(ctx, LATENCY_TITLE, "ipip", py, go, ctx.sizes.pods, "ipip")
    result.lines.insert(
        0,
        "Each on node1 of a 2-node emulated cluster: pycni-ipip with `encapsulation: Never`"
        " (its routes to the other node's pod CIDR programmed by the plugin) against Go ptp +"
        " host-local with the same route added by hand.",
    )
    result.lines.insert(1, "")
    return result


@contextmanager
def _paths(ctx: Context) -> Iterator[dict[str, dataplane.Path2]]:
    with clusters(ctx) as (routed, plain, ptp, _):
        paths = {}
        one, two = routed.nodes["node1"], routed.nodes["node2"]
        server = one.node.add_pod("server", routed.conflist(one))
        client = two.node.add_pod("client", routed.conflist(two))
        paths["pycni-ipip Never"] = dataplane.Path2(
            client.ns, server.ns, server.addresses(4)[0], dataplane.pod_mtu(server.ns)
        )
        one, two = plain.nodes["node1"], plain.nodes["node2"]
        server = one.node.add_pod("server", ptp[one.name])
        client = two.node.add_pod("client", ptp[two.name])
        paths["direct routes (Go ptp)"] = dataplane.Path2(
            client.ns, server.ns, server.addresses(4)[0], dataplane.pod_mtu(server.ns)
        )
        yield paths


_throughput = dataplane.throughput_suite(
    "Across nodes: pycni-ipip Never vs direct routes",
    _paths,
    "direct routes (Go ptp)",
    None,
    "dataplane-ipip.png",
)


def throughput_suite(ctx: Context) -> Outcome:
    why = missing(ctx)
    if why:
        return Outcome("Across nodes: pycni-ipip Never vs direct routes", not_measured=why)
    return _throughput(ctx)
