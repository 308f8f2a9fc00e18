"""NetworkPolicy truth tables on an emulated 3-node cluster (vxlan), in the style of
Kubernetes' e2e netpol model: namespaces x, y, z x pods a, b, c (labels pod=<name>, ns=<name>;
x/a, y/a, z/a on node1, the b pods on node2, the c pods on node3), each serving TCP and UDP on
80 and 81; for each scenario every pod probes every pod on both ports and both protocols and
the whole table is compared with the expected one (both printed on a mismatch).

Part 1 re-expresses every test of Kubernetes 1.20.2's test/e2e/network/network_policy.go (33
`It`s) in this model. There, a "server" pod in the test's namespace serves 80 and 81 behind a
Service and short-lived client pods connect to the Service's ClusterIP; here the server is
x/a (its namespace is x, "namespace-b" is y, "namespace-c" is z), every other pod is a client,
and the probes go through an emulated kube-proxy (ClusterIP DNAT on every node), so policies
are checked on the pod behind a Service, as upstream does. Where upstream checks two or three
client/port pairs, the table checks all of them. Upstream names its ports serve-80, serve-81;
the model's are serve-80-tcp etc. (the later upstream model's names).

Part 2: the semantic corners of issue 18, label changes, policy update and delete, hostNetwork
pods, the node reaching its own pods. SCTP cannot be probed on this kernel (socket(...,
IPPROTO_SCTP) fails with EPROTONOSUPPORT): SCTP scenarios check that SCTP-only rules isolate
and open no TCP or UDP, and what the rules say."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import truthtable
from tests.support.netpol import PolicyLab, model_pods, policy_lab

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

TCP = "TCP"
ALL = tuple(f"{ns}/{p}" for ns in truthtable.NAMESPACES for p in truthtable.POD_NAMES)


@pytest.fixture(scope="module")
def lab(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    with policy_lab(bundle, tmp_path_factory.mktemp("netpol-e2e")) as lab:
        model_pods(lab)
        lab.services()
        lab.enforced()
        yield lab


@pytest.fixture(autouse=True)
def clean(lab: PolicyLab) -> Iterator[None]:
    """Every scenario starts and ends with no policy and the model's labels."""
    yield
    lab.delete_all_policies()
    for ns in truthtable.NAMESPACES:
        obj = lab.api.get("namespaces", ns)
        want = {"kubernetes.io/metadata.name": ns, "ns": ns}
        if obj is not None and obj["metadata"].get("labels") != want:
            lab.set_namespace_labels(ns, want)
    for key in ALL:
        obj = lab.api.get("pods", key)
        if obj is not None and obj["metadata"].get("labels") != {"pod": key.split("/")[1]}:
            lab.set_pod_labels(key, {"pod": key.split("/")[1]})
    lab.enforced()


def pod(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


def ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"ns": name}}


def port(number: int | str, protocol: str = TCP, end: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"port": number, "protocol": protocol}
    if end is not None:
        spec["endPort"] = end
    return spec


def enforce(lab: PolicyLab, *policies: tuple[str, str, dict[str, Any]]) -> None:
    for namespace, name, spec in policies:
        lab.apply(namespace, name, spec)
    lab.enforced()


def only(lab: PolicyLab, dst: str, sources: list[str], **where: object) -> truthtable.Reachability:
    """dst's ingress closed except from `sources` (on `port`/`protocol` if given)."""
    r = lab.expect().ingress(dst, False)
    for src in sources:
        r.expect(src, dst, True, **where)  # type: ignore[arg-type]
    return r


def tcp_only(r: truthtable.Reachability, src: str, dst: str, port: int) -> None:
    r.expect(src, dst, True, port=port, protocol="tcp")


# --- part 1: Kubernetes 1.20.2 test/e2e/network/network_policy.go ------------------------


def test_e2e_default_deny_ingress(lab: PolicyLab) -> None:
    """should support a 'default-deny-ingress' policy"""
    enforce(lab, ("x", "deny-ingress", {"podSelector": {}, "ingress": []}))
    lab.check(lab.expect().ingress("x/*", False), via="service", what="default-deny-ingress")


def test_e2e_default_deny_all(lab: PolicyLab) -> None:
    """should support a 'default-deny-all' policy"""
    spec = {"podSelector": {}, "policyTypes": ["Egress", "Ingress"], "ingress": [], "egress": []}
    enforce(lab, ("x", "default-deny-all", spec))
    r = lab.expect().ingress("x/*", False).egress("x/*", False)
    lab.check(r, via="service", what="default-deny-all")


def test_e2e_allow_from_pods_in_server_namespace_by_pod_selector(lab: PolicyLab) -> None:
    """should enforce policy to allow traffic from pods within server namespace based on
    PodSelector"""
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": pod("b")}]}]}
    enforce(lab, ("x", "allow-client-a-via-pod-selector", spec))
    lab.check(only(lab, "x/a", ["x/b"]), via="service", what="from x/b only")


def test_e2e_allow_only_from_other_namespace_by_namespace_selector(lab: PolicyLab) -> None:
    """should enforce policy to allow traffic only from a different namespace, based on
    NamespaceSelector"""
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"namespaceSelector": ns("y")}]}]}
    enforce(lab, ("x", "allow-ns-b-via-namespace-selector", spec))
    lab.check(only(lab, "x/a", ["y/*"]), via="service", what="from y only")


def test_e2e_pod_selector_with_match_expressions(lab: PolicyLab) -> None:
    """should enforce policy based on PodSelector with MatchExpressions"""
    expr = {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": expr}]}]}
    enforce(lab, ("x", "allow-client-a-via-pod-selector-with-match-expressions", spec))
    lab.check(only(lab, "x/a", ["x/b"]), via="service", what="pod In (b)")


def test_e2e_namespace_selector_with_match_expressions(lab: PolicyLab) -> None:
    """should enforce policy based on NamespaceSelector with MatchExpressions"""
    expr = {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["z"]}]}
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"namespaceSelector": expr}]}]}
    enforce(lab, ("x", "allow-any-ns-different-than-ns-c", spec))
    lab.check(only(lab, "x/a", ["x/*", "y/*"]), via="service", what="ns NotIn (z)")


def test_e2e_pod_selector_or_namespace_selector(lab: PolicyLab) -> None:
    """should enforce policy based on PodSelector or NamespaceSelector"""
    peers = [{"podSelector": pod("b")}, {"namespaceSelector": ns("y")}]
    spec = {"podSelector": pod("a"), "ingress": [{"from": peers}]}
    enforce(lab, ("x", "allow-ns-b-or-client-b", spec))
    lab.check(only(lab, "x/a", ["x/b", "y/*"]), via="service", what="x/b OR ns y")


def test_e2e_pod_selector_and_namespace_selector(lab: PolicyLab) -> None:
    """should enforce policy based on PodSelector and NamespaceSelector"""
    peers = [{"podSelector": pod("b"), "namespaceSelector": ns("y")}]
    spec = {"podSelector": pod("a"), "ingress": [{"from": peers}]}
    enforce(lab, ("x", "allow-client-b-in-ns-b", spec))
    lab.check(only(lab, "x/a", ["y/b"]), via="service", what="pod b AND ns y")


def test_e2e_only_from_a_pod_in_other_namespace(lab: PolicyLab) -> None:
    """should enforce policy to allow traffic only from a pod in a different namespace based
    on PodSelector and NamespaceSelector"""
    peers = [{"namespaceSelector": ns("y"), "podSelector": pod("a")}]
    spec = {"podSelector": pod("a"), "ingress": [{"from": peers}]}
    enforce(lab, ("x", "allow-ns-b-client-a", spec))
    lab.check(only(lab, "x/a", ["y/a"]), via="service", what="y/a only")


def test_e2e_ports(lab: PolicyLab) -> None:
    """should enforce policy based on Ports"""
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [{"port": 81}]}]}
    enforce(lab, ("x", "allow-ingress-on-port-81", spec))
    lab.check(only(lab, "x/a", ["*"], port=81, protocol="tcp"), via="service", what="81/tcp")


def test_e2e_stacked_policies_with_overlapping_pod_selectors(lab: PolicyLab) -> None:
    """should enforce multiple, stacked policies with overlapping podSelectors"""
    enforce(
        lab,
        (
            "x",
            "allow-ingress-on-port-80",
            {"podSelector": pod("a"), "ingress": [{"ports": [{"port": 80}]}]},
        ),
        (
            "x",
            "allow-ingress-on-port-81",
            {"podSelector": pod("a"), "ingress": [{"ports": [{"port": 81}]}]},
        ),
    )
    r = only(lab, "x/a", ["*"], port=80, protocol="tcp").expect(
        "*", "x/a", True, port=81, protocol="tcp"
    )
    lab.check(r, via="service", what="80/tcp and 81/tcp")


def test_e2e_allow_all(lab: PolicyLab) -> None:
    """should support allow-all policy"""
    enforce(lab, ("x", "allow-all", {"podSelector": {"matchLabels": {}}, "ingress": [{}]}))
    lab.check(lab.expect(), via="service", what="allow-all")


def test_e2e_ingress_on_one_named_port(lab: PolicyLab) -> None:
    """should allow ingress access on one named port"""
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}
    enforce(lab, ("x", "allow-client-a-via-named-port-ingress-rule", spec))
    lab.check(only(lab, "x/a", ["*"], port=80, protocol="tcp"), via="service", what="serve-80-tcp")


def test_e2e_ingress_from_namespace_on_one_named_port(lab: PolicyLab) -> None:
    """should allow ingress access from namespace on one named port"""
    rule = {"from": [{"namespaceSelector": ns("y")}], "ports": [{"port": "serve-80-tcp"}]}
    spec = {"podSelector": pod("a"), "ingress": [rule]}
    enforce(lab, ("x", "allow-client-in-ns-b-via-named-port-ingress-rule", spec))
    r = only(lab, "x/a", ["y/*"], port=80, protocol="tcp")
    lab.check(r, via="service", what="ns y on serve-80-tcp")


def test_e2e_egress_on_one_named_port(lab: PolicyLab) -> None:
    """should allow egress access on one named port"""
    spec = {"podSelector": pod("a"), "egress": [{"ports": [{"port": "serve-80-tcp"}]}]}
    enforce(lab, ("x", "allow-client-a-via-named-port-egress-rule", spec))
    # no policyTypes and egress rules: Ingress and Egress (upstream's clients only connect out)
    r = lab.expect().egress("x/a", False).ingress("x/a", False)
    r.expect("x/a", "*", True, port=80, protocol="tcp")
    lab.check(r, via="service", what="x/a egress on serve-80-tcp (and ingress isolated)")


def test_e2e_updated_policy(lab: PolicyLab) -> None:
    """should enforce updated policy"""
    rule = {"from": [{"podSelector": pod("b")}], "ports": [{"port": 80}]}
    enforce(lab, ("x", "allow-ingress", {"podSelector": pod("a"), "ingress": [rule]}))
    lab.check(only(lab, "x/a", ["x/b"], port=80, protocol="tcp"), via="service", what="x/b:80")
    rule = {"from": [{"podSelector": pod("c")}], "ports": [{"port": 81}]}
    enforce(lab, ("x", "allow-ingress", {"podSelector": pod("a"), "ingress": [rule]}))
    lab.check(
        only(lab, "x/a", ["x/c"], port=81, protocol="tcp"), via="service", what="updated: x/c:81"
    )


def test_e2e_ingress_from_updated_namespace(lab: PolicyLab) -> None:
    """should allow ingress access from updated namespace"""
    spec = {
        "podSelector": pod("a"),
        "ingress": [{"from": [{"namespaceSelector": ns("y-updated")}]}],
    }
    enforce(lab, ("x", "allow-ns-b-via-namespace-selector", spec))
    lab.check(only(lab, "x/a", []), via="service", what="no namespace matches yet")
    lab.set_namespace_labels("y", {"kubernetes.io/metadata.name": "y", "ns": "y-updated"})
    lab.enforced()
    lab.check(only(lab, "x/a", ["y/*"]), via="service", what="y relabelled ns=y-updated")


def test_e2e_ingress_from_updated_pod(lab: PolicyLab) -> None:
    """should allow ingress access from updated pod"""
    expr = {"matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]}
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": expr}]}]}
    enforce(lab, ("x", "allow-pod-b-via-pod-selector", spec))
    lab.check(only(lab, "x/a", []), via="service", what="every pod has the label")
    lab.set_pod_labels("x/b", {})
    lab.enforced()
    lab.check(only(lab, "x/a", ["x/b"]), via="service", what="x/b lost its labels")


def test_e2e_deny_ingress_to_updated_pod(lab: PolicyLab) -> None:
    """should deny ingress access to updated pod"""
    selector = {
        "matchLabels": {"pod": "a"},
        "matchExpressions": [{"key": "isolated", "operator": "Exists"}],
    }
    spec = {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": []}
    enforce(lab, ("x", "deny-ingress-via-isolated-label-selector", spec))
    lab.check(lab.expect(), via="service", what="nothing selected yet")
    lab.set_pod_labels("x/a", {"pod": "a", "isolated": ""})
    lab.enforced()
    lab.check(only(lab, "x/a", []), via="service", what="x/a labelled isolated")


def test_e2e_ingress_and_egress_together(lab: PolicyLab) -> None:
    """should work with Ingress,Egress specified together"""
    spec = {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"namespaceSelector": ns("y")}], "ports": [{"port": 80}]}],
        "egress": [{"to": [{"namespaceSelector": ns("y")}], "ports": [{"port": 80}]}],
    }
    enforce(lab, ("x", "ingress-egress-rule", spec))
    r = lab.expect().ingress("x/*", False).egress("x/*", False)
    r.expect("y/*", "x/*", True, port=80, protocol="tcp")
    r.expect("x/*", "y/*", True, port=80, protocol="tcp")
    lab.check(r, via="service", what="x: in from y:80, out to y:80")


def test_e2e_egress_to_other_namespace_by_pod_and_namespace_selector(lab: PolicyLab) -> None:
    """should enforce egress policy allowing traffic to a server in a different namespace
    based on PodSelector and NamespaceSelector"""
    peers = [{"namespaceSelector": ns("y"), "podSelector": pod("a")}]
    spec = {"podSelector": pod("a"), "policyTypes": ["Egress"], "egress": [{"to": peers}]}
    enforce(lab, ("x", "allow-to-ns-b-server-a", spec))
    r = lab.expect().egress("x/a", False).expect("x/a", "y/a", True)
    lab.check(r, via="service", what="x/a egress to y/a only")


def test_e2e_ingress_allow_all_takes_precedence(lab: PolicyLab) -> None:
    """should enforce multiple ingress policies with ingress allow-all policy taking
    precedence"""
    spec = {"podSelector": pod("a"), "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": pod("b")}]}]}  # fmt: skip
    enforce(lab, ("x", "allow-from-client-b-pod-selector", spec))
    lab.check(only(lab, "x/a", ["x/b"]), via="service", what="x/b only")
    allow_all = {"podSelector": {"matchLabels": {}}, "policyTypes": ["Ingress"], "ingress": [{}]}
    enforce(lab, ("x", "allow-all", allow_all))
    lab.check(lab.expect(), via="service", what="allow-all added")


def test_e2e_egress_allow_all_takes_precedence(lab: PolicyLab) -> None:
    """should enforce multiple egress policies with egress allow-all policy taking
    precedence"""
    spec = {"podSelector": pod("a"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": pod("b")}]}]}  # fmt: skip
    enforce(lab, ("x", "allow-to-server-a-pod-selector", spec))
    lab.check(lab.expect().egress("x/a", False).expect("x/a", "x/b", True), via="service",
              what="x/a egress to x/b only")  # fmt: skip
    allow_all = {"podSelector": {"matchLabels": {}}, "policyTypes": ["Egress"], "egress": [{}]}
    enforce(lab, ("x", "allow-all", allow_all))
    lab.check(lab.expect(), via="service", what="egress allow-all added")


def test_e2e_stop_enforcing_after_delete(lab: PolicyLab) -> None:
    """should stop enforcing policies after they are deleted"""
    deny = {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}
    enforce(lab, ("x", "deny-all", deny))
    lab.check(lab.expect().ingress("x/*", False), via="service", what="deny-all")
    allow = {"podSelector": pod("a"), "policyTypes": ["Ingress"],
             "ingress": [{"from": [{"podSelector": pod("b")}]}]}  # fmt: skip
    enforce(lab, ("x", "allow-from-client-a-pod-selector", allow))
    r = lab.expect().ingress("x/*", False).expect("x/b", "x/a", True)
    lab.check(r, via="service", what="deny-all + allow x/b -> x/a")
    lab.delete_policy("x/allow-from-client-a-pod-selector")
    lab.enforced()
    lab.check(lab.expect().ingress("x/*", False), via="service", what="allow deleted")
    lab.delete_policy("x/deny-all")
    lab.enforced()
    lab.check(lab.expect(), via="service", what="deny-all deleted")


def test_e2e_egress_to_server_in_cidr_block(lab: PolicyLab) -> None:
    """should allow egress access to server in CIDR block"""
    server = lab.pods["y/b"].ip
    spec = {"podSelector": pod("a"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": f"{server}/32"}}]}]}  # fmt: skip
    enforce(lab, ("x", "allow-client-a-via-cidr-egress-rule", spec))
    r = lab.expect().egress("x/a", False).expect("x/a", "y/b", True)
    lab.check(r, via="service", what=f"x/a egress to {server}/32 only")


def _except_policy(server: str) -> dict[str, Any]:
    net = ".".join(server.split(".")[:3]) + ".0/24"
    block = {"cidr": net, "except": [f"{server}/32"]}
    return {
        "podSelector": pod("a"),
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": block}]}],
    }


def test_e2e_except_clause_in_cidr_block(lab: PolicyLab) -> None:
    """should enforce except clause while egress access to server in CIDR block"""
    server = lab.pods["y/b"].ip  # node2's /24 holds x/b, y/b, z/b
    enforce(lab, ("x", "deny-client-a-via-except-cidr-egress-rule", _except_policy(server)))
    r = lab.expect().egress("x/a", False).expect("x/a", "*/b", True).expect("x/a", "y/b", False)
    lab.check(r, via="service", what="x/a egress to node2's /24 except y/b")


def test_e2e_ip_in_both_cidr_and_except_is_allowed(lab: PolicyLab) -> None:
    """should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"""
    server = lab.pods["y/b"].ip
    with_except = ("x", "deny-client-a-via-except-cidr-egress-rule", _except_policy(server))
    enforce(lab, with_except)
    except_only = lab.expect().egress("x/a", False).expect("x/a", "*/b", True)
    except_only.expect("x/a", "y/b", False)
    lab.check(except_only, via="service", what="except policy alone")
    allow = {"podSelector": pod("a"), "policyTypes": ["Egress"],
             "egress": [{"to": [{"ipBlock": {"cidr": f"{server}/32"}}]}]}  # fmt: skip
    enforce(lab, ("x", "allow-client-a-via-cidr-egress-rule", allow))
    both = lab.expect().egress("x/a", False).expect("x/a", "*/b", True)
    lab.check(both, via="service", what="another policy allows the excepted IP")
    lab.delete_policy("x/deny-client-a-via-except-cidr-egress-rule")
    lab.enforced()
    lab.check(lab.expect().egress("x/a", False).expect("x/a", "y/b", True), via="service",
              what="except policy deleted")  # fmt: skip
    enforce(lab, with_except)
    lab.check(both, via="service", what="except policy created again")


def test_e2e_ingress_and_egress_independent_by_pod_selector(lab: PolicyLab) -> None:
    """should enforce policies to check ingress and egress policies can be controlled
    independently based on PodSelector"""
    egress = {"podSelector": pod("a"), "policyTypes": ["Egress"],
              "egress": [{"to": [{"podSelector": pod("b")}]}]}  # fmt: skip
    deny_in = {"podSelector": pod("a"), "policyTypes": ["Ingress"], "ingress": []}
    enforce(lab, ("x", "allow-pod-a-to-pod-b", egress), ("x", "deny-pod-b-to-pod-a", deny_in))
    r = lab.expect().egress("x/a", False).ingress("x/a", False).expect("x/a", "x/b", True)
    lab.check(r, via="service", what="x/a out to x/b only, nothing in")


def test_e2e_sctp_only_policy_does_not_allow_tcp(lab: PolicyLab) -> None:
    """should not allow access by TCP when a policy specifies only SCTP"""
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [port(80, "SCTP")]}]}
    enforce(lab, ("x", "allow-only-sctp-ingress-on-port-80", spec))
    lab.check(only(lab, "x/a", []), via="service", what="SCTP-only rule: TCP and UDP closed")


def _sctp_rules(lab: PolicyLab, node: str) -> str:
    member = lab.cluster.nodes[node]
    return member.node.ns.run(["nft", "list", "table", "inet", "pycni-policy"]).stdout


def test_e2e_sctp_default_deny(lab: PolicyLab) -> None:
    """[Feature:SCTPConnectivity] should support a 'default-deny' policy (SCTP itself cannot
    be probed here: the TCP/UDP table shows the isolation)"""
    enforce(lab, ("x", "deny-all", {"podSelector": {}, "ingress": []}))
    lab.check(lab.expect().ingress("x/*", False), via="service", what="SCTP suite default-deny")


def test_e2e_sctp_ports(lab: PolicyLab) -> None:
    """[Feature:SCTPConnectivity] should enforce policy based on Ports: only SCTP 81 opens
    (not probed: no SCTP here); TCP and UDP stay closed; the rule says sctp 81"""
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [port(81, "SCTP")]}]}
    enforce(lab, ("x", "allow-ingress-on-port-81", spec))
    lab.check(only(lab, "x/a", []), via="service", what="SCTP 81 only")
    assert "sctp dport 81 accept" in _sctp_rules(lab, "node1")  # nft prints it short


def test_e2e_sctp_pod_and_namespace_selector(lab: PolicyLab) -> None:
    """[Feature:SCTPConnectivity] should enforce policy to allow traffic only from a pod in a
    different namespace based on PodSelector and NamespaceSelector (SCTP only)"""
    peers = [{"namespaceSelector": ns("y"), "podSelector": pod("a")}]
    spec = {"podSelector": pod("a"), "ingress": [{"from": peers, "ports": [port(80, "SCTP")]}]}
    enforce(lab, ("x", "allow-ns-b-client-a-sctp", spec))
    lab.check(only(lab, "x/a", []), via="service", what="SCTP from y/a only: TCP/UDP closed")
    rules = _sctp_rules(lab, "node1")
    assert "sctp dport 80 accept" in rules and "@sel4_" in rules


def test_e2e_network_policy_api_operations(lab: PolicyLab) -> None:
    """should support creating NetworkPolicy API operations (create, get, list, watch,
    update, patch, delete, deletecollection): upstream checks the API server; here, the
    agent's view of each operation is checked by the traffic it lets through."""
    base = {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": pod("b")}]}]}
    enforce(lab, ("x", "e2e-example-netpol", base), ("x", "e2e-example-netpol-2", base))
    lab.check(only(lab, "x/a", ["x/b"]), what="create")
    updated = {**base, "ingress": [{"from": [{"podSelector": pod("c")}]}]}
    enforce(lab, ("x", "e2e-example-netpol", updated))  # update: now x/b (2) or x/c (1)
    lab.check(only(lab, "x/a", ["x/b", "x/c"]), what="update")
    obj = lab.api.get("networkpolicies", "x/e2e-example-netpol-2")
    assert obj is not None
    obj["metadata"]["annotations"] = {"patched": "true"}  # patch: metadata only
    lab.api.put("networkpolicies", obj)
    lab.enforced()
    lab.check(only(lab, "x/a", ["x/b", "x/c"]), what="patch")
    lab.delete_policy("x/e2e-example-netpol")
    lab.enforced()
    lab.check(only(lab, "x/a", ["x/b"]), what="delete")
    enforce(lab, ("x", "e2e-example-netpol-3", base), ("x", "e2e-example-netpol-4", base))
    for key in ("x/e2e-example-netpol-2", "x/e2e-example-netpol-3", "x/e2e-example-netpol-4"):
        lab.delete_policy(key)  # deletecollection: one DELETED event each
    lab.enforced()
    lab.check(lab.expect(), what="deletecollection")


# --- part 2: the corners of the semantics -------------------------------------------------


def test_policy_types_default_to_ingress_and_egress_only_with_egress_rules(lab: PolicyLab) -> None:
    # no policyTypes, egress rules: both directions isolated
    spec = {"podSelector": pod("a"), "egress": [{"to": [{"podSelector": pod("b")}]}]}
    enforce(lab, ("x", "both", spec))
    r = lab.expect().ingress("x/a", False).egress("x/a", False).expect("x/a", "x/b", True)
    lab.check(r, what="no policyTypes + egress rules: Ingress and Egress")
    # egress: [] without policyTypes: Ingress only (the API server's defaulting)
    enforce(lab, ("x", "both", {"podSelector": pod("a"), "egress": []}))
    lab.check(only(lab, "x/a", []), what="egress: [] adds no Egress")
    # policyTypes [Ingress] with egress rules: the egress rules are not enforced
    spec = {"podSelector": pod("a"), "policyTypes": ["Ingress"], "ingress": [{}],
            "egress": [{"to": [{"podSelector": pod("b")}]}]}  # fmt: skip
    enforce(lab, ("x", "both", spec))
    lab.check(lab.expect(), what="egress rules outside policyTypes do nothing")


def test_except_address_allowed_by_another_rule_of_the_same_policy(lab: PolicyLab) -> None:
    server = lab.pods["y/b"].ip
    net = ".".join(server.split(".")[:3]) + ".0/24"
    spec = {"podSelector": pod("a"), "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": net, "except": [f"{server}/32"]}}]},
        {"to": [{"podSelector": pod("b"), "namespaceSelector": ns("y")}], "ports": [port(81)]},
    ]}  # fmt: skip
    enforce(lab, ("x", "except-and-another-rule", spec))
    r = lab.expect().egress("x/a", False).expect("x/a", "*/b", True).expect("x/a", "y/b", False)
    r.expect("x/a", "y/b", True, port=81, protocol="tcp")
    lab.check(r, what="y/b excepted by one rule, allowed on 81/tcp by the other")


def test_named_port_is_resolved_per_destination_pod(lab: PolicyLab) -> None:
    # "web" is 80 on the a pods, 81 on the b pods, absent on the c pods
    enforce(lab, ("x", "web-in", {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}))
    r = lab.expect().ingress("x/*", False)
    r.expect("*", "x/a", True, port=80, protocol="tcp").expect(
        "*", "x/b", True, port=81, protocol="tcp"
    )
    lab.check(r, what="ingress on 'web': 80 to x/a, 81 to x/b, nothing to x/c")
    lab.delete_all_policies()
    spec = {
        "podSelector": pod("a"),
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "web"}]}],
    }
    enforce(lab, ("x", "web-out", spec))
    r = lab.expect().egress("x/a", False)
    r.expect("x/a", "*/a", True, port=80, protocol="tcp").expect(
        "x/a", "*/b", True, port=81, protocol="tcp"
    )
    lab.check(r, what="x/a egress on 'web': 80 to the a pods, 81 to the b pods, not to the c pods")


def test_named_port_with_other_protocol_matches_nothing(lab: PolicyLab) -> None:
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [port("serve-80-tcp", "UDP")]}]}
    enforce(lab, ("x", "wrong-protocol", spec))
    lab.check(only(lab, "x/a", []), what="serve-80-tcp is TCP: a UDP rule on it opens nothing")


def test_end_port(lab: PolicyLab) -> None:
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [port(80, TCP, end=81)]}]}
    enforce(lab, ("x", "range", spec))
    r = only(lab, "x/a", ["*"], port=80, protocol="tcp").expect(
        "*", "x/a", True, port=81, protocol="tcp"
    )
    lab.check(r, what="80-81/tcp")
    spec = {"podSelector": pod("a"), "ingress": [{"ports": [port(81, "UDP", end=90)]}]}
    enforce(lab, ("x", "range", spec))
    lab.check(only(lab, "x/a", ["*"], port=81, protocol="udp"), what="81-90/udp")


def test_protocol_is_exact(lab: PolicyLab) -> None:
    enforce(
        lab, ("x", "udp", {"podSelector": pod("a"), "ingress": [{"ports": [{"protocol": "UDP"}]}]})
    )
    lab.check(only(lab, "x/a", ["*"], protocol="udp"), what="a UDP rule opens no TCP")
    enforce(lab, ("x", "udp", {"podSelector": pod("a"), "ingress": [{"ports": [port(80, "UDP")]}]}))
    lab.check(only(lab, "x/a", ["*"], port=80, protocol="udp"), what="UDP 80 only")


def test_policies_never_select_pods_of_other_namespaces(lab: PolicyLab) -> None:
    enforce(lab, ("y", "deny", {"podSelector": {}, "ingress": [], "egress": [],
                                "policyTypes": ["Ingress", "Egress"]}))  # fmt: skip
    lab.check(
        lab.expect().ingress("y/*", False).egress("y/*", False), what="y isolated, x and z not"
    )


def test_pod_selector_peer_is_scoped_to_the_policy_namespace(lab: PolicyLab) -> None:
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": {}}]}]}
    enforce(lab, ("x", "same-namespace", spec))
    lab.check(only(lab, "x/a", ["x/*"]), what="podSelector {} alone: the policy's namespace")
    spec = {"podSelector": pod("a"), "ingress": [{"from": [{"namespaceSelector": {}}]}]}
    enforce(lab, ("x", "same-namespace", spec))
    lab.check(lab.expect(), what="namespaceSelector {}: every namespace")


def test_namespace_label_change_moves_pods_in_and_out(lab: PolicyLab) -> None:
    spec = {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
    }
    enforce(lab, ("x", "blue-only", spec))
    lab.check(lab.expect().ingress("x/*", False), what="no namespace is blue")
    lab.set_namespace_labels("z", {"kubernetes.io/metadata.name": "z", "ns": "z", "team": "blue"})
    lab.enforced()
    lab.check(lab.expect().ingress("x/*", False).expect("z/*", "x/*", True), what="z turned blue")
    lab.set_namespace_labels("z", {"kubernetes.io/metadata.name": "z", "ns": "z"})
    lab.enforced()
    lab.check(lab.expect().ingress("x/*", False), what="z no longer blue")


def test_pod_label_change_moves_a_pod_between_targets_and_peers(lab: PolicyLab) -> None:
    spec = {"podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "app"}}}]}]}  # fmt: skip
    enforce(lab, ("x", "db", spec))
    lab.check(lab.expect(), what="no db yet")
    lab.set_pod_labels("x/c", {"pod": "c", "role": "db"})
    lab.set_pod_labels("x/b", {"pod": "b", "role": "app"})
    lab.enforced()
    lab.check(only(lab, "x/c", ["x/b"]), what="x/c is the db, x/b the app")
    lab.set_pod_labels("x/c", {"pod": "c"})
    lab.enforced()
    lab.check(lab.expect(), what="x/c no longer a db")


def test_host_network_pods_are_never_selected(lab: PolicyLab) -> None:
    """A hostNetwork pod in x (the kubelet reports the node's IP as its IP): a deny-all in
    x does not isolate it (the node still answers), and a podSelector {} peer does not admit
    its traffic (node1's address, to pods on the other nodes)."""
    member = lab.cluster.nodes["node1"]
    from tests.support.netpol import pod_object

    host = pod_object("x", "host", "node1", {"pod": "host"}, ips=[member.ip], host_network=True,
                      phase="Running")  # fmt: skip
    lab.api.put("pods", host)
    try:
        spec: dict[str, Any] = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
        enforce(lab, ("x", "from-x-pods", spec))
        node1 = member.node.ns
        server = truthtable.PodAgent(node1.name, ports=(18081,))
        try:
            results = truthtable.probe(
                {"x/a": lab.pods["x/a"].probe, "node1": server},  # type: ignore[dict-item]
                [
                    ("x/a", "node1", member.ip, 18081, "tcp"),
                    ("node1", "x/b", lab.pods["x/b"].ip, 80, "tcp"),
                    ("node1", "x/a", lab.pods["x/a"].ip, 80, "tcp"),
                ],
            )
        finally:
            server.stop()
        assert results[("x/a", "node1", 18081, "tcp")], "the hostNetwork 'pod' was isolated"
        assert not results[("node1", "x/b", 80, "tcp")], (
            "node1's address reached x/b on node2: a podSelector selected the hostNetwork pod"
        )
        assert results[("node1", "x/a", 80, "tcp")], "node1 could not reach its own pod x/a"
    finally:
        lab.api.delete("pods", "x/host")


def test_the_node_always_reaches_its_own_pods(lab: PolicyLab) -> None:
    deny = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    enforce(lab, ("x", "deny-all", deny), ("y", "deny-all", deny), ("z", "deny-all", deny))
    lab.check(lab.expect(False), what="everything isolated")
    for name, member in sorted(lab.cluster.nodes.items()):
        node = truthtable.PodAgent(member.node.ns.name, ports=(18082,))
        try:
            cells = [(name, key, p.ip, 80, "tcp") for key, p in sorted(lab.pods.items())]
            results = truthtable.probe({name: node}, cells, timeout=1.0)
        finally:
            node.stop()
        for key, p in lab.pods.items():
            local = p.member.name == name
            assert results[(name, key, 80, "tcp")] == local, (
                f"{name} -> {key} ({'local' if local else 'remote'}): reached ="
                f" {results[(name, key, 80, 'tcp')]}"
            )


def test_a_burst_of_policies_lands_and_is_enforced(lab: PolicyLab) -> None:
    started = time.monotonic()
    for i in range(30):
        noise = {
            "podSelector": pod(f"none-{i}"),
            "ingress": [{"from": [{"podSelector": pod("b")}]}],
        }
        lab.apply("x", f"noise-{i}", noise)
    enforce(
        lab,
        (
            "x",
            "real",
            {"podSelector": pod("a"), "ingress": [{"from": [{"podSelector": pod("c")}]}]},
        ),
    )
    assert time.monotonic() - started < 60
    lab.check(only(lab, "x/a", ["x/c"]), what="30 policies selecting nothing and one that does")
