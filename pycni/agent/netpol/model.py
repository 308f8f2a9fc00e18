"""The policy model: from the cluster's NetworkPolicies, Pods and Namespaces to the ruleset one
node needs (no I/O). pycni.agent.netpol.program writes it to the kernel.

What a node holds (table `inet pycni-policy`, names in pycni.datapath.policy_names):

- verdict maps from each *local* pod's address to its chains, for pods in namespaces that have
  policies: `ingress4/6` (destination address -> `pod_<h>_in`), `egress4/6` (source address ->
  `pod_<h>_eg`). Pods of other namespaces are in no map: nothing can select them;
- a pod's chain: a jump to the chain of every policy that selects it for that direction, then
  the rules of those policies that use named ports (resolved against this pod's own container
  ports: a named port belongs to the destination), then `drop`. A pod no policy isolates in a
  direction has a chain that only accepts;
- a policy's chain `pol_<h>_in` / `pol_<h>_eg` (only for policies that select a local pod): one
  `accept` rule per (rule, peer, port); peers are sets of pod addresses, cidrs minus excepts
  written into the rule, or nothing (every peer); ports a protocol with a port or range.
  The kernel never holds these: `inline` writes their rules into the pods' chains (no jump on
  a new connection's path, each accept once, IPv4's rules before IPv6's); the model keeps
  them apart because a policy is the unit the agent reports on (a rule the kernel refuses is
  checked policy by policy);
- sets `sel4_<h>` / `sel6_<h>`: the addresses of the pods one peer names (cluster-wide: peers
  live on every node), shared by every policy naming the same peer; `np4_<h>` / `np6_<h>`:
  (address, protocol, port) of the pods a peer names that have a named port, for egress rules
  with named ports (resolved per destination pod, never as a union over sources).

The last rule of every chain carries the comment "<owner> <fingerprint>" (a chain's own comment
cannot be changed once it exists): the agent reads it back after a restart and rewrites only
the chains whose fingerprint is not today's.

`Engine` keeps the cluster's objects and what they select, incrementally: an event costs the
work of what it changes (a pod is tested against the peers in use; a set is rebuilt only when
one of its pods changed), so a change under 200 policies costs no more than under 2.
`allowed` answers the semantics directly from the objects (no ruleset), for the tests.

Long-lived path (the agent), never a plugin's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pycni.agent.netpol.objects import (
    IpBlock,
    NamespaceInfo,
    Peer,
    PodInfo,
    Policy,
    PortSpec,
    Selector,
    labels,
)
from pycni.datapath.policy_names import MAPS, digest, pod_chain

ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
ANY_PEER = "any"  # the named-port set of every pod: a named port with no peer, or an ipBlock


# --- the ruleset, as data ------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """One accept rule. `direction` "in" tests the packet's source (the peer sends to the
    selected pod), "eg" its destination. Parts left None are not tested."""

    direction: str
    version: int | None = None
    peer_set: str | None = None  # sel4_... / sel6_...
    block: IpBlock | None = None
    protocol: str | None = None
    ports: tuple[int, int] | None = None
    named_set: str | None = None  # np4_...: destination address . protocol . port

    def text(self) -> str:
        family = "ip" if self.version == 4 else "ip6"
        peer = "saddr" if self.direction == "in" else "daddr"
        parts = []
        if self.peer_set is not None:
            parts.append(f"{family} {peer} @{self.peer_set}")
        if self.block is not None:
            parts.append(f"{family} {peer} {self.block.cidr}")
            if self.block.excepts:
                excepts = ", ".join(str(e) for e in self.block.excepts)
                parts.append(f"{family} {peer} != {{ {excepts} }}")
        if self.named_set is not None:
            parts.append(f"{family} daddr . meta l4proto . th dport @{self.named_set}")
        elif self.protocol is not None:
            parts.append(f"meta l4proto {self.protocol}")
            if self.ports is not None:
                low, high = self.ports
                parts.append(f"th dport {low}" if low == high else f"th dport {low}-{high}")
        parts.append("accept")
        return " ".join(parts)


@dataclass(frozen=True)
class Jump:
    chain: str

    def text(self) -> str:
        return f"jump {self.chain}"


@dataclass(frozen=True)
class FamilyVerdict:
    """`verdict` for every packet of one address family: in an inlined chain, where the rules
    of the other family follow (an IPv4 packet never walks the IPv6 rules)."""

    version: int
    verdict: str

    def text(self) -> str:
        return f"meta nfproto ipv{self.version} {self.verdict}"


Statement = Accept | Jump | FamilyVerdict


@dataclass(frozen=True)
class ChainDef:
    """A regular chain: its statements, then `verdict` ("drop", "accept" or "return") with the
    comment "<owner> <fingerprint>"."""

    name: str
    owner: str  # "pod ns/name in" or "policy ns/name eg", for a person reading `nft list`
    statements: tuple[Statement, ...]
    verdict: str

    @cached_property
    def fingerprint(self) -> str:
        body = "\n".join([*(s.text() for s in self.statements), self.verdict])
        return digest(body, 16)

    @cached_property
    def set_names(self) -> tuple[str, ...]:
        """The sets its rules name."""
        names: list[str] = []
        for s in self.statements:
            if isinstance(s, Accept):
                names += [n for n in (s.peer_set, s.named_set) if n is not None]
        return tuple(dict.fromkeys(names))

    @cached_property
    def comment(self) -> str:
        """At most 128 characters (nft's limit): the owner is cut short when it must be."""
        return f"{self.owner[: 128 - 17]} {self.fingerprint}"

    def rules(self) -> list[str]:
        """The rules as nft takes them, the last one carrying the comment."""
        return [*(s.text() for s in self.statements), f'{self.verdict} comment "{self.comment}"']

    def references(self) -> set[str]:
        """The chains and sets its rules name."""
        names = set()
        for s in self.statements:
            if isinstance(s, Jump):
                names.add(s.chain)
            elif isinstance(s, Accept):
                names |= {n for n in (s.peer_set, s.named_set) if n is not None}
        return names


@dataclass(frozen=True)
class SetDef:
    """A named set: its key's datatypes as nft spells them."""

    name: str
    key: tuple[str, ...]


Element = tuple[str | int, ...]


@dataclass
class Desired:
    """What the node's table should hold."""

    sets: dict[str, SetDef] = field(default_factory=dict)
    elements: dict[str, frozenset[Element]] = field(default_factory=dict)
    chains: dict[str, ChainDef] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)  # map -> address -> chain
    dirty_sets: set[str] = field(default_factory=set)  # whose elements changed since last time


def inline(chain: ChainDef, chains: Mapping[str, ChainDef]) -> ChainDef:
    """`chain` as the kernel holds it: each jump replaced by the accept rules of the chain it
    jumps to (a policy's chain, which ends in `return`), every accept once, the rules that test
    no address family first, then IPv4's, then -- behind a rule that ends IPv4 packets with the
    chain's verdict -- IPv6's.

    The same verdicts for every packet: a chain of accepts followed by one verdict accepts
    what any of its accepts matches, in whatever order they come. A new connection to a pod
    then walks one rule per distinct (peer, port) of its policies and address family, with no
    jump and no return, instead of a jump, a return and both families' rules per policy."""
    if not any(isinstance(s, Jump) for s in chain.statements):
        return chain
    accepts: list[Accept] = []
    for s in chain.statements:
        if isinstance(s, Accept):
            accepts.append(s)
            continue
        if not isinstance(s, Jump):
            raise ValueError(f"chain {chain.name}: cannot inline {s.text()!r}")
        target = chains[s.chain]
        if target.verdict != "return" or not all(isinstance(t, Accept) for t in target.statements):
            raise ValueError(f"chain {chain.name}: {s.chain} is not a chain of accepts to inline")
        accepts += [t for t in target.statements if isinstance(t, Accept)]
    unique = list(dict.fromkeys(accepts))
    statements: list[Statement] = [a for a in unique if a.version is None]
    statements += [a for a in unique if a.version == 4]
    six = [a for a in unique if a.version == 6]
    if six:
        statements += [FamilyVerdict(4, chain.verdict), *six]
    return ChainDef(chain.name, chain.owner, tuple(statements), chain.verdict)


def policy_chain(policy_key: str, direction: str) -> str:
    return f"pol_{digest(policy_key)}_{direction}"


def selector_set(peer_key: str, version: int) -> str:
    return f"sel{version}_{digest(peer_key)}"


def named_set(peer_key: str, port_name: str, protocol: str, version: int) -> str:
    return f"np{version}_{digest(f'{peer_key} {port_name}/{protocol}')}"


def map_name(direction: str, version: int) -> str:
    return MAPS[(direction, version)]


# --- what one peer selects -------------------------------------------------------------------


@dataclass
class _PeerIndex:
    """The pods a peer key names, kept up to date."""

    namespace: str | None  # a podSelector-only peer: the policy's namespace
    namespaces: Selector | None
    pods: Selector
    members: set[str] = field(default_factory=set)
    users: int = 0

    def matches(self, pod: PodInfo, ns_labels: Mapping[str, str]) -> bool:
        if not pod.addressable:
            return False
        if self.namespace is not None:
            if pod.namespace != self.namespace:
                return False
        elif self.namespaces is None or not self.namespaces.matches(ns_labels):
            return False
        return self.pods.matches(pod.labels)


class Engine:
    """The cluster's objects as far as this node's policy needs them, and the ruleset they
    make. Feed it with the upsert/delete calls; `render()` returns the Desired ruleset (chains
    rebuilt each time: they are few, this node's; sets rebuilt only when dirty)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.pods: dict[str, PodInfo] = {}
        self.namespaces: dict[str, NamespaceInfo] = {}
        self.policies: dict[str, Policy] = {}
        self.quarantined: dict[str, str] = {}  # policy key -> why it allows nothing
        self._by_namespace: dict[str, set[str]] = {}  # namespace -> pod keys
        self._policies_in: dict[str, set[str]] = {}  # namespace -> policy keys
        self._peers: dict[str, _PeerIndex] = {}
        self._ns_peers: dict[str, set[str]] = {}  # namespace -> its podSelector-only peers
        self._any_ns_peers: set[str] = set()  # peers with a namespaceSelector
        self._named: dict[str, tuple[str, str, str, int]] = {}  # set -> peer key, name, proto, v
        self._selector_sets: dict[str, str] = {}  # set -> peer key
        self._local: set[str] = set()  # keys of the pods on this node
        self._dirty_peers: set[str] = set()
        self._relevant: dict[str, Policy] = {}  # the policies whose peers are indexed
        # chains built before, reused while what they were built from is the same objects
        self._chains: dict[tuple[str, str], tuple[tuple[object, ...], ChainDef, list[Any]]] = {}
        self._used: dict[tuple[str, str], tuple[tuple[object, ...], ChainDef, list[Any]]] = {}
        self._registered: list[Any] | None = None
        self.desired = Desired()

    # --- events ---------------------------------------------------------------------------

    def upsert_pod(self, pod: PodInfo) -> None:
        old = self.pods.get(pod.key)
        if old == pod:
            return
        self.pods[pod.key] = pod
        self._by_namespace.setdefault(pod.namespace, set()).add(pod.key)
        if pod.node == self.node:
            self._local.add(pod.key)
        else:
            self._local.discard(pod.key)
        ns_labels = self._ns_labels(pod.namespace)
        ips_changed = old is None or old.ips != pod.ips or old.ports != pod.ports
        for peer_key, index in self._candidates(pod.namespace):
            member = index.matches(pod, ns_labels)
            was = pod.key in index.members
            if member != was:
                (index.members.add if member else index.members.discard)(pod.key)
                self._dirty_peers.add(peer_key)
            elif member and ips_changed:
                self._dirty_peers.add(peer_key)
        named_changed = ips_changed or old is None or old.addressable != pod.addressable
        if named_changed and (pod.ports or (old is not None and old.ports)):
            self._dirty_peers.add(ANY_PEER)

    def delete_pod(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        self._by_namespace.get(pod.namespace, set()).discard(key)
        self._local.discard(key)
        for peer_key, index in self._candidates(pod.namespace):
            if key in index.members:
                index.members.discard(key)
                self._dirty_peers.add(peer_key)
        if pod.ports:
            self._dirty_peers.add(ANY_PEER)

    def upsert_namespace(self, namespace: NamespaceInfo) -> None:
        old = self.namespaces.get(namespace.name)
        self.namespaces[namespace.name] = namespace
        if old is not None and old.labels == namespace.labels:
            return
        self._reindex_namespace(namespace.name)

    def delete_namespace(self, name: str) -> None:
        if self.namespaces.pop(name, None) is not None:
            self._reindex_namespace(name)

    def upsert_policy(self, policy: Policy) -> None:
        self.policies[policy.key] = policy
        self._policies_in.setdefault(policy.namespace, set()).add(policy.key)

    def delete_policy(self, key: str) -> None:
        policy = self.policies.pop(key, None)
        if policy is not None:
            self._policies_in.get(policy.namespace, set()).discard(key)
        self.quarantined.pop(key, None)

    def quarantine(self, key: str, why: str) -> None:
        """The policy allows nothing (it still isolates what it selects): for a policy the
        kernel refused."""
        self.quarantined[key] = why

    # --- queries ---------------------------------------------------------------------------

    def policy_namespaces(self) -> set[str]:
        """Namespaces that have at least one policy: their new pods are gated at ADD."""
        return {ns for ns, keys in self._policies_in.items() if keys}

    def local_targets(self) -> list[PodInfo]:
        """This node's pods that policies may select: in a namespace with policies, on the pod
        network, not ended."""
        gated = self.policy_namespaces()
        pods = (self.pods[key] for key in sorted(self._local))
        return [p for p in pods if p.addressable and p.namespace in gated]

    def selecting(self, pod: PodInfo, direction: str) -> list[Policy]:
        """The policies that select `pod` and isolate it in `direction`, by name."""
        found = []
        for key in sorted(self._policies_in.get(pod.namespace, ())):
            policy = self.policies[key]
            rules = policy.ingress if direction == "in" else policy.egress
            if rules is not None and policy.selects(pod):
                found.append(policy)
        return found

    # --- the ruleset --------------------------------------------------------------------

    def render(self) -> Desired:
        self._used = {}
        chains: dict[str, ChainDef] = {}
        maps: dict[str, dict[str, str]] = {name: {} for name in MAPS.values()}
        relevant: set[str] = set()
        for pod in self.local_targets():
            for direction in ("in", "eg"):
                policies = self.selecting(pod, direction)
                relevant |= {p.key for p in policies}
                chain = self._pod_chain(pod, direction, policies)
                chains[chain.name] = chain
                for ip in pod.ips:
                    version = ipaddress.ip_address(ip).version
                    maps[map_name(direction, version)][ip] = chain.name
        self._index(relevant)
        sets: dict[str, SetDef] = {}
        for key in sorted(relevant):
            policy = self.policies[key]
            for direction in ("in", "eg"):
                rules = policy.ingress if direction == "in" else policy.egress
                if rules is None:
                    continue
                chain = self._policy_chain(policy, direction)
                chains[chain.name] = chain
        for chain in chains.values():
            for name in chain.set_names:
                if name not in sets:
                    sets[name] = self._set_def(name)
        self._chains = self._used  # what this render did not use is forgotten
        desired = self.desired
        elements = {}
        dirty = set()
        touched = self._touched_sets()
        for name in sets:
            if name in desired.elements and name not in touched:
                elements[name] = desired.elements[name]
            else:
                elements[name] = self._elements(name)
                dirty.add(name)
        self._dirty_peers.clear()
        self._named = {n: v for n, v in self._named.items() if n in sets}
        self._selector_sets = {n: v for n, v in self._selector_sets.items() if n in sets}
        self.desired = Desired(sets, elements, chains, maps, dirty)
        return self.desired

    def _cached(
        self, key: tuple[str, str], made_of: tuple[object, ...], build: Callable[[], ChainDef]
    ) -> ChainDef:
        """The chain built from `made_of` (objects compared by identity), built again only
        when one of them changed; the sets it registered are registered again."""
        hit = self._chains.get(key)
        if (
            hit is not None
            and len(hit[0]) == len(made_of)
            and all(a is b for a, b in zip(hit[0], made_of, strict=True))
        ):
            for table, name, value in hit[2]:
                getattr(self, table)[name] = value
            self._used[key] = hit
            return hit[1]
        self._registered = []
        try:
            chain = build()
            self._used[key] = (made_of, chain, self._registered)
        finally:
            self._registered = None
        return chain

    def _pod_chain(self, pod: PodInfo, direction: str, policies: list[Policy]) -> ChainDef:
        quarantined = [p.key in self.quarantined for p in policies]  # bools: singletons
        made_of = (pod, *policies, *quarantined)
        return self._cached(
            (pod.key, direction), made_of, lambda: self._build_pod_chain(pod, direction, policies)
        )

    def _build_pod_chain(self, pod: PodInfo, direction: str, policies: list[Policy]) -> ChainDef:
        name = pod_chain(pod.namespace, pod.name, direction)
        owner = f"pod {pod.key} {direction}"
        if not policies:
            return ChainDef(name, owner, (), "accept")
        statements: list[Statement] = [Jump(policy_chain(p.key, direction)) for p in policies]
        if direction == "in":  # named ports of ingress rules: this pod's own ports
            for policy in policies:
                if policy.key in self.quarantined:
                    continue
                for rule in policy.ingress or ():
                    for port in rule.ports:
                        if not port.named:
                            continue
                        for number in pod.resolve(str(port.port), port.protocol):
                            resolved = PortSpec(port.protocol, number)
                            for peer in rule.peers or (None,):
                                statements += self._accepts(policy, "in", peer, resolved)
        return ChainDef(name, owner, tuple(_unique(statements)), "drop")

    def _policy_chain(self, policy: Policy, direction: str) -> ChainDef:
        made_of = (policy, policy.key in self.quarantined)
        return self._cached(
            (f"policy {policy.key}", direction),
            made_of,
            lambda: self._build_policy_chain(policy, direction),
        )

    def _build_policy_chain(self, policy: Policy, direction: str) -> ChainDef:
        name = policy_chain(policy.key, direction)
        owner = f"policy {policy.key} {direction}"
        statements: list[Statement] = []
        rules = (policy.ingress if direction == "in" else policy.egress) or ()
        if policy.key not in self.quarantined:
            for rule in rules:
                for peer in rule.peers or (None,):
                    for port in rule.ports or (None,):
                        if port is not None and port.named and direction == "in":
                            continue  # in the selected pod's own chain
                        statements += self._accepts(policy, direction, peer, port)
        return ChainDef(name, owner, tuple(_unique(statements)), "return")

    def _accepts(
        self, policy: Policy, direction: str, peer: Peer | None, port: PortSpec | None
    ) -> list[Accept]:
        """The rules for one peer and one port of a policy's rule."""
        protocol = port.protocol if port is not None else None
        ports = None
        if port is not None and isinstance(port.port, int):
            ports = (port.port, port.end_port or port.port)
        named = port is not None and port.named
        versions: tuple[int | None, ...]
        if peer is None:
            versions = (4, 6) if named else (None,)
            peer_key = ANY_PEER
        elif peer.block is not None:
            versions = (peer.block.version,)
            peer_key = ANY_PEER
        else:
            versions = (4, 6)
            peer_key = peer.key(policy.namespace)
        accepts = []
        for version in versions:
            peer_set = None
            if peer is not None and peer.block is None:
                assert version is not None
                peer_set = selector_set(peer_key, version)
            nset = None
            if named:
                assert version is not None and port is not None
                nset = named_set(peer_key, str(port.port), port.protocol, version)
                self._register("_named", nset, (peer_key, str(port.port), port.protocol, version))
                peer_set = None  # the named set holds the peer's addresses already
            elif peer_set is not None:
                self._register("_selector_sets", peer_set, peer_key)
            accepts.append(
                Accept(
                    direction,
                    version,
                    peer_set,
                    peer.block if peer is not None else None,
                    None if named else protocol,
                    None if named else ports,
                    nset,
                )
            )
        return accepts

    # --- sets ---------------------------------------------------------------------------------

    def _register(self, table: str, name: str, value: object) -> None:
        getattr(self, table)[name] = value
        if self._registered is not None:
            self._registered.append((table, name, value))

    def _index(self, relevant: set[str]) -> None:
        """Index the peers of the policies that select a local pod; forget the others."""
        same = relevant == self._relevant.keys() and all(
            self._relevant[k] is self.policies[k] for k in relevant
        )
        if same:
            return
        wanted: dict[str, _PeerIndex] = {}
        for key in relevant:
            policy = self.policies[key]
            for rules in (policy.ingress or (), policy.egress or ()):
                for rule in rules:
                    for peer in rule.peers:
                        if peer.block is None:
                            peer_key = peer.key(policy.namespace)
                            wanted.setdefault(
                                peer_key,
                                _PeerIndex(
                                    policy.namespace if peer.namespaces is None else None,
                                    peer.namespaces,
                                    peer.pods or Selector(),
                                ),
                            )
        for peer_key in set(self._peers) - set(wanted):
            gone = self._peers.pop(peer_key)
            if gone.namespace is not None:
                self._ns_peers.get(gone.namespace, set()).discard(peer_key)
            self._any_ns_peers.discard(peer_key)
        for peer_key, index in wanted.items():
            if peer_key in self._peers:
                continue
            # only the pods of the namespaces it can name: a podSelector-only peer names one
            if index.namespace is not None:
                namespaces = [index.namespace]
            else:
                selector = index.namespaces or Selector()
                namespaces = [n for n in self._by_namespace if selector.matches(self._ns_labels(n))]
            for namespace in namespaces:
                ns_labels = self._ns_labels(namespace)
                for key in self._by_namespace.get(namespace, ()):
                    if index.matches(self.pods[key], ns_labels):
                        index.members.add(key)
            self._peers[peer_key] = index
            if index.namespace is not None:
                self._ns_peers.setdefault(index.namespace, set()).add(peer_key)
            else:
                self._any_ns_peers.add(peer_key)
            self._dirty_peers.add(peer_key)
        self._relevant = {k: self.policies[k] for k in relevant}

    def _touched_sets(self) -> set[str]:
        touched = set()
        for name, (peer_key, _, _, _) in self._named.items():
            if peer_key in self._dirty_peers:
                touched.add(name)
        for peer_key in self._dirty_peers:
            for version in (4, 6):
                touched.add(selector_set(peer_key, version))
        return touched

    def _set_def(self, name: str) -> SetDef:
        version = int(name[name.index("_") - 1])
        if name.startswith("np"):
            return SetDef(name, (ADDR_TYPE[version], "inet_proto", "inet_service"))
        return SetDef(name, (ADDR_TYPE[version],))

    def _elements(self, name: str) -> frozenset[Element]:
        if name.startswith("sel"):
            index = self._peers.get(self._selector_sets[name])
            members = index.members if index is not None else set()
            version = int(name[3])
            return frozenset(
                (ip,) for key in members for ip in self.pods[key].ips if _version(ip) == version
            )
        peer_key, port_name, protocol, version = self._named[name]
        if peer_key == ANY_PEER:
            pods: Iterable[PodInfo] = (p for p in self.pods.values() if p.addressable)
        else:
            index = self._peers.get(peer_key)
            pods = (self.pods[k] for k in (index.members if index else ()))
        return frozenset(
            (ip, protocol, number)
            for pod in pods
            for number in pod.resolve(port_name, protocol)
            for ip in pod.ips
            if _version(ip) == version
        )

    def _reindex_namespace(self, name: str) -> None:
        ns_labels = self._ns_labels(name)
        for pod_key in self._by_namespace.get(name, ()):
            pod = self.pods[pod_key]
            for peer_key, index in self._candidates(name):
                member = index.matches(pod, ns_labels)
                if member != (pod_key in index.members):
                    (index.members.add if member else index.members.discard)(pod_key)
                    self._dirty_peers.add(peer_key)

    def _candidates(self, namespace: str) -> list[tuple[str, _PeerIndex]]:
        """The peers that can name a pod of `namespace`: its own podSelector-only peers and
        every peer with a namespaceSelector."""
        keys = self._ns_peers.get(namespace, set()) | self._any_ns_peers
        return [(k, self._peers[k]) for k in keys]

    def _ns_labels(self, name: str) -> Mapping[str, str]:
        namespace = self.namespaces.get(name)
        return namespace.labels if namespace is not None else labels()


def _version(ip: str) -> int:
    return 6 if ":" in ip else 4


def _unique(statements: list[Statement]) -> list[Statement]:
    seen: set[Statement] = set()
    out = []
    for s in statements:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
