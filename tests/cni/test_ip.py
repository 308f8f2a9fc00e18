"""pycni.cni.ip against the standard library's ipaddress, which it stands in for on the call
path."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.cni.ip import IP, Prefix

v4 = st.integers(min_value=0, max_value=2**32 - 1)
v6 = st.integers(min_value=0, max_value=2**128 - 1)


@given(v4)
def test_ipv4_formats_and_parses_like_ipaddress(value: int) -> None:
    ref = ipaddress.IPv4Address(value)
    ip = IP(value, 4)
    assert str(ip) == str(ref)
    assert IP.parse(str(ref)) == ip


@given(v6)
def test_ipv6_formats_rfc5952_like_ipaddress(value: int) -> None:
    ref = ipaddress.IPv6Address(value)
    ip = IP(value, 6)
    assert str(ip) == str(ref)
    assert IP.parse(ref.exploded) == ip


@given(
    st.one_of(
        st.tuples(v4, st.integers(0, 32), st.just(4)),
        st.tuples(v6, st.integers(0, 128), st.just(6)),
    )
)
def test_prefix_network_last_contains_like_ipaddress(args: tuple[int, int, int]) -> None:
    value, length, version = args
    iface = ipaddress.ip_interface(f"{IP(value, version)}/{length}")
    p = Prefix.parse(f"{IP(value, version)}/{length}")
    assert str(p.network) == str(iface.network.network_address)
    assert str(p.last) == str(iface.network.broadcast_address)
    assert p.size == iface.network.num_addresses
    assert p.has_host_bits() == (iface.ip != iface.network.network_address)
    assert p.contains(p.ip) and p.contains(p.last) and p.contains(p.network)
    if p.network.value > 0:
        assert not p.contains(p.network - 1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0",
        "10.0.0.256",
        "010.0.0.1",
        "1.2.3.4 ",
        "fe80::1%eth0",
        "::g",
        "1:2:3:4:5:6:7:8:9",
        5,
        None,
    ],
)
def test_invalid_addresses_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        IP.parse(text)


@pytest.mark.parametrize(
    "text", ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/ 8", "10.0.0.0/٣"]
)
def test_invalid_prefixes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Prefix.parse(text)


def test_overlaps() -> None:
    assert Prefix.parse("10.0.0.0/8").overlaps(Prefix.parse("10.1.0.0/16"))
    assert not Prefix.parse("10.0.0.0/16").overlaps(Prefix.parse("10.1.0.0/16"))
    assert not Prefix.parse("::/0").overlaps(Prefix.parse("10.0.0.0/8"))
