"""`Rtnl`: one NETLINK_ROUTE socket in one network namespace, and what the plugins ask of it.

The exchange (NLM_F_ACK on every request, answers matched by sequence number and port id, the
kernel's exact errno, interrupted dumps run again) is pycni.netlink.socket's NetlinkSocket;
this module adds the requests, and per kind of request which errnos mean "not there" (the
*_GONE tables below).

Dumps of routes, addresses and neighbours that ask for one table, protocol, link or family
are made on a strict-checking socket (NETLINK_GET_STRICT_CHK), where the kernel (4.20 and
later) applies those filters itself: with a /32 route and an fe80 address per pod on a node,
reading and decoding the whole table costs milliseconds per dump. The same filters are applied
again here, so an older kernel that ignores them gives the same answer, only slower.
"""

from __future__ import annotations

import errno
import os

from pycni.netlink import kernel as k
from pycni.netlink.errors import NetlinkError, NetlinkNotFound
from pycni.netlink.namespace import open_netns
from pycni.netlink.records import (
    Address,
    Filter,
    Link,
    Neighbour,
    Qdisc,
    Route,
    address_from_message,
    filter_from_message,
    link_from_message,
    neighbour_from_message,
    qdisc_from_message,
    route_from_message,
)
from pycni.netlink.socket import NetlinkSocket, ignore_not_found
from pycni.netlink.wire import NLA_F_NESTED, pack_attr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pycni.cni.ip import IP, Prefix

# Which errnos mean "the object named is not there" (NetlinkNotFound), per kind of request:
LINK_GONE = frozenset({errno.ENODEV})  # any request naming a link by name or index
ADDRESS_GONE = frozenset({errno.EADDRNOTAVAIL, errno.ENODEV})  # delete_address
ROUTE_GONE = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV})  # delete_route (ENOENT: ::/0)
NEIGHBOUR_GONE = frozenset({errno.ENOENT, errno.ENODEV})  # delete_neighbour, delete_fdb_entry
# What a strict dump answers when its filter names a table or link that does not exist:
NO_SUCH_TABLE = frozenset({errno.ENOENT})  # "FIB table does not exist" (one family's dump)
NO_SUCH_LINK = frozenset({errno.ENODEV})  # RTA_OIF, ifa_index
QDISC_GONE = frozenset({errno.ENOENT, errno.ENODEV})  # delete_qdisc (ENOENT: none, or default)
_ETH_P_ALL_BE = int.from_bytes(k.ETH_P_ALL.to_bytes(2, "big"), "little")  # tcm_info: __be16


def _describe(link: int | str) -> str:
    return f"link '{link}'" if isinstance(link, str) else f"link index {link}"


def _select(link: int | str) -> tuple[int, dict[str, Any]]:
    """ifi_index and attributes naming a link: by index, or by IFLA_IFNAME with index 0."""
    if isinstance(link, str):
        return 0, {"ifname": link}
    return link, {}


def _new_flags(replace: bool, append: bool = False) -> int:
    if replace:
        return k.NLM_F_CREATE | k.NLM_F_REPLACE
    return k.NLM_F_CREATE | (k.NLM_F_APPEND if append else k.NLM_F_EXCL)


def _family(version: int) -> int:
    return k.FAMILY_OF_VERSION[version]


def _same_family(dst: Prefix, **addresses: IP | None) -> None:
    for name, ip in addresses.items():
        if ip is not None and ip.version != dst.version:
            raise ValueError(f"{name} {ip} is IPv{ip.version}, the route to {dst} IPv{dst.version}")


def tbf_buffer_ticks(rate: int, burst: int) -> int:
    """The time `rate` bytes/s take to send `burst` bytes, in 2**6 ns ticks (tc_tbf_qopt's
    buffer), rounded down; ValueError if it does not fit the u32 the kernel reports it in."""
    if rate <= 0 or burst <= 0:
        raise ValueError(f"a tbf needs a positive rate and burst, not {rate} and {burst}")
    ticks = burst * 1_000_000_000 // rate >> k.PSCHED_SHIFT
    if ticks > 0xFFFFFFFF:
        raise ValueError(f"a burst of {burst} bytes at {rate} bytes/s exceeds 2**32 ticks")
    return ticks


class Rtnl(NetlinkSocket):
    """A NETLINK_ROUTE socket (see NetlinkSocket for `netns` and `sock`) and what the plugins
    ask of it.

    Links are named by index or by name (`int | str`); requests that need an index look a
    name up first (one more round trip), so pass the index when you have it.
    """

    # --- links ---------------------------------------------------------------------------

    def get_link(self, link: int | str) -> Link:
        """The link with this index or name; NetlinkNotFound (ENODEV) if there is none."""
        return self._get_link(link, f"get {_describe(link)}")

    def find_link(self, link: int | str) -> Link | None:
        """The link with this index or name, or None."""
        try:
            return self.get_link(link)
        except NetlinkNotFound:
            return None

    def links(self) -> list[Link]:
        """Every link in the namespace."""
        body = k.IFINFOMSG.pack(k.AF_UNSPEC, 0, 0, 0, 0) + k.IFLA.encode(
            {"ext_mask": k.RTEXT_FILTER_SKIP_STATS}
        )
        return self._dump(k.RTM_GETLINK, body, "list links", link_from_message)

    def create_veth(
        self,
        name: str,
        peer_name: str,
        *,
        peer_netns: str | int | None = None,
        mtu: int | None = None,
        peer_mtu: int | None = None,
        mac: str | None = None,
        peer_mac: str | None = None,
        up: bool = False,
    ) -> Link:
        """A veth pair: `name` here, `peer_name` here or created directly inside `peer_netns`
        (a namespace path, e.g. CNI_NETNS, or an open fd; IFLA_NET_NS_FD in the peer's info).
        `peer_mtu` defaults to `mtu`. Returns this end; its `link` is the peer's index (in
        the peer's namespace). A missing namespace path raises NamespaceNotFound. `up` brings
        this end up; the peer cannot be brought up by the same request (the kernel opens it
        before the pair is joined and answers ENOTCONN, to `ip` too): set it up from its own
        namespace."""
        fd = open_netns(peer_netns) if isinstance(peer_netns, str) else peer_netns
        try:
            peer = {
                "ifname": peer_name,
                "mtu": mtu if peer_mtu is None else peer_mtu,
                "address": peer_mac,
                "net_ns_fd": fd,
            }
            return self._create_link(
                name,
                "veth",
                {"peer": (0, 0, peer)},
                f"create veth pair '{name}' <-> '{peer_name}'",
                mtu=mtu,
                mac=mac,
                up=up,
            )
        finally:
            if isinstance(peer_netns, str) and fd is not None:
                os.close(fd)

    def create_bridge(
        self,
        name: str,
        *,
        mtu: int | None = None,
        mac: str | None = None,
        vlan_filtering: bool | None = None,
        up: bool = False,
    ) -> Link:
        """A bridge. `vlan_filtering` None leaves the attribute out: the kernel's default is
        off, and a kernel built without CONFIG_BRIDGE_VLAN_FILTERING refuses the attribute
        even to turn it off (EOPNOTSUPP, as `ip link add ... vlan_filtering 0` gets)."""
        return self._create_link(
            name,
            "bridge",
            {"vlan_filtering": vlan_filtering},
            f"create bridge '{name}'",
            mtu=mtu,
            mac=mac,
            up=up,
        )

    def create_vxlan(
        self,
        name: str,
        vni: int,
        *,
        port: int | None = None,
        local: IP | None = None,
        group: IP | None = None,
        underlay: int | str | None = None,
        learning: bool = False,
        ttl: int | None = None,
        mtu: int | None = None,
        mac: str | None = None,
        udp_csum: bool | None = None,
        udp6_zero_csum_tx: bool | None = None,
        udp6_zero_csum_rx: bool | None = None,
        up: bool = False,
    ) -> Link:
        """A VXLAN device. `port` None is the kernel's default destination port, 8472 (the
        IANA port is 4789); `local` is the source address (IPv4 or IPv6), `group` a remote or
        multicast group (an overlay with per-peer FDB entries has none), `underlay` the device
        the packets leave by (iproute2's `dev`). Learning is off unless asked for."""
        what = f"create vxlan '{name}'"
        six = (local is not None and local.version == 6) or (
            group is not None and group.version == 6
        )
        data = {
            "id": vni,
            "port": port,
            "local6" if six else "local": local,
            "group6" if six else "group": group,
            "link": None if underlay is None else self._index(underlay, what),
            "learning": learning,
            "ttl": ttl,
            "udp_csum": udp_csum,
            "udp_zero_csum6_tx": udp6_zero_csum_tx,
            "udp_zero_csum6_rx": udp6_zero_csum_rx,
        }
        return self._create_link(name, "vxlan", data, what, mtu=mtu, mac=mac, up=up)

    def create_ipip(
        self,
        name: str,
        *,
        local: IP | None = None,
        remote: IP | None = None,
        underlay: int | str | None = None,
        ttl: int | None = None,
        tos: int | None = None,
        pmtudisc: bool | None = None,
        mtu: int | None = None,
        up: bool = False,
    ) -> Link:
        """An IPIP tunnel (IPv4 in IPv4). No `remote` makes it point-to-multipoint: routes
        name each peer as their gateway (with onlink). The kernel needs CONFIG_NET_IPIP;
        without it this raises NetlinkError EOPNOTSUPP ("Unknown device type")."""
        what = f"create ipip tunnel '{name}'"
        data = {
            "link": None if underlay is None else self._index(underlay, what),
            "local": local,
            "remote": remote,
            "ttl": ttl,
            "tos": tos,
            "pmtudisc": pmtudisc,
        }
        return self._create_link(name, "ipip", data, what, mtu=mtu, mac=None, up=up)

    def delete_link(self, link: int | str, *, missing_ok: bool = False) -> None:
        """Delete a link (a veth pair goes as a whole). NetlinkNotFound (ENODEV) if it is not
        there, unless `missing_ok`."""
        index, attrs = _select(link)
        body = k.IFINFOMSG.pack(k.AF_UNSPEC, 0, index, 0, 0) + k.IFLA.encode(attrs)
        with ignore_not_found(missing_ok):
            self._request(k.RTM_DELLINK, 0, body, f"delete {_describe(link)}", LINK_GONE)

    def set_link(
        self,
        link: int | str,
        *,
        up: bool | None = None,
        mtu: int | None = None,
        master: int | str | None = None,
        nomaster: bool = False,
        mac: str | None = None,
        name: str | None = None,
        promiscuous: bool | None = None,
        netns: str | int | None = None,
        alias: str | None = None,
    ) -> None:
        """Change a link in one request: up/down, MTU, enslave to `master` (a bridge) or
        release it (`nomaster`), MAC address, name, promiscuous mode, alias (IFLA_IFALIAS;
        "" removes it), or move it to another namespace (a path or an open fd; the link
        arrives there down). None leaves a setting as it is."""
        if master is not None and nomaster:
            raise ValueError("set_link: give master or nomaster, not both")
        changes: list[str] = []
        flags = change = 0
        for wanted, bit, on, off in (
            (up, k.IFF_UP, "up", "down"),
            (promiscuous, k.IFF_PROMISC, "promisc on", "promisc off"),
        ):
            if wanted is not None:
                change |= bit
                flags |= bit if wanted else 0
                changes.append(on if wanted else off)
        attrs: dict[str, Any] = {"mtu": mtu, "address": mac, "ifalias": alias}
        changes += [f"mtu {mtu}"] if mtu is not None else []
        changes += [f"address {mac}"] if mac is not None else []
        changes += [f"master '{master}'"] if master is not None else []
        changes += ["nomaster"] if nomaster else []
        changes += [f"name '{name}'"] if name is not None else []
        changes += [f"netns '{netns}'"] if netns is not None else []
        changes += [f"alias '{alias}'"] if alias is not None else []
        what = f"set {_describe(link)} {', '.join(changes) or '(nothing)'}"
        if nomaster:
            attrs["master"] = 0
        elif master is not None:
            attrs["master"] = self._index(master, what)
        if name is not None:  # renaming needs the index: IFLA_IFNAME is the new name
            index, select = self._index(link, what), {"ifname": name}
        else:
            index, select = _select(link)
        attrs.update(select)
        fd = open_netns(netns) if isinstance(netns, str) else netns
        try:
            attrs["net_ns_fd"] = fd
            body = k.IFINFOMSG.pack(k.AF_UNSPEC, 0, index, flags, change) + k.IFLA.encode(attrs)
            self._request(k.RTM_SETLINK, 0, body, what, LINK_GONE)
        finally:
            if isinstance(netns, str) and fd is not None:
                os.close(fd)

    def set_bridge_port(
        self,
        link: int | str,
        *,
        hairpin: bool | None = None,
        learning: bool | None = None,
        unicast_flood: bool | None = None,
        multicast_flood: bool | None = None,
        broadcast_flood: bool | None = None,
        proxyarp: bool | None = None,
        neigh_suppress: bool | None = None,
        isolated: bool | None = None,
    ) -> None:
        """Settings of a link as a bridge port (AF_BRIDGE RTM_SETLINK, IFLA_PROTINFO): hairpin
        mode (IFLA_BRPORT_MODE), learning, flooding, ... The link must be enslaved to a
        bridge (else the kernel answers EOPNOTSUPP). Read them back as `Link.bridge_port`."""
        settings = {
            "mode": hairpin,
            "learning": learning,
            "unicast_flood": unicast_flood,
            "mcast_flood": multicast_flood,
            "bcast_flood": broadcast_flood,
            "proxyarp": proxyarp,
            "neigh_suppress": neigh_suppress,
            "isolated": isolated,
        }
        names = {
            "mode": "hairpin",
            "mcast_flood": "multicast_flood",
            "bcast_flood": "broadcast_flood",
        }
        changes = [
            f"{names.get(key, key)} {'on' if value else 'off'}"
            for key, value in settings.items()
            if value is not None
        ]
        if not changes:
            return
        what = f"set bridge port {_describe(link)} {', '.join(changes)}"
        index = self._index(link, what)
        body = k.IFINFOMSG.pack(k.AF_BRIDGE, 0, index, 0, 0) + k.IFLA_BRIDGE_SETLINK.encode(
            {"protinfo": settings}
        )
        self._request(k.RTM_SETLINK, 0, body, what, LINK_GONE)

    # --- addresses -----------------------------------------------------------------------

    def add_address(
        self,
        link: int | str,
        prefix: Prefix,
        *,
        nodad: bool = False,
        noprefixroute: bool = False,
        scope: int = k.RT_SCOPE_UNIVERSE,
        broadcast: bool = True,
        replace: bool = False,
    ) -> None:
        """Add `prefix` (address/length, e.g. 10.1.0.5/24) to a link; with `replace`, add or
        update it. `nodad` (IFA_F_NODAD) skips IPv6 duplicate address detection, so the
        address is usable at once; `noprefixroute` (IFA_F_NOPREFIXROUTE) adds no route for
        the prefix. IPv4 addresses get the prefix's broadcast address (as Go's netlink and
        `ip addr add ... brd +` do) unless `broadcast` is false. NetlinkExists (EEXIST) if the
        address is there already (without `replace`)."""
        verb = "replace" if replace else "add"
        what = f"{verb} address '{prefix}' on {_describe(link)}"
        index = self._index(link, what)
        flags = (k.IFA_F_NODAD if nodad else 0) | (k.IFA_F_NOPREFIXROUTE if noprefixroute else 0)
        attrs = {"local": prefix.ip, "address": prefix.ip, "flags": flags}
        if prefix.version == 4 and broadcast and prefix.length < 31:
            attrs["broadcast"] = prefix.last
        body = k.IFADDRMSG.pack(
            _family(prefix.version), prefix.length, flags & 0xFF, scope, index
        ) + k.IFA.encode(attrs)
        self._request(k.RTM_NEWADDR, _new_flags(replace), body, what, LINK_GONE)

    def delete_address(self, link: int | str, prefix: Prefix, *, missing_ok: bool = False) -> None:
        """Remove an address. NetlinkNotFound (EADDRNOTAVAIL; ENODEV for a missing link)
        unless `missing_ok`."""
        what = f"delete address '{prefix}' from {_describe(link)}"
        with ignore_not_found(missing_ok):
            index = self._index(link, what)
            body = k.IFADDRMSG.pack(
                _family(prefix.version), prefix.length, 0, 0, index
            ) + k.IFA.encode({"local": prefix.ip, "address": prefix.ip})
            self._request(k.RTM_DELADDR, 0, body, what, ADDRESS_GONE)

    def addresses(self, link: int | str | None = None, family: int = k.AF_UNSPEC) -> list[Address]:
        """The addresses of one link, or of all; of one family (AF_INET, AF_INET6) or both."""
        what = "list addresses" + (f" of {_describe(link)}" if link is not None else "")
        index = None if link is None else self._index(link, what)
        body = k.IFADDRMSG.pack(family, 0, 0, 0, index or 0)  # strict: the kernel's filter
        return [
            address
            for address in self._dump(
                k.RTM_GETADDR,
                body,
                what,
                address_from_message,
                strict=index is not None,
                nothing=NO_SUCH_LINK,
            )
            if (index is None or address.index == index) and family in (k.AF_UNSPEC, address.family)
        ]

    # --- routes --------------------------------------------------------------------------

    def add_route(
        self,
        dst: Prefix,
        *,
        gateway: IP | None = None,
        oif: int | str | None = None,
        scope: int | None = None,
        table: int = k.RT_TABLE_MAIN,
        protocol: int = k.RTPROT_BOOT,
        metric: int | None = None,
        onlink: bool = False,
        src: IP | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
        route_type: int = k.RTN_UNICAST,
        replace: bool = False,
    ) -> None:
        """Add a route to `dst` (0.0.0.0/0 or ::/0 for a default route) via `gateway` and/or
        out of link `oif`; with `replace`, add or replace it. `scope` None means link scope
        for a unicast route without a gateway (as `ip route add` does), host scope for a
        local route, universe otherwise. `onlink` (RTNH_F_ONLINK) takes the gateway as on
        the link even if no address says so. `src` is the preferred source address
        (RTA_PREFSRC), `metric` RTA_PRIORITY, `mtu` and `advmss` go in RTA_METRICS.
        NetlinkExists (EEXIST) if the route is there already (without `replace`)."""
        _same_family(dst, gateway=gateway, src=src)
        verb = "replace" if replace else "add"
        what = f"{verb} route '{dst}'" + (f" via {gateway}" if gateway else "")
        what += f" dev {_describe(oif)}" if oif is not None else ""
        if scope is None:
            if route_type == k.RTN_LOCAL:
                scope = k.RT_SCOPE_HOST
            elif route_type == k.RTN_UNICAST and gateway is None:
                scope = k.RT_SCOPE_LINK
            else:
                scope = k.RT_SCOPE_UNIVERSE
        metrics = {"mtu": mtu, "advmss": advmss} if mtu is not None or advmss is not None else None
        attrs = {
            "dst": dst.ip if dst.length else None,
            "gateway": gateway,
            "oif": None if oif is None else self._index(oif, what),
            "priority": metric,
            "prefsrc": src,
            "table": table,
            "metrics": metrics,
        }
        body = k.RTMSG.pack(
            _family(dst.version),
            dst.length,
            0,
            0,
            table if table < 256 else k.RT_TABLE_UNSPEC,
            protocol,
            scope,
            route_type,
            k.RTNH_F_ONLINK if onlink else 0,
        ) + k.RTA.encode(attrs)
        self._request(k.RTM_NEWROUTE, _new_flags(replace), body, what, LINK_GONE)

    def delete_route(
        self,
        dst: Prefix,
        *,
        gateway: IP | None = None,
        oif: int | str | None = None,
        table: int = k.RT_TABLE_MAIN,
        metric: int | None = None,
        protocol: int = k.RTPROT_UNSPEC,
        scope: int = k.RT_SCOPE_NOWHERE,
        missing_ok: bool = False,
    ) -> None:
        """Delete the route to `dst` in `table`; `gateway`, `oif`, `metric`, `protocol` and
        `scope` narrow the match when given. NetlinkNotFound (ESRCH; ENOENT for a missing IPv6
        default route, which finds the table's null entry; ENODEV for a missing link) unless
        `missing_ok`."""
        _same_family(dst, gateway=gateway)
        what = f"delete route '{dst}'" + (f" via {gateway}" if gateway else "")
        what += f" dev {_describe(oif)}" if oif is not None else ""
        with ignore_not_found(missing_ok):
            attrs = {
                "dst": dst.ip if dst.length else None,
                "gateway": gateway,
                "oif": None if oif is None else self._index(oif, what),
                "priority": metric,
                "table": table,
            }
            body = k.RTMSG.pack(
                _family(dst.version),
                dst.length,
                0,
                0,
                table if table < 256 else k.RT_TABLE_UNSPEC,
                protocol,
                scope,
                k.RTN_UNSPEC,
                0,
            ) + k.RTA.encode(attrs)
            self._request(k.RTM_DELROUTE, 0, body, what, ROUTE_GONE)

    def routes(
        self,
        family: int = k.AF_UNSPEC,
        *,
        table: int | None = k.RT_TABLE_MAIN,
        protocol: int | None = None,
        oif: int | None = None,
        dst_len: int | None = None,
    ) -> list[Route]:
        """The IPv4 and/or IPv6 routes of one table (main by default; None for all); when
        given, only those of one routing `protocol` (RTPROT_*), out of link index `oif`, or
        with a `dst_len`-bit destination (0: default routes). The kernel filters table,
        protocol and oif itself; the prefix length is checked before a route is decoded."""
        attrs: dict[str, Any] = {"table": table} if table is not None and table > 0xFF else {}
        rtm_table = k.RT_TABLE_COMPAT if attrs else table or 0  # rtm_table is a u8
        body = k.RTMSG.pack(family, 0, 0, 0, rtm_table, protocol or 0, 0, 0, 0)
        if oif is not None:
            attrs["oif"] = oif
        body += k.RTA.encode(attrs)

        def parse(payload: memoryview) -> Route | None:
            header = k.RTMSG.unpack_from(payload)
            if (dst_len is not None and header[1] != dst_len) or (
                protocol is not None and header[5] != protocol
            ):
                return None
            return route_from_message(payload)

        strict = table is not None or protocol is not None or oif is not None
        nothing = (NO_SUCH_TABLE if table is not None else frozenset()) | (
            NO_SUCH_LINK if oif is not None else frozenset()
        )
        return [
            route
            for route in self._dump(
                k.RTM_GETROUTE, body, "list routes", parse, strict=strict, nothing=nothing
            )
            if (table is None or route.table == table)
            and family in (k.AF_UNSPEC, route.family)
            and (oif is None or route.oif == oif)
            and not route.flags & k.RTM_F_CLONED
        ]

    def route_to(self, ip: IP) -> Route | None:
        """The route the kernel takes to `ip` (`ip route get`), or None when it has none."""
        length = 32 if ip.version == 4 else 128
        body = k.RTMSG.pack(_family(ip.version), length, 0, 0, 0, 0, 0, 0, 0)
        body += k.RTA.encode({"dst": ip})
        try:
            found = self._request(
                k.RTM_GETROUTE, 0, body, f"get the route to {ip}", parse=route_from_message
            )
        except NetlinkError as err:
            if err.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise
        return found[0] if found else None

    # --- neighbours (ARP/NDP) ------------------------------------------------------------

    def add_neighbour(
        self,
        link: int | str,
        dst: IP,
        mac: str | None = None,
        *,
        state: int = k.NUD_PERMANENT,
        proxy: bool = False,
        replace: bool = False,
    ) -> None:
        """An ARP (IPv4) or NDP (IPv6) entry `dst` -> `mac` on a link, permanent by default;
        with `proxy`, a proxy entry (NTF_PROXY: answer for `dst` on this link; no mac).
        NetlinkExists (EEXIST) if there is one already (without `replace`)."""
        kind = "proxy neighbour" if proxy else "neighbour"
        what = f"{'replace' if replace else 'add'} {kind} '{dst}' on {_describe(link)}"
        index = self._index(link, what)
        body = k.NDMSG.pack(
            _family(dst.version), index, state, k.NTF_PROXY if proxy else 0, 0
        ) + k.NDA.encode({"dst": dst, "lladdr": mac})
        self._request(k.RTM_NEWNEIGH, _new_flags(replace), body, what, LINK_GONE)

    def delete_neighbour(
        self, link: int | str, dst: IP, *, proxy: bool = False, missing_ok: bool = False
    ) -> None:
        """Remove an ARP/NDP (or, with `proxy`, proxy) entry. NetlinkNotFound (ENOENT; ENODEV
        for a missing link) unless `missing_ok`."""
        kind = "proxy neighbour" if proxy else "neighbour"
        what = f"delete {kind} '{dst}' on {_describe(link)}"
        with ignore_not_found(missing_ok):
            index = self._index(link, what)
            body = k.NDMSG.pack(
                _family(dst.version), index, 0, k.NTF_PROXY if proxy else 0, 0
            ) + k.NDA.encode({"dst": dst})
            self._request(k.RTM_DELNEIGH, 0, body, what, NEIGHBOUR_GONE)

    def neighbours(
        self, link: int | str | None = None, family: int = k.AF_UNSPEC, *, proxy: bool = False
    ) -> list[Neighbour]:
        """ARP/NDP entries (or, with `proxy`, proxy entries) of one link or all."""
        what = "list neighbours" + (f" of {_describe(link)}" if link is not None else "")
        index = None if link is None else self._index(link, what)
        body = k.NDMSG.pack(family, 0, 0, k.NTF_PROXY if proxy else 0, 0)
        if index is not None:  # the kernel's filter (NDA_IFINDEX; strict or not)
            body += k.NDA.encode({"ifindex": index})
        return [
            neighbour
            for neighbour in self._dump(
                k.RTM_GETNEIGH, body, what, neighbour_from_message, strict=index is not None
            )
            if neighbour.family in (k.AF_INET, k.AF_INET6)
            and family in (k.AF_UNSPEC, neighbour.family)
            and (index is None or neighbour.index == index)
        ]

    # --- forwarding database (VXLAN remote VTEPs) ---------------------------------------

    def add_fdb_entry(
        self,
        link: int | str,
        mac: str,
        dst: IP | None = None,
        *,
        vni: int | None = None,
        port: int | None = None,
        permanent: bool = True,
        replace: bool = False,
        append: bool = False,
    ) -> None:
        """A forwarding entry in a device's own FDB (AF_BRIDGE, NTF_SELF): on a VXLAN device,
        frames for `mac` (the remote VTEP's MAC) go to `dst` (the remote node's IP). With
        `append`, another destination for the same MAC (00:00:00:00:00:00: flood to each);
        with `replace`, add or replace. NetlinkExists (EEXIST) if it is there already."""
        what = f"{'replace' if replace else 'add'} fdb entry '{mac}'"
        what += f" -> {dst}" if dst is not None else ""
        what += f" on {_describe(link)}"
        index = self._index(link, what)
        state = k.NUD_PERMANENT if permanent else k.NUD_REACHABLE
        body = k.NDMSG.pack(k.AF_BRIDGE, index, state, k.NTF_SELF, 0) + k.NDA.encode(
            {"lladdr": mac, "dst": dst, "vni": vni, "port": port}
        )
        self._request(k.RTM_NEWNEIGH, _new_flags(replace, append), body, what, LINK_GONE)

    def delete_fdb_entry(
        self, link: int | str, mac: str, dst: IP | None = None, *, missing_ok: bool = False
    ) -> None:
        """Remove a device FDB entry (only the one to `dst`, if given). NetlinkNotFound
        (ENOENT; ENODEV for a missing link) unless `missing_ok`."""
        what = f"delete fdb entry '{mac}'" + (f" -> {dst}" if dst is not None else "")
        what += f" on {_describe(link)}"
        with ignore_not_found(missing_ok):
            index = self._index(link, what)
            body = k.NDMSG.pack(k.AF_BRIDGE, index, 0, k.NTF_SELF, 0) + k.NDA.encode(
                {"lladdr": mac, "dst": dst}
            )
            self._request(k.RTM_DELNEIGH, 0, body, what, NEIGHBOUR_GONE)

    def fdb_entries(self, link: int | str | None = None) -> list[Neighbour]:
        """Forwarding entries (family AF_BRIDGE) of one device or all: bridges' and VXLAN
        devices' own."""
        what = "list fdb entries" + (f" of {_describe(link)}" if link is not None else "")
        index = None if link is None else self._index(link, what)
        body = k.NDMSG.pack(k.AF_BRIDGE, index or 0, 0, 0, 0)  # strict: the kernel's filter
        return [
            entry
            for entry in self._dump(
                k.RTM_GETNEIGH, body, what, neighbour_from_message, strict=index is not None
            )
            if index is None or entry.index == index
        ]

    # --- traffic control: qdiscs, filters, IFB devices -------------------------------------

    def create_ifb(
        self,
        name: str,
        *,
        mtu: int | None = None,
        txqlen: int | None = None,
        alias: str | None = None,
        up: bool = False,
    ) -> Link:
        """An IFB (intermediate functional block) device: packets redirected to it pass its
        root qdisc and come back where they were. `alias` (IFLA_IFALIAS, up to 255 bytes) is
        a free-text label, e.g. who owns the device; the kernel takes it only on a change, so
        it is a second request. Needs the ifb module (else EOPNOTSUPP)."""
        what = f"create ifb '{name}'"
        link = self._create_link(
            name, "ifb", None, what, mtu=mtu, mac=None, up=up, extra={"txqlen": txqlen}
        )
        if alias is not None:
            self.set_link(link.index, alias=alias)
            link = self._get_link(link.index, f"get the new ifb '{name}'")
        return link

    def qdiscs(self, link: int | str | None = None) -> list[Qdisc]:
        """The qdiscs of one link or of all (the kernel dumps every link's; we keep one's)."""
        what = "list qdiscs" + (f" of {_describe(link)}" if link is not None else "")
        index = None if link is None else self._index(link, what)
        body = k.TCMSG.pack(k.AF_UNSPEC, index or 0, 0, 0, 0)
        return [
            qdisc
            for qdisc in self._dump(k.RTM_GETQDISC, body, what, qdisc_from_message)
            if index is None or qdisc.index == index
        ]

    def add_tbf(
        self,
        link: int | str,
        *,
        rate: int,
        burst: int,
        limit: int,
        parent: int = k.TC_H_ROOT,
        replace: bool = False,
    ) -> None:
        """A token bucket filter (`tc qdisc add dev LINK root tbf`) as the link's root qdisc:
        `rate` in bytes per second, `burst` (the bucket) and `limit` (the queue) in bytes.
        The rate is link-layer aware (Ethernet), so the kernel needs no rate table; rates of
        2**32 bytes/s and more go in TCA_TBF_RATE64. The kernel derives the buffer time from
        `burst` (TCA_TBF_BURST); the same time, in ticks, goes in the parameters, as `tc`
        would send. With `replace`, whatever root qdisc is there is replaced; without, an
        existing non-default one raises NetlinkExists (EEXIST)."""
        what = f"{'replace' if replace else 'add'} tbf qdisc on {_describe(link)}"
        ratespec = k.TC_RATESPEC.pack(0, k.TC_LINKLAYER_ETHERNET, 0, -1, 0, min(rate, 0xFFFFFFFF))
        ticks = tbf_buffer_ticks(rate, burst)
        parms = k.TC_TBF_QOPT.pack(ratespec, bytes(k.TC_RATESPEC.size), limit, ticks, 0)
        options = k.TCA_TBF.encode(
            {"parms": parms, "rate64": rate if rate > 0xFFFFFFFF else None, "burst": burst}
        )
        self._tc_request(
            k.RTM_NEWQDISC,
            link,
            what,
            flags=_new_flags(replace),
            parent=parent,
            kind="tbf",
            options=options,
        )

    def add_ingress_qdisc(self, link: int | str, *, replace: bool = False) -> None:
        """The ingress qdisc ("ffff:"), where filters see the packets a link receives.
        NetlinkExists (EEXIST) if there is one (without `replace`)."""
        what = f"add ingress qdisc on {_describe(link)}"
        self._tc_request(
            k.RTM_NEWQDISC,
            link,
            what,
            flags=_new_flags(replace),
            handle=k.TC_H_INGRESS_HANDLE,
            parent=k.TC_H_INGRESS,
            kind="ingress",
        )

    def delete_qdisc(
        self, link: int | str, parent: int = k.TC_H_ROOT, *, missing_ok: bool = False
    ) -> None:
        """Delete the root qdisc (the link gets its default one back) or, with parent
        TC_H_INGRESS, the ingress qdisc and its filters. NetlinkNotFound (ENOENT: no such
        qdisc, or only the default root; ENODEV: no such link) unless `missing_ok`."""
        where = "ingress" if parent == k.TC_H_INGRESS else "root"
        what = f"delete {where} qdisc of {_describe(link)}"
        with ignore_not_found(missing_ok):
            self._tc_request(k.RTM_DELQDISC, link, what, parent=parent, gone=QDISC_GONE)

    def filters(self, link: int | str, parent: int = k.TC_H_INGRESS_HANDLE) -> list[Filter]:
        """The filters attached to one qdisc of a link (the ingress qdisc by default)."""
        what = f"list filters of {_describe(link)}"
        index = self._index(link, what)
        body = k.TCMSG.pack(k.AF_UNSPEC, index, 0, parent, 0)
        return self._dump(k.RTM_GETTFILTER, body, what, filter_from_message)

    def add_redirect_filter(
        self,
        link: int | str,
        target: int | str,
        *,
        parent: int = k.TC_H_INGRESS_HANDLE,
        prio: int = 1,
    ) -> None:
        """`tc filter add dev LINK parent ffff: protocol all prio PRIO u32 match u32 0 0
        action mirred egress redirect dev TARGET`: every packet the qdisc `parent` sees is
        sent out of `target` (an IFB device, typically). A u32 selector with one all-zero
        key matches everything (cls_matchall is not in every kernel; u32 is)."""
        what = f"add redirect filter on {_describe(link)} to {_describe(target)}"
        target_index = self._index(target, what)
        sel = k.TC_U32_SEL.pack(k.TC_U32_TERMINAL, 0, 1, 0, 0, 0, 0, 0) + k.TC_U32_KEY.pack(
            0, 0, 0, 0
        )
        mirred = k.TC_MIRRED.pack(0, 0, k.TC_ACT_STOLEN, 0, 0, k.TCA_EGRESS_REDIR, target_index)
        action = k.TCA_ACT.encode(
            {"kind": "mirred", "options": k.TCA_MIRRED.encode({"parms": mirred})}
        )
        actions = pack_attr(1 | NLA_F_NESTED, action)  # the first (and only) action
        options = k.TCA_U32.encode({"sel": sel, "act": actions})
        info = (prio << 16) | _ETH_P_ALL_BE
        self._tc_request(
            k.RTM_NEWTFILTER,
            link,
            what,
            flags=k.NLM_F_CREATE | k.NLM_F_EXCL,
            parent=parent,
            info=info,
            kind="u32",
            options=options,
        )

    def _tc_request(
        self,
        msg_type: int,
        link: int | str,
        what: str,
        *,
        parent: int,
        flags: int = 0,
        handle: int = 0,
        info: int = 0,
        kind: str | None = None,
        options: bytes | None = None,
        gone: frozenset[int] = LINK_GONE,
    ) -> None:
        """One qdisc or filter request (a struct tcmsg, TCA_KIND, TCA_OPTIONS) on `link`:
        `parent` and `handle` place it in the link's tree, `info` is a filter's priority and
        protocol; left out, `kind` and `options` are not sent."""
        index = self._index(link, what)
        body = k.TCMSG.pack(k.AF_UNSPEC, index, handle, parent, info) + k.TCA.encode(
            {"kind": kind, "options": options}
        )
        self._request(msg_type, flags, body, what, gone)

    # --- the exchange ------------------------------------------------------------------

    def _index(self, link: int | str, what: str) -> int:
        return link if isinstance(link, int) else self._get_link(link, what).index

    def _get_link(self, link: int | str, what: str) -> Link:
        index, attrs = _select(link)
        attrs["ext_mask"] = k.RTEXT_FILTER_SKIP_STATS
        body = k.IFINFOMSG.pack(k.AF_UNSPEC, 0, index, 0, 0) + k.IFLA.encode(attrs)
        found = self._request(k.RTM_GETLINK, 0, body, what, LINK_GONE, link_from_message)
        if not found:  # the kernel answers a get with the link or ENODEV; never neither
            raise NetlinkNotFound(errno.ENODEV, what + self._where)
        return found[0]

    def _create_link(
        self,
        name: str,
        kind: str,
        data: dict[str, Any] | None,
        what: str,
        *,
        mtu: int | None,
        mac: str | None,
        up: bool,
        extra: dict[str, Any] | None = None,
    ) -> Link:
        flags = k.IFF_UP if up else 0
        attrs = {
            "ifname": name,
            "mtu": mtu,
            "address": mac,
            "linkinfo": {"kind": kind, "data": data},
            **(extra or {}),
        }
        body = k.IFINFOMSG.pack(k.AF_UNSPEC, 0, 0, flags, flags) + k.IFLA.encode(attrs)
        self._request(k.RTM_NEWLINK, k.NLM_F_CREATE | k.NLM_F_EXCL, body, what)
        return self._get_link(name, f"get the new {kind} '{name}'")
