"""pycni.netlink.xfrm's ESP SAs in a kernel that has ESP (the kernel lane's guest: esp4 and
the AEAD's modules): add, dump, update, delete, each compared with what iproute2 reads back,
and ownership (flush_owned leaves an SA someone else made)."""

from __future__ import annotations

import errno

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import NetlinkNotFound
from pycni.netlink.errors import NetlinkError
from pycni.netlink.xfrm import (
    AEAD_ALGORITHM,
    AEAD_ICV_BITS,
    DIR_OUT,
    OWNER_REQID,
    SecurityAssociation,
    SecurityPolicy,
    Xfrm,
)
from tests.support.netlink import ip
from tests.support.xfrm import IpState, ip_states

pytestmark = pytest.mark.netns

A, B = ip("172.18.0.2"), ip("172.18.0.3")
KEY1 = bytes(range(1, 21))
KEY2 = bytes(range(101, 121))


def expected(sa: SecurityAssociation) -> IpState:
    return IpState(
        str(sa.src), str(sa.dst), sa.spi, sa.reqid, "transport", AEAD_ALGORITHM, sa.key,
        AEAD_ICV_BITS,
    )  # fmt: skip


def test_sa_round_trip(netns: Netns) -> None:
    out = SecurityAssociation(src=A, dst=B, spi=0xC0001234, key=KEY1)
    back = SecurityAssociation(src=B, dst=A, spi=0xC0005678, key=KEY2)
    with Xfrm(netns.path) as table:
        table.add_sa(out)
        table.add_sa(back)
        assert {(s.src, s.dst, s.spi, s.key, s.reqid) for s in table.sas()} == {
            (A, B, 0xC0001234, KEY1, OWNER_REQID),
            (B, A, 0xC0005678, KEY2, OWNER_REQID),
        }
        assert all(s.owned and s.packets == 0 for s in table.sas())
        assert set(ip_states(netns)) == {expected(out), expected(back)}
        with pytest.raises(NetlinkError) as exists:
            table.add_sa(out)
        assert exists.value.errno == errno.EEXIST
        # an update does not rekey: the kernel keeps an SA's algorithm and key (a new key
        # is a new SPI, see pycni.datapath.ipsec)
        table.add_sa(SecurityAssociation(src=A, dst=B, spi=0xC0001234, key=KEY2), update=True)
        assert expected(out) in ip_states(netns)
        table.delete_sa(B, 0xC0001234)
        table.delete_sa(B, 0xC0001234)  # gone already: fine by default
        with pytest.raises(NetlinkNotFound):
            table.delete_sa(B, 0xC0001234, missing_ok=False)
        assert ip_states(netns) == [expected(back)]


def test_flush_owned_leaves_foreign_sas(netns: Netns) -> None:
    netns.ip("xfrm", "state", "add", "src", "10.9.0.1", "dst", "10.9.0.2", "proto", "esp",
             "spi", "0x4242", "reqid", "7", "mode", "transport", "aead", AEAD_ALGORITHM,
             "0x" + KEY1.hex(), "128")  # fmt: skip
    with Xfrm(netns.path) as table:
        table.add_sa(SecurityAssociation(src=A, dst=B, spi=0xC0001234, key=KEY1))
        table.add_sp(SecurityPolicy(direction=DIR_OUT, src=A, dst=B, proto=4))
        assert table.flush_owned() == 2
        (left,) = table.sas()
        assert (left.spi, left.reqid, left.owned) == (0x4242, 7, False)
        assert table.sps() == []
    assert [s.spi for s in ip_states(netns)] == [0x4242]
