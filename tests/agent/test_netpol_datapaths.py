"""NetworkPolicy on the other datapaths: pycni-ipip (encapsulation Never: direct routes between
the 3 nodes; the IPIP tunnel itself needs the kernel lane) and pycni-bridge (kubenet: one node,
dual-stack, every pod-to-pod packet bridged, so the policy sees it through br_netfilter), IPv4
and IPv6. The same model as tests/agent/test_netpol_e2e.py (x, y, z x a, b, c; 80/81 x TCP/UDP;
full tables compared), a representative set of scenarios on each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.netpol import PolicyLab, model_pods, policy_lab

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]


def pod(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


def ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"ns": name}}


def scenarios(lab: PolicyLab, vias: tuple[str, ...]) -> None:
    def run(what: str, policies: dict[str, dict[str, Any]], expected: Any) -> None:
        for key, spec in policies.items():
            namespace, name = key.split("/")
            lab.apply(namespace, name, spec)
        lab.enforced()
        for via in vias:
            lab.check(expected, via=via, what=f"{lab.datapath}: {what}")
        lab.delete_all_policies()
        lab.enforced()

    run("default deny ingress in x", {"x/deny": {"podSelector": {}}},
        lab.expect().ingress("x/*", False))  # fmt: skip
    peers_and = [{"podSelector": pod("b"), "namespaceSelector": ns("y")}]
    peers_or = [{"podSelector": pod("b")}, {"namespaceSelector": ns("y")}]
    run("pod AND namespace selector", {"x/and": {"podSelector": pod("a"),
                                                 "ingress": [{"from": peers_and}]}},
        lab.expect().ingress("x/a", False).expect("y/b", "x/a", True))  # fmt: skip
    either = lab.expect().ingress("x/a", False).expect("y/*", "x/a", True)
    run("pod OR namespace selector", {"x/or": {"podSelector": pod("a"),
                                               "ingress": [{"from": peers_or}]}},
        either.expect("x/b", "x/a", True))  # fmt: skip
    named = lab.expect().ingress("x/*", False)
    named.expect("*", "x/a", True, port=80, protocol="tcp")
    named.expect("*", "x/b", True, port=81, protocol="tcp")
    web = {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}
    run("named port 'web' per destination pod", {"x/web": web}, named)
    egress = lab.expect().egress("x/a", False).expect("x/a", "y/*", True, port=80, protocol="udp")
    run("egress to namespace y on 80/udp",
        {"x/out": {"podSelector": pod("a"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": ns("y")}],
                               "ports": [{"port": 80, "protocol": "UDP"}]}]}}, egress)  # fmt: skip


@pytest.fixture(scope="module")
def ipip_lab(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    with policy_lab(bundle, tmp_path_factory.mktemp("netpol-ipip"), "ipip") as lab:
        model_pods(lab)
        lab.services()
        lab.enforced()
        yield lab


def test_ipip_never(ipip_lab: PolicyLab) -> None:
    routes = ipip_lab.cluster.nodes["node1"].node.ns.ip("route")
    assert "10.244.1.0/24 via 172.18.0.3" in routes, routes  # direct routes, no tunnel
    scenarios(ipip_lab, ("pod", "service"))


@pytest.fixture(scope="module")
def bridge_lab(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    with policy_lab(bundle, tmp_path_factory.mktemp("netpol-bridge"), "bridge") as lab:
        model_pods(lab)
        lab.enforced()
        yield lab


def test_bridge_dual_stack_ipv4_and_ipv6(bridge_lab: PolicyLab) -> None:
    lab = bridge_lab
    assert all(p.ip6 is not None and p.ip6.startswith("fd00:10:244:") for p in lab.pods.values())
    scenarios(lab, ("pod", "pod6"))


def test_bridge_ipv6_ip_block_with_except(bridge_lab: PolicyLab) -> None:
    lab = bridge_lab
    target = lab.pods["y/b"]
    assert target.ip6 is not None
    prefix = target.ip6.rsplit(":", 1)[0]
    block = {"cidr": "fd00:10:244::/48", "except": [f"{target.ip6}/128"]}
    spec = {"podSelector": pod("a"), "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": block}]}]}  # fmt: skip
    lab.apply("x", "v6-block", spec)
    lab.enforced()
    # IPv6: every pod but y/b; IPv4: nothing (the block is IPv6)
    v6 = lab.expect().egress("x/a", False).expect("x/a", "*", True).expect("x/a", "y/b", False)
    lab.check(v6, via="pod6", what=f"IPv6 block {prefix}... except y/b")
    lab.check(lab.expect().egress("x/a", False), via="pod", what="an IPv6 block opens no IPv4")
    lab.delete_all_policies()
    lab.enforced()
