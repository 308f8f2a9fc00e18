"""pycni.netlink.conntrack against the kernel's conntrack table, read by pyroute2 too, and its
delete request as pyroute2 decodes it."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

from pycni.lab.netns import Netns
from pycni.netlink import AF_INET, AF_INET6, NetlinkNotFound
from pycni.netlink import kernel as k
from pycni.netlink.conntrack import Conntrack, ConntrackEntry
from tests.support.netlink import ScriptedSocket, acking, decode_as, ip, nlmsg_header

PYROUTE2_CONNTRACK = r"""
import json, socket
from pyroute2 import Conntrack
out = []
for family in (socket.AF_INET, socket.AF_INET6):
    with Conntrack(nfgen_family=family) as ct:
        out += [[e.tuple_orig.proto, e.tuple_orig.saddr, e.tuple_orig.sport,
                 e.tuple_orig.daddr, e.tuple_orig.dport] for e in ct.dump_entries()]
print(json.dumps(out))
"""


def pyroute2_conntrack(ns: Netns) -> set[tuple[int, str, int | None, str, int | None]]:
    """The node's conntrack table as pyroute2 reads it (its socket opened inside `ns`)."""
    done = ns.run([sys.executable, "-c", PYROUTE2_CONNTRACK])
    return {(p, src, sport, dst, dport) for p, src, sport, dst, dport in json.loads(done.stdout)}


def ours_conntrack(table: Conntrack) -> set[tuple[int, str, int | None, str, int | None]]:
    return {
        (e.proto, str(e.src), e.sport, str(e.dst), e.dport)
        for family in (AF_INET, AF_INET6)
        for e in table.entries(family)
    }


@contextmanager
def tracked(node: Netns, client: Netns) -> Iterator[None]:
    """`client` (10.77.0.1, fd77::1) wired to `node` (10.77.0.2, fd77::2), whose input hook
    tracks connections; UDP from the client to the node's ports 8080 and 9090, both ways."""
    node.ip("link", "add", "vn", "type", "veth", "peer", "name", "vc", "netns", client.name)
    for ns, dev, v4, v6 in ((node, "vn", "10.77.0.2", "fd77::2"), (client, "vc", "10.77.0.1",
                                                                    "fd77::1")):  # fmt: skip
        ns.ip("addr", "add", f"{v4}/24", "dev", dev)
        ns.ip("addr", "add", f"{v6}/64", "dev", dev, "nodad")
        ns.ip("link", "set", dev, "up")
    node.run(["nft", "add table inet ct_probe; add chain inet ct_probe in"
              " { type filter hook input priority 0; }; add rule inet ct_probe in ct state new"
              " counter"])  # fmt: skip
    sender = (
        "import socket\n"
        "for family, src, dst in ((socket.AF_INET, '10.77.0.1', '10.77.0.2'),"
        " (socket.AF_INET6, 'fd77::1', 'fd77::2')):\n"
        "    for sport, dport in ((40001, 8080), (40002, 8080), (40003, 9090)):\n"
        "        s = socket.socket(family, socket.SOCK_DGRAM)\n"
        "        s.bind((src, sport)); s.sendto(b'x', (dst, dport)); s.close()\n"
    )
    client.run([sys.executable, "-c", sender])
    yield


@pytest.mark.netns
def test_conntrack_entries_and_delete_agree_with_pyroute2(netns: Netns, pod_ns: Netns) -> None:
    with tracked(netns, pod_ns), Conntrack(netns=netns.path) as table:
        ours = ours_conntrack(table)
        assert ours == pyroute2_conntrack(netns)
        assert {
            (17, "10.77.0.1", 40001, "10.77.0.2", 8080),
            (17, "fd77::1", 40003, "fd77::2", 9090),
        } <= ours
        gone = table.delete_to_ports(17, {8080}, [AF_INET])
        assert sorted(e.sport or 0 for e in gone) == [40001, 40002]
        left = pyroute2_conntrack(netns)
        assert not [e for e in left if e[3] == "10.77.0.2" and e[4] == 8080]
        assert (17, "10.77.0.1", 40003, "10.77.0.2", 9090) in left
        assert (17, "fd77::1", 40001, "fd77::2", 8080) in left  # the other family stays
        both = table.delete_to_ports(17, {9090})  # both families, from one dump
        assert sorted(str(e.src) for e in both) == ["10.77.0.1", "fd77::1"]
        assert not [e for e in pyroute2_conntrack(netns) if e[4] == 9090]
        table.delete(gone[0])  # gone already: fine
        with pytest.raises(NetlinkNotFound) as caught:
            table.delete(gone[0], missing_ok=False)
        assert caught.value.errno == errno.ENOENT


def test_conntrack_delete_reads_as_intended_by_pyroute2() -> None:
    sock = ScriptedSocket(acking)
    table = Conntrack(sock=sock)  # type: ignore[arg-type]
    entry = ConntrackEntry(family=AF_INET6, proto=17, src=ip("fd77::1"), dst=ip("fd77::2"),
                           sport=40001, dport=8080, zone=7)  # fmt: skip
    table.delete(entry)
    _, msg_type, flags, _, _ = nlmsg_header(sock.sent[-1])
    assert msg_type == k.NFNL_SUBSYS_CTNETLINK << 8 | k.IPCTNL_MSG_CT_DELETE
    assert flags == k.NLM_F_REQUEST | k.NLM_F_ACK
    request = decode_as(sock.sent[-1], nfct_msg)
    assert request["nfgen_family"] == AF_INET6
    orig = request.get_attr("CTA_TUPLE_ORIG")
    addresses, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    assert (addresses.get_attr("CTA_IP_V6_SRC"), addresses.get_attr("CTA_IP_V6_DST")) == (
        "fd77::1",
        "fd77::2",
    )
    assert [proto.get_attr(f"CTA_PROTO_{n}") for n in ("NUM", "SRC_PORT", "DST_PORT")] == [
        17,
        40001,
        8080,
    ]
    assert request.get_attr("CTA_ZONE") == 7
