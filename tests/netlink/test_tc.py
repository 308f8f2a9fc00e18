"""pycni.netlink.rtnl's traffic control: tbf, the ingress qdisc, a u32 redirect filter and IFB
devices; our requests as pyroute2 decodes them, and against the kernel as `tc -j`, `ip -j`
and pyroute2 show them."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from pycni.lab.netns import Netns
from pycni.netlink import NetlinkExists, NetlinkNotFound, Rtnl, TbfInfo, rtnl, wire
from pycni.netlink import kernel as k
from tests.support.netlink import (
    acking,
    decode_as,
    expect,
    ip_link,
    nlmsg_header,
    pyroute,
    pyroute_errno,
    scripted,
    veth_up,
)


def tc_json(ns: Netns, *args: str) -> list[dict[str, Any]]:
    done = ns.run(["tc", "-j", *args])
    return list(json.loads(done.stdout or "[]"))


def test_tc_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(acking)
    rt.add_tbf(3, rate=1_250_000, burst=20_480, limit=51_730, replace=True)
    request = decode_as(sock.sent[-1], tcmsg)
    assert nlmsg_header(sock.sent[-1])[1] == k.RTM_NEWQDISC
    assert request["header"]["flags"] & (k.NLM_F_CREATE | k.NLM_F_REPLACE | k.NLM_F_EXCL) == (
        k.NLM_F_CREATE | k.NLM_F_REPLACE
    )
    expect(request, index=3, handle=0, parent=k.TC_H_ROOT, info=0)
    assert request.get_attr("TCA_KIND") == "tbf"
    parms = request.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    # 20480 bytes at 1.25 MB/s: 16.384 ms, in 64 ns ticks; linklayer ethernet (pyroute2
    # calls the field rate___reserved)
    expect(parms, rate=1_250_000, limit=51_730, buffer=16_384_000 // 64, peak=0)
    expect(parms, rate___reserved=k.TC_LINKLAYER_ETHERNET)
    assert wire.Attrs.decode(k.TCA_TBF, _tbf_options(sock.sent[-1]))["burst"] == 20_480

    rt.add_tbf(3, rate=5 << 32, burst=1 << 20, limit=1 << 30)  # past 32 bits: TCA_TBF_RATE64
    options = wire.Attrs.decode(k.TCA_TBF, _tbf_options(sock.sent[-1]))
    assert options["rate64"] == 5 << 32
    assert k.TC_RATESPEC.unpack(k.TC_TBF_QOPT.unpack(options["parms"])[0])[5] == 0xFFFFFFFF

    rt.add_ingress_qdisc(3)
    request = decode_as(sock.sent[-1], tcmsg)
    expect(request, index=3, handle=0xFFFF0000, parent=0xFFFFFFF1)
    assert request.get_attr("TCA_KIND") == "ingress"

    rt.add_redirect_filter(3, 4, prio=2)
    request = decode_as(sock.sent[-1], tcmsg)
    assert nlmsg_header(sock.sent[-1])[1] == k.RTM_NEWTFILTER
    expect(request, index=3, parent=0xFFFF0000, info=(2 << 16) | 0x0300)  # htons(ETH_P_ALL)
    options = request.get_attr("TCA_OPTIONS")
    sel = options.get_attr("TCA_U32_SEL")
    expect(sel, flags=1, nkeys=1)
    assert sel["keys"] == [{"key_mask": 0, "key_val": 0, "key_off": 0, "key_offmask": 0}]
    action = options.get_attr("TCA_U32_ACT").get_attr("TCA_ACT_PRIO_1")
    assert action.get_attr("TCA_ACT_KIND") == "mirred"
    mirred = action.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
    expect(mirred, action=k.TC_ACT_STOLEN, eaction=k.TCA_EGRESS_REDIR, ifindex=4)

    rt.delete_qdisc(3, k.TC_H_INGRESS)
    request = decode_as(sock.sent[-1], tcmsg)
    assert nlmsg_header(sock.sent[-1])[1] == k.RTM_DELQDISC
    expect(request, index=3, parent=0xFFFFFFF1)


def _tbf_options(request: bytes) -> memoryview:
    attrs = k.TCA.decode(memoryview(request)[16 + k.TCMSG.size :])
    return memoryview(attrs["options"])


def test_tbf_buffer_ticks_and_their_limits() -> None:
    assert rtnl.tbf_buffer_ticks(1_250_000, 20_480) == 256_000
    assert rtnl.tbf_buffer_ticks(125, 1) == 125_000  # 8 ms
    with pytest.raises(ValueError, match="2\\*\\*32 ticks"):
        rtnl.tbf_buffer_ticks(1, 300)  # 300 s of traffic
    with pytest.raises(ValueError, match="positive"):
        rtnl.tbf_buffer_ticks(0, 10)
    assert TbfInfo(
        rate=1_250_000, buffer_ns=16_384_000, limit=0, peakrate=0, linklayer=1
    ).burst == (20_480)


@pytest.mark.netns
def test_a_tbf_we_add_is_what_tc_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_tbf(v0, rate=1_250_000, burst=20_480, limit=51_730)
        (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
        assert shown["kind"] == "tbf"
        expect(shown["options"], rate=1_250_000, burst=20_480, lat=25_000)  # 31250 B = 25 ms
        with pyroute(netns) as ipr:
            (theirs,) = [q for q in ipr.get_qdiscs(index=v0) if q.get_attr("TCA_KIND") == "tbf"]
        parms = theirs.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
        expect(parms, rate=1_250_000, limit=51_730, buffer=256_000)
        (ours,) = [q for q in rt.qdiscs(v0) if q.kind == "tbf"]
        expect(ours, index=v0, parent=k.TC_H_ROOT, handle=theirs["handle"])
        assert ours.tbf == TbfInfo(
            rate=1_250_000, buffer_ns=16_384_000, limit=51_730, peakrate=0, linklayer=1
        )
        # replace: another rate, the same qdisc slot; a plain add of a second root: EEXIST
        rt.add_tbf(v0, rate=2_500_000, burst=40_960, limit=200_000, replace=True)
        (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
        expect(shown["options"], rate=2_500_000, burst=40_960)
        with pytest.raises(NetlinkExists) as caught:
            rt.add_tbf(v0, rate=2_500_000, burst=40_960, limit=200_000)
        assert caught.value.errno == errno.EEXIST


@pytest.mark.netns
def test_a_tbf_tc_adds_is_what_we_read(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        for rate, burst in (("10mbit", 20_000), ("40gbit", 5_000_000)):  # 40 Gbit: RATE64
            netns.run(["tc", "qdisc", "replace", "dev", "v0", "root", "tbf", "rate", rate,
                       "burst", str(burst), "latency", "25ms"])  # fmt: skip
            (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
            (ours,) = [q for q in rt.qdiscs("v0") if q.parent == k.TC_H_ROOT]
            assert ours.kind == "tbf" and ours.tbf is not None
            assert ours.tbf.rate == shown["options"]["rate"]
            # tc prints the burst from the buffer time rounded to whole microseconds
            assert abs(ours.tbf.burst - shown["options"]["burst"]) <= ours.tbf.rate // 10**6 + 1
            assert ours.handle >> 16 == int(shown["handle"].rstrip(":"), 16)
        assert ours.index == v0


@pytest.mark.netns
def test_an_ifb_with_an_ingress_redirect_is_what_tc_ip_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        ifb = rt.create_ifb("ifb7", mtu=1400, txqlen=500, alias="pycni-bandwidth n c eth0", up=True)
        expect(ifb, name="ifb7", kind="ifb", mtu=1400, alias="pycni-bandwidth n c eth0")
        assert ifb.up
        shown = ip_link(netns, "ifb7")
        expect(shown, mtu=1400, txqlen=500, ifalias="pycni-bandwidth n c eth0")
        assert shown["linkinfo"]["info_kind"] == "ifb"
        rt.add_ingress_qdisc(v0)
        rt.add_redirect_filter(v0, ifb.index)
        (ingress,) = [
            q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["kind"] == "ingress"
        ]
        assert ingress["handle"] == "ffff:" and ingress["parent"] == "ffff:fff1"
        shown_filters = tc_json(netns, "filter", "show", "dev", "v0", "parent", "ffff:")
        (shown_filter,) = [f for f in shown_filters if "actions" in f.get("options", {})]
        expect(shown_filter, protocol="all", pref=1, kind="u32")
        (action,) = shown_filter["options"]["actions"]
        expect(action, kind="mirred", mirred_action="redirect", direction="egress", to_dev="ifb7")
        assert shown_filter["options"]["match"] == {
            "value": "0",
            "mask": "0",
            "offmask": "",
            "off": 0,
        }
        (ours,) = rt.filters(v0)
        expect(ours, index=v0, parent=0xFFFF0000, prio=1, protocol=k.ETH_P_ALL, kind="u32")
        expect(ours, match_all=True, redirect=ifb.index)
        with pyroute(netns) as ipr:
            dumped = ipr.get_filters(index=v0, parent=0xFFFF0000)
            options = [f.get_attr("TCA_OPTIONS") for f in dumped]
            theirs = [
                f for f, o in zip(dumped, options, strict=True) if o and o.get_attr("TCA_U32_SEL")
            ]
        assert [f["handle"] for f in theirs] == [ours.handle]


@pytest.mark.netns
def test_a_redirect_tc_adds_is_what_we_read(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        netns.ip("link", "add", "ifb8", "type", "ifb")
        netns.run(["tc", "qdisc", "add", "dev", "v0", "ingress"])
        netns.run(["tc", "filter", "add", "dev", "v0", "parent", "ffff:", "protocol", "all",
                   "prio", "3", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
                   "redirect", "dev", "ifb8"])  # fmt: skip
        netns.run(["tc", "filter", "add", "dev", "v0", "parent", "ffff:", "protocol", "ip",
                   "prio", "4", "u32", "match", "ip", "dst", "10.0.0.0/8", "action", "mirred",
                   "egress", "mirror", "dev", "ifb8"])  # fmt: skip
        by_prio = {f.prio: f for f in rt.filters("v0")}
        ifb8 = rt.get_link("ifb8").index
        expect(by_prio[3], match_all=True, redirect=ifb8, protocol=k.ETH_P_ALL)
        expect(by_prio[4], match_all=False, redirect=None, protocol=0x0800)  # a mirror only
        assert {q.kind for q in rt.qdiscs(v0)} >= {"ingress"}


@pytest.mark.netns
def test_qdisc_deletes_and_their_errnos_match_pyroute2(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        for parent in (k.TC_H_ROOT, k.TC_H_INGRESS):  # only the default root; no ingress
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_qdisc(v0, parent)
            theirs = pyroute_errno(lambda p=parent: ipr.tc("del", index=v0, parent=p))  # type: ignore[misc]
            assert caught.value.errno == theirs == errno.ENOENT
            rt.delete_qdisc(v0, parent, missing_ok=True)
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_qdisc("v9")
        assert no_link.value.errno == errno.ENODEV
        rt.add_tbf(v0, rate=125_000, burst=10_000, limit=20_000)
        rt.add_ingress_qdisc(v0)
        with pytest.raises(NetlinkExists):
            rt.add_ingress_qdisc(v0)
        rt.delete_qdisc(v0)
        rt.delete_qdisc(v0, k.TC_H_INGRESS)
        assert {q["kind"] for q in tc_json(netns, "qdisc", "show", "dev", "v0")} == {"noqueue"}
