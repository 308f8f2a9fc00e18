"""pycni.netlink.kernel's tables (attribute numbers, constants, operstates) against the
kernel's uapi headers in /usr/include/linux (linux-libc-dev)."""

from __future__ import annotations

import pytest

from pycni.netlink import kernel as k
from tests.support import headers


@pytest.fixture(scope="module")
def header_values() -> dict[str, int]:
    """Enumerators and numeric #defines of the headers the tables come from."""
    return headers.header_values(
        "netlink.h", "rtnetlink.h", "if_link.h", "if_tunnel.h", "veth.h", "if_addr.h",
        "neighbour.h", "if.h", "pkt_sched.h", "pkt_cls.h", "tc_act/tc_mirred.h", "if_ether.h",
        "netfilter/nfnetlink.h", "netfilter/nfnetlink_conntrack.h",
    )  # fmt: skip


def test_attribute_tables_match_the_kernel_headers(header_values: dict[str, int]) -> None:
    wrong = [
        f"{name}: ours {number}, header {header_values.get(name)}"
        for prefix, attrs in k.SPACES.items()
        for field, number in attrs.fields().items()
        if header_values.get(name := prefix + field.upper()) != number
    ]
    assert not wrong, "\n".join(wrong)


def test_constants_match_the_kernel_headers(header_values: dict[str, int]) -> None:
    prefixes = (
        "NLM_F_",
        "NLMSG_",
        "NETLINK_",
        "RTM_",
        "RTN_",
        "RTPROT_",
        "RT_SCOPE_",
        "RT_TABLE_",
        "RTNH_F_",
        "IFF_",
        "IFA_F_",
        "NTF_",
        "NUD_",
        "RTEXT_FILTER_",
        "TC_LINKLAYER_",
        "TC_H_ROOT",
        "TC_H_INGRESS",
        "TC_ACT_STOLEN",
        "TC_U32_TERMINAL",
        "TCA_EGRESS_",
        "TCA_INGRESS_",
        "ETH_P_ALL",
        "NFNL_SUBSYS_CTNETLINK",
        "NFNETLINK_V0",
        "IPCTNL_MSG_CT_",
    )
    ours = {name: getattr(k, name) for name in dir(k) if name.startswith(tuple(prefixes))}
    assert ours.pop("TC_H_INGRESS_HANDLE") == 0xFFFF0000  # TC_H_MAKE(TC_H_INGRESS, 0)
    assert ours.pop("NLM_F_DUMP") == header_values["NLM_F_ROOT"] | header_values["NLM_F_MATCH"]
    wrong = [
        f"{name}: ours {value}, header {header_values.get(name)}"
        for name, value in sorted(ours.items())
        if header_values.get(name) != value
    ]
    assert not wrong, "\n".join(wrong)
    operstates = {v: n for n, v in header_values.items() if n.startswith("IF_OPER_")}
    assert {number: f"IF_OPER_{name}" for number, name in k.OPERSTATES.items()} == operstates
