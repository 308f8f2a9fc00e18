"""pycni.netlink's wire format, offline: attributes encoded and decoded by us and read alike
by pyroute2's decoder; unknown and truncated attributes; bad values refused before sending."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from pycni.cni.ip import IP
from pycni.netlink import kernel as k
from pycni.netlink import wire
from tests.support.netlink import expect, ip

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=15)


MACS = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


IPS = st.integers(0, 2**32 - 1).map(lambda v: IP(v, 4)) | st.integers(0, 2**128 - 1).map(
    lambda v: IP(v, 6)
)


@given(
    name=NAMES,
    mtu=st.integers(68, 2**32 - 1),
    mac=MACS,
    master=st.integers(1, 2**31 - 1),
    vni=st.integers(0, 2**24 - 1),
    port=st.integers(1, 65535),
    local=IPS,
    learning=st.booleans(),
)
def test_link_attributes_round_trip_and_pyroute2_reads_them_alike(
    name: str, mtu: int, mac: str, master: int, vni: int, port: int, local: IP, learning: bool
) -> None:
    six = local.version == 6
    data = {"id": vni, "port": port, "local6" if six else "local": local, "learning": learning}
    values = {"ifname": name, "mtu": mtu, "address": mac, "master": master}
    encoded = k.IFLA.encode({**values, "linkinfo": {"kind": "vxlan", "data": data}})

    decoded = k.IFLA.decode(memoryview(encoded))
    expect(decoded, **values)
    expect(decoded["linkinfo"], kind="vxlan", data=data)

    header = k.IFINFOMSG.pack(0, 0, 0, 0, 0)
    theirs = ifinfmsg(wire.pack_message(k.RTM_NEWLINK, 0, 1, header + encoded))
    theirs.decode()
    assert [theirs.get_attr(f"IFLA_{n}") for n in ("IFNAME", "MTU", "ADDRESS", "MASTER")] == [
        name,
        mtu,
        mac,
        master,
    ]
    info = theirs.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert info.get_attr("IFLA_VXLAN_ID") == vni
    assert info.get_attr("IFLA_VXLAN_PORT") == port
    assert info.get_attr("IFLA_VXLAN_LEARNING") == int(learning)
    assert ip(info.get_attr("IFLA_VXLAN_LOCAL6" if six else "IFLA_VXLAN_LOCAL")) == local


def test_unknown_attributes_are_skipped_and_a_truncated_one_ends_the_list() -> None:
    payload = wire.pack_attr(999, b"xyz") + k.IFLA.encode({"mtu": 1400}) + b"\x08\x00"
    assert k.IFLA.decode(memoryview(payload)) == {"mtu": 1400}


def test_bad_values_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="IFLA 'address'"):
        k.IFLA.encode({"address": "not-a-mac"})
    with pytest.raises(ValueError, match="IFLA has no attribute 'colour'"):
        k.IFLA.encode({"colour": 1})
    with pytest.raises(ValueError, match="IFLA 'mtu'"):
        k.IFLA.encode({"mtu": -1})
