"""pycni.netlink.xfrm on this host's kernel: policies (it has the xfrm policy database) read
back by iproute2, ownership (flush_owned leaves a foreign policy alone), and the refusal of an
ESP SA by a kernel without ESP. SAs themselves are proved in the kernel lane
(tests/kernel/test_xfrm_esp.py), whose kernel has esp4."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pycni.lab.netns import Netns
from pycni.netlink import NetlinkNotFound, xfrm
from pycni.netlink.errors import NetlinkError
from pycni.netlink.xfrm import (
    DIR_IN,
    DIR_OUT,
    OWNER_PRIORITY,
    OWNER_REQID,
    SecurityAssociation,
    SecurityPolicy,
    Xfrm,
)
from tests.support.netlink import ip
from tests.support.xfrm import IpPolicy, ip_policies, ip_states

pytestmark = pytest.mark.netns

A, B = ip("172.18.0.2"), ip("172.18.0.3")


def vxlan_pair() -> list[SecurityPolicy]:
    return [
        SecurityPolicy(direction=DIR_OUT, src=A, dst=B, proto=17, dport=4789),
        SecurityPolicy(direction=DIR_IN, src=B, dst=A, proto=17, dport=4789),
    ]


def kernel_has_esp() -> bool:
    """esp4 loaded or built in, or the AEAD present: then the refusal below cannot be shown."""
    crypto = Path("/proc/crypto").read_text() if Path("/proc/crypto").exists() else ""
    return Path("/sys/module/esp4").exists() or "rfc4106(gcm(aes))" in crypto


def test_struct_sizes_are_the_kernels() -> None:
    """sizeof() of the uapi structs on LP64, as the kernel checks them (xfrm_msg_min)."""
    assert xfrm.SA_INFO_SIZE == 224  # struct xfrm_usersa_info
    assert xfrm.POLICY_INFO_SIZE == 168  # struct xfrm_userpolicy_info
    assert xfrm._SELECTOR.size == 56
    assert xfrm._ID.size + xfrm._TMPL_TAIL.size == 64  # struct xfrm_user_tmpl
    assert xfrm._SA_ID.size == 24
    assert xfrm._SELECTOR.size + xfrm._POLICY_ID.size == 64  # struct xfrm_userpolicy_id
    assert xfrm.ESP_MAX_OVERHEAD == 37


def test_policies_round_trip(netns: Netns) -> None:
    with Xfrm(netns.path) as table:
        for sp in vxlan_pair():
            table.add_sp(sp)
        ipip_in = SecurityPolicy(direction=DIR_IN, src=B, dst=A, proto=4)
        table.add_sp(ipip_in)
        ours = table.sps()
        assert {sp.key for sp in ours} == {sp.key for sp in [*vxlan_pair(), ipip_in]}
        assert all(sp.owned and sp.index > 0 for sp in ours)
        seen = set(ip_policies(netns))
        expected = {
            IpPolicy(sp.direction, str(sp.src), str(sp.dst), sp.proto, sp.dport, OWNER_PRIORITY,
                     "esp", OWNER_REQID, "transport")
            for sp in [*vxlan_pair(), ipip_in]
        }  # fmt: skip
        assert seen == expected
        with pytest.raises(NetlinkError) as exists:
            table.add_sp(ipip_in)
        assert exists.value.errno == errno.EEXIST
        table.add_sp(ipip_in, update=True)  # replacing is fine
        table.delete_sp(ipip_in)
        table.delete_sp(ipip_in)  # gone already: fine by default
        with pytest.raises(NetlinkNotFound):
            table.delete_sp(ipip_in, missing_ok=False)
        assert {(p.direction, p.proto) for p in ip_policies(netns)} == {(0, 17), (1, 17)}


def test_flush_owned_leaves_foreign_state_alone(netns: Netns) -> None:
    foreign = "src 10.9.0.1/32 dst 10.9.0.2/32 dir out priority 100"
    netns.ip(
        "xfrm",
        "policy",
        "add",
        *foreign.split(),
        *["tmpl", "proto", "esp", "mode", "transport", "reqid", "7"],
    )
    with Xfrm(netns.path) as table:
        for sp in vxlan_pair():
            table.add_sp(sp)
        assert table.flush_owned() == 2
        (left,) = table.sps()
        assert (str(left.src), left.priority, left.reqid, left.owned) == ("10.9.0.1", 100, 7, False)
        assert table.flush_owned() == 0
    assert [p.src for p in ip_policies(netns)] == ["10.9.0.1"]


def test_esp_sa_refused_without_esp(netns: Netns) -> None:
    """This host's kernel has neither esp4 nor the AEAD: the SA is refused with the kernel's
    reason, and nothing is installed."""
    if kernel_has_esp():
        pytest.skip("this kernel has ESP: the refusal cannot be shown (tests/kernel covers SAs)")
    sa = SecurityAssociation(src=A, dst=B, spi=0x1000, key=bytes(range(20)))
    with Xfrm(netns.path) as table:
        with pytest.raises(NetlinkError) as refused:
            table.add_sa(sa)
        assert refused.value.errno in (errno.ENOSYS, errno.ENOENT, errno.EPROTONOSUPPORT)
        assert "failed to add ESP SA 172.18.0.2 -> 172.18.0.3 spi 0x00001000" in str(refused.value)
        assert table.sas() == []
    assert ip_states(netns) == []


def test_bad_sas_refused_before_the_kernel() -> None:
    with Xfrm() as table:  # nothing reaches the kernel: these raise while packing
        with pytest.raises(ValueError, match="20 expected"):
            table.add_sa(SecurityAssociation(src=A, dst=B, spi=0x1000, key=bytes(16)))
        with pytest.raises(ValueError, match="SPI out of range"):
            table.add_sa(SecurityAssociation(src=A, dst=B, spi=0xFF, key=bytes(20)))
        with pytest.raises(ValueError, match="IPv4 only"):
            table.add_sa(SecurityAssociation(src=ip("fd00::1"), dst=B, spi=0x1000, key=bytes(20)))
