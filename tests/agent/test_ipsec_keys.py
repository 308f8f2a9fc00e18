"""pycni.agent.ipsec_keys: the pair keys both sides derive, SPIs per pair and boot, rekeying,
a peer without key, and the agent's use of it (with a stand-in for the kernel's xfrm tables
and for the API server: the kernel's side is in tests/kernel/test_ipsec_cluster.py)."""

from __future__ import annotations

import base64
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.agent import ipsec_keys
from pycni.agent.agent import Agent, NodeInfo, run_once
from pycni.agent.ipsec_keys import (
    ANNOTATION_NONCE,
    ANNOTATION_PUBLIC_KEY,
    Keying,
    NodeKey,
    PeerNode,
    Published,
    pair_keys,
)
from pycni.datapath import ipsec
from pycni.lab.netns import Netns
from pycni.netlink.xfrm import SecurityAssociation, SecurityPolicy, Xfrm
from tests.support.ci import unavailable
from tests.support.kube_replay import kind_node
from tests.support.netlink import ip
from tests.support.paths import AGENT_DIR, KIND


class FakeXfrm:
    """The xfrm tables of one node, as pycni.netlink.xfrm.Xfrm answers for them."""

    def __init__(self) -> None:
        self.sa_list: list[SecurityAssociation] = []
        self.sp_list: list[SecurityPolicy] = []

    def __enter__(self) -> FakeXfrm:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def sas(self) -> list[SecurityAssociation]:
        return list(self.sa_list)

    def sps(self) -> list[SecurityPolicy]:
        return list(self.sp_list)

    def add_sa(self, sa: SecurityAssociation, *, update: bool = False) -> None:
        assert not any((s.dst, s.spi) == (sa.dst, sa.spi) for s in self.sa_list)
        self.sa_list.append(sa)

    def delete_sa(self, dst: Any, spi: int, *, missing_ok: bool = True) -> None:
        self.sa_list = [s for s in self.sa_list if (s.dst, s.spi) != (dst, spi)]

    def add_sp(self, sp: SecurityPolicy, *, update: bool = False) -> None:
        self.sp_list = [s for s in self.sp_list if s.key != sp.key] + [sp]

    def delete_sp(self, sp: SecurityPolicy, *, missing_ok: bool = True) -> None:
        self.sp_list = [s for s in self.sp_list if s.key != sp.key]


class FakeApi:
    def __init__(self, nodes: list[dict[str, Any]] | None = None) -> None:
        self.nodes = nodes or []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        return self.nodes, "1"

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((path, patch))
        return {}

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        assert path == "/api/v1/namespaces/default/events"
        self.events.append(obj)
        return obj


def test_both_sides_derive_the_same_two_keys() -> None:
    a, b = NodeKey(), NodeKey()
    ab, ba = pair_keys(a, b.published), pair_keys(b, a.published)
    assert (ab.out_spi, ab.out_key) == (ba.in_spi, ba.in_key)  # A's out is B's in
    assert (ab.in_spi, ab.in_key) == (ba.out_spi, ba.out_key)
    assert ab.out_key != ab.in_key and ab.out_spi != ab.in_spi  # one key per direction
    assert len(ab.out_key) == 20 and ab.out_spi >= 0x100


def test_a_third_party_or_another_psk_gets_other_keys() -> None:
    a, b, c = NodeKey(), NodeKey(), NodeKey()
    ab = pair_keys(a, b.published)
    # c claims b's nonce and key but has not b's private key
    assert pair_keys(c, a.published).in_key != ab.out_key
    with_psk = pair_keys(a, b.published, psk=b"cluster secret")
    assert with_psk.out_key != ab.out_key
    assert with_psk == pair_keys(a, b.published, psk=b"cluster secret")
    assert pair_keys(b, a.published, psk=b"other secret").in_key != with_psk.out_key


def test_spis_are_unique_per_pair_and_boot() -> None:
    nodes = [NodeKey() for _ in range(30)]
    spis = [
        spi
        for a, b in itertools.permutations(nodes, 2)
        for spi in (pair_keys(a, b.published).out_spi,)
    ]
    assert len(set(spis)) == len(spis) == 30 * 29
    assert all(0x100 <= spi <= 0xFFFFFFFF for spi in spis)


def test_a_restart_or_a_rotation_gives_new_keys_and_spis() -> None:
    a, b = NodeKey(), NodeKey()
    before = pair_keys(a, b.published)
    restarted = NodeKey()  # a new agent process: new key pair, new nonce
    after = pair_keys(restarted, b.published)
    assert {after.out_spi, after.in_spi}.isdisjoint({before.out_spi, before.in_spi})
    assert after.out_key != before.out_key and after.in_key != before.in_key
    # the peer, seeing the new annotations, derives the same new keys
    assert pair_keys(b, restarted.published).in_spi == after.out_spi
    old_nonce = b.nonce
    b.rotate()  # same key pair, new nonce (the rekey before the sequence number wraps)
    assert b.nonce != old_nonce
    rotated = pair_keys(a, b.published)
    assert {rotated.out_spi, rotated.in_spi}.isdisjoint({before.out_spi, before.in_spi})


def test_published_annotations() -> None:
    key = NodeKey()
    assert Published.of(key.published.annotations()) == key.published
    assert Published.of(None) is None
    assert Published.of({ANNOTATION_PUBLIC_KEY: "not base64!", ANNOTATION_NONCE: "AA=="}) is None
    short = {ANNOTATION_PUBLIC_KEY: base64.b64encode(b"x" * 31).decode(), ANNOTATION_NONCE: ""}
    assert Published.of(short) is None
    # a small-order point (all zeros): X25519 gives an all-zero secret, refused
    zero = Published(bytes(32), bytes(16))
    with pytest.raises(ValueError):
        pair_keys(key, zero)


def test_keying_publishes_reconciles_and_reports_a_peer_without_key() -> None:
    api, table = FakeApi(), FakeXfrm()
    keying = Keying(api, "node1", ipsec.Tunnel("vxlan"), xfrm_factory=lambda: table)  # type: ignore[arg-type,return-value]
    peer_key = NodeKey()
    peers = [
        PeerNode("node2", "172.18.0.3", peer_key.published.annotations()),
        PeerNode("node3", "172.18.0.4", {}),
    ]
    keying.apply("172.18.0.2", peers)
    assert api.patches == [
        ("/api/v1/nodes/node1", {"metadata": {"annotations": keying.key.published.annotations()}})
    ]
    keys = pair_keys(keying.key, peer_key.published)
    assert {(str(s.dst), s.spi) for s in table.sa_list} == {
        ("172.18.0.3", keys.out_spi),
        ("172.18.0.2", keys.in_spi),
    }
    assert {(str(p.src), str(p.dst)) for p in table.sp_list} == {
        ("172.18.0.2", "172.18.0.3"),
        ("172.18.0.3", "172.18.0.2"),
        ("172.18.0.2", "172.18.0.4"),  # node3 without key: policies only, its traffic blocked
        ("172.18.0.4", "172.18.0.2"),
    }
    (event,) = api.events
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "node3",
                                       "uid": "node3"}  # fmt: skip
    assert event["reason"] == "IPsecPeerWithoutKey" and "node3" in event["message"]
    keying.apply("172.18.0.2", peers)  # nothing new: no second patch, no second event
    assert len(api.patches) == 1 and len(api.events) == 1
    # node2 restarts (new key): the SAs follow, the old ones go
    restarted = NodeKey()
    peers[0] = PeerNode("node2", "172.18.0.3", restarted.published.annotations())
    changes = keying.apply("172.18.0.2", peers)
    new = pair_keys(keying.key, restarted.published)
    assert {s.spi for s in table.sa_list} == {new.out_spi, new.in_spi}
    assert len(changes.removed) == 2 and len(changes.added) == 2


def test_agent_rekeys_before_the_sequence_number_wraps(tmp_path: Path) -> None:
    api, table = FakeApi(), FakeXfrm()
    keying = Keying(api, "node1", ipsec.Tunnel("ipip"), xfrm_factory=lambda: table)  # type: ignore[arg-type,return-value]
    peer = NodeKey()
    template = {"plugins": [{"type": "pycni-ipip", "peersFile": str(tmp_path / "peers")}]}
    agent = Agent(FakeApi(), "node1", template, tmp_path / "net.conflist",
                  reconcile=lambda path: [], keying=keying)  # fmt: skip
    agent.nodes = {
        "node1": NodeInfo("node1", ("172.18.0.2",), ("10.244.0.0/24",)),
        "node2": NodeInfo.of(
            {
                "metadata": {"name": "node2", "annotations": peer.published.annotations()},
                "spec": {"podCIDRs": ["10.244.1.0/24"]},
                "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}]},
            }
        ),
    }
    keys = pair_keys(keying.key, peer.published)
    assert keying.apply(
        "172.18.0.2", [PeerNode("node2", "172.18.0.3", dict(agent.nodes["node2"].annotations))]
    )
    agent.check_wrap()  # fresh SAs: nothing to do
    assert len(api.patches) == 1
    worn = SecurityAssociation(src=ip("172.18.0.2"), dst=ip("172.18.0.3"), spi=keys.out_spi,
                               key=keys.out_key, packets=ipsec_keys.REKEY_PACKETS)  # fmt: skip
    table.sa_list = [s if s.spi != keys.out_spi else worn for s in table.sa_list]
    nonce = keying.key.nonce
    agent.check_wrap()
    assert keying.key.nonce != nonce and len(api.patches) == 2  # a new nonce, published
    assert api.patches[-1][1]["metadata"]["annotations"][ANNOTATION_NONCE] == (
        base64.b64encode(keying.key.nonce).decode()
    )


def test_once_writes_the_conflist_and_leaves_the_key_to_the_agent(tmp_path: Path) -> None:
    """--once (the install-conflist init container) with IPsec: the conflist, and nothing
    published, no xfrm state, no peers file. Its key would be replaced by the agent's own a
    moment later, and every peer would rekey twice at start; the agent publishes once."""
    peer = NodeKey()
    node2 = kind_node("node2", "172.18.0.3", ["10.244.1.0/24"], 1)
    node2["metadata"]["annotations"].update(peer.published.annotations())
    nodes = [kind_node("node1", "172.18.0.2", ["10.244.0.0/24"], 1), node2]
    api, table = FakeApi(nodes), FakeXfrm()
    keying = Keying(api, "node1", ipsec.Tunnel("vxlan"), xfrm_factory=lambda: table)  # type: ignore[arg-type,return-value]
    peers_file = tmp_path / "peers.json"
    template = {"plugins": [{"type": "pycni-vxlan", "peersFile": str(peers_file)}]}
    reconciled: list[Path] = []

    def reconcile(path: Path) -> list[str]:
        reconciled.append(path)
        return []

    conf = tmp_path / "net.conflist"
    agent = Agent(api, "node1", template, conf, reconcile, encryption="ipsec", keying=keying)
    assert run_once(agent) == 0
    assert json.loads(conf.read_text())["plugins"][0]["encryption"] == "ipsec"
    assert api.patches == [] and table.sa_list == [] and table.sp_list == []
    assert not peers_file.exists() and reconciled == []
    agent.apply()  # the agent that stays: its key published once, the peer keyed
    assert len(api.patches) == 1 and len(table.sa_list) == 2
    assert [p["name"] for p in json.loads(peers_file.read_text())] == ["node2"]
    assert reconciled == [conf]


def test_node_info_keeps_pycni_annotations_only() -> None:
    annotations = {"pycni.io/ipsec-nonce": "AA==", "kubeadm.alpha.kubernetes.io/cri-socket": "x"}
    node = NodeInfo.of({"metadata": {"name": "n", "annotations": annotations}})
    assert node.annotations == (("pycni.io/ipsec-nonce", "AA=="),)


def test_tunnel_of_template() -> None:
    assert ipsec_keys.tunnel_of({"plugins": [{"type": "pycni-vxlan", "port": 8472}]}) == (
        ipsec.Tunnel("vxlan", 8472)
    )
    assert ipsec_keys.tunnel_of({"type": "pycni-ipip"}) == ipsec.Tunnel("ipip")
    assert ipsec_keys.tunnel_of({"plugins": [{"type": "pycni-bridge"}]}) is None


def test_keying_publishes_again_when_the_node_loses_its_annotations() -> None:
    api, table = FakeApi(), FakeXfrm()
    keying = Keying(api, "node1", ipsec.Tunnel("vxlan"), xfrm_factory=lambda: table)  # type: ignore[arg-type,return-value]
    keying.apply("172.18.0.2", [], {})  # first publish; the watch has not shown it yet
    keying.apply("172.18.0.2", [], {})  # still not shown (the event is on its way): no repeat
    assert len(api.patches) == 1
    keying.apply("172.18.0.2", [], keying.key.published.annotations())  # shown
    keying.apply("172.18.0.2", [], {})  # then lost (the Node object was replaced)
    assert len(api.patches) == 2
    assert api.patches[-1][1]["metadata"]["annotations"] == keying.key.published.annotations()


@pytest.mark.netns
def test_encryption_none_clears_pycni_xfrm_state(netns: Netns) -> None:
    """`pycni agent --encryption none` on a node where it was on: pycni's policies go, a
    foreign one stays."""
    netns.ip(
        "xfrm",
        "policy",
        "add",
        *["src", "10.9.0.1/32", "dst", "10.9.0.2/32", "dir", "out", "priority", "100"],
    )
    with Xfrm(netns.path) as xfrm_table:
        ipsec.reconcile(
            xfrm_table, ip("172.18.0.2"), ipsec.Tunnel("ipip"), [ipsec.Peer(ip("172.18.0.3"), None)]
        )
        assert len(xfrm_table.sps()) == 3
    code = "from pycni.agent.agent import disable_encryption; disable_encryption()"
    netns.run([sys.executable, "-c", code])
    with Xfrm(netns.path) as xfrm_table:
        assert [(str(sp.src), sp.owned) for sp in xfrm_table.sps()] == [("10.9.0.1", False)]


@pytest.mark.frozen
@pytest.mark.netns
def test_frozen_agent_carries_the_keying(netns: Netns, tmp_path: Path) -> None:
    """The frozen pycni-agent (packaging/agent.spec) makes its X25519 key at start with
    --encryption ipsec: cryptography is in the bundle. (It then fails to reach the API server,
    which does not exist: in a namespace of its own, nothing else is touched.)"""
    agent = AGENT_DIR / "pycni-agent"
    if not agent.exists():
        unavailable(f"{agent} missing: run packaging/build.sh")
    template = tmp_path / "00-pycni-vxlan.conflist"
    template.write_text((KIND / "00-pycni-vxlan.conflist").read_text())
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    argv = [str(agent), "--node-name", "n1", "--template", str(template), "--conf-dir",
            str(tmp_path / "net.d"), "--kubeconfig", str(kubeconfig), "--once",
            "--network-policy", "false", "--encryption", "ipsec"]  # fmt: skip
    done = netns.run(argv, check=False, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "IPsec: vxlan tunnel packets in ESP (no PSK)" in output, output
    assert "failed to list the nodes" in output and "Traceback" not in output, output
