"""Bring up pods on an emulated node with the frozen plugins and show them talking.

Everything lives in network namespaces the demo creates and removes (also on Ctrl-C and on
failure): a namespace standing in for a kind node, and one per pod. The pods are added exactly
as containerd on that node would add them — loopback first, then the network's conflist,
bare environment — and the Kubernetes network model is checked with real TCP and UDP packets:
every pod reaches every pod and the node reaches every pod, and each sees the other's own
address (no NAT).

By default the demo brings up a 3-node cluster (pycni.lab.cluster: nodes on an underlay namespace
of their own, kind's addresses and pod CIDRs) with the VXLAN overlay (pycni-vxlan), spreads the
pods over the nodes and probes every pod and every node against every pod, across nodes.
`--datapath ipip` runs the same cluster on pycni-ipip (encapsulation Always: the kernel needs the
ipip module), `--datapath bridge` the single-node bridge (kubenet) datapath instead.

`--encryption ipsec` (vxlan, ipip): the cluster's conflist says `"encryption": "ipsec"`, every
node pair is keyed as the node agents key it, and the demo shows the ESP packets the probes
made. First, as a runtime does, it asks node1's network whether it is ready (STATUS): a kernel
without ESP (or without ipip) is reported in the plugin's own words, and the demo exits 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMAND = "demo"
HELP = "run pods on an emulated node with the frozen plugins and check they talk (root)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        type=Path,
        default=Path("dist/cni/bin"),
        help="the frozen plugins (default: dist/cni/bin, from packaging/build.sh)",
    )
    parser.add_argument("--pods", type=int, default=3, help="how many pods (default 3)")
    parser.add_argument(
        "--ipv6", action="store_true", help="dual-stack pods (IPv4 + IPv6; bridge datapath)"
    )
    parser.add_argument(
        "--datapath",
        choices=("vxlan", "ipip", "bridge"),
        default="vxlan",
        help="vxlan: a multi-node cluster with the overlay (default); ipip: the same cluster,"
        " routed through IPIP tunnels (needs the ipip module); bridge: one node, kubenet",
    )
    parser.add_argument(
        "--encryption",
        choices=("none", "ipsec"),
        default="none",
        help="ipsec: IPsec ESP between the nodes of the vxlan or ipip cluster (needs esp4)",
    )
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the vxlan cluster (3)")
    parser.add_argument(
        "--underlay-mtu", type=int, default=None, help="MTU of the vxlan cluster's underlay"
    )


def run(args: argparse.Namespace) -> int:
    bundle = args.bundle.resolve()
    if os.geteuid() != 0:
        print("pycni demo: run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    plugin = f"pycni-{args.datapath}"
    if args.encryption != "none" and args.datapath == "bridge":
        print("pycni demo: --encryption needs a multi-node datapath (vxlan, ipip)", file=sys.stderr)
        return 2
    if not (bundle / plugin).exists():
        print(f"pycni demo: no {plugin} in {bundle}: run packaging/build.sh", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)  # tear down on `kill` as on Ctrl-C
    try:
        if args.datapath in ("vxlan", "ipip"):
            return _run_cluster(args, bundle)
        return _run_node(args, bundle)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a raising handler must not outlive the demo


def _run_cluster(args: argparse.Namespace, bundle: Path) -> int:
    from pycni.lab import connectivity
    from pycni.lab.cluster import Cluster
    from pycni.lab.runtime import PluginError

    started = time.monotonic()
    mtu = f", underlay MTU {args.underlay_mtu}" if args.underlay_mtu else ""
    settings = {"encryption": args.encryption} if args.encryption != "none" else {}
    _step(
        f"creating a {args.nodes}-node {args.datapath} cluster (namespaces on an underlay"
        f" namespace{mtu}{', encryption ' + args.encryption if settings else ''})"
    )
    cluster = Cluster.create(
        args.nodes,
        bundle,
        underlay_mtu=args.underlay_mtu,
        datapath=args.datapath,
        vxlan=settings if args.datapath == "vxlan" else None,
        ipip=settings if args.datapath == "ipip" else None,
    )
    servers: list[Any] = []
    try:
        members = list(cluster.nodes.values())
        for member in members:
            _step(f"{member.name}: eth0 {member.ip}, pod CIDR {member.pod_cidr}")
        first = members[0]
        _step(f"STATUS of the network on {first.name}, as a runtime asks before any pod")
        try:
            first.node.runtime().status(cluster.conflist(first))
        except PluginError as err:
            print(
                f"\npycni demo: the {args.datapath} network is not ready on this kernel"
                f" (STATUS, error {err.code}): {err.msg}",
                file=sys.stderr,
            )
            return 1
        if args.encryption == "ipsec":
            _key(cluster)
        pods = []
        for n in range(1, args.pods + 1):
            member = members[(n - 1) % len(members)]
            pod = member.node.add_pod(f"pod{n}", cluster.conflist(member))
            pods.append((member, pod))
            _step(f"ADD pod{n} on {member.name}: {', '.join(pod.addresses())}")
        servers = [connectivity.serve(pod.ns) for _, pod in pods]
        targets = [(f"{m.name}/{p.name}", p.addresses(4)[0]) for m, p in pods]
        sources: list[tuple[str, Any, str | None]] = [
            (f"{m.name}/{p.name}", p.ns, p.addresses(4)[0]) for m, p in pods
        ]
        sources += [(m.name, m.node.ns, None) for m in members]
        _step("probing: every pod and every node to every pod, across nodes, TCP and UDP")
        probes = connectivity.matrix(sources, targets)
        if args.encryption == "ipsec":
            _show_esp(cluster)
        return _verdict(connectivity, probes, started)
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
        return 130
    except Exception as err:  # a plugin's error: say it plainly, then tear down
        print(f"\npycni demo: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        _teardown(servers, "DEL every pod, remove the nodes and the underlay", cluster.destroy)


def _key(cluster: Any) -> None:
    """Every node pair keyed as the node agents key them (ESP SAs and policies)."""
    from pycni.lab import ipsec

    added = ipsec.key_cluster(cluster)
    for name, items in added.items():
        sas = sum(1 for item in items if item.startswith("ESP SA"))
        _step(f"{name}: {sas} ESP SAs and {len(items) - sas} xfrm policies (a key per direction)")


def _show_esp(cluster: Any) -> None:
    """What crossed the underlay as ESP: each node's SA packet counters."""
    from pycni.lab import ipsec

    for name, (sent, received) in ipsec.esp_counters(cluster).items():
        _step(f"{name}: {sent} packets sent and {received} received as ESP")


def _verdict(connectivity: Any, probes: list[Any], started: float) -> int:
    print()
    print(connectivity.report(probes))
    failed = [p for p in probes if not p.ok]
    print()
    print(
        f"{'FAILED' if failed else 'OK'}: {len(probes) - len(failed)} of {len(probes)} probes"
        f" reached their pod with the sender's own address ({time.monotonic() - started:.1f}s)"
    )
    return 1 if failed else 0


def _run_node(args: argparse.Namespace, bundle: Path) -> int:
    from pycni.lab import connectivity
    from pycni.lab.testbed import Node

    conflist = _conflist(args.ipv6)
    started = time.monotonic()
    _step(f"creating node 'node1' (a network namespace) with plugins from {bundle}")
    node = Node.create("node1", bundle)
    servers: list[Any] = []
    try:
        conf = node.conf(conflist)
        for n in range(1, args.pods + 1):
            pod = node.add_pod(f"pod{n}", conf)
            _step(f"ADD pod{n}: {', '.join(pod.addresses())} on bridge cbr0")
        servers = [connectivity.serve(pod.ns) for pod in node.pods.values()]
        probes = []
        for version, gateway in ((4, "10.244.1.1"), (6, "fd00:10:244:1::1")):
            if version == 6 and not args.ipv6:
                continue
            targets = [(p.name, a) for p in node.pods.values() for a in p.addresses(version)]
            sources = [(p.name, p.ns, p.addresses(version)[0]) for p in node.pods.values()]
            sources.append(("node1", node.ns, gateway))
            _step(f"probing IPv{version}: every pod and the node to every pod, TCP and UDP")
            probes += connectivity.matrix(sources, targets)
        return _verdict(connectivity, probes, started)
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
        return 130
    except Exception as err:  # a plugin's error: say it plainly, then tear down
        print(f"\npycni demo: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        _teardown(servers, "DEL every pod, remove the node", lambda: node.destroy(conflist))


def _conflist(ipv6: bool) -> dict[str, Any]:
    ranges = [[{"subnet": "10.244.1.0/24"}]]
    if ipv6:
        ranges.append([{"subnet": "fd00:10:244:1::/64"}])
    return {
        "cniVersion": "1.0.0",  # what runtimes on libcni < 1.2 send; newer ones pick 1.1.0
        "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        "name": "kubenet",
        "plugins": [
            {
                "type": "pycni-bridge",
                "bridge": "cbr0",
                "isGateway": True,
                "isDefaultGateway": True,
                "hairpinMode": True,
                "ipMasq": True,
                "nonMasqueradeCIDRs": ["10.244.0.0/16"],
                "ipam": {"type": "pycni-host-local", "ranges": ranges},
            }
        ],
    }


def _teardown(servers: list[Any], message: str, destroy: Callable[[], None]) -> None:
    """Stop the echo servers, say so, and destroy: nothing before `destroy` (a closed stdout,
    say) may keep it from running."""
    try:
        for server in servers:
            server.stop()
        _step(message)
    finally:
        destroy()


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
