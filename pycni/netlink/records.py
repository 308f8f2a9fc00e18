"""What the kernel reports, as records: links, addresses, routes, neighbours (and FDB entries),
qdiscs and filters.

Each record is read off one RTM_NEW* message by the `*_from_message` function beside it: the
fixed header (struct ifinfomsg, ifaddrmsg, rtmsg, ndmsg, tcmsg), then the attributes through the
tables of pycni.netlink.kernel. Fields the kernel did not send are None.
"""

from __future__ import annotations

from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.netlink import kernel as k
from pycni.netlink.wire import iter_attrs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class VxlanInfo(Record):
    """A VXLAN device's settings (IFLA_VXLAN_*)."""

    __slots__ = (
        "group",
        "learning",
        "local",
        "port",
        "ttl",
        "udp6_zero_csum_rx",
        "udp6_zero_csum_tx",
        "udp_csum",
        "underlay",
        "vni",
    )
    vni: int | None
    port: int | None  # destination UDP port
    local: IP | None  # source address of the encapsulated packets
    group: IP | None  # remote or multicast group, if the device has one
    underlay: int | None  # index of the device the packets leave by (iproute2's `dev`)
    learning: bool
    ttl: int | None  # 0: the route's default hop limit
    udp_csum: bool | None
    udp6_zero_csum_tx: bool | None
    udp6_zero_csum_rx: bool | None

    def __init__(self, data: dict[str, Any]) -> None:
        self._init(
            vni=data.get("id"),
            port=data.get("port"),
            local=data.get("local") or data.get("local6"),
            group=data.get("group") or data.get("group6"),
            underlay=data.get("link") or None,
            learning=bool(data.get("learning", False)),
            ttl=data.get("ttl"),
            udp_csum=data.get("udp_csum"),
            udp6_zero_csum_tx=data.get("udp_zero_csum6_tx"),
            udp6_zero_csum_rx=data.get("udp_zero_csum6_rx"),
        )


class IpipInfo(Record):
    """An IPIP tunnel's settings (IFLA_IPTUN_*)."""

    __slots__ = ("local", "pmtudisc", "remote", "tos", "ttl", "underlay")
    local: IP | None
    remote: IP | None
    ttl: int | None
    tos: int | None
    pmtudisc: bool | None
    underlay: int | None

    def __init__(self, data: dict[str, Any]) -> None:
        zero = IP(0, 4)
        local, remote = data.get("local"), data.get("remote")
        self._init(
            local=None if local == zero else local,
            remote=None if remote == zero else remote,
            ttl=data.get("ttl"),
            tos=data.get("tos"),
            pmtudisc=data.get("pmtudisc"),
            underlay=data.get("link") or None,
        )


class BridgeInfo(Record):
    """A bridge's own settings (IFLA_BR_*)."""

    __slots__ = ("stp_state", "vlan_filtering")
    vlan_filtering: bool
    stp_state: int | None

    def __init__(self, data: dict[str, Any]) -> None:
        self._init(
            vlan_filtering=bool(data.get("vlan_filtering", False)),
            stp_state=data.get("stp_state"),
        )


class BridgePort(Record):
    """A bridge port's settings (IFLA_BRPORT_*), as the bridge reports them for its ports."""

    __slots__ = (
        "broadcast_flood",
        "hairpin",
        "isolated",
        "learning",
        "multicast_flood",
        "neigh_suppress",
        "proxyarp",
        "state",
        "unicast_flood",
    )
    hairpin: bool | None
    learning: bool | None
    unicast_flood: bool | None
    multicast_flood: bool | None
    broadcast_flood: bool | None
    proxyarp: bool | None
    neigh_suppress: bool | None
    isolated: bool | None
    state: int | None  # BR_STATE_* (3 forwarding)

    def __init__(self, data: dict[str, Any]) -> None:
        self._init(
            hairpin=data.get("mode"),
            learning=data.get("learning"),
            unicast_flood=data.get("unicast_flood"),
            multicast_flood=data.get("mcast_flood"),
            broadcast_flood=data.get("bcast_flood"),
            proxyarp=data.get("proxyarp"),
            neigh_suppress=data.get("neigh_suppress"),
            isolated=data.get("isolated"),
            state=data.get("state"),
        )


class Link(Record):
    """A network device (RTM_NEWLINK)."""

    __slots__ = (
        "alias",
        "bridge",
        "bridge_port",
        "flags",
        "index",
        "ipip",
        "kind",
        "link",
        "link_netnsid",
        "mac",
        "master",
        "mtu",
        "name",
        "operstate",
        "promiscuity",
        "vxlan",
    )
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND: "veth", "bridge", "vxlan", ...; None for lo, NICs
    mtu: int
    mac: str | None  # "aa:bb:cc:dd:ee:ff"; tunnels report their 4- or 16-byte "address"
    flags: int  # IFF_*
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    master: int | None  # index of the bridge this link is a port of
    link: int | None  # IFLA_LINK: a veth's peer index (see link_netnsid), a tunnel's underlay
    link_netnsid: int | None  # the namespace (by its id here) where `link` is, if another
    promiscuity: int  # > 0: promiscuous
    vxlan: VxlanInfo | None
    ipip: IpipInfo | None
    bridge: BridgeInfo | None
    bridge_port: BridgePort | None  # set when the link is a bridge port
    alias: str | None  # IFLA_IFALIAS, a free-text label (`ip link set NAME alias TEXT`)

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP), as `ip link set up` leaves it."""
        return bool(self.flags & k.IFF_UP)

    @property
    def lower_up(self) -> bool:
        """The driver signals carrier (IFF_LOWER_UP)."""
        return bool(self.flags & k.IFF_LOWER_UP)

    @property
    def promiscuous(self) -> bool:
        """IFF_PROMISC was set on the link (`ip link set promisc on`)."""
        return bool(self.flags & k.IFF_PROMISC)


def link_from_message(payload: memoryview) -> Link:
    _family, _type, index, flags, _change = k.IFINFOMSG.unpack_from(payload)
    attrs = k.IFLA.decode(payload[k.IFINFOMSG.size :])
    info = attrs.get("linkinfo") or {}
    kind = info.get("kind")
    data = info.get("data")
    slave_data = info.get("slave_data")
    return Link(
        index=index,
        name=attrs.get("ifname", ""),
        kind=kind,
        mtu=attrs.get("mtu", 0),
        mac=attrs.get("address"),
        flags=flags,
        operstate=k.OPERSTATES.get(attrs.get("operstate", 0), "UNKNOWN"),
        master=attrs.get("master") or None,
        link=attrs.get("link"),
        link_netnsid=attrs.get("link_netnsid"),
        promiscuity=attrs.get("promiscuity", 0),
        alias=attrs.get("ifalias"),
        vxlan=VxlanInfo(data) if kind == "vxlan" and data is not None else None,
        ipip=IpipInfo(data) if kind == "ipip" and data is not None else None,
        bridge=BridgeInfo(data) if kind == "bridge" and data is not None else None,
        bridge_port=(
            BridgePort(slave_data)
            if info.get("slave_kind") == "bridge" and slave_data is not None
            else None
        ),
    )


class Address(Record):
    """An address on a link (RTM_NEWADDR)."""

    __slots__ = ("broadcast", "family", "flags", "index", "label", "prefix", "scope")
    index: int
    family: int  # AF_INET, AF_INET6
    prefix: Prefix  # the address with its prefix length, "10.1.0.5/24"
    flags: int  # IFA_F_*
    scope: int  # RT_SCOPE_*
    label: str | None
    broadcast: IP | None

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)

    @property
    def tentative(self) -> bool:
        """IPv6 duplicate address detection has not finished (IFA_F_TENTATIVE)."""
        return bool(self.flags & k.IFA_F_TENTATIVE)


def address_from_message(payload: memoryview) -> Address | None:
    family, prefixlen, flags, scope, index = k.IFADDRMSG.unpack_from(payload)
    attrs = k.IFA.decode(payload[k.IFADDRMSG.size :])
    ip = attrs.get("local") or attrs.get("address")
    if ip is None:
        return None
    return Address(
        index=index,
        family=family,
        prefix=Prefix(ip, prefixlen),
        flags=attrs.get("flags", flags),
        scope=scope,
        label=attrs.get("label"),
        broadcast=attrs.get("broadcast"),
    )


class Route(Record):
    """A route (RTM_NEWROUTE). Multipath routes are listed without their next hops."""

    __slots__ = (
        "advmss",
        "dst",
        "family",
        "flags",
        "gateway",
        "metric",
        "mtu",
        "oif",
        "protocol",
        "scope",
        "src",
        "table",
        "type",
    )
    family: int
    dst: Prefix  # 0.0.0.0/0 or ::/0 for a default route
    gateway: IP | None
    oif: int | None  # output link index
    table: int
    protocol: int  # RTPROT_*
    scope: int  # RT_SCOPE_*
    type: int  # RTN_*
    metric: int | None  # RTA_PRIORITY
    flags: int  # rtm_flags, with RTNH_F_* of the next hop (RTNH_F_ONLINK)
    src: IP | None  # RTA_PREFSRC: the preferred source (iproute2's `src`)
    mtu: int | None  # RTA_METRICS/RTAX_MTU
    advmss: int | None  # RTA_METRICS/RTAX_ADVMSS

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)

    @property
    def onlink(self) -> bool:
        return bool(self.flags & k.RTNH_F_ONLINK)


def route_from_message(payload: memoryview) -> Route | None:
    family, dst_len, _src_len, _tos, table, protocol, scope, rtype, flags = k.RTMSG.unpack_from(
        payload
    )
    if family not in (k.AF_INET, k.AF_INET6):
        return None
    attrs = k.RTA.decode(payload[k.RTMSG.size :])
    dst = attrs.get("dst") or IP(0, 4 if family == k.AF_INET else 6)
    metrics = attrs.get("metrics") or {}
    return Route(
        family=family,
        dst=Prefix(dst, dst_len),
        gateway=attrs.get("gateway"),
        oif=attrs.get("oif"),
        table=attrs.get("table", table),
        protocol=protocol,
        scope=scope,
        type=rtype,
        metric=attrs.get("priority"),
        flags=flags,
        src=attrs.get("prefsrc"),
        mtu=metrics.get("mtu"),
        advmss=metrics.get("advmss"),
    )


class Neighbour(Record):
    """A neighbour entry (RTM_NEWNEIGH): ARP/NDP (family AF_INET/AF_INET6), or a bridge or
    VXLAN forwarding entry (family AF_BRIDGE: `mac` -> remote VTEP `dst`)."""

    __slots__ = ("dst", "family", "flags", "index", "mac", "master", "port", "state", "vni")
    index: int
    family: int
    dst: IP | None  # NDA_DST
    mac: str | None  # NDA_LLADDR
    state: int  # NUD_*
    flags: int  # NTF_*
    vni: int | None
    port: int | None
    master: int | None

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)

    @property
    def permanent(self) -> bool:
        return bool(self.state & k.NUD_PERMANENT)


def neighbour_from_message(payload: memoryview) -> Neighbour:
    family, index, state, flags, _type = k.NDMSG.unpack_from(payload)
    attrs = k.NDA.decode(payload[k.NDMSG.size :])
    return Neighbour(
        index=index,
        family=family,
        dst=attrs.get("dst"),
        mac=attrs.get("lladdr"),
        state=state,
        flags=flags,
        vni=attrs.get("vni"),
        port=attrs.get("port"),
        master=attrs.get("master"),
    )


# --- traffic control -------------------------------------------------------------------------


class TbfInfo(Record):
    """A token bucket filter's settings (TCA_TBF_PARMS, TCA_TBF_RATE64), in bytes and ns."""

    __slots__ = ("buffer_ns", "limit", "linklayer", "peakrate", "rate")
    rate: int  # bytes per second
    buffer_ns: int  # the burst, as the time it takes to send at `rate` (2**6 ns ticks)
    limit: int  # bytes that may wait in the queue
    peakrate: int  # bytes per second; 0: none
    linklayer: int  # TC_LINKLAYER_*

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)

    @property
    def burst(self) -> int:
        """The bucket's size in bytes, as `tc` shows it: what `rate` sends in `buffer_ns`."""
        return (self.rate * self.buffer_ns + 500_000_000) // 1_000_000_000


def _tbf_from_options(options: dict[str, Any]) -> TbfInfo | None:
    parms = options.get("parms")
    if parms is None or len(parms) < k.TC_TBF_QOPT.size:
        return None
    rate, peak, limit, buffer, _mtu = k.TC_TBF_QOPT.unpack_from(parms)
    rate_bytes = options.get("rate64") or k.TC_RATESPEC.unpack(rate)[5]
    peak_bytes = options.get("prate64") or k.TC_RATESPEC.unpack(peak)[5]
    return TbfInfo(
        rate=rate_bytes,
        buffer_ns=buffer << k.PSCHED_SHIFT,
        limit=limit,
        peakrate=peak_bytes,
        linklayer=k.TC_RATESPEC.unpack(rate)[1],
    )


class Qdisc(Record):
    """A queueing discipline (RTM_NEWQDISC): `tbf` is set for kind "tbf"."""

    __slots__ = ("handle", "index", "kind", "parent", "tbf")
    index: int  # the link's
    handle: int  # major:minor as one u32 ("8001:" is 0x80010000)
    parent: int  # TC_H_ROOT, TC_H_INGRESS or a class
    kind: str  # "tbf", "ingress", "noqueue", "pfifo_fast", ...
    tbf: TbfInfo | None

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)


def qdisc_from_message(payload: memoryview) -> Qdisc:
    _family, index, handle, parent, _info = k.TCMSG.unpack_from(payload)
    attrs = k.TCA.decode(payload[k.TCMSG.size :])
    kind = attrs.get("kind", "")
    options = attrs.get("options")
    tbf = None
    if kind == "tbf" and options is not None:
        tbf = _tbf_from_options(k.TCA_TBF.decode(memoryview(options)))
    return Qdisc(index=index, handle=handle, parent=parent, kind=kind, tbf=tbf)


class Filter(Record):
    """A classifier (RTM_NEWTFILTER) of a qdisc. For a u32 filter, `match_all` says whether
    its selector matches every packet, and `redirect` is the index of the device its mirred
    action redirects packets to (as they leave it: TCA_EGRESS_REDIR), if it has one."""

    __slots__ = ("handle", "index", "kind", "match_all", "parent", "prio", "protocol", "redirect")
    index: int
    parent: int
    handle: int
    prio: int  # the filter's preference (tcm_info's upper half)
    protocol: int  # ETH_P_*, host byte order
    kind: str
    match_all: bool
    redirect: int | None

    def __init__(self, **fields: Any) -> None:
        self._init(**fields)


def filter_from_message(payload: memoryview) -> Filter | None:
    _family, index, handle, parent, info = k.TCMSG.unpack_from(payload)
    attrs = k.TCA.decode(payload[k.TCMSG.size :])
    kind = attrs.get("kind", "")
    options = attrs.get("options")
    if options is None:  # the head of a filter list, not a filter
        return None
    match_all = False
    redirect = None
    if kind == "u32":
        u32 = k.TCA_U32.decode(memoryview(options))
        sel = u32.get("sel")
        if sel is None:  # a u32 hash table ("800:"), which holds the filters
            return None
        if len(sel) >= k.TC_U32_SEL.size:
            nkeys = k.TC_U32_SEL.unpack_from(sel)[2]
            keys = [
                k.TC_U32_KEY.unpack_from(sel, k.TC_U32_SEL.size + n * k.TC_U32_KEY.size)
                for n in range(nkeys)
                if len(sel) >= k.TC_U32_SEL.size + (n + 1) * k.TC_U32_KEY.size
            ]
            match_all = all(mask == 0 and value == 0 for mask, value, _, _ in keys)
        redirect = _mirred_redirect(u32.get("act"))
    return Filter(
        index=index,
        parent=parent,
        handle=handle,
        prio=info >> 16,
        protocol=int.from_bytes((info & 0xFFFF).to_bytes(2, "little"), "big"),
        kind=kind,
        match_all=match_all,
        redirect=redirect,
    )


def _mirred_redirect(actions: bytes | None) -> int | None:
    """The target of the first mirred egress redirect among the actions, or None."""
    if actions is None:
        return None
    for _order, payload in iter_attrs(memoryview(actions)):
        action = k.TCA_ACT.decode(payload)
        if action.get("kind") != "mirred" or action.get("options") is None:
            continue
        parms = k.TCA_MIRRED.decode(memoryview(action["options"])).get("parms")
        if parms is None or len(parms) < k.TC_MIRRED.size:
            continue
        _index, _capab, _action, _ref, _bind, eaction, ifindex = k.TC_MIRRED.unpack_from(parms)
        if eaction == k.TCA_EGRESS_REDIR:
            return int(ifindex)
    return None
