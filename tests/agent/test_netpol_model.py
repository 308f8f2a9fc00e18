"""The NetworkPolicy model without a kernel: parsing (defaults, bad input), the ruleset the
Engine renders, and two properties checked by Hypothesis on random clusters:

- the rendered ruleset, run by a small interpreter of exactly what pycni writes (verdict maps,
  jumps, accept rules on sets, cidrs, ports), allows a packet iff the semantics of
  NetworkPolicy (written here a second time, straight from the API documentation) allow it;
- an Engine fed a sequence of changes renders what a fresh Engine fed the end state renders
  (the incremental bookkeeping never drifts)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.agent.netpol.model import (
    Accept,
    ChainDef,
    Desired,
    Engine,
    FamilyVerdict,
    Jump,
    inline,
)
from pycni.agent.netpol.objects import (
    NamespaceInfo,
    ObjectError,
    PodInfo,
    Policy,
    Selector,
    labels,
)
from pycni.datapath.policy_names import pod_chain

# --- parsing -------------------------------------------------------------------------------


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "x") -> Policy:
    return Policy.parse({"metadata": {"name": name, "namespace": namespace}, "spec": spec})


def test_policy_types_default_ingress_only_without_egress_rules() -> None:
    assert policy({"podSelector": {}}).ingress == ()
    assert policy({"podSelector": {}}).egress is None
    # the API server's rule: Egress only when egress has at least one rule
    assert policy({"podSelector": {}, "egress": []}).egress is None
    both = policy({"podSelector": {}, "egress": [{}]})
    assert both.ingress == () and both.egress is not None and len(both.egress) == 1


def test_listed_policy_types_win_over_rules() -> None:
    only_egress = policy({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})
    assert only_egress.ingress is None and only_egress.egress == ()


def test_ports_parse_numbers_names_ranges_and_protocols() -> None:
    p = policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "ports": [
                        {"port": 80},
                        {"port": "serve-81-udp", "protocol": "UDP"},
                        {"port": 1000, "endPort": 2000, "protocol": "SCTP"},
                        {"protocol": "UDP"},
                        {"port": "8080"},
                    ]
                }
            ],
        }
    )
    assert p.ingress is not None
    ports = p.ingress[0].ports
    assert [(x.protocol, x.port, x.end_port) for x in ports] == [
        ("tcp", 80, None),
        ("udp", "serve-81-udp", None),
        ("sctp", 1000, 2000),
        ("udp", None, None),
        ("tcp", 8080, None),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}, "operator"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "needs podSelector"),
        (
            {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
            "not a CIDR",
        ),
        (
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}
                ],
            },
            "not inside",
        ),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}, "not a port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]}, "endPort"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "protocol"),
        ({"podSelector": {}, "policyTypes": ["Sideways"]}, "policyTypes"),
        ({"podSelector": {}, "ingress": "all"}, "list of rules"),
    ],
)
def test_bad_policies_say_which_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        policy(spec)


def test_selector_operators() -> None:
    sel = Selector.parse(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
        "s",
    )
    base = {"app": "web", "tier": "a", "owner": "me"}
    assert sel.matches(base)
    assert sel.matches(base | {"env": "dev"})
    assert not sel.matches(base | {"env": "prod"})
    assert not sel.matches(base | {"legacy": ""})
    assert not sel.matches({k: v for k, v in base.items() if k != "owner"})
    assert not sel.matches(base | {"tier": "c"})
    assert Selector().matches({}) and Selector().everything


def test_pod_parse_keeps_what_the_model_needs() -> None:
    pod = PodInfo.parse(
        {
            "metadata": {"namespace": "x", "name": "a", "uid": "u1", "labels": {"pod": "a"}},
            "spec": {
                "nodeName": "node1",
                "containers": [
                    {"ports": [{"name": "serve-80-tcp", "containerPort": 80}]},
                    {"ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
                ],
            },
            "status": {"podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}], "phase": "Running"},
        }
    )
    assert pod.ips == ("10.244.0.5", "fd00::5")
    assert pod.resolve("serve-80-tcp", "tcp") == (80,)
    assert pod.resolve("serve-80-tcp", "udp") == ()
    assert pod.resolve("dns", "udp") == (53,)
    assert pod.addressable and pod.node == "node1"
    ended = PodInfo.parse(
        {"metadata": {"namespace": "x", "name": "b"}, "status": {"phase": "Succeeded"}}
    )
    assert not ended.addressable


# --- rendering --------------------------------------------------------------------------


def pod(
    name: str,
    ns: str = "x",
    node: str = "n1",
    ip: str = "10.0.0.1",
    pod_labels: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> PodInfo:
    return PodInfo(ns, name, f"uid-{ns}-{name}", node, labels(pod_labels or {}), (ip,), **kwargs)


def test_a_namespace_without_policies_maps_nothing() -> None:
    engine = Engine("n1")
    engine.upsert_pod(pod("a"))
    desired = engine.render()
    assert desired.chains == {} and all(not m for m in desired.maps.values())


def test_deny_all_ingress_maps_local_pods_only() -> None:
    engine = Engine("n1")
    engine.upsert_namespace(NamespaceInfo("x", labels({})))
    engine.upsert_pod(pod("a", ip="10.0.0.1"))
    engine.upsert_pod(pod("b", ip="10.0.0.2", node="n2"))
    engine.upsert_pod(pod("h", ip="172.18.0.2", host_network=True))
    engine.upsert_policy(policy({"podSelector": {}}, "deny"))
    desired = engine.render()
    chain_in = pod_chain("x", "a", "in")
    assert desired.maps["ingress4"] == {"10.0.0.1": chain_in}
    assert desired.maps["egress4"] == {"10.0.0.1": pod_chain("x", "a", "eg")}
    assert desired.chains[chain_in].verdict == "drop"
    assert desired.chains[pod_chain("x", "a", "eg")].verdict == "accept"  # not isolated


def test_named_ingress_port_resolved_in_the_pods_own_chain() -> None:
    from pycni.agent.netpol.objects import ContainerPort

    engine = Engine("n1")
    engine.upsert_pod(pod("a", ip="10.0.0.1", ports=(ContainerPort("web", "tcp", 8080),)))
    engine.upsert_pod(pod("b", ip="10.0.0.2", ports=(ContainerPort("web", "tcp", 9090),)))
    engine.upsert_policy(policy({"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}))
    desired = engine.render()
    rules_a = desired.chains[pod_chain("x", "a", "in")].rules()
    rules_b = desired.chains[pod_chain("x", "b", "in")].rules()
    assert "meta l4proto tcp th dport 8080 accept" in rules_a
    assert "meta l4proto tcp th dport 9090 accept" in rules_b
    assert not any("9090" in r for r in rules_a)


def test_every_chain_ends_with_its_fingerprint() -> None:
    engine = Engine("n1")
    engine.upsert_pod(pod("a"))
    engine.upsert_policy(
        policy({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}, "p1")
    )
    desired = engine.render()
    for chain in desired.chains.values():
        last = chain.rules()[-1]
        assert last.startswith(chain.verdict) and chain.fingerprint in last
    texts = [r for c in desired.chains.values() for r in c.rules()]
    assert any(r.startswith("ip saddr @sel4_") for r in texts)
    assert any(r.startswith("ip6 saddr @sel6_") for r in texts)


# --- the semantics, a second time, and an interpreter of the ruleset --------------------------


@dataclass(frozen=True)
class Cluster:
    pods: tuple[PodInfo, ...]
    namespaces: tuple[NamespaceInfo, ...]
    policies: tuple[Policy, ...]

    def ns_labels(self, name: str) -> Mapping[str, str]:
        for ns in self.namespaces:
            if ns.name == name:
                return ns.labels
        return {}


def oracle(
    cluster: Cluster,
    src: PodInfo | None,
    src_ip: str,
    dst: PodInfo,
    dst_ip: str,
    proto: str,
    port: int,
) -> bool:
    """NetworkPolicy as documented: egress of the source AND ingress of the destination."""

    def isolating(target: PodInfo, direction: str) -> list[Policy]:
        if target.host_network:
            return []
        return [
            p
            for p in cluster.policies
            if p.namespace == target.namespace
            and p.pod_selector.matches(target.labels)
            and (p.ingress if direction == "in" else p.egress) is not None
        ]

    def peer_ok(peer: Any, policy_ns: str, other: PodInfo | None, other_ip: str) -> bool:
        if peer.block is not None:
            return bool(peer.block.contains(other_ip))
        if other is None or other.host_network:
            return False
        if peer.namespaces is None:
            if other.namespace != policy_ns:
                return False
        elif not peer.namespaces.matches(cluster.ns_labels(other.namespace)):
            return False
        return peer.pods is None or bool(peer.pods.matches(other.labels))

    def port_ok(spec: Any) -> bool:
        if spec.protocol != proto:
            return False
        if spec.port is None:
            return True
        if isinstance(spec.port, str):  # a hostNetwork pod's ports are the node's: not resolved
            return not dst.host_network and port in dst.resolve(spec.port, proto)
        return bool(spec.port <= port <= (spec.end_port or spec.port))

    def allows(policies: list[Policy], direction: str, other: PodInfo | None, ip: str) -> bool:
        if not policies:
            return True
        for p in policies:
            for rule in (p.ingress if direction == "in" else p.egress) or ():
                peers = not rule.peers or any(
                    peer_ok(x, p.namespace, other, ip) for x in rule.peers
                )
                ports = not rule.ports or any(port_ok(x) for x in rule.ports)
                if peers and ports:
                    return True
        return False

    egress = src is None or allows(isolating(src, "eg"), "eg", dst, dst_ip)
    return egress and allows(isolating(dst, "in"), "in", src, src_ip)


def run_chain(desired: Desired, name: str, packet: tuple[str, str, str, int]) -> str:
    """ "accept", "drop" or "return" for a packet (saddr, daddr, proto, dport) in a chain."""
    chain: ChainDef = desired.chains[name]
    saddr, daddr, proto, dport = packet
    for s in chain.statements:
        if isinstance(s, Jump):
            verdict = run_chain(desired, s.chain, packet)
            if verdict != "return":
                return verdict
            continue
        if isinstance(s, FamilyVerdict):
            if s.version == ipaddress.ip_address(daddr).version:
                return s.verdict
            continue
        assert isinstance(s, Accept)
        addr = saddr if s.direction == "in" else daddr
        version = ipaddress.ip_address(daddr).version
        if s.version is not None and s.version != version:
            continue
        if s.peer_set is not None and (addr,) not in desired.elements[s.peer_set]:
            continue
        if s.block is not None and not s.block.contains(addr):
            continue
        if s.named_set is not None:
            if (daddr, proto, dport) not in desired.elements[s.named_set]:
                continue
        elif s.protocol is not None:
            if s.protocol != proto:
                continue
            if s.ports is not None and not s.ports[0] <= dport <= s.ports[1]:
                continue
        return "accept"
    return chain.verdict


def kernel(rulesets: Mapping[str, Desired], src: PodInfo | None, dst: PodInfo, packet: Any) -> bool:
    """Egress on the source's node, then ingress on the destination's, as the forward hook's
    two base chains run them (a pod's address missing from a map: not isolated)."""
    saddr, daddr = packet[0], packet[1]
    version = ipaddress.ip_address(daddr).version
    if src is not None and not src.host_network:
        desired = rulesets[src.node]
        chain = desired.maps[f"egress{version}"].get(saddr)
        if chain is not None and run_chain(desired, chain, packet) == "drop":
            return False
    desired = rulesets[dst.node]
    chain = desired.maps[f"ingress{version}"].get(daddr)
    return chain is None or run_chain(desired, chain, packet) != "drop"


# --- random clusters -----------------------------------------------------------------------

KEYS = ("app", "tier")
VALUES = ("a", "b")
NODES = ("n1", "n2")
NAMESPACES = ("x", "y", "z")
POD_NAMESPACES = ("x", "x", "y")  # most pods and policies share a namespace: more selections
PORT_NAMES = ("web", "dns")


def label_maps() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)


def selectors() -> st.SearchStrategy[dict[str, Any]]:
    requirement = st.one_of(
        st.fixed_dictionaries(
            {
                "key": st.sampled_from(KEYS),
                "operator": st.sampled_from(["In", "NotIn"]),
                "values": st.lists(st.sampled_from(VALUES), min_size=1, max_size=2),
            }
        ),
        st.fixed_dictionaries(
            {"key": st.sampled_from(KEYS), "operator": st.sampled_from(["Exists", "DoesNotExist"])}
        ),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "matchLabels": label_maps(),
            "matchExpressions": st.lists(requirement, max_size=2),
        },
    )


def peers() -> st.SearchStrategy[dict[str, Any]]:
    blocks = st.sampled_from(
        [
            {"cidr": "10.0.0.0/24"},
            {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/30"]},
            {"cidr": "10.0.0.2/32"},
            {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/29"]},
            {"cidr": "fd00::/64", "except": ["fd00::/126"]},
            {"cidr": "192.168.0.0/16"},
        ]
    )
    return st.one_of(
        st.fixed_dictionaries({"podSelector": selectors()}),
        st.fixed_dictionaries({"namespaceSelector": selectors()}),
        st.fixed_dictionaries({"podSelector": selectors(), "namespaceSelector": selectors()}),
        st.fixed_dictionaries({"ipBlock": blocks}),
    )


def ports() -> st.SearchStrategy[dict[str, Any]]:
    protocol = st.sampled_from(["TCP", "UDP", "SCTP"])
    return st.one_of(
        st.fixed_dictionaries(
            {"port": st.sampled_from([80, 81, 53])}, optional={"protocol": protocol}
        ),
        st.fixed_dictionaries(
            {"port": st.sampled_from(PORT_NAMES)}, optional={"protocol": protocol}
        ),
        st.fixed_dictionaries({"port": st.just(80), "endPort": st.just(81), "protocol": protocol}),
        st.fixed_dictionaries({"protocol": protocol}),
    )


def rules(peer_field: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            peer_field: st.lists(peers(), max_size=2),
            "ports": st.lists(ports(), max_size=2),
        },
    )


def policy_specs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"podSelector": selectors()},
        optional={
            "policyTypes": st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
            "ingress": st.lists(rules("from"), max_size=2),
            "egress": st.lists(rules("to"), max_size=2),
        },
    )


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    from pycni.agent.netpol.objects import ContainerPort

    namespaces = tuple(NamespaceInfo(n, labels(draw(label_maps()))) for n in NAMESPACES)
    count = draw(st.integers(3, 6))
    pods = []
    for i in range(count):
        ns = draw(st.sampled_from(POD_NAMESPACES))
        host = draw(st.booleans()) if i == count - 1 else False
        ips = (f"10.0.0.{i + 1}", f"fd00::{i + 1}") if not host else ("172.18.0.9",)
        port_list = draw(
            st.lists(
                st.sampled_from(
                    [
                        ContainerPort("web", "tcp", 80),
                        ContainerPort("web", "tcp", 81),
                        ContainerPort("dns", "udp", 53),
                        ContainerPort("dns", "tcp", 53),
                    ]
                ),
                max_size=2,
                unique_by=lambda p: (p.name, p.protocol),
            )
        )
        pods.append(
            PodInfo(
                ns,
                f"p{i}",
                f"u{i}",
                draw(st.sampled_from(NODES)),
                labels(draw(label_maps())),
                ips,
                host_network=host,
                ports=tuple(port_list),
            )
        )
    specs = draw(st.lists(policy_specs(), max_size=3))
    policies = tuple(
        policy(spec, f"pol{i}", draw(st.sampled_from(POD_NAMESPACES)))
        for i, spec in enumerate(specs)
    )
    return Cluster(tuple(pods), namespaces, policies)


def render_all(cluster: Cluster) -> dict[str, Desired]:
    rulesets = {}
    for node in NODES:
        engine = Engine(node)
        for ns in cluster.namespaces:
            engine.upsert_namespace(ns)
        for p in cluster.pods:
            engine.upsert_pod(p)
        for pol in cluster.policies:
            engine.upsert_policy(pol)
        rulesets[node] = engine.render()
    return rulesets


PROBES = [("tcp", 80), ("tcp", 81), ("udp", 53), ("tcp", 53), ("sctp", 80), ("udp", 81)]


def corner(*specs: dict[str, Any], ns_labels: Mapping[str, Mapping[str, str]] = {}) -> Cluster:
    """Four pods over two nodes and two namespaces (x/p0 and y/p1 serve "web" on 80, x/p2
    serves it on 81), and policies in x: the semantic corners, always checked."""
    from pycni.agent.netpol.objects import ContainerPort

    web80, web81 = ContainerPort("web", "tcp", 80), ContainerPort("web", "tcp", 81)
    pods = (
        PodInfo(
            "x", "p0", "u0", "n1", labels({"app": "a"}), ("10.0.0.1", "fd00::1"), ports=(web80,)
        ),
        PodInfo(
            "y", "p1", "u1", "n2", labels({"app": "a"}), ("10.0.0.2", "fd00::2"), ports=(web80,)
        ),
        PodInfo(
            "x", "p2", "u2", "n2", labels({"app": "b"}), ("10.0.0.3", "fd00::3"), ports=(web81,)
        ),
        PodInfo("z", "p3", "u3", "n1", labels({}), ("10.0.0.4", "fd00::4")),
    )
    namespaces = tuple(NamespaceInfo(n, labels(ns_labels.get(n, {"ns": n}))) for n in NAMESPACES)
    return Cluster(pods, namespaces, tuple(policy(s, f"c{i}") for i, s in enumerate(specs)))


CORNERS = [
    # a named port is the destination's: p0 allows 80, p2 allows 81 (never a union), and only
    # from the peer (not "to any pod that itself matches the peer")
    corner(
        {
            "podSelector": {},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "web"}]}],
        }
    ),
    corner({"podSelector": {}, "egress": [{"ports": [{"port": "web"}]}]}),
    # except holds back an address one rule allows; another rule may still allow it
    corner(
        {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.2/32"]}}]}],
        },
        {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.2/32"}}]}]},
    ),
    # AND within one peer, OR across peers
    corner(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"ns": "y"}},
                            "podSelector": {"matchLabels": {"app": "b"}},
                        }
                    ]
                }
            ],
        }
    ),
    corner(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                        {"podSelector": {"matchLabels": {"app": "b"}}},
                    ]
                }
            ],
        }
    ),
    # a UDP or SCTP rule opens nothing over TCP, and still isolates
    corner({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
    corner({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP"}]}]}),
    # endPort
    corner({"podSelector": {}, "ingress": [{"ports": [{"port": 53, "endPort": 80}]}]}),
    # egress rules without Egress in policyTypes are not enforced
    corner({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"ports": [{"port": 81}]}]}),
]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_the_ruleset_allows_exactly_what_the_policies_allow(cluster: Cluster) -> None:
    check_every_pair(cluster)


@pytest.mark.parametrize("cluster", CORNERS)
def test_the_ruleset_gets_the_semantic_corners_right(cluster: Cluster) -> None:
    check_every_pair(cluster)


def as_the_kernel_holds_it(desired: Desired) -> Desired:
    """The pods' chains with their policies' chains inlined, the policies' chains gone: what
    pycni.agent.netpol.program writes."""
    jumped = {s.chain for c in desired.chains.values() for s in c.statements if isinstance(s, Jump)}
    chains = {n: inline(c, desired.chains) for n, c in desired.chains.items() if n not in jumped}
    for chain in chains.values():
        assert not any(isinstance(s, Jump) for s in chain.statements), chain
    return dataclasses.replace(desired, chains=chains)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_inlined_chains_allow_exactly_what_the_policies_allow(cluster: Cluster) -> None:
    check_every_pair(cluster, as_the_kernel_holds_it)


@pytest.mark.parametrize("cluster", CORNERS)
def test_inlined_chains_get_the_semantic_corners_right(cluster: Cluster) -> None:
    check_every_pair(cluster, as_the_kernel_holds_it)


def test_inlining_puts_each_accept_once_and_ipv4_before_ipv6() -> None:
    e = Engine("n1")
    e.upsert_namespace(NamespaceInfo.parse({"metadata": {"name": "x"}}))
    e.upsert_pod(PodInfo("x", "a", "uid-x-a", "n1", labels({}), ("10.0.0.1", "fd00::1")))
    peer = {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}]}
    for name in ("p1", "p2"):  # the same rule in two policies
        e.upsert_policy(policy({"podSelector": {}, "ingress": [peer]}, name))
    e.upsert_policy(policy({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}, "p3"))
    desired = e.render()
    chain = desired.chains[pod_chain("x", "a", "in")]
    flat = as_the_kernel_holds_it(desired).chains[chain.name]
    rules = flat.rules()
    assert rules[0] == "meta l4proto tcp th dport 81 accept", rules  # no family: first
    assert rules[1].startswith("ip saddr @sel4_") and rules[2] == "meta nfproto ipv4 drop", rules
    assert rules[3].startswith("ip6 saddr @sel6_") and rules[4].startswith("drop comment"), rules
    assert len(rules) == 5 and flat.fingerprint != chain.fingerprint


def check_every_pair(
    cluster: Cluster, kernel_view: Callable[[Desired], Desired] = lambda d: d
) -> None:
    rulesets = {node: kernel_view(d) for node, d in render_all(cluster).items()}
    external = "192.168.3.4"
    for dst in cluster.pods:
        for version in (4, 6):
            dst_ips = [ip for ip in dst.ips if ipaddress.ip_address(ip).version == version]
            if not dst_ips:
                continue
            sources: list[tuple[PodInfo | None, str]] = [
                (s, ip)
                for s in cluster.pods
                if s is not dst
                for ip in s.ips
                if ipaddress.ip_address(ip).version == version
            ]
            if version == 4:
                sources.append((None, external))
            for src, src_ip in sources:
                for proto, port in PROBES:
                    packet = (src_ip, dst_ips[0], proto, port)
                    want = oracle(cluster, src, src_ip, dst, dst_ips[0], proto, port)
                    got = kernel(rulesets, src, dst, packet)
                    assert got == want, (
                        f"{src.key if src else src_ip} -> {dst.key} {packet}: "
                        f"the ruleset says {got}, the semantics {want}"
                    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[Cluster, list[tuple[str, Any]]]:
    """An end state and a sequence of upserts and deletes (with detours) that reaches it."""
    final = draw(clusters())
    detour = draw(clusters())
    steps: list[tuple[str, Any]] = []
    for obj in (*detour.namespaces, *detour.pods, *detour.policies):
        steps.append(("upsert", obj))
    for obj in (*final.namespaces, *final.pods, *final.policies):
        steps.append(("upsert", obj))
    steps = draw(st.permutations(steps))
    for obj in (*detour.pods, *detour.policies):
        if obj not in final.pods and obj not in final.policies:
            steps.append(("delete", obj))
    for obj in (*final.namespaces, *final.pods, *final.policies):
        steps.append(("upsert", obj))
    return final, steps


def _key(obj: Any) -> str:
    return str(obj.key) if hasattr(obj, "key") else str(obj.name)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(1, 4))
def test_incremental_engine_matches_a_fresh_one(
    history: tuple[Cluster, list[tuple[str, Any]]], render_every: int
) -> None:
    final, steps = history
    engine = Engine("n1")
    final_keys = {_key(p) for p in final.pods} | {_key(p) for p in final.policies}
    for i, (verb, obj) in enumerate(steps):
        if verb == "upsert":
            if isinstance(obj, PodInfo):
                engine.upsert_pod(obj)
            elif isinstance(obj, Policy):
                engine.upsert_policy(obj)
            else:
                engine.upsert_namespace(obj)
        elif isinstance(obj, PodInfo):
            engine.delete_pod(obj.key)
        else:
            engine.delete_policy(obj.key)
        if i % render_every == 0:
            engine.render()
    for key in list(engine.pods):
        if key not in final_keys:
            engine.delete_pod(key)
    for key in list(engine.policies):
        if key not in final_keys:
            engine.delete_policy(key)
    got = engine.render()
    fresh = Engine("n1")
    for ns in final.namespaces:
        fresh.upsert_namespace(ns)
    for p in final.pods:
        fresh.upsert_pod(p)
    for pol in final.policies:
        fresh.upsert_policy(pol)
    want = fresh.render()
    assert got.chains == want.chains
    assert got.maps == want.maps
    assert got.sets == want.sets
    assert got.elements == want.elements


# --- the documented examples ---------------------------------------------------------------


def _documented_policies(path: str) -> list[Policy]:
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parents[2] / path).read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, f"{path}: no yaml example"
    return [Policy.parse(doc) for doc in yaml.safe_load_all(block.group(1))]


@pytest.mark.parametrize("path", ["README.md", "docs/networkpolicy.md"])
def test_the_worked_example_does_what_the_text_says(path: str) -> None:
    """The frontend reaches web:8080 (its named port http), batch does not, nor does anyone
    reach the namespace's other pods; web may still ask DNS where the docs restrict it."""
    from pycni.agent.netpol.objects import ContainerPort

    def shop(name: str, ip: str, node: str, app: str, **kwargs: Any) -> PodInfo:
        return PodInfo("shop", name, f"u-{name}", node, labels({"app": app}), (ip,), **kwargs)

    web = shop("web", "10.244.1.7", "n1", "web", ports=(ContainerPort("http", "tcp", 8080),))
    frontend = shop("frontend", "10.244.2.4", "n2", "frontend")
    batch = shop("batch", "10.244.1.9", "n1", "batch")
    dns = PodInfo(
        "kube-system", "dns", "u-dns", "n2", labels({"k8s-app": "kube-dns"}), ("10.244.2.2",)
    )
    namespaces = (
        NamespaceInfo("shop", labels({"kubernetes.io/metadata.name": "shop"})),
        NamespaceInfo("kube-system", labels({"kubernetes.io/metadata.name": "kube-system"})),
    )
    cluster = Cluster((web, frontend, batch, dns), namespaces, tuple(_documented_policies(path)))
    rulesets = render_all(cluster)

    def reaches(src: PodInfo, dst: PodInfo, proto: str, port: int) -> bool:
        got = kernel(rulesets, src, dst, (src.ips[0], dst.ips[0], proto, port))
        assert got == oracle(cluster, src, src.ips[0], dst, dst.ips[0], proto, port)
        return got

    assert reaches(frontend, web, "tcp", 8080)
    assert not reaches(batch, web, "tcp", 8080)
    assert not reaches(frontend, web, "tcp", 80)
    assert not reaches(web, batch, "tcp", 8080)
    assert not reaches(dns, frontend, "tcp", 8080)
    assert reaches(web, dns, "udp", 53)
    assert reaches(frontend, dns, "udp", 53)
