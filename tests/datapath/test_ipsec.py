"""pycni.datapath.ipsec: the desired state as pure logic, and the reconcile of policies on this
host's kernel (it has no ESP, so peers without keys: policies only). The reconcile with SAs runs
in the kernel lane (tests/kernel/test_ipsec_tunnel.py)."""

from __future__ import annotations

import pytest

from pycni.datapath import ipsec
from pycni.lab.netns import Netns
from pycni.netlink.xfrm import DIR_IN, DIR_OUT, SecurityPolicy, Xfrm
from tests.support.netlink import ip
from tests.support.xfrm import ip_policies

LOCAL, P1, P2 = ip("172.18.0.2"), ip("172.18.0.3"), ip("172.18.0.4")
KEYS = ipsec.PairKeys(out_spi=0xC0000001, out_key=bytes(20), in_spi=0xC0000002, in_key=b"k" * 20)


def test_desired_vxlan_and_ipip() -> None:
    sas, sps = ipsec.desired(LOCAL, ipsec.Tunnel("vxlan"), [ipsec.Peer(P1, KEYS)])
    assert [(str(s.src), str(s.dst), s.spi, s.key) for s in sas] == [
        ("172.18.0.2", "172.18.0.3", 0xC0000001, bytes(20)),
        ("172.18.0.3", "172.18.0.2", 0xC0000002, b"k" * 20),
    ]
    assert [sp.key for sp in sps] == [(DIR_OUT, LOCAL, P1, 17, 4789), (DIR_IN, P1, LOCAL, 17, 4789)]
    sas, sps = ipsec.desired(
        LOCAL, ipsec.Tunnel("ipip"), [ipsec.Peer(P1, None), ipsec.Peer(LOCAL, KEYS)]
    )
    assert sas == []  # no keys: policies only (the traffic is blocked); never one to itself
    assert [sp.key for sp in sps] == [(DIR_OUT, LOCAL, P1, 4, None), (DIR_IN, P1, LOCAL, 4, None)]
    with pytest.raises(ValueError, match="tunnel kind 'gre'"):
        ipsec.Tunnel("gre")
    assert "kkkk" not in repr(KEYS) and "\\x00" not in repr(KEYS)  # no key material in logs


@pytest.mark.netns
def test_reconcile_policies(netns: Netns) -> None:
    foreign = "src 10.9.0.1/32 dst 10.9.0.2/32 dir out priority 100"
    netns.ip("xfrm", "policy", "add", *foreign.split())
    peers = [ipsec.Peer(P1, None), ipsec.Peer(P2, None)]
    with Xfrm(netns.path) as table:
        changes = ipsec.reconcile(table, LOCAL, ipsec.Tunnel("vxlan", 8472), peers)
        assert len(changes.added) == 4 and not changes.removed
        assert not ipsec.reconcile(table, LOCAL, ipsec.Tunnel("vxlan", 8472), peers)
        # P2 gone, without prune: its policies stay (until its tunnel is gone)
        changes = ipsec.reconcile(table, LOCAL, ipsec.Tunnel("vxlan", 8472), peers[:1], prune=False)
        assert not changes
        assert len([sp for sp in table.sps() if sp.owned]) == 4
        # then with prune, and the datapath switched to IPIP: the VXLAN policies go, IPIP's come
        changes = ipsec.reconcile(table, LOCAL, ipsec.Tunnel("ipip"), peers[:1])
        assert len(changes.added) == 2 and len(changes.removed) == 4
        assert {sp.key for sp in table.sps() if sp.owned} == {
            SecurityPolicy(direction=DIR_OUT, src=LOCAL, dst=P1, proto=4).key,
            SecurityPolicy(direction=DIR_IN, src=P1, dst=LOCAL, proto=4).key,
        }
        assert ipsec.clear(table) == 2
    assert [(p.src, p.priority) for p in ip_policies(netns)] == [("10.9.0.1", 100)]
