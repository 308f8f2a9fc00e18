"""pycni.netlink.rtnl's links against the kernel, cross-checked with pyroute2 and `ip -j`: veth
pairs across namespaces, bridges, VXLAN and IPIP devices, bridge ports; what we create is what
they show, what `ip` creates is what we read, and the errnos are exact.

Every kernel test works inside network namespaces it creates (the `netns` fixture, and `pod_ns`
beside it) and never touches the interfaces of the namespace the tests run in: every Rtnl is
opened with `netns=`, pyroute2 as `IPRoute(netns=name, flags=0)`, `ip` through `ip netns
exec`. The same holds for every test in tests/netlink."""

from __future__ import annotations

import errno
import os

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import NetlinkError, NetlinkExists, NetlinkNotFound, Rtnl
from tests.support.netlink import expect, ip, ip_link, ip_names, pyroute, pyroute_errno, run_ip


@pytest.mark.netns
def test_the_veth_peer_lands_in_the_target_namespace(netns: Netns, pod_ns: Netns) -> None:
    with Rtnl(netns=netns.path) as host:
        veth = host.create_veth("veth0", "eth0", peer_netns=pod_ns.path, mtu=1450,
                                mac="02:00:00:00:00:01", peer_mac="02:00:00:00:00:02",
                                up=True)  # fmt: skip
    with Rtnl(netns=pod_ns.path) as inside:
        inside.set_link("eth0", up=True)  # the kernel cannot bring it up in the same request
    assert "eth0" not in ip_names(netns) and "veth0" not in ip_names(pod_ns)
    host_end, pod_end = ip_link(netns, "veth0"), ip_link(pod_ns, "eth0")
    expect(host_end, mtu=1450, address="02:00:00:00:00:01", link_index=pod_end["ifindex"])
    expect(pod_end, mtu=1450, address="02:00:00:00:00:02", link_index=host_end["ifindex"])
    assert host_end["linkinfo"]["info_kind"] == pod_end["linkinfo"]["info_kind"] == "veth"
    assert "UP" in host_end["flags"] and "UP" in pod_end["flags"]
    expect(veth, index=host_end["ifindex"], name="veth0", kind="veth", mtu=1450, up=True)
    expect(veth, mac="02:00:00:00:00:01", link=pod_end["ifindex"])
    assert veth.link_netnsid is not None  # the peer's index is in another namespace
    with pyroute(pod_ns) as ipr:
        (theirs,) = ipr.get_links(ifname="eth0")
        assert theirs["index"] == veth.link
        assert theirs.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:02"


@pytest.mark.netns
def test_the_veth_peer_mtu_defaults_to_the_mtu_and_can_differ(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        rt.create_veth("a0", "a1", mtu=1400)
        rt.create_veth("b0", "b1", mtu=1400, peer_mtu=1300)
        assert rt.get_link("a1").mtu == 1400 and rt.get_link("b1").mtu == 1300
        a0, a1 = rt.get_link("a0"), rt.get_link("a1")
        assert (a0.link, a1.link, a0.link_netnsid) == (a1.index, a0.index, None)
    assert ip_link(netns, "a0")["link"] == "a1"


@pytest.mark.netns
def test_a_bridge_we_create_is_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        bridge = rt.create_bridge("br0", mtu=1400, mac="02:00:00:00:00:0b", up=True)
    theirs = ip_link(netns, "br0")
    expect(theirs, mtu=1400, address="02:00:00:00:00:0b")
    assert "UP" in theirs["flags"]
    expect(theirs["linkinfo"], info_kind="bridge")
    assert theirs["linkinfo"]["info_data"]["vlan_filtering"] == 0
    expect(bridge, kind="bridge", mtu=1400, mac="02:00:00:00:00:0b", up=True)
    assert bridge.bridge is not None and bridge.bridge.vlan_filtering is False
    with pyroute(netns) as ipr:
        (link,) = ipr.get_links(ifname="br0")
        assert link["index"] == bridge.index
        assert link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"


@pytest.mark.netns
def test_bridge_vlan_filtering_gets_the_answer_ip_gets(netns: Netns) -> None:
    """This VM's kernel lacks CONFIG_BRIDGE_VLAN_FILTERING and refuses the attribute, even
    off, with EOPNOTSUPP. Whatever the kernel, we must get what `ip` gets."""
    for on in (0, 1):
        command = ["ip", "link", "add", f"ip{on}", "type", "bridge", "vlan_filtering", str(on)]
        done = netns.run(command, check=False)
        with Rtnl(netns=netns.path) as rt:
            try:
                ours = rt.create_bridge(f"ours{on}", vlan_filtering=bool(on))
            except NetlinkError as err:
                assert done.returncode != 0, f"ip succeeded where we got {err}"
                assert err.errno == errno.EOPNOTSUPP and "Operation not supported" in done.stderr
            else:
                assert done.returncode == 0, done.stderr
                assert ours.bridge is not None and ours.bridge.vlan_filtering is bool(on)
                info = ip_link(netns, f"ours{on}")["linkinfo"]["info_data"]
                assert info["vlan_filtering"] == on


@pytest.mark.netns
def test_a_vxlan_we_create_is_what_ip_and_pyroute2_show(netns: Netns) -> None:
    netns.ip("link", "add", "under0", "type", "bridge")
    with Rtnl(netns=netns.path) as rt:
        vx = rt.create_vxlan("vx0", 42, port=4789, local=ip("192.168.0.1"), underlay="under0",
                             learning=False, ttl=64, mtu=1450, udp_csum=False)  # fmt: skip
        vx6 = rt.create_vxlan("vx6", 43, port=4790, local=ip("fd00::1"), learning=True,
                              udp6_zero_csum_tx=True)  # fmt: skip
        under = rt.get_link("under0").index
    assert ip_link(netns, "vx0")["mtu"] == 1450
    expect(ip_link(netns, "vx0")["linkinfo"]["info_data"], id=42, port=4789,
           local="192.168.0.1", ttl=64, learning=False, udp_csum=False, link="under0")  # fmt: skip
    expect(ip_link(netns, "vx6")["linkinfo"]["info_data"], id=43, port=4790, local6="fd00::1",
           learning=True, udp_zero_csum6_tx=True)  # fmt: skip
    expect(vx.vxlan, vni=42, port=4789, local=ip("192.168.0.1"), underlay=under, learning=False,
           ttl=64, udp_csum=False, group=None)  # fmt: skip
    expect(vx6.vxlan, vni=43, port=4790, local=ip("fd00::1"), learning=True, udp6_zero_csum_tx=True)
    with pyroute(netns) as ipr:
        (link,) = ipr.get_links(ifname="vx0")
        theirs = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        assert [theirs.get_attr(f"IFLA_VXLAN_{n}") for n in ("ID", "PORT", "LINK")] == [
            42,
            4789,
            under,
        ]


@pytest.mark.netns
def test_ipip_gets_the_answer_ip_gets(netns: Netns) -> None:
    """No CONFIG_NET_IPIP on this VM: the kernel answers EOPNOTSUPP with "Unknown device
    type", as it answers `ip`. (The request itself is checked by pyroute2 above.)"""
    netns.ip("link", "add", "under0", "type", "bridge")
    command = ["ip", "link", "add", "iptun", "type", "ipip", "local", "10.0.0.1", "ttl", "64"]
    done = netns.run(command, check=False)
    with Rtnl(netns=netns.path) as rt:
        try:
            tunnel = rt.create_ipip(
                "tun0", local=ip("10.0.0.1"), underlay="under0", ttl=64, pmtudisc=True
            )
        except NetlinkError as err:
            assert done.returncode != 0, f"ip created the tunnel, we got {err}"
            expect(err, errno=errno.EOPNOTSUPP, kernel_message="Unknown device type")
            assert "Unknown device type" in done.stderr
            assert str(err) == (
                f"failed to create ipip tunnel 'tun0' in netns '{netns.path}':"
                " Operation not supported (Unknown device type)"
            )
        else:
            assert done.returncode == 0, done.stderr
            expect(tunnel, kind="ipip")
            expect(tunnel.ipip, local=ip("10.0.0.1"), ttl=64, pmtudisc=True, remote=None)
            assert ip_link(netns, "tun0")["linkinfo"]["info_data"]["local"] == "10.0.0.1"


@pytest.mark.netns
def test_links_ip_creates_are_what_we_read_field_by_field(netns: Netns) -> None:
    for command in (
        "link add br0 type bridge",
        "link add v0 mtu 1400 address 02:00:00:00:00:0a type veth peer name v1",
        "link set v0 master br0",
        "link set v0 type bridge_slave hairpin on learning off flood off",
        "link set br0 up",
        "link set v0 up",
        "link set v1 up promisc on",
        "link add vx0 type vxlan id 7 dstport 4789 local 10.0.0.1 dev br0 nolearning ttl 9",
    ):
        run_ip(netns, command)
    with Rtnl(netns=netns.path) as rt:
        ours = {link.name: link for link in rt.links()}
        v0, v1, vx0, br0 = (rt.get_link(name) for name in ("v0", "v1", "vx0", "br0"))
    for theirs in netns.ip_json("-d", "link", "show"):
        link = ours.pop(theirs["ifname"])
        master = theirs.get("master")
        expect(
            link,
            index=theirs["ifindex"],
            mtu=theirs["mtu"],
            mac=theirs["address"],
            up="UP" in theirs["flags"],
            lower_up="LOWER_UP" in theirs["flags"],
            operstate=theirs["operstate"],
            kind=theirs.get("linkinfo", {}).get("info_kind"),
            promiscuity=theirs["promiscuity"],
            master=None if master is None else ip_link(netns, master)["ifindex"],
        )
    assert not ours, f"links ip does not list: {sorted(ours)}"
    assert (v0.link, v1.link) == (v1.index, v0.index)
    assert v1.promiscuous and not v0.promiscuous
    expect(v0.bridge_port, hairpin=True, learning=False, unicast_flood=False)
    assert v1.bridge_port is None
    expect(vx0.vxlan, vni=7, port=4789, local=ip("10.0.0.1"), underlay=br0.index, learning=False)
    expect(vx0.vxlan, ttl=9)


@pytest.mark.netns
def test_get_link_by_index_or_name(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        lo = rt.get_link("lo")
        assert rt.get_link(lo.index) == lo
        assert rt.find_link("nope") is None
        with pytest.raises(NetlinkNotFound) as caught:
            rt.get_link(4242)
        assert caught.value.errno == errno.ENODEV


@pytest.mark.netns
def test_link_errnos_are_exact_and_match_pyroute2(netns: Netns) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    with Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        with pytest.raises(NetlinkExists) as exists:
            rt.create_bridge("br0")
        assert exists.value.errno == errno.EEXIST
        assert pyroute_errno(lambda: ipr.link("add", ifname="br0", kind="bridge")) == errno.EEXIST
        rt.delete_link("br0")
        assert "br0" not in ip_names(netns)
        with pytest.raises(NetlinkNotFound) as by_name:
            rt.delete_link("br0")
        assert by_name.value.errno == errno.ENODEV
        assert str(by_name.value) == (
            f"failed to delete link 'br0' in netns '{netns.path}': No such device"
        )
        with pytest.raises(NetlinkNotFound) as by_index:
            rt.delete_link(4242)
        assert by_index.value.errno == errno.ENODEV
        assert pyroute_errno(lambda: ipr.link("del", index=4242)) == errno.ENODEV
        rt.delete_link("br0", missing_ok=True)
        with pytest.raises(NetlinkError) as too_long:  # IFNAMSIZ: the policy's length check
            rt.create_bridge("a-name-longer-than-15")
        expect(
            too_long.value, errno=errno.ERANGE, kernel_message="Attribute failed policy validation"
        )
        too_long_too = lambda: ipr.link("add", ifname="a-name-longer-than-15", kind="bridge")  # noqa: E731
        assert pyroute_errno(too_long_too) == errno.ERANGE
        rt.create_veth("v0", "v1")
        rt.delete_link(rt.get_link("v1").index)
        assert ip_names(netns) == {"lo"}  # a veth pair goes as a whole


@pytest.mark.netns
def test_set_link_changes_what_ip_and_pyroute2_show(netns: Netns) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    with Rtnl(netns=netns.path) as rt:
        bridge = rt.get_link("br0")
        rt.set_link("v0", up=True, mtu=1300, mac="02:00:00:00:00:aa", master="br0")
        shown = ip_link(netns, "v0")
        assert "UP" in shown["flags"]
        expect(shown, mtu=1300, address="02:00:00:00:00:aa", master="br0")
        rt.set_link("v0", nomaster=True, up=False)
        shown = ip_link(netns, "v0")
        assert "master" not in shown and "UP" not in shown["flags"]
        rt.set_link("v0", master=bridge.index, promiscuous=True)
        shown = ip_link(netns, "v0")
        assert shown["master"] == "br0" and "PROMISC" in shown["flags"]
        rt.set_link("v0", promiscuous=False, name="renamed0")
        assert "PROMISC" not in ip_link(netns, "renamed0")["flags"]
        with pyroute(netns) as ipr:
            (theirs,) = ipr.get_links(ifname="renamed0")
            assert [theirs.get_attr("IFLA_MTU"), theirs.get_attr("IFLA_MASTER")] == [
                1300,
                bridge.index,
            ]
        with pytest.raises(NetlinkNotFound) as gone:
            rt.set_link("v0", up=True)
        assert gone.value.errno == errno.ENODEV
        with pytest.raises(NetlinkNotFound):
            rt.set_link("renamed0", master="no-such-bridge")
        with pytest.raises(NetlinkError) as bad_mtu:
            rt.set_link("renamed0", mtu=10)
        assert bad_mtu.value.errno == errno.EINVAL
        assert f"failed to set link 'renamed0' mtu 10 in netns '{netns.path}'" in str(bad_mtu.value)
        with pytest.raises(ValueError, match="master or nomaster"):
            rt.set_link("renamed0", master="br0", nomaster=True)


@pytest.mark.netns
def test_move_a_link_to_another_namespace_by_path_or_fd(netns: Netns, pod_ns: Netns) -> None:
    netns.ip("link", "add", "a0", "type", "veth", "peer", "name", "a1")
    with Rtnl(netns=netns.path) as rt:
        rt.set_link("a1", netns=pod_ns.path)
        fd = os.open(pod_ns.path, os.O_RDONLY)
        try:
            rt.set_link("a0", netns=fd)
        finally:
            os.close(fd)
        assert [link.name for link in rt.links()] == ["lo"]
    assert {"a0", "a1"} <= ip_names(pod_ns)
    with Rtnl(netns=pod_ns.path) as rt:
        assert rt.get_link("a0").link == rt.get_link("a1").index


@pytest.mark.netns
def test_bridge_port_settings_round_trip(netns: Netns) -> None:
    for command in (
        "link add br0 type bridge",
        "link add v0 type veth peer name v1",
        "link add w0 type veth peer name w1",
        "link set v0 master br0",
        "link set w0 master br0",
    ):
        run_ip(netns, command)
    with Rtnl(netns=netns.path) as rt:
        rt.set_bridge_port("v0", hairpin=True, learning=False, unicast_flood=False,
                           multicast_flood=False, broadcast_flood=False, isolated=True)  # fmt: skip
        expect(ip_link(netns, "v0")["linkinfo"]["info_slave_data"], hairpin=True, learning=False,
               flood=False, mcast_flood=False, bcast_flood=False, isolated=True)  # fmt: skip
        expect(rt.get_link("v0").bridge_port, hairpin=True, learning=False, unicast_flood=False,
               multicast_flood=False, broadcast_flood=False, isolated=True)  # fmt: skip
        with pyroute(netns) as ipr:
            (link,) = ipr.get_links(ifname="v0")
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_SLAVE_DATA")
            assert [data.get_attr("IFLA_BRPORT_MODE"), data.get_attr("IFLA_BRPORT_LEARNING")] == [
                1,
                0,
            ]
        netns.ip("link", "set", "w0", "type", "bridge_slave", "hairpin", "on", "proxy_arp", "on")
        expect(rt.get_link("w0").bridge_port, hairpin=True, proxyarp=True, learning=True)
        rt.set_bridge_port("v0", hairpin=False)
        assert ip_link(netns, "v0")["linkinfo"]["info_slave_data"]["hairpin"] is False
        with pytest.raises(NetlinkError) as not_a_port:
            rt.set_bridge_port("v1", hairpin=True)
        assert not_a_port.value.errno == errno.EOPNOTSUPP
        with pytest.raises(NetlinkNotFound):
            rt.set_bridge_port("missing0", hairpin=True)
