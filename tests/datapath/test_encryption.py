"""pycni.datapath.encryption: the MTU ESP leaves the pods, and the kernel probe of STATUS and
ADD. The MTU rule is checked against the ESP packet laid out byte by byte (RFC 4303, RFC 4106);
the probe against iproute2 on the same kernel (tests.support.capture.kernel_has_esp), in a
namespace of the test's own, and for leaving the xfrm tables as they were."""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import pytest

from pycni.cni.errors import CniError, ConfigError
from pycni.cni.ip import IP
from pycni.datapath import encryption, overlay, peers, routed
from pycni.lab.netns import Netns
from pycni.netlink import Rtnl
from pycni.plugins import ipip, vxlan
from tests.support.capture import kernel_has_esp
from tests.support.paths import REPO

pytestmark = pytest.mark.netns


def esp_packet_size(payload: int) -> int:
    """An IPv4 packet carrying `payload` bytes (the tunnel's UDP datagram or inner IP packet)
    in ESP transport mode with rfc4106(gcm(aes)), field by field."""
    outer_ip, spi_and_sequence, iv = 20, 8, 8
    trailer = 2  # pad length, next header
    padding = -(payload + trailer) % 4  # payload + padding + trailer: a multiple of 4
    icv = 16
    return outer_ip + spi_and_sequence + iv + payload + padding + trailer + icv


def test_the_payload_mtu_is_the_largest_payload_whose_esp_packet_fits() -> None:
    overheads = set()
    for link_mtu in range(576, 9217):
        payload = encryption.esp_payload_mtu(link_mtu)
        assert esp_packet_size(payload) <= link_mtu, link_mtu
        assert esp_packet_size(payload + 1) > link_mtu, link_mtu
        overheads.add(encryption.esp_overhead(link_mtu))
    assert overheads == {34, 35, 36, 37}
    assert encryption.ESP_MAX_OVERHEAD == 37


def test_the_figures_the_docs_give() -> None:
    assert encryption.esp_payload_mtu(1500) == 1446
    assert encryption.esp_overhead(1500) == 34
    assert encryption.esp_overhead(1503) == 37
    assert encryption.esp_payload_mtu(9000) == 8946


def test_the_mtu_table_of_the_docs() -> None:
    """docs/encryption.md's table: underlay MTU, then the pods' MTU for VXLAN and IPIP,
    each in the clear and with ipsec."""
    rows = [
        [int(re.sub(r"[^0-9].*", "", cell.strip().strip("*"))) for cell in line.split("|")[1:-1]]
        for line in (REPO / "docs" / "encryption.md").read_text().splitlines()
        if re.match(r"\| \d+ \|", line)
    ]
    assert [row[0] for row in rows] == [1500, 1450, 9001]
    for underlay, vxlan_clear, vxlan_esp, ipip_clear, ipip_esp in rows:
        payload = encryption.esp_payload_mtu(underlay)
        assert (vxlan_clear, ipip_clear) == (underlay - 50, underlay - 20)
        assert (vxlan_esp, ipip_esp) == (payload - 30, payload), underlay


def plugin_conf(kind: str, **settings: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "enc",
        "type": f"pycni-{kind}",
        "peers": [],
        "localIP": "172.18.0.2",
        "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]]},
        **settings,
    }


def underlay_link(ns: Netns, mtu: int) -> None:
    """eth0 (a veth: this kernel has no dummy links) with the node's underlay address."""
    ns.ip("link", "add", "eth0", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0p")
    ns.ip("addr", "add", "172.18.0.2/16", "dev", "eth0")
    ns.ip("link", "set", "eth0p", "up")
    ns.ip("link", "set", "eth0", "up")


@pytest.mark.parametrize("link_mtu", [1500, 1450, 9001])
def test_the_pods_mtu_leaves_room_for_esp(netns: Netns, link_mtu: int) -> None:
    """VXLAN: the pod's frame + 30 bytes of UDP, VXLAN and Ethernet header are ESP's
    payload; IPIP: the pod's packet is. Without encryption, 50 and 20 bytes as before; an
    explicit `mtu` wins either way."""
    underlay_link(netns, link_mtu)
    payload = encryption.esp_payload_mtu(link_mtu)
    with Rtnl(netns.path) as host:
        underlay = peers.find_underlay(host, IP.parse("172.18.0.2"))

        def vxlan_mtu(**settings: Any) -> int:
            conf = vxlan.parse_conf(plugin_conf("vxlan", **settings))
            return overlay.overlay_mtu(conf.overlay, underlay)

        def ipip_mtu(**settings: Any) -> int:
            conf = ipip.parse_conf(plugin_conf("ipip", **settings))
            return routed.node_mtu(host, conf.routing, underlay)

        assert vxlan_mtu(encryption="ipsec") == payload - 30
        assert vxlan_mtu(encryption="none") == vxlan_mtu() == link_mtu - 50
        assert vxlan_mtu(encryption="ipsec", mtu=1300) == 1300
        for encapsulation in ("Always", "CrossSubnet"):
            assert ipip_mtu(encapsulation=encapsulation, encryption="ipsec") == payload
            assert ipip_mtu(encapsulation=encapsulation) == link_mtu - 20
        assert ipip_mtu(encryption="ipsec", mtu=1300) == 1300
    if link_mtu == 1500:
        assert (payload - 30, payload) == (1416, 1446)


def test_ipip_with_encryption_tunnels_to_every_peer_even_crosssubnet(netns: Netns) -> None:
    """A peer on this node's own subnet, which CrossSubnet routes directly in the clear,
    goes through the tunnel once encryption is on (a dry run: the host kernel has no IPIP)."""
    underlay_link(netns, 1500)
    peer = {"name": "node2", "nodeIP": "172.18.0.3", "podCIDRs": ["10.244.1.0/24"]}
    with Rtnl(netns.path) as host:
        clear = ipip.parse_conf(plugin_conf("ipip", encapsulation="CrossSubnet", peers=[peer]))
        plan = routed.sync(host, clear.routing, dry_run=True)
        assert not plan.needs_tunnel
        assert plan.changes == ["add route 10.244.1.0/24 via 172.18.0.3 dev eth0"]
        encrypted = ipip.parse_conf(
            plugin_conf("ipip", encapsulation="CrossSubnet", encryption="ipsec", peers=[peer])
        )
        plan = routed.sync(host, encrypted.routing, dry_run=True)
        assert plan.needs_tunnel
        assert "add route 10.244.1.0/24 via 172.18.0.3 dev pycni.ipip onlink" in plan.changes


def test_ipip_refuses_encryption_without_a_tunnel() -> None:
    with pytest.raises(ConfigError) as err:
        ipip.parse_conf(plugin_conf("ipip", encapsulation="Never", encryption="ipsec"))
    assert err.value.code == 7 and err.value.details == "$.encryption"
    assert "encapsulation Never" in err.value.msg and "Always or CrossSubnet" in err.value.msg


def test_encryption_needs_an_ipv4_underlay() -> None:
    encryption.require_ipv4_underlay(IP.parse("172.18.0.2"))
    with pytest.raises(ConfigError) as err:
        encryption.require_ipv4_underlay(IP.parse("fd00::2"))
    assert err.value.code == 7 and "IPv4 underlay" in err.value.msg and "fd00::2" in err.value.msg


def test_absent_none_and_ipsec() -> None:
    assert vxlan.parse_conf(plugin_conf("vxlan")).overlay.encryption == "none"
    assert vxlan.parse_conf(plugin_conf("vxlan", encryption="none")).overlay.encryption == "none"
    assert vxlan.parse_conf(plugin_conf("vxlan", encryption="ipsec")).overlay.encryption == "ipsec"
    assert ipip.parse_conf(plugin_conf("ipip", encryption="ipsec")).routing.encryption == "ipsec"
    for bad in ("IPsec", "wireguard", True, None):
        for kind, parse in (("vxlan", vxlan.parse_conf), ("ipip", ipip.parse_conf)):
            with pytest.raises(ConfigError) as err:
                parse(plugin_conf(kind, encryption=bad))
            assert err.value.details == "$.encryption"
            assert "one of 'none', 'ipsec'" in err.value.msg


def xfrm_tables(ns: Netns) -> tuple[str, str]:
    return ns.ip("xfrm", "state", "list"), ns.ip("xfrm", "policy", "list")


def test_the_probe_agrees_with_iproute2_and_changes_nothing(netns: Netns) -> None:
    """On this host's kernel (no ESP, no AEAD) the refusal names esp4; on one with ESP, None.
    Either way the namespace's xfrm tables are as they were: the probe asks to update an SA
    that does not exist. A policy of someone else's is there to be left alone."""
    netns.ip(
        "xfrm", "policy", "add", "src", "198.51.100.1", "dst", "198.51.100.2", "dir", "out",
        "priority", "7", "tmpl", "proto", "esp", "mode", "transport",
    )  # fmt: skip
    before = xfrm_tables(netns)
    problem = encryption.esp_problem(netns.path)
    assert xfrm_tables(netns) == before
    assert "198.51.100.2" in before[1]
    if kernel_has_esp():
        assert problem is None
        return
    assert problem is not None
    assert "modprobe esp4" in problem, problem
    assert problem.startswith("encryption ipsec needs IPsec ESP with rfc4106(gcm(aes))")
    assert "Requested" in problem  # the kernel's own words, as `ip xfrm state` prints them
    with pytest.raises(CniError) as err:
        encryption.require_esp(netns.path)
    assert err.value.code == 50 and err.value.msg == problem


def test_the_probe_is_cheap_enough_for_every_call(netns: Netns) -> None:
    """STATUS runs every 5 s and ADD on every pod: the probe is one netlink round trip."""
    encryption.esp_problem(netns.path)  # the first may load modules
    took = []
    for _ in range(15):
        started = time.perf_counter()
        encryption.esp_problem(netns.path)
        took.append(time.perf_counter() - started)
    assert statistics.median(took) < 0.02, took  # ~0.3 ms measured; generous for a busy host
