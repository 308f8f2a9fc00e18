"""What DELs and teardowns must leave behind: nothing. host-local's leases, what pods leave on a
node, and the namespaces a process made.

Each function lists what is there, so that a test asserts `== []` (or `== {}`) and a failure
shows what was left."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from pycni.lab.netns import Netns
from pycni.lab.testbed import Node

# Files host-local keeps beside its leases in a network's directory (pycni's index lives in the
# hidden .pycni/; the reference plugin and pycni both keep `lock` and last_reserved_ip.N).
_BOOKKEEPING = ("lock", "last_reserved_ip.")


def leases(data_dir: Path, network: str) -> dict[str, bytes]:
    """host-local's leases of `network` under its dataDir: file name (the address) -> content
    (b"<containerID>\\r\\n<ifname>"). Every file there counts but host-local's bookkeeping, so
    a stray or half-written file shows too."""
    directory = data_dir / network
    if not directory.is_dir():
        return {}
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file()
        and not path.name.startswith(".")
        and not path.name.startswith(_BOOKKEEPING)
    }


def is_address(name: str) -> bool:
    """Whether a file name is an IP address: a lease in host-local's store (beside it lie the
    lock, last_reserved_ip.N and per-container index files)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def all_leases(data_dir: Path) -> list[str]:
    """Every lease under a dataDir, of every network, as "network/address"."""
    networks = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    return [f"{network}/{address}" for network in networks for address in leases(data_dir, network)]


def pod_veths(ns: Netns, node_veths: tuple[str, ...] = ("eth0",)) -> list[str]:
    """The node's veths but its own (`node_veths`: its uplink): the host ends of pods'
    attachments."""
    links = ns.ip_json("link", "show", "type", "veth")
    return sorted(link["ifname"] for link in links if link["ifname"] not in node_veths)


def pod_routes(ns: Netns, pod_cidr: str) -> list[str]:
    """The node's routes (`ip route` lines) to destinations inside `pod_cidr`: the host routes
    a routed plugin adds to its pods."""
    cidr = ipaddress.ip_network(pod_cidr)
    found = []
    for line in ns.ip("route").splitlines():
        try:
            dst = ipaddress.ip_network(line.split()[0], strict=False)
        except ValueError:  # default, blackhole, unreachable, ...: not a route to a pod
            continue
        if dst.version == cidr.version and dst.subnet_of(cidr):  # type: ignore[arg-type]
            found.append(line)
    return found


def hostports(ns: Netns) -> list[str]:
    """The elements of pycni-portmap's hostPort map in the node, if it has the map."""
    shown = ns.run(["nft", "-j", "list", "map", "inet", "pycni", "hostports"], check=False)
    if shown.returncode != 0:
        return []
    return [
        str(element)
        for item in json.loads(shown.stdout)["nftables"]
        for element in item.get("map", {}).get("elem", [])
    ]


def leftovers(
    node: Node, *, pod_cidr: str | None = None, node_veths: tuple[str, ...] = ("eth0",)
) -> list[str]:
    """What the DELs of a node's pods must have removed, each as "<kind> <name>": host veths
    (every veth but `node_veths`), leases in the node's dataDir (every network), hostPort
    elements; and, given the node's `pod_cidr`, the routes to its pods."""
    left = [f"veth {name}" for name in pod_veths(node.ns, node_veths)]
    left += [f"lease {lease}" for lease in all_leases(node.state_dir / "networks")]
    left += [f"hostport {element}" for element in hostports(node.ns)]
    if pod_cidr is not None:
        left += [f"route {line}" for line in pod_routes(node.ns, pod_cidr)]
    return left


def namespaces_of(pid: int) -> list[str]:
    """The network namespaces named after process `pid`: pycni.lab.netns names them
    <prefix>-<pid>-<n>-<hex>, the benchmark pb<pid><tag>."""
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return sorted(n for n in names if f"-{pid}-" in n or n.startswith(f"pb{pid}"))
