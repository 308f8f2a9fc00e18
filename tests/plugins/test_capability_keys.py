"""Capability arguments with Go's field names, as containerd sends them.

containerd (go-cni, 1.6 through 2.1) declares PortMapping, BandWidth, IPRanges and DNS without
JSON tags, so a kubelet's hostPort reaches the plugin as {"HostPort": 8080, "ContainerPort": 80,
"Protocol": "tcp", "HostIP": ""} and a bandwidth annotation as {"IngressRate": ...}. The Go
plugins accept that (encoding/json matches names case-insensitively); pycni-portmap refused it
as "hostPort is required" until the skel learnt the same matching. Unit tests of the matching,
then the frozen plugins driven with containerd's spelling.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycni.cni import skel
from pycni.lab import connectivity
from pycni.lab.testbed import Node
from tests.support import conflists
from tests.support.netlink import uplink

NODE4 = "172.31.0.2"
MBIT = 1_000_000


def canonical(runtime_config: dict[str, Any]) -> dict[str, Any]:
    return skel._canonical_capabilities(runtime_config)


def test_go_field_names_become_the_conventions_spelling() -> None:
    got = canonical(
        {
            "portMappings": [
                {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}
            ],
            "bandwidth": {"IngressRate": 1, "IngressBurst": 2, "EgressRate": 3, "EgressBurst": 4},
            "ipRanges": [[{"Subnet": "10.1.0.0/24", "RangeStart": "10.1.0.5", "Gateway": ""}]],
            "dns": {"Servers": ["10.96.0.10"], "Searches": ["svc"], "Options": ["ndots:5"]},
        }
    )
    assert got == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
        "bandwidth": {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4},
        "ipRanges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.5", "gateway": ""}]],
        "dns": {"servers": ["10.96.0.10"], "searches": ["svc"], "options": ["ndots:5"]},
    }


def test_any_case_matches_and_the_later_of_two_spellings_wins() -> None:
    got = canonical({"portMappings": [{"HOSTPORT": 1, "hostport": 2, "containerPort": 3}]})
    assert got == {"portMappings": [{"hostPort": 2, "containerPort": 3}]}
    got = canonical({"portMappings": [{"hostPort": 1, "HostPort": 2, "containerPort": 3}]})
    assert got == {"portMappings": [{"hostPort": 2, "containerPort": 3}]}


def test_unknown_keys_other_capabilities_and_odd_shapes_are_left_alone() -> None:
    untouched = {
        "portMappings": [{"HostPort": 1, "ContainerPort": 2, "Bogus": 3}, "not an object"],
        "bandwidth": ["not", "an", "object"],
        "ipRanges": [{"Subnet": "not a list of lists"}],
        "mac": "02:00:00:00:00:01",
        "Ips": ["10.1.0.9"],
    }
    got = canonical(json.loads(json.dumps(untouched)))
    assert got["portMappings"] == [
        {"hostPort": 1, "containerPort": 2, "Bogus": 3},
        "not an object",
    ]
    assert {k: v for k, v in got.items() if k != "portMappings"} == {
        k: v for k, v in untouched.items() if k != "portMappings"
    }


def test_the_call_carries_the_canonical_config() -> None:
    """What the plugin validates (call.config) says the same as call.runtime_config."""
    config = {
        "cniVersion": "1.0.0",
        "name": "kubenet",
        "type": "pycni-portmap",
        "runtimeConfig": {"portMappings": [{"HostPort": 80, "ContainerPort": 8080}]},
    }
    env = {
        "CNI_COMMAND": "DEL",
        "CNI_CONTAINERID": "cid",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    }
    from pycni.plugins import portmap

    raw = json.dumps(config).encode()
    call = skel._make_call("DEL", "1.0.0", json.loads(raw), raw, env, portmap)
    expected = [{"hostPort": 80, "containerPort": 8080}]
    assert call.runtime_config["portMappings"] == expected
    runtime_config = call.config["runtimeConfig"]
    assert isinstance(runtime_config, dict) and runtime_config["portMappings"] == expected


def conflist(*chained: dict[str, Any]) -> dict[str, Any]:
    return conflists.kubenet("1.0.0", ["10.62.0.0/24"], *chained)


@pytest.fixture
def node(node: Node) -> Node:
    """The shared node, with its own address on an uplink as a kind node's eth0."""
    uplink(node.ns, f"{NODE4}/16")
    return node


@pytest.mark.frozen
@pytest.mark.netns
def test_portmap_takes_containerds_host_ports(node: Node) -> None:
    conf = node.conf(conflist({"type": "pycni-portmap", "capabilities": {"portMappings": True}}))
    go_mappings = {
        "portMappings": [
            {"HostPort": 8080, "ContainerPort": connectivity.PORT, "Protocol": p, "HostIP": ""}
            for p in ("tcp", "udp")
        ]
    }
    pod = node.add_pod("a", conf, capability_args=go_mappings)
    (pod4,) = pod.addresses(4)
    server = connectivity.serve(pod.ns)
    try:
        for proto in ("tcp", "udp"):
            probe = connectivity.probe(
                node.ns, NODE4, proto, port=8080, expected_source=NODE4, name="node"
            )
            assert probe.ok, f"hostPort 8080/{proto} to {pod4}: {probe}"
    finally:
        server.stop()
    node.remove_pod("a", conf)


@pytest.mark.frozen
@pytest.mark.netns
def test_bandwidth_takes_containerds_rates(node: Node) -> None:
    conf = node.conf(conflist({"type": "pycni-bandwidth", "capabilities": {"bandwidth": True}}))
    go_rates = {"bandwidth": {"IngressRate": 10 * MBIT, "IngressBurst": 200_000}}
    pod = node.add_pod("a", conf, capability_args=go_rates)
    (veth,) = [i["name"] for i in pod.result["interfaces"] if i["name"].startswith("veth")]
    shown = json.loads(node.ns.run(["tc", "-j", "qdisc", "show", "dev", veth]).stdout or "[]")
    assert [q["kind"] for q in shown if q.get("root")] == ["tbf"], shown
    node.remove_pod("a", conf)
