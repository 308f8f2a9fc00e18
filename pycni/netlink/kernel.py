"""The kernel's rtnetlink numbers, as tables, each with the uapi header it comes from.

Every message type, flag, fixed header and attribute space the client uses is here and nowhere
else; pycni.netlink.rtnl speaks in field names ("mtu", "linkinfo", "vni") and these tables turn
them into numbers. tests/netlink/test_kernel.py checks the tables against /usr/include/linux/*.h
when the headers are installed.
"""

from __future__ import annotations

import struct

from pycni.netlink.wire import (
    ADDRESS,
    BE16,
    BE32,
    BOOL8,
    FLAG,
    HWADDR,
    NESTED_RAW,
    NLA_F_NESTED,
    RAW,
    S32,
    STRING,
    U8,
    U16,
    U32,
    U64,
    Attrs,
    Codec,
    Nested,
    pack_attr,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# --- linux/netlink.h -------------------------------------------------------------------------

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12  # nfnetlink: conntrack (linux/netfilter/nfnetlink.h)
SOL_NETLINK = 270  # linux/socket.h
NETLINK_CAP_ACK = 10  # errors echo only the request's header, not the whole request
NETLINK_GET_STRICT_CHK = 12  # dump requests are checked strictly, and filtered (4.20+)
NETLINK_EXT_ACK = 11  # errors carry the kernel's own message (NLMSGERR_ATTR_MSG)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLMSG_MIN_TYPE = 0x10  # types below are control messages

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100  # modifiers of NEW requests
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # flags of an NLMSG_ERROR answer
NLM_F_ACK_TLVS = 0x200

NLMSGERR = Attrs(
    "NLMSGERR_ATTR",
    {
        "msg": (1, STRING),
        "offs": (2, U32),
        "cookie": (3, RAW),
        "policy": (4, RAW),
        "miss_type": (5, U32),
        "miss_nest": (6, U32),
    },
)

# --- linux/rtnetlink.h: message types and fixed headers --------------------------------------

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30

IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index  (if_addr.h)
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
#                                      type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, (pad1, pad2), ifindex, state, flags, type
#                                     (neighbour.h)

AF_UNSPEC = 0
AF_INET = 2
AF_BRIDGE = 7  # linux/socket.h
AF_INET6 = 10
FAMILY_OF_VERSION = {4: AF_INET, 6: AF_INET6}

RTEXT_FILTER_SKIP_STATS = 1 << 3  # IFLA_EXT_MASK: leave the 200+ bytes of counters out

RTN_UNSPEC = 0
RTN_UNICAST = 1
RTN_LOCAL = 2
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7

RTPROT_UNSPEC = 0
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255

RT_TABLE_UNSPEC = 0
RT_TABLE_COMPAT = 252  # rtm_table of a route whose table id needs RTA_TABLE (> 255)
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255

RTM_F_CLONED = 0x200
RTNH_F_ONLINK = 4

RTAX = Attrs(
    "RTAX",
    {
        "lock": (1, U32),
        "mtu": (2, U32),
        "window": (3, U32),
        "rtt": (4, U32),
        "rttvar": (5, U32),
        "ssthresh": (6, U32),
        "cwnd": (7, U32),
        "advmss": (8, U32),
        "reordering": (9, U32),
        "hoplimit": (10, U32),
        "initcwnd": (11, U32),
        "features": (12, U32),
        "rto_min": (13, U32),
        "initrwnd": (14, U32),
        "quickack": (15, U32),
        "cc_algo": (16, STRING),
        "fastopen_no_cookie": (17, U32),
    },
)

RTA = Attrs(
    "RTA",
    {
        "dst": (1, ADDRESS),
        "src": (2, ADDRESS),
        "iif": (3, U32),
        "oif": (4, U32),
        "gateway": (5, ADDRESS),
        "priority": (6, U32),
        "prefsrc": (7, ADDRESS),
        "metrics": (8, Nested(RTAX)),
        "multipath": (9, RAW),
        "flow": (11, U32),
        "cacheinfo": (12, RAW),
        "table": (15, U32),
        "mark": (16, U32),
        "via": (18, RAW),
        "pref": (20, U8),
        "encap_type": (21, U16),
        "expires": (23, U64),
        "uid": (25, U32),
        "nh_id": (30, U32),
    },
)

# --- linux/if.h: net_device_flags -------------------------------------------------------------

IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_RUNNING = 0x40
IFF_NOARP = 0x80
IFF_PROMISC = 0x100
IFF_MULTICAST = 0x1000
IFF_LOWER_UP = 0x10000

# IF_OPER_* (linux/if.h, RFC 2863), as `ip link` prints them
OPERSTATES = {
    0: "UNKNOWN",
    1: "NOTPRESENT",
    2: "DOWN",
    3: "LOWERLAYERDOWN",
    4: "TESTING",
    5: "DORMANT",
    6: "UP",
}

# --- linux/if_link.h: link attributes and the kind-specific ones --------------------------

IFLA_BR = Attrs(  # a bridge's own settings (kind "bridge", IFLA_INFO_DATA)
    "IFLA_BR",
    {
        "forward_delay": (1, U32),
        "hello_time": (2, U32),
        "max_age": (3, U32),
        "ageing_time": (4, U32),
        "stp_state": (5, U32),
        "priority": (6, U16),
        "vlan_filtering": (7, BOOL8),
        "vlan_protocol": (8, BE16),
        "group_fwd_mask": (9, U16),
        "mcast_snooping": (23, BOOL8),
        "vlan_default_pvid": (39, U16),
    },
)

IFLA_BRPORT = Attrs(  # a bridge port's settings (slave kind "bridge"; AF_BRIDGE IFLA_PROTINFO)
    "IFLA_BRPORT",
    {
        "state": (1, U8),
        "priority": (2, U16),
        "cost": (3, U32),
        "mode": (4, BOOL8),  # hairpin (BRIDGE_MODE_HAIRPIN)
        "guard": (5, BOOL8),
        "protect": (6, BOOL8),
        "fast_leave": (7, BOOL8),
        "learning": (8, BOOL8),
        "unicast_flood": (9, BOOL8),
        "proxyarp": (10, BOOL8),
        "learning_sync": (11, BOOL8),
        "proxyarp_wifi": (12, BOOL8),
        "mcast_flood": (27, BOOL8),
        "mcast_to_ucast": (28, BOOL8),
        "vlan_tunnel": (29, BOOL8),
        "bcast_flood": (30, BOOL8),
        "group_fwd_mask": (31, U16),
        "neigh_suppress": (32, BOOL8),
        "isolated": (33, BOOL8),
        "locked": (39, BOOL8),
    },
)

IFLA_VXLAN = Attrs(
    "IFLA_VXLAN",
    {
        "id": (1, U32),
        "group": (2, ADDRESS),  # remote or multicast group (IPv4)
        "link": (3, U32),  # underlay device
        "local": (4, ADDRESS),
        "ttl": (5, U8),
        "tos": (6, U8),
        "learning": (7, BOOL8),
        "ageing": (8, U32),
        "limit": (9, U32),
        "port_range": (10, RAW),  # struct ifla_vxlan_port_range {__be16 low, high}
        "proxy": (11, BOOL8),
        "rsc": (12, BOOL8),
        "l2miss": (13, BOOL8),
        "l3miss": (14, BOOL8),
        "port": (15, BE16),  # destination UDP port
        "group6": (16, ADDRESS),
        "local6": (17, ADDRESS),
        "udp_csum": (18, BOOL8),
        "udp_zero_csum6_tx": (19, BOOL8),
        "udp_zero_csum6_rx": (20, BOOL8),
        "remcsum_tx": (21, BOOL8),
        "remcsum_rx": (22, BOOL8),
        "gbp": (23, FLAG),
        "remcsum_nopartial": (24, FLAG),
        "collect_metadata": (25, BOOL8),
        "label": (26, BE32),
        "gpe": (27, FLAG),
        "ttl_inherit": (28, FLAG),
        "df": (29, U8),
    },
)

IFLA_IPTUN = Attrs(  # linux/if_tunnel.h; kind "ipip"
    "IFLA_IPTUN",
    {
        "link": (1, U32),  # underlay device
        "local": (2, ADDRESS),
        "remote": (3, ADDRESS),
        "ttl": (4, U8),
        "tos": (5, U8),
        "encap_limit": (6, U8),
        "flowinfo": (7, BE32),
        "flags": (8, U16),
        "proto": (9, U8),
        "pmtudisc": (10, BOOL8),
        "encap_type": (15, U16),
        "encap_flags": (16, U16),
        "encap_sport": (17, BE16),
        "encap_dport": (18, BE16),
        "collect_metadata": (19, FLAG),
        "fwmark": (20, U32),
    },
)


class IfinfoMessage(Codec):
    """A payload that is a whole `struct ifinfomsg` + IFLA_* attributes (linux/veth.h
    VETH_INFO_PEER). Encodes `(flags, change, {attrs})`; decodes to the attributes' dict."""

    __slots__ = ("attrs",)
    nested = True  # iproute2 marks it nested too; the kernel parses it leniently

    def __init__(self, attrs: Attrs) -> None:
        self.attrs = attrs

    def encode(self, value: Any) -> bytes:
        flags, change, attrs = value
        return IFINFOMSG.pack(AF_UNSPEC, 0, 0, flags, change) + self.attrs.encode(attrs)

    def decode(self, data: memoryview) -> Any:
        return self.attrs.decode(data[IFINFOMSG.size :])


class LinkInfo(Codec):
    """IFLA_LINKINFO, whose IFLA_INFO_DATA (and IFLA_INFO_SLAVE_DATA) depend on the kind named
    beside it: {"kind": "vxlan", "data": {...}, "slave_kind": "bridge", "slave_data": {...}}."""

    __slots__ = ("data", "info", "slave_data")
    nested = True

    def __init__(self, info: Attrs, data: dict[str, Attrs], slave_data: dict[str, Attrs]) -> None:
        self.info = info
        self.data = data
        self.slave_data = slave_data

    def encode(self, value: Any) -> bytes:
        out = self.info.encode({"kind": value.get("kind"), "slave_kind": value.get("slave_kind")})
        for key, kind_key, tables in (
            ("data", "kind", self.data),
            ("slave_data", "slave_kind", self.slave_data),
        ):
            if value.get(key) is not None:
                payload = tables[value[kind_key]].encode(value[key])
                out += pack_attr(self.info.number(key) | NLA_F_NESTED, payload)
        return out

    def decode(self, data: memoryview) -> Any:
        raw = self.info.decode(data)
        for key, kind_key, tables in (
            ("data", "kind", self.data),
            ("slave_data", "slave_kind", self.slave_data),
        ):
            table = tables.get(raw.get(kind_key, ""))
            raw[key] = table.decode(memoryview(raw[key])) if table and key in raw else None
        return raw


IFLA_INFO = Attrs(
    "IFLA_INFO",
    {
        "kind": (1, STRING),
        "data": (2, RAW),  # decoded by LinkInfo with the table of the kind
        "slave_kind": (4, STRING),
        "slave_data": (5, RAW),
    },
)

IFLA = Attrs(
    "IFLA",
    {
        "address": (1, HWADDR),
        "broadcast": (2, HWADDR),
        "ifname": (3, STRING),
        "mtu": (4, U32),
        "link": (5, U32),  # veth: the peer's index (in IFLA_LINK_NETNSID's namespace if given)
        "qdisc": (6, STRING),
        "master": (10, U32),  # 0 in a request: release from the master
        "txqlen": (13, U32),
        "operstate": (16, U8),
        "linkmode": (17, U8),
        "net_ns_pid": (19, U32),
        "ifalias": (20, STRING),
        "group": (27, U32),
        "net_ns_fd": (28, U32),
        "ext_mask": (29, U32),
        "promiscuity": (30, U32),
        "num_tx_queues": (31, U32),
        "num_rx_queues": (32, U32),
        "carrier": (33, U8),
        "carrier_changes": (35, U32),
        "link_netnsid": (37, S32),
        "proto_down": (39, U8),
        "new_netnsid": (45, S32),
        "target_netnsid": (46, S32),
        "min_mtu": (50, U32),
        "max_mtu": (51, U32),
        "alt_ifname": (53, STRING),
        "perm_address": (54, HWADDR),
        "allmulti": (61, U32),
    },
)

VETH_INFO = Attrs("VETH_INFO", {"peer": (1, IfinfoMessage(IFLA))})  # linux/veth.h

IFLA.add(
    "linkinfo",
    18,
    LinkInfo(
        IFLA_INFO,
        data={"bridge": IFLA_BR, "vxlan": IFLA_VXLAN, "ipip": IFLA_IPTUN, "veth": VETH_INFO},
        slave_data={"bridge": IFLA_BRPORT},
    ),
)

# An AF_BRIDGE RTM_SETLINK carries the port's settings in IFLA_PROTINFO (linux/if_bridge.h,
# net/bridge/br_netlink.c br_setlink); a separate space, as AF_INET6 uses the same number for
# IFLA_INET6_* settings.
IFLA_BRIDGE_SETLINK = Attrs("IFLA (AF_BRIDGE)", {"protinfo": (12, Nested(IFLA_BRPORT))})

# --- linux/if_addr.h -------------------------------------------------------------------------

IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
IFA_F_NOPREFIXROUTE = 0x200

IFA = Attrs(
    "IFA",
    {
        "address": (1, ADDRESS),  # the peer's address on point-to-point links
        "local": (2, ADDRESS),
        "label": (3, STRING),
        "broadcast": (4, ADDRESS),
        "anycast": (5, ADDRESS),
        "cacheinfo": (6, RAW),
        "multicast": (7, ADDRESS),
        "flags": (8, U32),  # all of them; ifa_flags holds only the low 8
        "rt_priority": (9, U32),
        "target_netnsid": (10, S32),
        "proto": (11, U8),
    },
)

# --- linux/neighbour.h -----------------------------------------------------------------------

NTF_USE = 0x01
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_PROXY = 0x08
NTF_EXT_LEARNED = 0x10
NTF_ROUTER = 0x80

NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80

NDA = Attrs(
    "NDA",
    {
        "dst": (1, ADDRESS),  # neighbour's IP; for a VXLAN FDB entry, the remote VTEP's
        "lladdr": (2, HWADDR),
        "cacheinfo": (3, RAW),
        "probes": (4, U32),
        "vlan": (5, U16),
        "port": (6, BE16),
        "vni": (7, U32),
        "ifindex": (8, U32),
        "master": (9, U32),
        "link_netnsid": (10, S32),
        "src_vni": (11, U32),
        "protocol": (12, U8),
        "nh_id": (13, U32),
        "flags_ext": (15, U32),
    },
)

# --- linux/rtnetlink.h, linux/pkt_sched.h, linux/pkt_cls.h: traffic control ------------------

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46

TCMSG = struct.Struct("=BxxxiIII")  # family, (pad1, pad2), ifindex, handle, parent, info

TC_H_ROOT = 0xFFFFFFFF  # parent of a device's root (egress) qdisc
TC_H_INGRESS = 0xFFFFFFF1  # parent of the ingress (and clsact) qdisc
TC_H_INGRESS_HANDLE = 0xFFFF0000  # the ingress qdisc's own handle, "ffff:"
ETH_P_ALL = 0x0003  # linux/if_ether.h; a filter's protocol, in network byte order in tcm_info

PSCHED_SHIFT = 6  # net/pkt_sched.h: a "tick" of tc_tbf_qopt.buffer/mtu is 2**6 ns
TC_LINKLAYER_UNAWARE = 0
TC_LINKLAYER_ETHERNET = 1

TC_RATESPEC = struct.Struct("=BBHhHI")  # cell_log, linklayer, overhead, cell_align, mpu, rate
TC_TBF_QOPT = struct.Struct("=12s12sIII")  # rate, peakrate (tc_ratespec), limit, buffer, mtu

TCA = Attrs(
    "TCA",
    {
        "kind": (1, STRING),
        "options": (2, NESTED_RAW),  # decoded with the table of the kind (TCA_TBF_*, ...)
        "stats": (3, RAW),
        "xstats": (4, RAW),
        "rate": (5, RAW),
        "fcnt": (6, RAW),
        "stats2": (7, RAW),
        "stab": (8, RAW),
        "dump_invisible": (10, FLAG),
        "chain": (11, U32),
        "hw_offload": (12, U8),
        "ingress_block": (13, U32),
        "egress_block": (14, U32),
    },
)

TCA_TBF = Attrs(
    "TCA_TBF",
    {
        "parms": (1, RAW),  # struct tc_tbf_qopt
        "rtab": (2, RAW),  # 256 u32 transmit times; unneeded with a link-layer-aware ratespec
        "ptab": (3, RAW),
        "rate64": (4, U64),  # the rate in bytes/s when it does not fit tc_ratespec.rate
        "prate64": (5, U64),
        "burst": (6, U32),  # bytes; the kernel derives the buffer time from it
        "pburst": (7, U32),
    },
)

# linux/tc_act/tc_mirred.h: struct tc_mirred = tc_gen (index, capab, action, refcnt, bindcnt)
# + eaction + ifindex
TC_MIRRED = struct.Struct("=IIiiiiI")
TC_ACT_STOLEN = 4  # linux/pkt_cls.h: what a redirect reports (the packet left this path)
TCA_EGRESS_REDIR = 1
TCA_EGRESS_MIRROR = 2
TCA_INGRESS_REDIR = 3
TCA_INGRESS_MIRROR = 4

TCA_MIRRED = Attrs("TCA_MIRRED", {"tm": (1, RAW), "parms": (2, RAW)})  # parms: tc_mirred

TCA_ACT = Attrs(  # one action of a list (TCA_ACT_TAB); its options depend on the kind
    "TCA_ACT",
    {
        "kind": (1, STRING),
        "options": (2, NESTED_RAW),
        "index": (3, U32),
        "stats": (4, RAW),
        "cookie": (6, RAW),
        "flags": (7, RAW),
    },
)

# linux/pkt_cls.h: struct tc_u32_sel {flags, offshift, nkeys, (pad); offmask (be16), off,
# offoff, hoff; hmask (be32)} + nkeys * struct tc_u32_key {mask, val (be32); off, offmask}
TC_U32_SEL = struct.Struct("=BBBxHHhhI")
TC_U32_KEY = struct.Struct("=IIii")
TC_U32_TERMINAL = 1

TCA_U32 = Attrs(
    "TCA_U32",
    {
        "classid": (1, U32),
        "hash": (2, U32),
        "link": (3, U32),
        "divisor": (4, U32),
        "sel": (5, RAW),
        "police": (6, RAW),
        "act": (7, NESTED_RAW),  # a list of actions, each nested under its order (1, 2, ...)
        "indev": (8, STRING),
        "pcnt": (9, RAW),
        "mark": (10, RAW),
        "flags": (11, U32),
    },
)

# The attribute spaces, by the header enum prefix they mirror (for the header cross-check).
# --- conntrack (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h) -------------------------

NFNL_SUBSYS_CTNETLINK = 1
NFNETLINK_V0 = 0
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (__be16; always 0 here)

CTA_IP = Attrs(
    "CTA_IP",
    {
        "v4_src": (1, ADDRESS),
        "v4_dst": (2, ADDRESS),
        "v6_src": (3, ADDRESS),
        "v6_dst": (4, ADDRESS),
    },
)
CTA_PROTO = Attrs("CTA_PROTO", {"num": (1, U8), "src_port": (2, BE16), "dst_port": (3, BE16)})
CTA_TUPLE = Attrs(
    "CTA_TUPLE",
    {"ip": (1, Nested(CTA_IP)), "proto": (2, Nested(CTA_PROTO)), "zone": (3, BE16)},
)
CTA = Attrs(
    "CTA",
    {
        "tuple_orig": (1, Nested(CTA_TUPLE)),
        "tuple_reply": (2, Nested(CTA_TUPLE)),
        "status": (3, BE32),
        "mark": (8, BE32),
        "id": (12, BE32),
        "zone": (18, BE16),
    },
)

SPACES: dict[str, Attrs] = {
    "IFLA_": IFLA,
    "IFLA_INFO_": IFLA_INFO,
    "IFLA_BR_": IFLA_BR,
    "IFLA_BRPORT_": IFLA_BRPORT,
    "IFLA_VXLAN_": IFLA_VXLAN,
    "IFLA_IPTUN_": IFLA_IPTUN,
    "VETH_INFO_": VETH_INFO,
    "IFA_": IFA,
    "RTA_": RTA,
    "RTAX_": RTAX,
    "NDA_": NDA,
    "NLMSGERR_ATTR_": NLMSGERR,
    "TCA_": TCA,
    "TCA_TBF_": TCA_TBF,
    "TCA_MIRRED_": TCA_MIRRED,
    "TCA_ACT_": TCA_ACT,
    "TCA_U32_": TCA_U32,
    "CTA_": CTA,
    "CTA_TUPLE_": CTA_TUPLE,
    "CTA_IP_": CTA_IP,
    "CTA_PROTO_": CTA_PROTO,
}
