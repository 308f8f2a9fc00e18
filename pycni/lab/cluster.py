"""An emulated cluster: N nodes, each a network namespace, on an underlay of their own.

Laid out like a kind cluster on its docker network, all in namespaces this module creates (the
host's own interfaces are never touched):

- the underlay is a namespace holding a bridge `underlay` with the gateway address 172.18.0.1/16
  (docker's bridge network); every node is joined to it by a veth whose node end is `eth0` with
  172.18.0.<i+2>/16 and a default route via the gateway, so "the interface of the default
  route" exists on each node as on a kind node. `underlay_mtu` sets the MTU of the whole
  underlay (e.g. 1400, a cloud VPC's);
- with `subnets=2` (or more) the underlay namespace is also a router between subnets: subnet s
  is a bridge of its own (`underlay` for 0, `underlay<s>` after) with 172.<18+s>.0.1/16, node i
  joins subnet i % subnets with 172.<18+s>.0.<i+2>/16 and its default route via that gateway,
  and the underlay namespace forwards between them — nodes behind a router, as in two VPC
  subnets or racks; what pycni-ipip's CrossSubnet tells apart;
- pod CIDRs are cut from the cluster CIDR as the controller manager's node IPAM does: node i
  gets the i-th /24 of 10.244.0.0/16 (10.244.0.0/24 for the first);
- each node is a pycni.lab.testbed.Node: its own state, cache, conf and data dirs, its pods added
  through pycni.lab.runtime exactly as containerd adds them.

`datapath` chooses the network every node runs: "vxlan" (pycni-vxlan, network "overlay", extra
settings in `vxlan`) or "ipip" (pycni-ipip, network "routed", `encapsulation` Always,
CrossSubnet or Never, extra settings in `ipip`). `conflist(node)` is that network of a node;
`publish_peers()` writes the peer set
(every node: name, underlay IP, pod CIDRs — what `kubectl get nodes` shows) to each node's
peers file, as an agent watching Node objects would. `destroy()` removes every namespace and
directory, and keeps going past failures.

Operator and test path (tests, the demo), never a plugin's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Any

from pycni.lab import netns as netns_mod
from pycni.lab.testbed import REFERENCE_DIR, Node

CLUSTER_CIDR = "10.244.0.0/16"  # kind's podSubnet
NODE_CIDR_LENGTH = 24  # the controller manager's --node-cidr-mask-size for IPv4
UNDERLAY_CIDR = "172.18.0.0/16"  # kind's docker network
UNDERLAY_BRIDGE = "underlay"
NETWORK = "overlay"  # the vxlan datapath's network
ROUTED_NETWORK = "routed"  # the ipip datapath's
DATAPATHS = ("vxlan", "ipip")


def underlay_cidr(subnet: int) -> str:
    """The underlay subnet `subnet`: 172.18.0.0/16 (kind's docker network), 172.19.0.0/16, ..."""
    return f"172.{18 + subnet}.0.0/16"


def underlay_bridge(subnet: int) -> str:
    """The bridge of underlay subnet `subnet` in the underlay namespace."""
    return UNDERLAY_BRIDGE if subnet == 0 else f"{UNDERLAY_BRIDGE}{subnet}"


@dataclass
class ClusterNode:
    """A node of the cluster: the namespace (`node`), its underlay address and pod CIDR."""

    node: Node
    index: int
    ip: str
    pod_cidr: str
    port: str  # its veth in the underlay namespace
    subnet: int = 0  # which underlay subnet (see underlay_cidr)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def peers_file(self) -> Path:
        return self.node.state_dir / "peers.json"

    @property
    def gateway(self) -> str:
        """The pod CIDR's gateway: the address the node bridge holds."""
        return str(ip_network(self.pod_cidr)[1])

    @property
    def underlay_bridge(self) -> str:
        """The bridge of its underlay subnet, in the underlay namespace (where to capture)."""
        return underlay_bridge(self.subnet)


@dataclass
class Cluster:
    underlay: netns_mod.Netns
    bin_dir: Path
    cluster_cidr: str = CLUSTER_CIDR
    underlay_mtu: int | None = None
    vxlan: dict[str, Any] = field(default_factory=dict)  # extra pycni-vxlan settings
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    datapath: str = "vxlan"  # or "ipip"
    ipip: dict[str, Any] = field(default_factory=dict)  # pycni-ipip settings (encapsulation)
    subnets: int = 1
    _next_index: int = 0

    @classmethod
    def create(
        cls,
        node_count: int,
        bin_dir: str | Path,
        *,
        cluster_cidr: str = CLUSTER_CIDR,
        underlay_mtu: int | None = None,
        vxlan: dict[str, Any] | None = None,
        datapath: str = "vxlan",
        encapsulation: str = "Always",
        ipip: dict[str, Any] | None = None,
        subnets: int = 1,
    ) -> Cluster:
        """The underlay (`subnets` subnets, routed between) and `node_count` nodes named
        node1, node2, ... (peers published). `datapath` "ipip" runs pycni-ipip with
        `encapsulation` (and any other settings in `ipip`) instead of pycni-vxlan."""
        if datapath not in DATAPATHS:
            raise ValueError(f"datapath {datapath!r}: expected one of {DATAPATHS}")
        if not 1 <= subnets <= 8:
            raise ValueError(f"subnets {subnets}: expected 1 to 8")
        underlay = netns_mod.create("underlay")
        bins = Path(bin_dir).resolve()
        settings = {"encapsulation": encapsulation, **(ipip or {})}
        cluster = cls(
            underlay,
            bins,
            cluster_cidr,
            underlay_mtu,
            dict(vxlan or {}),
            datapath=datapath,
            ipip=settings,
            subnets=subnets,
        )
        try:
            underlay.ip("link", "set", "lo", "up")
            for subnet in range(subnets):
                bridge = underlay_bridge(subnet)
                underlay.ip("link", "add", bridge, "type", "bridge")
                gateway = IPv4Network(underlay_cidr(subnet))[1]
                underlay.ip("addr", "add", f"{gateway}/16", "dev", bridge)
                if underlay_mtu is not None:
                    underlay.ip("link", "set", bridge, "mtu", str(underlay_mtu))
                underlay.ip("link", "set", bridge, "up")
            if subnets > 1:  # the underlay namespace routes between its subnets
                underlay.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            for _ in range(node_count):
                cluster.add_node(publish=False)
            cluster.publish_peers()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def add_node(
        self, name: str | None = None, *, publish: bool = True, subnet: int | None = None
    ) -> ClusterNode:
        """A new node on the underlay with the next free pod CIDR, in underlay subnet
        `subnet` (default: the node's index modulo `subnets`). With `publish`, every node's
        peers file is rewritten (no reconcile is run: that is the caller's step)."""
        index = self._next_index
        subnet = index % self.subnets if subnet is None else subnet
        if not 0 <= subnet < self.subnets:
            raise ValueError(f"subnet {subnet}: the cluster has {self.subnets}")
        self._next_index += 1
        name = name or f"node{index + 1}"
        pod_cidr = self._pod_cidr(index)
        underlay_net = IPv4Network(underlay_cidr(subnet))
        ip = str(underlay_net[index + 2])
        node = Node.create(name, self.bin_dir, reference_dir=REFERENCE_DIR)
        member = ClusterNode(node, index, ip, pod_cidr, f"port{index}", subnet)
        self.nodes[name] = member
        u = self.underlay
        u.ip(
            "link",
            "add",
            member.port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.ns.name,
        )
        u.ip("link", "set", member.port, "master", member.underlay_bridge)
        mtu = ["mtu", str(self.underlay_mtu)] if self.underlay_mtu is not None else []
        u.ip("link", "set", member.port, *mtu, "up")
        node.ns.ip("addr", "add", f"{ip}/{underlay_net.prefixlen}", "dev", "eth0")
        node.ns.ip("link", "set", "eth0", *mtu, "up")
        node.ns.ip("route", "add", "default", "via", str(underlay_net[1]), "dev", "eth0")
        if publish:
            self.publish_peers()
        return member

    def remove_node(self, name: str, *, publish: bool = True) -> None:
        """Take a node away (its pods, namespace and state); the others' peers files are
        rewritten with `publish`."""
        member = self.nodes.pop(name)
        try:
            member.node.destroy(self.conflist(member))
        finally:
            try:
                self.underlay.ip("link", "del", member.port)
            except subprocess.CalledProcessError:
                pass  # went with the node's namespace
        if publish:
            self.publish_peers()

    @property
    def network(self) -> str:
        """The name of the network every node runs: "overlay" (vxlan) or "routed" (ipip)."""
        return ROUTED_NETWORK if self.datapath == "ipip" else NETWORK

    def peers(self) -> list[dict[str, Any]]:
        """Every node as the peers list (pycni-vxlan's and pycni-ipip's) names it."""
        return [
            {"name": m.name, "nodeIP": m.ip, "podCIDRs": [m.pod_cidr]} for m in self.nodes.values()
        ]

    def publish_peers(self) -> None:
        """Write the peer set to each node's peers file (atomically: a plugin reading it
        concurrently sees the old list or the new one)."""
        text = json.dumps(self.peers(), indent=2)
        for member in self.nodes.values():
            tmp = member.peers_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, member.peers_file)

    def conflist(self, member: ClusterNode, version: str = "1.1.0") -> dict[str, Any]:
        """The node's network (written to its conf dir): pycni-vxlan or pycni-ipip with its
        pod CIDR to host-local, its peers file, and the datapath's extra settings."""
        plugin: dict[str, Any] = {
            "type": f"pycni-{self.datapath}",
            "peersFile": str(member.peers_file),
            "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": member.pod_cidr}]]},
            **(self.ipip if self.datapath == "ipip" else self.vxlan),
        }
        return member.node.conf({"cniVersion": version, "name": self.network, "plugins": [plugin]})

    def reconcile(self, member: ClusterNode) -> list[str]:
        """`pycni reconcile` in the node's namespace, as an agent on the node runs it; the
        changes it made."""
        conf = member.node.state_dir / "net.d" / f"10-{self.network}.conflist"
        if not conf.exists():
            self.conflist(member)
        done = member.node.ns.run(
            [sys.executable, "-c", _CLI, "reconcile", "--conf", str(conf)], check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"pycni reconcile on {member.name} failed: {done.stderr.strip()}")
        return done.stdout.splitlines()

    def destroy(self) -> None:
        """Remove every node (pods through DEL where it still works) and the underlay;
        every step runs even if one fails."""
        errors: list[str] = []
        for name in list(self.nodes):
            member = self.nodes.pop(name)
            try:
                member.node.destroy(self.conflist(member))
            except Exception as err:
                errors.append(f"{name}: {err}")
                for pod in list(member.node.pods.values()):
                    pod.ns.delete()
                member.node.ns.delete()
                shutil.rmtree(member.node.state_dir, ignore_errors=True)
        try:
            self.underlay.delete()
        except Exception as err:
            errors.append(f"underlay: {err}")
        if errors:
            raise RuntimeError("cluster teardown: " + "; ".join(errors))

    def _pod_cidr(self, index: int) -> str:
        network = IPv4Network(self.cluster_cidr)
        subnets = network.subnets(new_prefix=NODE_CIDR_LENGTH)
        for n, subnet in enumerate(subnets):
            if n == index:
                return str(subnet)
        raise ValueError(f"cluster CIDR {self.cluster_cidr} has no room for node {index + 1}")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


_CLI = "import sys; from pycni.cli import main; sys.exit(main(sys.argv[1:]))"
