"""What the kernel reports, as records: links, addresses, routes, neighbours (and FDB entries).

Each record is read off one RTM_NEW* message by the `*_from_message` function beside it: the
fixed header (struct ifinfomsg, ifaddrmsg, rtmsg, ndmsg), then the attributes through the
tables of pycni.netlink.kernel. Fields the kernel did not send are None.
"""

from __future__ import annotations

from pycni.ip import IP, Prefix
from pycni.netlink import kernel as k
from pycni.record import Record

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
