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

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.validators import portmap as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.cni.result import Result
    from pycni.cni.skel import Call
    from pycni.netlink.nftables import Element, Owner, Ruleset, Script, SetSpec

NAME = "pycni-portmap"
PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MASQ_BIT = 13  # the reference's (kube-proxy's is 14)
ANY_ADDRESS_MAP = "hostports"  # nf_proto . inet_proto . inet_service : verdict
HOST_IP_MAPS = {4: "hostports_ip4", 6: "hostports_ip6"}  # <addr> . inet_proto . inet_service
DNAT_CHAIN, OUTPUT_CHAIN, SNAT_CHAIN = "hostport_dnat", "hostport_output", "hostport_snat"
NAT_LAYOUT = "1"  # bump when the node-level chains change shape
LOCALHOST4 = "127.0.0.0/8"
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
# (pycni.netlink.nftables is imported by the verbs, after their "no mappings" return: the DEL of
# a pod without hostPorts, containerd's everyday DEL, loads no netlink code.)


def cmd_add(call: Call, conf: PortmapConf) -> Result:
    prev = _prev_result(call)
    if not conf.mappings:
        return prev
    pod_ips = _pod_ips(prev)
    if not pod_ips:
        raise ConfigError("$.prevResult.ips", "holds no address to forward the hostPorts to")
    from pycni.netlink import nftables

    chain = pod_chain(call)
    host_ports = _host_ports(conf.mappings, set(pod_ips), chain)
    script = _node_chains(conf.mark)
    script.add_chain(chain, comment=str(_owner(call))).flush_chain(chain)
    for rule in _rules(conf, pod_ips):
        script.add_rule(chain, rule)
    for port in host_ports:
        script.add_elements(port.map, [port.element])
    if conf.snat and 4 in pod_ips:
        _enable_route_localnet(pod_ips[4])

    def build() -> Script:
        dropped = script.copy()
        for spec, elements in _dropped(chain, host_ports).items():  # an ADD with fewer mappings
            dropped.remove_elements(spec, elements)
        return dropped

    def refuse_if_claimed() -> None:  # else a dropped element changed hands: build again
        _raise_if_claimed(chain, host_ports)

    nftables.commit(
        build, "forward the hostPorts", attempts=ADD_ATTEMPTS, on_conflict=refuse_if_claimed
    )
    _forget_udp_connections(conf.mappings, set(pod_ips))
    return prev


def cmd_del(call: Call, conf: PortmapConf) -> None:
    """Idempotent, and free when the pod has no hostPorts: not even nft is started."""
    if not conf.mappings:
        return
    from pycni.netlink import nftables

    chain = pod_chain(call)
    # every family: DEL may come without prevResult
    host_ports = _host_ports(conf.mappings, {4, 6}, chain)

    def build() -> Script:
        return _del_script(chain, host_ports)

    def leave_to_new_owners() -> None:  # someone else holds some of these keys now
        owners = _owners()
        host_ports[:] = [p for p in host_ports if owners.get(p.slot, chain) == chain]

    nftables.commit(
        build,
        f"remove the hostPorts of chain '{chain}'",
        attempts=DEL_ATTEMPTS,
        on_conflict=leave_to_new_owners,
    )


def cmd_check(call: Call, conf: PortmapConf) -> None:
    prev = _prev_result(call)
    if not conf.mappings:
        return
    from pycni.netlink import nftables

    pod_ips = _pod_ips(prev)
    chain = pod_chain(call)
    owners = _owners()
    for host_port in _host_ports(conf.mappings, set(pod_ips), chain):
        if owners.get(host_port.slot) != chain:
            key, name = host_port.map.key_text(host_port.element), host_port.map.name
            _drift(f"{host_port.mapping} is not forwarded to this pod (no '{key}' in map {name})")
    listing = nftables.list_chain(nftables.TABLE, chain, "check the hostPorts")
    if listing is None:
        _drift(f"chain '{chain}' of the pod's hostPorts is missing")
    rules = [f" {line.strip()} " for line in (listing or "").splitlines()]
    for mapping in conf.mappings:
        for version, ip in pod_ips.items():
            if mapping.host_ip is None or mapping.host_ip.version == version:
                target = _dnat_target(ip, mapping.container_port)
                port = f" {mapping.protocol} dport {mapping.host_port} "
                if not any(port in r and r.endswith(f" to {target} ") for r in rules):
                    _drift(f"{mapping} has no DNAT to {target} in chain '{chain}'")


def cmd_status(call: Call, conf: PortmapConf) -> None:
    from pycni.netlink import nftables

    if nftables.nft_path() is None:
        raise CniError(Code.NOT_AVAILABLE, "hostPorts need nftables: no nft on this node")


def cmd_gc(call: Call, conf: PortmapConf) -> None:
    """Remove the hostPorts of this network's attachments that are not in the valid list."""
    assert call.valid_attachments is not None
    from pycni.netlink import nftables

    valid = {(a.container_id, a.ifname) for a in call.valid_attachments}

    def build() -> Script:  # again if a port changed hands meanwhile
        with nftables.Ruleset() as ruleset:
            chains = ruleset.chains(nftables.TABLE)
            held = _held(ruleset)
        script = nftables.Script(nftables.TABLE)
        for chain in chains:
            owner = chain.owner
            if not chain.name.startswith("hp_") or owner is None or owner.network != call.name:
                continue
            if (owner.container_id, owner.ifname) in valid:
                continue
            jump = nftables.Verdict.jump(chain.name)
            script.add_chain(chain.name)
            for spec, elements in held.items():
                script.remove_elements(spec, [e for e in elements if e.data == jump])
            script.flush_chain(chain.name).delete_chain(chain.name)
        return script

    nftables.commit(build, "remove stale hostPorts", attempts=DEL_ATTEMPTS)


# --- the rules -------------------------------------------------------------------------------


def pod_chain(call: Call) -> str:
    """The pod's chain: derived from the attachment, so DEL finds it without state."""
    import _sha256

    owner = f"{call.name}/{call.container_id}/{call.ifname}"
    digest: str = _sha256.sha256(owner.encode()).hexdigest()
    return "hp_" + digest[:16]


def _owner(call: Call) -> Owner:
    from pycni.netlink import nftables

    return nftables.Owner(call.name, call.container_id, call.ifname)


class HostPort(Record):
    """One element of a hostPort map: `mapping`'s key (for one family, or its hostIP) in the map
    of its kind, jumping to the pod's chain."""

    __slots__ = ("element", "map", "mapping")
    map: SetSpec
    element: Element
    mapping: PortMapping

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    @property
    def slot(self) -> tuple[str, tuple[Any, ...]]:
        """Which map and key: what one pod at a time holds."""
        return self.map.name, self.element.key


def _maps() -> dict[int | None, SetSpec]:
    """The verdict maps the node's NAT chains look a connection up in: by family for any local
    address (None), by destination address for the hostIPs of each family (4, 6)."""
    from pycni.netlink import nftables as nft

    ports = (nft.INET_PROTO, nft.INET_SERVICE)
    return {
        None: nft.SetSpec(ANY_ADDRESS_MAP, (nft.NF_PROTO, *ports), nft.VERDICT),
        4: nft.SetSpec(HOST_IP_MAPS[4], (nft.IPV4_ADDR, *ports), nft.VERDICT),
        6: nft.SetSpec(HOST_IP_MAPS[6], (nft.IPV6_ADDR, *ports), nft.VERDICT),
    }


def _host_ports(mappings: list[PortMapping], families: set[int], chain: str) -> list[HostPort]:
    """The map elements of each mapping, for each family it applies to."""
    from pycni.netlink.nftables import Element, Verdict

    maps = _maps()
    jump = Verdict.jump(chain)
    out = []
    for mapping in mappings:
        ports = (mapping.protocol, mapping.host_port)
        if mapping.host_ip is not None:
            if mapping.host_ip.version in families:
                element = Element(mapping.host_ip, *ports, data=jump)
                out.append(
                    HostPort(map=maps[mapping.host_ip.version], element=element, mapping=mapping)
                )
            continue
        for version in sorted(families):
            element = Element(version, *ports, data=jump)
            out.append(HostPort(map=maps[None], element=element, mapping=mapping))
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


def _table_and_maps() -> Script:
    from pycni.netlink import nftables

    script = nftables.Script(nftables.TABLE).add_table()
    for spec in _maps().values():
        script.add_set(spec)
    return script


def _node_chains(mark: int) -> Script:
    """The table, the maps, and (unless their fingerprint is today's) the node's NAT chains:
    DNAT through the maps for local destinations, masquerade for marked connections."""
    from pycni.netlink import nftables

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
    fingerprint = nftables.fingerprint(f"{NAT_LAYOUT} {chains}")
    script = _table_and_maps()
    if nftables.chain_comment(nftables.TABLE, DNAT_CHAIN) == fingerprint:
        return script
    for name, (hook, rules) in chains.items():
        script.recreate_chain(name, hook=hook, comment=fingerprint)
        for rule in rules:
            script.add_rule(name, rule)
    return script


def _del_script(chain: str, host_ports: list[HostPort]) -> Script:
    """Add-then-delete, in one transaction: nothing to fail on when it is already gone, and a
    key that jumps to another chain by now fails it ("File exists")."""
    script = _table_and_maps().add_chain(chain)
    for spec in _maps().values():
        script.remove_elements(spec, [p.element for p in host_ports if p.map == spec])
    return script.flush_chain(chain).delete_chain(chain)


def _dropped(chain: str, host_ports: list[HostPort]) -> dict[SetSpec, list[Element]]:
    """The elements that jump to `chain` but are not among `host_ports`: what an earlier ADD of
    the same attachment added for mappings it no longer lists. The maps are read only when the
    chain exists: one nfnetlink query for the common, first ADD."""
    from pycni.netlink import nftables

    with nftables.Ruleset() as ruleset:
        if ruleset.chain(nftables.TABLE, chain) is None:
            return {}
        held = _held(ruleset)
    wanted = {p.slot for p in host_ports}
    jump = nftables.Verdict.jump(chain)
    return {
        spec: [e for e in elements if e.data == jump and (spec.name, e.key) not in wanted]
        for spec, elements in held.items()
    }


def _held(ruleset: Ruleset) -> dict[SetSpec, list[Element]]:
    """The elements of each hostPort map (none when there is no table)."""
    from pycni.netlink import nftables

    return {spec: ruleset.elements(nftables.TABLE, spec) or [] for spec in _maps().values()}


def _owners() -> dict[tuple[str, tuple[Any, ...]], str]:
    """(map, key) -> the chain its verdict jumps to, for the three hostPort maps."""
    from pycni.netlink import nftables

    with nftables.Ruleset() as ruleset:
        held = _held(ruleset)
    return {
        (spec.name, e.key): e.data.chain
        for spec, elements in held.items()
        for e in elements
        if e.data.chain is not None
    }


def _raise_if_claimed(chain: str, host_ports: list[HostPort]) -> None:
    """Error 102 naming the holder if another pod's chain holds one of `host_ports`."""
    from pycni.netlink import nftables

    owners = _owners()
    for port in host_ports:
        holder = owners.get(port.slot)
        if holder and holder != chain:
            with nftables.Ruleset() as ruleset:
                found = ruleset.chain(nftables.TABLE, holder)
            owner = None if found is None else found.owner
            who = (
                f"pod with container ID '{owner.container_id}' (interface '{owner.ifname}',"
                f" network '{owner.network}')"
                if owner is not None
                else f"chain '{holder}'"
            )
            raise CniError(
                Code.ADDRESS_IN_USE,
                f"failed to forward {port.mapping}: it is already claimed by the {who}",
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
        next(table, None)  # the header (a namespace without IPv4 routes has not even that)
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
