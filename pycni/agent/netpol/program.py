"""The kernel side of NetworkPolicy: the difference between what the model wants
(pycni.agent.netpol.model.Desired) and what table `inet pycni-policy` holds, applied as one
nftables transaction (pycni.netlink.nftables). Nothing is flushed wholesale: a set gets its
added and removed elements, a chain whose fingerprint changed is flushed and refilled inside
the same transaction (no packet ever sees it empty), a map gets its changed keys.

The table's skeleton, made once (and rewritten only when pycni's own base rules change):

    chain egress   { type filter hook forward priority -2; policy accept;
                     ct state established,related accept
                     ip saddr @pending4 drop; ip6 saddr @pending6 drop
                     icmpv6 type { nd-* } accept           # neighbour discovery on the bridge
                     ip saddr vmap @egress4; ip6 saddr vmap @egress6 }
    chain ingress  { ... hook forward priority -1 ... daddr ... @ingress4/6 }
    chain input    { ... hook input priority -2 ... saddr ... @egress4/6 }   # pod -> node

An `accept` ends only its own base chain, so a pod's egress and its peer's ingress compose
without marks; a `drop` anywhere is final. There is no output hook: the node reaching its own
pods (kubelet probes) is never filtered, and replies come back as established traffic.
Service DNAT (kube-proxy, prerouting) happens before the forward hook, so policies apply to
the pod behind a Service.

Below the maps are the pods' chains only: the model's policy chains are inlined into them
(model.inline), so a new connection walks one rule per distinct (peer, port) of its pod's
policies and address family, with no jump. A policy change rewrites the chains of the local
pods it selects (in one transaction, as any change); a pod's event still touches sets only. A
table written by an earlier version (policy chains and jumps) is rewritten the same way: the
pods' chains get new fingerprints, the policy chains are deleted after them.

After a restart `load()` reads the table back over nfnetlink: the chains with the comment on
their last rule ("<owner> <fingerprint>"), the sets and their elements; the first `apply()`
then changes only what differs. The maps and the pending sets are shared with the pycni-netpol
plugin (it maps a new pod's addresses at ADD): they are read from the kernel before every
transaction, and an entry that points at a chain the model still wants is left alone even
when the model does not know that address yet (the plugin knew first).

When nft refuses a transaction, the state is read again and the transaction rebuilt once (the
plugin may have raced it); refused again, each changed policy's rules are checked on their own
in a chain of their own (`nft -c`, which applies nothing) and the policies the kernel refuses
are returned to the caller, which quarantines them (they then allow nothing) and reports them.

Long-lived path (the agent).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pycni.agent.netpol.model import ChainDef, Desired, Jump, SetDef, inline
from pycni.cni.errors import CniError
from pycni.cni.ip import IP
from pycni.datapath.policy_names import MAPS, PENDING, TABLE_FAMILY, TABLE_NAME, digest
from pycni.netlink import nftables as nft

log = logging.getLogger("pycni.agent")

TABLE = nft.Table(TABLE_FAMILY, TABLE_NAME)
DATATYPES = {
    "ipv4_addr": nft.IPV4_ADDR,
    "ipv6_addr": nft.IPV6_ADDR,
    "inet_proto": nft.INET_PROTO,
    "inet_service": nft.INET_SERVICE,
}
ADDR = {4: nft.IPV4_ADDR, 6: nft.IPV6_ADDR}
MAP_SPECS = {
    name: nft.SetSpec(name, ADDR[version], nft.VERDICT) for (_, version), name in MAPS.items()
}
PENDING_SPECS = {version: nft.SetSpec(name, ADDR[version]) for version, name in PENDING.items()}
ND_TYPES = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"
STALE_PENDING_SECONDS = 10.0  # a pending address with no record this long: its pod is gone


def _base(peer: str, maps: tuple[str, str]) -> list[str]:
    return [
        "ct state established,related accept",
        f"ip {peer} @{PENDING[4]} drop",
        f"ip6 {peer} @{PENDING[6]} drop",
        f"icmpv6 type {{ {ND_TYPES} }} accept",
        f"ip {peer} vmap @{maps[0]}",
        f"ip6 {peer} vmap @{maps[1]}",
    ]


BASE_CHAINS = {
    "egress": ("type filter hook forward priority -2", _base("saddr", ("egress4", "egress6"))),
    "ingress": ("type filter hook forward priority -1", _base("daddr", ("ingress4", "ingress6"))),
    "input": ("type filter hook input priority -2", _base("saddr", ("egress4", "egress6"))),
}


def _base_rules(name: str) -> list[str]:
    rules = BASE_CHAINS[name][1]
    fp = digest("\n".join(rules), 16)
    return [*rules[:-1], f'{rules[-1]} comment "base {name} {fp}"']


@dataclass
class Stats:
    """The last transaction, for the benchmark and the logs."""

    statements: int = 0
    seconds: float = 0.0
    transactions: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)


class NftProgrammer:
    """Programs table `inet pycni-policy` in the current network namespace."""

    def __init__(self) -> None:
        self.chains: dict[str, str] = {}  # name -> the comment of its last rule
        self.policies: dict[str, str] = {}  # a policy's chain (inlined) -> its comment, applied
        self.sets: dict[str, frozenset[tuple[str | int, ...]]] = {}
        self.recorded: set[str] = set()  # addresses the plugin's records hold (set by caller)
        self.stats = Stats()
        self._stale_since: dict[str, float] = {}
        # inlined chains, kept while what they were made of is the same objects
        self._inlined: dict[str, tuple[tuple[ChainDef, ...], ChainDef]] = {}

    # --- reading the kernel ----------------------------------------------------------------

    def load(self) -> None:
        """Make the skeleton if it is not there, then read what the table holds."""
        self._ensure_skeleton()
        self.chains, self.sets = {}, {}
        with nft.Ruleset() as ruleset:
            names = {c.name for c in ruleset.chains(TABLE)} - set(BASE_CHAINS)
            last: dict[str, str] = {}
            for note in ruleset.rules(TABLE):
                last[note.chain] = note.comment  # rules come in order: the last one wins
            self.chains = {name: last.get(name, "") for name in names}
            declared = {s.name: s for s in ruleset.sets(TABLE)}
            for name, info in declared.items():
                if name in MAP_SPECS.keys() | {s.name for s in PENDING_SPECS.values()}:
                    continue
                spec = _spec_of_name(name)
                if spec is None or not info.declared_as(spec):
                    self.sets[name] = frozenset({("?",)})  # not ours as we declare it: replace
                    continue
                elements = ruleset.elements(TABLE, spec) or []
                self.sets[name] = frozenset(_model_element(e) for e in elements)
        log.info(
            "table %s holds %d policy chains and %d sets", TABLE, len(self.chains), len(self.sets)
        )

    def _ensure_skeleton(self) -> None:
        with nft.Ruleset() as ruleset:
            chains = {c.name for c in ruleset.chains(TABLE)}
            last: dict[str, str] = {}
            for note in ruleset.rules(TABLE):
                last[note.chain] = note.comment
        script = nft.Script(TABLE).add_table()
        for spec in (*MAP_SPECS.values(), *PENDING_SPECS.values()):
            script.add_set(spec)
        for name, (hook, _) in BASE_CHAINS.items():
            rules = _base_rules(name)
            wanted = rules[-1].split('comment "', 1)[1].rstrip('"')
            if name in chains and last.get(name) == wanted:
                continue
            script.add_chain(name, hook=hook)
            if name in chains:
                script.flush_chain(name)
            for rule in rules:
                script.add_rule(name, rule)
        nft.run(script, f"create the NetworkPolicy table {TABLE}")

    def _read_shared(self) -> tuple[dict[str, dict[str, str]], dict[int, set[str]]]:
        """The maps (address -> chain) and the pending sets, as the kernel holds them now."""
        maps: dict[str, dict[str, str]] = {}
        pending: dict[int, set[str]] = {}
        with nft.Ruleset() as ruleset:
            for name, spec in MAP_SPECS.items():
                entries = {}
                for element in ruleset.elements(TABLE, spec) or []:
                    verdict = element.data
                    if isinstance(verdict, nft.Verdict) and verdict.chain is not None:
                        entries[str(element.key[0])] = verdict.chain
                maps[name] = entries
            for version, spec in PENDING_SPECS.items():
                pending[version] = {str(e.key[0]) for e in ruleset.elements(TABLE, spec) or []}
        return maps, pending

    # --- writing -------------------------------------------------------------------------------

    def apply(self, desired: Desired) -> dict[str, str]:
        """Program `desired`; {} when done, else the policies (key -> nft's message) the kernel
        refuses (nothing of this transaction was applied then)."""
        for attempt in (1, 2):
            script = self._script(desired)
            if not script:
                return {}
            started = time.monotonic()
            try:
                nft.run(script, "program the NetworkPolicy ruleset")
            except CniError as err:
                log.warning("nft refused the NetworkPolicy transaction (attempt %d): %s",
                            attempt, err.msg)  # fmt: skip
                self.load()
                continue
            elapsed = time.monotonic() - started
            self.stats.statements = len(script)
            self.stats.seconds = elapsed
            self.stats.transactions += 1
            self.stats.history.append((len(script), elapsed))
            del self.stats.history[:-1000]
            self._applied(desired)
            return {}
        return self._culprits(desired)

    def _script(self, desired: Desired) -> nft.Script:
        script = nft.Script(TABLE)
        maps, pending = self._read_shared()
        for name, setdef in desired.sets.items():
            spec = _spec(setdef)
            want = desired.elements[name]
            have = self.sets.get(name)
            if have is want:
                continue
            if have is None or ("?",) in have:
                if have is not None:
                    script.delete_set(name)  # declared otherwise: no rule uses it any more
                script.add_set(spec).add_elements(
                    spec, [_element(spec, e) for e in sorted(want, key=str)]
                )
            elif have != want:
                script.delete_elements(
                    spec, [_element(spec, e) for e in sorted(have - want, key=str)]
                )
                script.add_elements(spec, [_element(spec, e) for e in sorted(want - have, key=str)])
        chains = self._kernel_chains(desired)
        fresh = [n for n in chains if n not in self.chains]
        for name in fresh:
            script.add_chain(name)
        for name, chain in chains.items():
            if self.chains.get(name) == chain.comment:
                continue
            if name not in fresh:
                script.flush_chain(name)
            for rule in chain.rules():
                script.add_rule(name, rule)
        mapped: set[str] = set()
        for name, spec in MAP_SPECS.items():
            want_map = desired.maps.get(name, {})
            have_map = maps.get(name, {})
            for ip, chain_name in sorted(want_map.items()):
                mapped.add(ip)
                current = have_map.get(ip)
                if current == chain_name:
                    continue
                key = nft.Element(IP.parse(ip))
                if current is not None:
                    script.delete_elements(spec, [key])
                script.add_elements(
                    spec, [nft.Element(IP.parse(ip), data=nft.Verdict.jump(chain_name))]
                )
            for ip, chain_name in sorted(have_map.items()):
                if ip not in want_map and chain_name not in chains:
                    script.delete_elements(spec, [nft.Element(IP.parse(ip))])
        self._release_pending(script, pending, mapped)
        gone = sorted(n for n in self.chains if n not in chains)
        for name in gone:
            script.flush_chain(name)
        for name in gone:
            script.delete_chain(name)
        for name in sorted(n for n in self.sets if n not in desired.sets):
            script.delete_set(name)
        return script

    def _release_pending(
        self, script: nft.Script, pending: dict[int, set[str]], mapped: set[str]
    ) -> None:
        """Take out of the pending sets the addresses now mapped, and those whose record has
        been gone for a while (their pod is)."""
        now = time.monotonic()
        for version, spec in PENDING_SPECS.items():
            done = []
            for ip in sorted(pending.get(version, ())):
                if ip in mapped:
                    done.append(ip)
                elif ip in self.recorded:
                    self._stale_since.pop(ip, None)
                elif now - self._stale_since.setdefault(ip, now) > STALE_PENDING_SECONDS:
                    log.info("pending address %s has no record since %.0f s: releasing it",
                             ip, STALE_PENDING_SECONDS)  # fmt: skip
                    done.append(ip)
            if done:
                script.delete_elements(spec, [nft.Element(IP.parse(ip)) for ip in done])
                for ip in done:
                    self._stale_since.pop(ip, None)

    def _kernel_chains(self, desired: Desired) -> dict[str, ChainDef]:
        """The chains the kernel holds: the model's chains that no other chain jumps to (the
        pods' chains), each with the rules of the chains it jumps to (the policies') inlined
        (pycni.agent.netpol.model.inline): a new connection walks no jump."""
        jumped = {
            s.chain for c in desired.chains.values() for s in c.statements if isinstance(s, Jump)
        }
        kept: dict[str, tuple[tuple[ChainDef, ...], ChainDef]] = {}
        chains: dict[str, ChainDef] = {}
        for name, chain in desired.chains.items():
            if name in jumped:
                continue
            made_of = (
                chain,
                *(desired.chains[s.chain] for s in chain.statements if isinstance(s, Jump)),
            )
            hit = self._inlined.get(name)
            if (
                hit is None
                or len(hit[0]) != len(made_of)
                or any(a is not b for a, b in zip(hit[0], made_of, strict=True))
            ):
                hit = (made_of, inline(chain, desired.chains))
            kept[name] = hit
            chains[name] = hit[1]
        self._inlined = kept
        return chains

    def _applied(self, desired: Desired) -> None:
        self.chains = {name: chain.comment for name, chain in self._kernel_chains(desired).items()}
        self.policies = {
            name: chain.comment
            for name, chain in desired.chains.items()
            if chain.owner.startswith("policy ")
        }
        self.sets = {name: desired.elements[name] for name in desired.sets}

    def _culprits(self, desired: Desired) -> dict[str, str]:
        """The policies whose chains the kernel refuses, each checked on its own."""
        failures: dict[str, str] = {}
        for name, chain in sorted(desired.chains.items()):
            if not chain.owner.startswith("policy ") or self.policies.get(name) == chain.comment:
                continue
            script = nft.Script(TABLE)
            for set_name in sorted(chain.references()):
                if set_name in desired.sets and set_name not in self.sets:
                    script.add_set(_spec(desired.sets[set_name]))
            script.add_chain(name).flush_chain(name)
            for rule in chain.rules():
                script.add_rule(name, rule)
            try:
                nft.run(script, f"check the chain of {chain.owner}", check=True)
            except CniError as err:
                key = chain.owner.split(" ")[1]
                failures[key] = err.msg.split("nft: ", 1)[-1]
        if not failures:
            raise RuntimeError("nft refused the NetworkPolicy transaction twice, no policy alone")
        return failures

    def disable(self) -> None:
        """Remove the table (and with it every rule pycni wrote for policies)."""
        script = nft.Script(TABLE).add_table().delete_table()
        nft.run(script, f"remove the NetworkPolicy table {TABLE}")
        self.chains, self.sets, self.policies = {}, {}, {}


def _spec(setdef: SetDef) -> nft.SetSpec:
    return nft.SetSpec(setdef.name, tuple(DATATYPES[t] for t in setdef.key))


def _spec_of_name(name: str) -> nft.SetSpec | None:
    """The declaration of one of the model's sets, from its name (sel4_..., np6_...)."""
    for prefix, key in (("sel", ()), ("np", ("inet_proto", "inet_service"))):
        if name.startswith(prefix) and name[len(prefix) : len(prefix) + 1] in ("4", "6"):
            version = int(name[len(prefix)])
            addr = "ipv4_addr" if version == 4 else "ipv6_addr"
            return _spec(SetDef(name, (addr, *key)))
    return None


def _element(spec: nft.SetSpec, element: tuple[str | int, ...]) -> nft.Element:
    values = [IP.parse(element[0]), *element[1:]]
    return nft.Element(*values)


def _model_element(element: nft.Element) -> tuple[str | int, ...]:
    return (str(element.key[0]), *element.key[1:])
