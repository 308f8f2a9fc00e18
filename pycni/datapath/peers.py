"""The peer set of a multi-node datapath, shared by pycni-vxlan and pycni-ipip.

A peer is a remote node: its name, its underlay address (`nodeIP`) and the pod CIDRs behind
it — what `kubectl get nodes` shows. A config gives the set inline (`peers`) or as the path of
a JSON file holding the same list (`peersFile`, written by the node agent and read on every
call). One list can serve every node: the entry naming the node itself is skipped (`others`).

Also here: this node's own side of the underlay (`find_underlay`), and the node's pod CIDRs
as the IPAM config gives them (`pod_cidrs`).
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import parse_prefix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from pycni.netlink import Link, Rtnl

    CheckPeer = Callable[[object, str], None]  # a generated schema validator's check_peer


class Peer(Record):
    """A remote node: where its packets go, and the pod CIDRs behind it."""

    __slots__ = ("name", "node_ip", "path", "pod_cidrs")
    name: str
    node_ip: IP
    pod_cidrs: list[Prefix]
    path: str  # where the config gave it, e.g. "$.peers[1]"

    def __init__(self, name: str, node_ip: IP, pod_cidrs: list[Prefix], path: str = "") -> None:
        self._init(name=name, node_ip=node_ip, pod_cidrs=pod_cidrs, path=path)


class Underlay(Record):
    """This node's side of the underlay: its address (with the prefix length of its subnet)
    and the link that holds it."""

    __slots__ = ("link", "local_ip", "prefix")
    local_ip: IP
    prefix: Prefix  # local_ip with its length: the underlay subnet, e.g. 172.18.0.2/16
    link: Link

    def __init__(self, local_ip: IP, link: Link, prefix: Prefix | None = None) -> None:
        self._init(
            local_ip=local_ip,
            link=link,
            prefix=prefix if prefix is not None else Prefix(local_ip, local_ip.bits),
        )

    def same_subnet(self, ip: IP) -> bool:
        """`ip` is on our underlay subnet: reachable without a router."""
        return self.prefix.contains(ip)


class PeerSource(Record):
    """Where a config takes its peers from: inline `peers`, else the file `peers_file`, whose
    entries `check_peer` (the config schema's) validates when it is read."""

    __slots__ = ("check_peer", "peers", "peers_file")
    peers: list[Peer] | None
    peers_file: str | None
    check_peer: CheckPeer

    def __init__(
        self, peers: list[Peer] | None, peers_file: str | None, check_peer: CheckPeer
    ) -> None:
        self._init(peers=peers, peers_file=peers_file, check_peer=check_peer)


def parse_source(c: dict[str, object], check_peer: CheckPeer) -> PeerSource:
    """`peers` / `peersFile` of a (schema-validated) config."""
    raw = c.get("peers")
    peers = parse_peers(raw, "$.peers", check_peer) if isinstance(raw, list) else None
    peers_file = c.get("peersFile")
    return PeerSource(peers, peers_file if isinstance(peers_file, str) else None, check_peer)


def parse_peers(raw: list[object], path: str, check_peer: CheckPeer) -> list[Peer]:
    peers = []
    for n, item in enumerate(raw):
        check_peer(item, f"{path}[{n}]")
        assert isinstance(item, dict)
        cidrs = [
            parse_prefix(text, f"{path}[{n}].podCIDRs[{m}]").masked()
            for m, text in enumerate(item["podCIDRs"])
        ]
        node_ip = IP.parse(item["nodeIP"])
        peers.append(Peer(str(item.get("name") or node_ip), node_ip, cidrs, f"{path}[{n}]"))
    return peers


def load(source: PeerSource) -> list[Peer]:
    """The peer set: `peers`, or the list in `peersFile` (read now: it changes as nodes come
    and go). A missing file is 11 (try again later: the agent has not written it yet)."""
    if source.peers is not None:
        return source.peers
    problem = source_problem(source)
    if problem is not None:
        raise CniError(Code.TRY_AGAIN_LATER, problem)
    assert source.peers_file is not None
    from pycni.cni import jsonio

    try:
        with open(source.peers_file, "rb") as f:
            raw = jsonio.loads(f.read())
    except OSError as err:
        raise CniError(
            Code.TRY_AGAIN_LATER,
            f"failed to read peersFile '{source.peers_file}': {err.strerror}",
        ) from None
    except jsonio.JSONError as err:
        raise ConfigError(
            "$.peersFile", f"'{source.peers_file}' is not valid JSON: {err}"
        ) from None
    if not isinstance(raw, list):
        raise ConfigError("$.peersFile", f"'{source.peers_file}' must hold a JSON list of peers")
    return parse_peers(raw, "$.peersFile", source.check_peer)


def source_problem(source: PeerSource) -> str | None:
    """Why the peer set cannot be read now (for STATUS), or None."""
    if source.peers is not None:
        return None
    if source.peers_file is None:
        return "no peer source: the config has neither peers nor peersFile"
    import os

    if not os.path.exists(source.peers_file):
        return f"no peer source: peersFile '{source.peers_file}' does not exist (yet)"
    return None


def others(peers: list[Peer], local_ip: IP | None) -> list[Peer]:
    """The peers but this node (a shared list names it too)."""
    return [p for p in peers if p.node_ip != local_ip]


def check_overlaps(own: list[Prefix], peers: list[Peer]) -> None:
    """No peer's pod CIDR may overlap this node's (code 7, naming the peer's entry)."""
    for peer in peers:
        for m, cidr in enumerate(peer.pod_cidrs):
            for mine in own:
                if cidr.overlaps(mine):
                    raise ConfigError(
                        f"{peer.path}.podCIDRs[{m}]",
                        f"peer '{peer.name}' pod CIDR {cidr} overlaps this node's {mine}",
                    )


def pod_cidrs(ipam: object) -> list[Prefix]:
    """The node's pod CIDRs: host-local's range subnets (or its legacy `subnet`)."""
    out: list[Prefix] = []
    if isinstance(ipam, dict):
        for n, range_set in enumerate(_list(ipam.get("ranges"))):
            for m, item in enumerate(_list(range_set)):
                if isinstance(item, dict) and isinstance(item.get("subnet"), str):
                    out.append(parse_prefix(item["subnet"], f"$.ipam.ranges[{n}][{m}].subnet"))
        if not out and isinstance(ipam.get("subnet"), str):
            out.append(parse_prefix(ipam["subnet"], "$.ipam.subnet"))
    if not out:
        raise ConfigError("$.ipam.ranges", "must give the node's pod CIDR as a range's subnet")
    return [cidr.masked() for cidr in out]


def find_underlay(host: Rtnl, local_ip: IP | None) -> Underlay:
    """`local_ip` (the config's `localIP`) and the link that holds it; else the first global
    address on the interface of the default route (IPv4 first). Code 50 when there is none."""
    from pycni.netlink import kernel as k  # loaded already: `host` is an open Rtnl

    if local_ip is not None:
        for address in host.addresses(family=k.FAMILY_OF_VERSION[local_ip.version]):
            if address.prefix.ip == local_ip:
                return Underlay(local_ip, host.get_link(address.index), address.prefix)
        raise CniError(
            Code.NOT_AVAILABLE, f"no link on this node holds localIP {local_ip}", "$.localIP"
        )
    for version in (4, 6):
        family = k.FAMILY_OF_VERSION[version]
        for route in host.routes(family, dst_len=0):
            if route.oif is None:
                continue
            for address in host.addresses(route.oif, family):
                if address.prefix.version == version and address.scope == 0:
                    return Underlay(address.prefix.ip, host.get_link(route.oif), address.prefix)
    raise CniError(
        Code.NOT_AVAILABLE,
        "no underlay address: the node has no default route with an address on its interface",
        "set localIP, or give the node a default route",
    )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
