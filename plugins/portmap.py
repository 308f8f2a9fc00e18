"""pycni-portmap: hostPorts, chained after the main plugin, in nftables.

A pod's `portMappings` (the runtime's capability argument) become a chain of its own in pycni's
table `inet pycni`, `hp_<hash of network/containerID/ifname>`, holding one DNAT rule per
mapping and family (to the pod's first address of that family in prevResult), and one verdict
map element per hostPort, `ipv4 . tcp . 8080 : jump hp_...`, through which the node's NAT
chains reach it: connections to any local address of the node (prerouting: from outside and
from pods; output: from the node itself, localhost included) or, with `hostIP`, to that address
only. With `snat` (the default), connections from the node's localhost and from the pod itself
(hairpin) are marked and masqueraded on the way out, and the pod's route gets route_localnet.

Every change is one atomic `nft -f` transaction, and nothing in it names a rule handle:
- ADD fills the pod's chain (create, flush, rules) and adds its elements. The kernel refuses an
  element whose key another pod's chain holds, which makes a claimed hostPort an error that
  names its owner (the owner's chain comment says "<network> <containerID>/<ifname>"). When
  the chain exists already (an ADD repeated), the same transaction deletes the chain's
  elements that the mappings no longer list.
- DEL adds, then deletes, each of the pod's elements and its chain in one transaction: a no-op
  when they are already gone, so repeated or parallel DELs cannot fail on "not found"; a key
  another pod owns by now is left to it. A DEL without mappings does nothing at all.
- The node-level chains (prerouting/output DNAT, postrouting masquerade) are written only when
  the fingerprint in their comment, read over nfnetlink, is not today's.

The pod chains only DNAT and mark: this nft (1.0.6) fails with ENOENT on vmap elements that
jump to chains that masquerade, so the masquerade lives in the postrouting chain.
"""

from __future__ import annotations

from pycni.cni import spawn
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.datapath import masquerade
from pycni.validators import portmap as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.cni.result import Result
    from pycni.cni.skel import Call

NAME = "pycni-portmap"
TABLE = masquerade.TABLE
PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MASQ_BIT = 13  # the reference's (kube-proxy's is 14)
ANY_ADDRESS_MAP = "hostports"  # nf_proto . inet_proto . inet_service : verdict
HOST_IP_MAPS = {4: "hostports_ip4", 6: "hostports_ip6"}  # <addr> . inet_proto . inet_service
DNAT_CHAIN, OUTPUT_CHAIN, SNAT_CHAIN = "hostport_dnat", "hostport_output", "hostport_snat"
NAT_LAYOUT = "1"  # bump when the node-level chains change shape
LOCALHOST4 = "127.0.0.0/8"
NFT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
DEL_ATTEMPTS = 4  # a DEL retried after finding keys other pods now hold (bounded)
ADD_ATTEMPTS = 3  # an ADD retried when a key it drops changed hands meanwhile (bounded)
FAMILIES = {4: 2, 6: 10}  # AF_INET, AF_INET6 (the netlink package loads only where needed)
IPPROTO_UDP = 17
CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"  # this namespace's entries


class PortMapping(Record):
    __slots__ = ("container_port", "host_ip", "host_port", "protocol")
    host_port: int
    container_port: int
    protocol: str
    host_ip: IP | None

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    def __str__(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip is not None else ""
        return f"hostPort {where}{self.host_port}/{self.protocol}"


class PortmapConf(Record):
    __slots__ = ("mappings", "mark", "snat")
    mappings: list[PortMapping]
    snat: bool
    mark: int

    def __init__(self, **fields: object) -> None:
        self._init(**fields)


def parse_config(call: Call) -> PortmapConf:
    schema.validate(call.config)
    c = call.config
    if "externalSetMarkChain" in c:
        raise ConfigError(
            "$.externalSetMarkChain",
            "names an iptables chain; pycni-portmap works in nftables and marks packets itself"
            " (remove the key; markMasqBit chooses the mark)",
        )
    for key in ("conditionsV4", "conditionsV6"):
        if c.get(key):
            raise ConfigError(
                f"$.{key}", "holds iptables matches, which mean nothing to nftables: remove them"
            )
    bit = c.get("markMasqBit")
    return PortmapConf(
        mappings=_mappings(call.runtime_config.get("portMappings")),
        snat=c.get("snat") is not False,
        mark=1 << (bit if isinstance(bit, int) else DEFAULT_MASQ_BIT),
    )


def _mappings(raw: Any) -> list[PortMapping]:
    out: list[PortMapping] = []
    for n, item in enumerate(raw if isinstance(raw, list) else []):
        path = f"$.runtimeConfig.portMappings[{n}]"
        protocol = str(item.get("protocol") or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{path}.protocol", f"'{protocol}' is not one of tcp, udp, sctp")
        host_ip = None
        if item.get("hostIP") not in (None, "", "0.0.0.0", "::"):  # kubelet's "any"
            try:
                host_ip = IP.parse(item["hostIP"])
            except ValueError:
                raise ConfigError(
                    f"{path}.hostIP", f"'{item['hostIP']}' is not an IP address"
                ) from None
        mapping = PortMapping(
            host_port=item["hostPort"],
            container_port=item["containerPort"],
            protocol=protocol,
            host_ip=host_ip,
        )
        if mapping not in out:
            out.append(mapping)
    return out


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: PortmapConf) -> Result:
    prev = _prev_result(call)
    if not conf.mappings:
        return prev
    pod_ips = _pod_ips(prev)
    if not pod_ips:
        raise ConfigError("$.prevResult.ips", "holds no address to forward the hostPorts to")
    chain = pod_chain(call)
    keys = _keys(conf.mappings, set(pod_ips))
    script = [
        *_node_chains(conf.mark),
        f'add chain inet {TABLE} {chain} {{ comment "{_owner_comment(call)}"; }}\n',
        f"flush chain inet {TABLE} {chain}\n",
        *(f"add rule inet {TABLE} {chain} {rule}\n" for rule in _rules(conf, pod_ips)),
        *(f"add element inet {TABLE} {m} {{ {k} : jump {chain} }}\n" for m, k, _ in keys),
    ]
    if conf.snat and 4 in pod_ips:
        _enable_route_localnet(pod_ips[4])
    message = ""
    for _attempt in range(ADD_ATTEMPTS):
        dropped = _dropped_keys(chain, keys)  # a repeated ADD with fewer mappings
        status, message = _nft("".join(script) + _delete_elements_script(chain, dropped))
        if status == 0:
            _forget_udp_connections(conf.mappings, set(pod_ips))
            return prev
        if "File exists" not in message:
            break
        _raise_if_claimed(call, chain, keys)  # else a dropped key changed hands: again
    raise CniError(Code.KERNEL, f"failed to forward the hostPorts: nft: {message}")


def cmd_del(call: Call, conf: PortmapConf) -> None:
    """Idempotent, and free when the pod has no hostPorts: not even nft is started."""
    if not conf.mappings:
        return
    chain = pod_chain(call)
    keys = _keys(conf.mappings, {4, 6})  # every family: DEL may come without prevResult
    for _attempt in range(DEL_ATTEMPTS):
        status, message = _nft(_del_script(chain, keys))
        if status == 0:
            return
        if "File exists" not in message:
            break
        owners = _map_owners()  # someone else holds some of these keys now: leave them
        keys = [(m, k, mp) for m, k, mp in keys if owners.get((m, k), chain) == chain]
    raise CniError(
        Code.KERNEL, f"failed to remove the hostPorts of chain '{chain}': nft: {message}"
    )


def cmd_check(call: Call, conf: PortmapConf) -> None:
    prev = _prev_result(call)
    if not conf.mappings:
        return
    pod_ips = _pod_ips(prev)
    chain = pod_chain(call)
    owners = _map_owners()
    for map_name, key, mapping in _keys(conf.mappings, set(pod_ips)):
        if owners.get((map_name, key)) != chain:
            _drift(f"{mapping} is not forwarded to this pod (no '{key}' in map {map_name})")
    status, listing = _nft_output(["list", "chain", "inet", TABLE, chain])
    if status != 0:
        _drift(f"chain '{chain}' of the pod's hostPorts is missing")
    rules = [f" {line.strip()} " for line in listing.splitlines()]
    for mapping in conf.mappings:
        for version, ip in pod_ips.items():
            if mapping.host_ip is None or mapping.host_ip.version == version:
                target = _dnat_target(ip, mapping.container_port)
                port = f" {mapping.protocol} dport {mapping.host_port} "
                if not any(port in r and r.endswith(f" to {target} ") for r in rules):
                    _drift(f"{mapping} has no DNAT to {target} in chain '{chain}'")


def cmd_status(call: Call, conf: PortmapConf) -> None:
    if masquerade.nft_path() is None:
        raise CniError(Code.NOT_AVAILABLE, "hostPorts need nftables: no nft on this node")


def cmd_gc(call: Call, conf: PortmapConf) -> None:
    """Remove the hostPorts of this network's attachments that are not in the valid list."""
    assert call.valid_attachments is not None
    valid = {(a.container_id, a.ifname) for a in call.valid_attachments}
    message = ""
    for _attempt in range(DEL_ATTEMPTS):  # again if a port changed hands meanwhile
        listing = _table_listing()
        owners = _map_owners(listing)
        script = []
        for item in listing:
            chain = str(item.get("chain", {}).get("name", ""))
            if not chain.startswith("hp_"):
                continue
            network, _, attachment = (masquerade.chain_comment(chain) or "").partition(" ")
            container_id, _, ifname = attachment.rpartition("/")
            if network != call.name or (container_id, ifname) in valid:
                continue
            held = [(m, k) for (m, k), owner in owners.items() if owner == chain]
            script += [f"add chain inet {TABLE} {chain}\n"]
            script += [f"add element inet {TABLE} {m} {{ {k} : jump {chain} }}\n" for m, k in held]
            script += [f"delete element inet {TABLE} {m} {{ {k} }}\n" for m, k in held]
            script += [
                f"flush chain inet {TABLE} {chain}\n",
                f"delete chain inet {TABLE} {chain}\n",
            ]
        if not script:
            return
        status, message = _nft("".join(script))
        if status == 0:
            return
        if "File exists" not in message:
            break
    raise CniError(Code.KERNEL, f"failed to remove stale hostPorts: nft: {message}")


# --- the rules -------------------------------------------------------------------------------


def pod_chain(call: Call) -> str:
    """The pod's chain: derived from the attachment, so DEL finds it without state."""
    import _sha256

    owner = f"{call.name}/{call.container_id}/{call.ifname}"
    digest: str = _sha256.sha256(owner.encode()).hexdigest()
    return "hp_" + digest[:16]


def _owner_comment(call: Call) -> str:
    return f"{call.name} {call.container_id}/{call.ifname}"


def _keys(mappings: list[PortMapping], families: set[int]) -> list[tuple[str, str, PortMapping]]:
    """(map, element key, mapping) for each mapping and family it applies to."""
    out = []
    for mapping in mappings:
        if mapping.host_ip is not None:
            if mapping.host_ip.version in families:
                key = f"{mapping.host_ip} . {mapping.protocol} . {mapping.host_port}"
                out.append((HOST_IP_MAPS[mapping.host_ip.version], key, mapping))
            continue
        for version in sorted(families):
            key = f"ipv{version} . {mapping.protocol} . {mapping.host_port}"
            out.append((ANY_ADDRESS_MAP, key, mapping))
    return out


def _forget_udp_connections(mappings: list[PortMapping], families: set[int]) -> None:
    """Delete the conntrack entries of UDP datagrams sent to these hostPorts before the DNAT
    existed: they would keep steering a client that never stops sending away from the pod
    (pycni.netlink.conntrack says why). As in the reference portmap, after the rules are in
    place, and a failure does not fail the ADD: the hostPorts work for every new client."""
    ports = {m.host_port for m in mappings if m.protocol == "udp"}
    if not ports or not _tracks_connections():
        return
    from pycni.netlink import NetlinkError
    from pycni.netlink.conntrack import Conntrack

    try:
        with Conntrack() as table:
            table.delete_to_ports(IPPROTO_UDP, ports, [FAMILIES[v] for v in families])
    except (NetlinkError, OSError):  # no ctnetlink in this kernel, or not allowed
        pass


def _tracks_connections() -> bool:
    """Whether this namespace's conntrack table holds anything: listing it makes the kernel
    walk its whole hash table (shared by all namespaces; ~4 ms at 262144 buckets) even when
    this namespace has no entry, which a per-namespace count tells for the price of a read."""
    try:
        with open(CONNTRACK_COUNT, "rb") as f:
            return int(f.read() or b"0") > 0
    except (OSError, ValueError):  # no conntrack loaded: nothing tracked
        return False


def _rules(conf: PortmapConf, pod_ips: dict[int, IP]) -> list[str]:
    rules = []
    for mapping in conf.mappings:
        for version, ip in sorted(pod_ips.items()):
            if mapping.host_ip is not None and mapping.host_ip.version != version:
                continue
            family = "ip" if version == 4 else "ip6"
            match = f"meta nfproto ipv{version} {mapping.protocol} dport {mapping.host_port}"
            if mapping.host_ip is not None:
                match += f" {family} daddr {mapping.host_ip}"
            if conf.snat:  # hairpin, and the node's localhost (IPv4 only, as the kernel allows)
                sources = [str(ip), *([LOCALHOST4] if version == 4 else [])]
                rules.append(
                    f"{match} {family} saddr {{ {', '.join(sources)} }}"
                    f" meta mark set meta mark | {conf.mark:#x}"
                )
            rules.append(f"{match} dnat {family} to {_dnat_target(ip, mapping.container_port)}")
    return rules


def _dnat_target(ip: IP, port: int) -> str:
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def _table_and_maps() -> list[str]:
    return [
        f"add table inet {TABLE}\n",
        f"add map inet {TABLE} {ANY_ADDRESS_MAP}"
        " { type nf_proto . inet_proto . inet_service : verdict; }\n",
        f"add map inet {TABLE} {HOST_IP_MAPS[4]}"
        " { type ipv4_addr . inet_proto . inet_service : verdict; }\n",
        f"add map inet {TABLE} {HOST_IP_MAPS[6]}"
        " { type ipv6_addr . inet_proto . inet_service : verdict; }\n",
    ]


def _node_chains(mark: int) -> list[str]:
    """The table, the maps, and (unless their fingerprint is today's) the node's NAT chains:
    DNAT through the maps for local destinations, masquerade for marked connections."""
    maps = _table_and_maps()
    local = "fib daddr type local"  # as the reference's addrtype LOCAL: never forwarded traffic
    dispatch = [
        f"{local} ip daddr . meta l4proto . th dport vmap @{HOST_IP_MAPS[4]}",
        f"{local} ip6 daddr . meta l4proto . th dport vmap @{HOST_IP_MAPS[6]}",
        f"{local} meta nfproto . meta l4proto . th dport vmap @{ANY_ADDRESS_MAP}",
    ]
    chains = {
        DNAT_CHAIN: ("type nat hook prerouting priority dstnat", dispatch),
        OUTPUT_CHAIN: ("type nat hook output priority -100", dispatch),
        SNAT_CHAIN: (
            "type nat hook postrouting priority srcnat",
            [f"meta mark & {mark:#x} == {mark:#x} masquerade"],
        ),
    }
    import _sha256

    layout = f"{NAT_LAYOUT} {chains}".encode()
    fingerprint: str = _sha256.sha256(layout).hexdigest()[:16]
    if masquerade.chain_comment(DNAT_CHAIN) == fingerprint:
        return maps
    script = maps
    for name, (hook, rules) in chains.items():
        script += [
            f"add chain inet {TABLE} {name}\n",
            f"flush chain inet {TABLE} {name}\n",
            f"delete chain inet {TABLE} {name}\n",
            f"add chain inet {TABLE} {name}"
            f' {{ {hook}; policy accept; comment "{fingerprint}"; }}\n',
            *(f"add rule inet {TABLE} {name} {rule}\n" for rule in rules),
        ]
    return script


def _del_script(chain: str, keys: list[tuple[str, str, PortMapping]]) -> str:
    """Add-then-delete, in one transaction: nothing to fail on when it is already gone."""
    return "".join(
        [
            *_table_and_maps(),
            f"add chain inet {TABLE} {chain}\n",
            _delete_elements_script(chain, [(m, k) for m, k, _ in keys]),
            f"flush chain inet {TABLE} {chain}\n",
            f"delete chain inet {TABLE} {chain}\n",
        ]
    )


def _delete_elements_script(chain: str, keys: list[tuple[str, str]]) -> str:
    """Delete these elements of `chain`'s; gone already is a no-op (each is added first), and
    one that jumps to another chain by now fails the transaction ("File exists")."""
    return "".join(
        [
            *(f"add element inet {TABLE} {m} {{ {k} : jump {chain} }}\n" for m, k in keys),
            *(f"delete element inet {TABLE} {m} {{ {k} }}\n" for m, k in keys),
        ]
    )


def _dropped_keys(chain: str, keys: list[tuple[str, str, PortMapping]]) -> list[tuple[str, str]]:
    """The elements that jump to `chain` but are not among `keys`: what an earlier ADD of the
    same attachment added for mappings it no longer lists. The listing (an `nft` run) happens
    only when the chain exists: one nfnetlink query for the common, first ADD."""
    if masquerade.chain_comment(chain) is None:
        return []
    wanted = {(m, k) for m, k, _ in keys}
    return sorted(
        key for key, owner in _map_owners().items() if owner == chain and key not in wanted
    )


# --- nft -------------------------------------------------------------------------------------


def _nft(script: str) -> tuple[int, str]:
    nft = _nft_binary()
    status, out = spawn.run([nft, "-f", "-"], NFT_ENV, script.encode(), stderr_to_stdout=True)
    return status, out.decode(errors="replace").strip()


def _nft_output(args: list[str]) -> tuple[int, str]:
    status, out = spawn.run([_nft_binary(), *args], NFT_ENV, b"", stderr_to_stdout=True)
    return status, out.decode(errors="replace")


def _nft_binary() -> str:
    nft = masquerade.nft_path()
    if nft is None:
        raise CniError(
            Code.KERNEL,
            "failed to forward the hostPorts: nft (nftables) is not installed in"
            f" {', '.join(masquerade.NFT_CANDIDATES)}",
        )
    return nft


def _table_listing() -> list[dict[str, Any]]:
    """`nft -j list table inet pycni`: its items (none when there is no table)."""
    from pycni.cni import jsonio

    status, listing = _nft_output(["-j", "list", "table", "inet", TABLE])
    if status != 0:
        return []
    decoded: Any = jsonio.loads(listing)
    return list(decoded.get("nftables", []))


def _map_owners(listing: list[dict[str, Any]] | None = None) -> dict[tuple[str, str], str]:
    """(map, element key) -> the chain its verdict jumps to, for the three hostPort maps."""
    owners: dict[tuple[str, str], str] = {}
    maps = (ANY_ADDRESS_MAP, *HOST_IP_MAPS.values())
    for item in _table_listing() if listing is None else listing:
        found = item.get("map", {})
        if found.get("name") not in maps:
            continue
        for key, verdict in found.get("elem", []):
            parts = key["concat"] if isinstance(key, dict) else [key]
            target = verdict.get("jump", {}).get("target", "")
            owners[(found["name"], " . ".join(str(p) for p in parts))] = target
    return owners


def _raise_if_claimed(call: Call, chain: str, keys: list[tuple[str, str, PortMapping]]) -> None:
    """Error 102 naming the holder if another pod's chain holds one of `keys`."""
    owners = _map_owners()
    for map_name, key, mapping in keys:
        owner = owners.get((map_name, key))
        if owner and owner != chain:
            network, _, attachment = (masquerade.chain_comment(owner) or "").partition(" ")
            container_id, _, ifname = attachment.rpartition("/")
            who = (
                f"pod with container ID '{container_id}' (interface '{ifname}', network"
                f" '{network}')"
                if container_id
                else f"chain '{owner}'"
            )
            raise CniError(
                Code.ADDRESS_IN_USE,
                f"failed to forward {mapping}: it is already claimed by the {who}",
                "a hostPort serves one pod per node and protocol",
            )


# --- internals -------------------------------------------------------------------------------


def _prev_result(call: Call) -> Result:
    if call.prev_result is None:
        raise ConfigError(
            "$.prevResult", f"is required: {NAME} is chained after the plugin that adds the pod"
        )
    return call.prev_result


def _pod_ips(prev: Result) -> dict[int, IP]:
    """The first address of each family on a pod interface (one with a sandbox) of prevResult,
    or on any interface when prevResult names none."""
    sandboxed = {n for n, i in enumerate(prev.interfaces) if i.sandbox}
    out: dict[int, IP] = {}
    for ip in prev.ips:
        if sandboxed and ip.interface is not None and ip.interface not in sandboxed:
            continue
        out.setdefault(ip.address.version, ip.address.ip)
    return out


def _enable_route_localnet(pod_ip: IP) -> None:
    """Packets from 127.0.0.0/8 may leave through the interface that leads to the pod only with
    route_localnet on it (after the masquerade they carry the node's address). The interface:
    the longest match in the main table, from /proc/net/route (no netlink code to load)."""
    from pycni.datapath import node

    best: tuple[int, str] | None = None
    with open("/proc/net/route", "rb") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            # Destination and Mask: hex, in the kernel's (little-endian) byte order
            dst = int.from_bytes(bytes.fromhex(fields[1].decode()), "little")
            mask = int.from_bytes(bytes.fromhex(fields[7].decode()), "little")
            if pod_ip.value & mask == dst and (best is None or mask > best[0]):
                best = (mask, fields[0].decode())
    if best is not None:
        node.ensure_sysctl(f"net/ipv4/conf/{best[1]}/route_localnet", "1")


def _drift(what: str) -> None:
    raise CniError(Code.CHECK_FAILED, f"check failed: {what}")
