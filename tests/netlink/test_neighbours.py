"""pycni.netlink.rtnl's neighbours, proxy neighbours and FDB entries against the kernel,
cross-checked with pyroute2, `ip -j neigh` and `bridge -j fdb`."""

from __future__ import annotations

import errno

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import AF_BRIDGE, AF_INET, AF_INET6, NetlinkExists, NetlinkNotFound, Rtnl
from pycni.netlink import kernel as k
from tests.support.netlink import bridge_fdb, expect, ip, pyroute, pyroute_errno, routed, run_ip


@pytest.mark.netns
def test_neighbours_round_trip(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:55")
        rt.add_neighbour("v0", ip("fd00::9"), "02:11:22:33:44:56")
        theirs = {n["dst"]: n for n in netns.ip_json("neigh", "show", "dev", "v0")}
        expect(theirs["10.1.0.9"], lladdr="02:11:22:33:44:55", state=["PERMANENT"])
        expect(theirs["fd00::9"], lladdr="02:11:22:33:44:56", state=["PERMANENT"])
        with pyroute(netns) as ipr:
            found = {n.get_attr("NDA_DST"): n for n in ipr.get_neighbours(ifindex=v0)}
            assert found["10.1.0.9"]["state"] == k.NUD_PERMANENT
            assert found["fd00::9"].get_attr("NDA_LLADDR") == "02:11:22:33:44:56"
        with pytest.raises(NetlinkExists) as exists:
            rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:57")
        assert exists.value.errno == errno.EEXIST
        rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:57", replace=True)
        run_ip(netns, "neigh add 10.1.0.10 lladdr 02:00:00:00:00:10 dev v0 nud reachable")
        ours = {str(n.dst): n for n in rt.neighbours(v0)}
        expect(ours["10.1.0.9"], mac="02:11:22:33:44:57", permanent=True, family=AF_INET)
        expect(ours["10.1.0.10"], state=k.NUD_REACHABLE, permanent=False, index=v0)
        expect(ours["fd00::9"], family=AF_INET6, mac="02:11:22:33:44:56")
        theirs6 = {
            n["dst"] for n in netns.ip_json("-6", "neigh", "show", "dev", "v0", "nud", "all")
        }
        assert {str(n.dst) for n in rt.neighbours(v0, AF_INET6)} == theirs6
        rt.delete_neighbour(v0, ip("10.1.0.9"))
        assert "10.1.0.9" not in {n["dst"] for n in netns.ip_json("neigh", "show", "dev", "v0")}
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_neighbour(v0, ip("10.1.0.9"))
        assert caught.value.errno == errno.ENOENT
        rt.delete_neighbour(v0, ip("10.1.0.9"), missing_ok=True)
        with pyroute(netns) as ipr:
            gone = lambda: ipr.neigh("del", ifindex=v0, dst="10.1.0.9")  # noqa: E731
            assert pyroute_errno(gone) == errno.ENOENT


@pytest.mark.netns
def test_proxy_neighbours_round_trip(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_neighbour(v0, ip("10.1.0.20"), proxy=True)
        netns.ip("neigh", "add", "proxy", "10.1.0.21", "dev", "v0")
        theirs = {n["dst"] for n in netns.ip_json("neigh", "show", "proxy")}
        assert theirs == {"10.1.0.20", "10.1.0.21"}
        ours = rt.neighbours(v0, proxy=True)
        assert {str(n.dst) for n in ours} == theirs
        assert all(n.flags & k.NTF_PROXY for n in ours)
        assert not [n for n in rt.neighbours(v0) if str(n.dst) in theirs]
        rt.delete_neighbour(v0, ip("10.1.0.20"), proxy=True)
        assert {n["dst"] for n in netns.ip_json("neigh", "show", "proxy")} == {"10.1.0.21"}
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_neighbour(v0, ip("10.1.0.20"), proxy=True)
        assert caught.value.errno == errno.ENOENT


@pytest.mark.netns
def test_fdb_entries_on_a_vxlan_device_round_trip(netns: Netns) -> None:
    run_ip(netns, "link add vx0 type vxlan id 1 dstport 8472 local 10.0.0.1 nolearning")
    with Rtnl(netns=netns.path) as rt:
        vx0 = rt.get_link("vx0").index
        rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.2"))
        rt.add_fdb_entry("vx0", "00:00:00:00:00:00", ip("10.0.0.3"), append=True)
        rt.add_fdb_entry("vx0", "00:00:00:00:00:00", ip("10.0.0.4"), append=True)
        shown = bridge_fdb(netns, "vx0")
        assert {(e["mac"], e["dst"]) for e in shown} == {
            ("02:11:22:33:44:55", "10.0.0.2"),
            ("00:00:00:00:00:00", "10.0.0.3"),
            ("00:00:00:00:00:00", "10.0.0.4"),
        }
        assert all(e["flags"] == ["self"] and e["state"] == "permanent" for e in shown)
        with pyroute(netns) as ipr:
            theirs = ipr.fdb("dump", ifindex=vx0)
            assert ("02:11:22:33:44:55", "10.0.0.2") in {
                (n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")) for n in theirs
            }
        with pytest.raises(NetlinkExists):
            rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.9"))
        rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.9"), replace=True)
        bridge = "bridge fdb add 02:aa:bb:cc:dd:ee dev vx0 dst 10.0.0.7 self permanent"
        netns.run(bridge.split())
        ours = {(e.mac, str(e.dst)): e for e in rt.fdb_entries(vx0)}
        assert set(ours) == {
            ("02:11:22:33:44:55", "10.0.0.9"),
            ("00:00:00:00:00:00", "10.0.0.3"),
            ("00:00:00:00:00:00", "10.0.0.4"),
            ("02:aa:bb:cc:dd:ee", "10.0.0.7"),
        }
        for entry in ours.values():
            expect(entry, family=AF_BRIDGE, index=vx0, permanent=True)
            assert entry.flags & k.NTF_SELF
        rt.delete_fdb_entry(vx0, "00:00:00:00:00:00", ip("10.0.0.3"))
        rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee")
        assert {(e["mac"], e["dst"]) for e in bridge_fdb(netns, "vx0")} == {
            ("02:11:22:33:44:55", "10.0.0.9"),
            ("00:00:00:00:00:00", "10.0.0.4"),
        }
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee")
        assert caught.value.errno == errno.ENOENT
        rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee", missing_ok=True)
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_fdb_entry("vx9", "02:aa:bb:cc:dd:ee")
        assert no_link.value.errno == errno.ENODEV
