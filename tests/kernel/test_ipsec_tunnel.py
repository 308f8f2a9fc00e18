"""ESP on tunnel packets between two nodes (pycni.datapath.ipsec over pycni.netlink.xfrm), in
the kernel lane's guest (ESP and the AEAD are modules of its kernel; the host's has neither).

Two node namespaces and an attacker on one underlay bridge; a VXLAN (or IPIP) tunnel between the
nodes with an overlay address on each. With the xfrm state reconciled on both nodes: ping, TCP
and UDP cross the tunnel, and a capture on the underlay sees only ESP between the nodes and none
of the overlay addresses in any byte. A clear tunnel packet forged by the attacker with a node's
source address (accepted by the tunnel before encryption is on: the control) is dropped, and a
node whose key does not match its peer's cannot get a packet through."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from pycni.datapath import ipsec
from pycni.lab import connectivity
from pycni.lab.netns import Netns
from pycni.netlink.xfrm import Xfrm
from tests.support import forge
from tests.support.capture import assert_only_esp, capture
from tests.support.netlink import ip

pytestmark = pytest.mark.netns

NODE1, NODE2, ATTACKER = "172.18.0.2", "172.18.0.3", "172.18.0.9"
OVER1, OVER2 = "10.99.0.1", "10.99.0.2"
VNI = 42
KEY12, KEY21 = bytes(range(1, 21)), bytes(range(31, 51))
SPI12, SPI21 = 0xC0000012, 0xC0000021
TUNNEL_DEVICE = {"vxlan": "vx", "ipip": "t4"}
PROBE_TIMEOUT = 20.0

# A clear tunnel packet from `src` (a node's address, forged) to `dst`, carrying an ICMP echo
# from OVER2 to OVER1; sent on a raw socket with our own IP header.
FORGE = forge.script(r"""
kind, src, dst, inner_src, inner_dst, mac = sys.argv[1:7]
echo = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"forged"
echo = echo[:2] + struct.pack("!H", csum(echo)) + echo[4:]
send_in_tunnel(kind, src, dst, ipv4(1, inner_src, inner_dst, echo), 42, mac, "02:00:00:00:00:99")
""")


@dataclass
class Pair:
    kind: str
    node1: Netns
    node2: Netns
    attacker: Netns
    underlay: Netns

    def rx_packets(self, ns: Netns) -> int:
        (link,) = ns.ip_json("-s", "link", "show", "dev", TUNNEL_DEVICE[self.kind])
        return int(link["stats64"]["rx"]["packets"])

    def forge(self) -> None:
        (link,) = self.node1.ip_json("link", "show", "dev", TUNNEL_DEVICE[self.kind])
        argv = [sys.executable, "-c", FORGE, self.kind, NODE2, NODE1, OVER2, OVER1]
        done = self.attacker.run([*argv, link.get("address", "00:00:00:00:00:00")])
        assert done.stdout.strip() == "sent", done.stderr

    def encrypt(self, key21: bytes = KEY21) -> None:
        tunnel = ipsec.Tunnel(self.kind)
        for ns, local, peer, keys in (
            (self.node1, NODE1, NODE2, ipsec.PairKeys(out_spi=SPI12, out_key=KEY12,
                                                      in_spi=SPI21, in_key=KEY21)),
            (self.node2, NODE2, NODE1, ipsec.PairKeys(out_spi=SPI21, out_key=key21,
                                                      in_spi=SPI12, in_key=KEY12)),
        ):  # fmt: skip
            with Xfrm(ns.path) as table:
                changes = ipsec.reconcile(table, ip(local), tunnel, [ipsec.Peer(ip(peer), keys)])
                assert len(changes.added) == 4 and not changes.removed, changes
                # a second pass finds nothing to do
                assert not ipsec.reconcile(table, ip(local), tunnel, [ipsec.Peer(ip(peer), keys)])


def xfrm_stat(ns: Netns) -> dict[str, int]:
    text = ns.run(["cat", "/proc/net/xfrm_stat"]).stdout
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


def reaches(src: Netns, dst: Netns, address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """A TCP connection from `src` to an echo server in `dst` (no ping in the guest)."""
    server = connectivity.serve(dst)
    try:
        return connectivity.probe(src, address, "tcp", timeout=timeout).reached
    finally:
        server.stop()


@pytest.fixture(params=["vxlan", "ipip"])
def pair(request: pytest.FixtureRequest, netns_factory: Callable[[], Netns]) -> Iterator[Pair]:
    kind = request.param
    underlay, node1, node2, attacker = (netns_factory() for _ in range(4))
    underlay.ip("link", "add", "br0", "type", "bridge")
    underlay.ip("link", "set", "br0", "up")
    for i, (ns, address) in enumerate(((node1, NODE1), (node2, NODE2), (attacker, ATTACKER))):
        # no IPv6 (its router solicitations would cross the tunnel and count as received)
        ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
        underlay.ip("link", "add", f"p{i}", "type", "veth", "peer", "eth0", "netns", ns.name)
        underlay.ip("link", "set", f"p{i}", "master", "br0", "up")
        ns.ip("addr", "add", f"{address}/16", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("link", "set", "lo", "up")
    device = TUNNEL_DEVICE[kind]
    for ns, local, remote, over in ((node1, NODE1, NODE2, OVER1), (node2, NODE2, NODE1, OVER2)):
        if kind == "vxlan":
            ns.ip("link", "add", device, "type", "vxlan", "id", str(VNI), "local", local,
                  "remote", remote, "dstport", "4789", "dev", "eth0")  # fmt: skip
        else:
            ns.ip("link", "add", device, "type", "ipip", "local", local, "remote", remote)
        ns.ip("link", "set", device, "mtu", "1400", "up")
        ns.ip("addr", "add", f"{over}/24", "dev", device)
    yield Pair(kind, node1, node2, attacker, underlay)


def test_tunnel_traffic_is_esp_only(pair: Pair) -> None:
    assert reaches(pair.node1, pair.node2, OVER2), "the tunnel does not work even in the clear"
    pair.encrypt()
    with capture(pair.node1, "eth0") as seen:
        probes = []
        for proto in ("tcp", "udp"):
            server = connectivity.serve(pair.node2)
            try:
                probes.append(connectivity.probe(pair.node1, OVER2, proto, timeout=PROBE_TIMEOUT))
            finally:
                server.stop()
    assert all(p.ok for p in probes), connectivity.report(probes)
    assert_only_esp(seen, {NODE1, NODE2}, {OVER1, OVER2}, minimum=10)
    with Xfrm(pair.node1.path) as table:
        used = {sa.spi: sa.packets for sa in table.sas()}
    assert used[SPI12] > 0 and used[SPI21] > 0, used


def test_forged_clear_tunnel_packet_is_dropped(pair: Pair) -> None:
    before = pair.rx_packets(pair.node1)
    pair.forge()  # the control: without encryption the tunnel takes it
    assert pair.rx_packets(pair.node1) >= before + 5, "the forged packet is not well-formed"
    pair.encrypt()
    stat, before = xfrm_stat(pair.node1), pair.rx_packets(pair.node1)
    pair.forge()
    after = xfrm_stat(pair.node1)
    assert pair.rx_packets(pair.node1) == before, "a clear tunnel packet got in"
    dropped = sum(
        after[k] - stat[k]
        for k in ("XfrmInNoStates", "XfrmInTmplMismatch", "XfrmInPolBlock", "XfrmInNoPols")
    )
    assert dropped >= 5, json.dumps({k: after[k] - stat[k] for k in after if after[k] != stat[k]})
    assert reaches(pair.node1, pair.node2, OVER2), "real traffic still crosses"


def test_mismatched_key_cannot_inject(pair: Pair) -> None:
    pair.encrypt(key21=bytes(20))  # node2 sends with a key node1 does not have
    stat, before = xfrm_stat(pair.node1), pair.rx_packets(pair.node1)
    assert not reaches(pair.node2, pair.node1, OVER1, timeout=3.0)
    after = xfrm_stat(pair.node1)
    assert pair.rx_packets(pair.node1) == before, "a packet with the wrong key got in"
    assert after["XfrmInStateProtoError"] - stat["XfrmInStateProtoError"] >= 2, after
