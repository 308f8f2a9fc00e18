"""`Conntrack`: the kernel's connection-tracking table over ctnetlink (NETLINK_NETFILTER), as
much of it as pycni-portmap needs: the entries of one family, and deleting an entry by its
original tuple.

Why portmap needs it: NAT is decided once per connection, when its first packet creates the
conntrack entry. A UDP client that kept sending to a node's port before that port became a
hostPort (a pod being created, or re-created after a crash) owns an entry without the DNAT; its
datagrams follow that entry, not the new rule, for as long as they keep coming (the UDP
timeout is refreshed by every packet) and never reach the pod. Deleting the entries of that
destination port makes the next datagram a new connection, which the DNAT rule then catches.
"""

from __future__ import annotations

import errno

from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.netlink import kernel as k
from pycni.netlink.socket import NetlinkSocket, ignore_not_found

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Any

ENTRY_GONE = frozenset({errno.ENOENT})  # delete: no such entry (it expired, or was deleted)
_IP_KEYS = {k.AF_INET: ("v4_src", "v4_dst"), k.AF_INET6: ("v6_src", "v6_dst")}


class ConntrackEntry(Record):
    """One tracked connection, by its original direction (as its first packet was sent)."""

    __slots__ = ("dport", "dst", "family", "proto", "sport", "src", "zone")
    family: int  # AF_INET or AF_INET6
    proto: int  # IPPROTO_*: 6 TCP, 17 UDP, 132 SCTP, ...
    src: IP
    dst: IP
    sport: int | None  # ports: None for protocols without (ICMP)
    dport: int | None
    zone: int | None  # CTA_ZONE, when not the default zone

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    def __str__(self) -> str:
        where = f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"
        return f"proto {self.proto} {where}" + (f" zone {self.zone}" if self.zone else "")


def entry_from_message(payload: memoryview) -> ConntrackEntry | None:
    family = k.NFGENMSG.unpack_from(payload)[0]
    if family not in _IP_KEYS:
        return None
    attrs = k.CTA.decode(payload[k.NFGENMSG.size :])
    tuple_orig = attrs.get("tuple_orig") or {}
    addresses, proto = tuple_orig.get("ip") or {}, tuple_orig.get("proto") or {}
    src_key, dst_key = _IP_KEYS[family]
    if src_key not in addresses or dst_key not in addresses or "num" not in proto:
        return None
    return ConntrackEntry(
        family=family,
        proto=proto["num"],
        src=addresses[src_key],
        dst=addresses[dst_key],
        sport=proto.get("src_port"),
        dport=proto.get("dst_port"),
        zone=attrs.get("zone"),
    )


class Conntrack(NetlinkSocket):
    """A ctnetlink socket in the current network namespace (or `netns`; see NetlinkSocket)."""

    PROTOCOL = k.NETLINK_NETFILTER

    def entries(self, family: int = k.AF_UNSPEC) -> list[ConntrackEntry]:
        """Every entry of one family (AF_INET, AF_INET6) or of both in the table. (The kernel
        walks its whole hash table, shared by all namespaces, for every dump: ~2 ms here
        even when this namespace has no entries, so ask once for both families.)"""
        body = k.NFGENMSG.pack(family, k.NFNETLINK_V0, 0)
        what = f"list the conntrack table (family {family})"
        return self._dump(_message_type(k.IPCTNL_MSG_CT_GET), body, what, entry_from_message)

    def delete(self, entry: ConntrackEntry, *, missing_ok: bool = True) -> None:
        """Delete the entry with this original tuple (and zone); gone already is fine unless
        `missing_ok` is False (NetlinkNotFound, ENOENT)."""
        src_key, dst_key = _IP_KEYS[entry.family]
        proto: dict[str, Any] = {"num": entry.proto}
        if entry.sport is not None and entry.dport is not None:
            proto |= {"src_port": entry.sport, "dst_port": entry.dport}
        attrs = {
            "tuple_orig": {"ip": {src_key: entry.src, dst_key: entry.dst}, "proto": proto},
            "zone": entry.zone,
        }
        body = k.NFGENMSG.pack(entry.family, k.NFNETLINK_V0, 0) + k.CTA.encode(attrs)
        with ignore_not_found(missing_ok):
            self._request(
                _message_type(k.IPCTNL_MSG_CT_DELETE), 0, body, f"delete {entry}", ENTRY_GONE
            )

    def delete_to_ports(
        self, proto: int, ports: Collection[int], families: Collection[int] = tuple(_IP_KEYS)
    ) -> list[ConntrackEntry]:
        """Delete every entry of `proto` whose original destination port is in `ports`, of
        these families (AF_INET, AF_INET6); the entries deleted (or found gone meanwhile)."""
        (only,) = families if len(families) == 1 else (k.AF_UNSPEC,)
        found = [
            e
            for e in self.entries(only)
            if e.family in families and e.proto == proto and e.dport in ports
        ]
        for entry in found:
            self.delete(entry)
        return found


def _message_type(message: int) -> int:
    return k.NFNL_SUBSYS_CTNETLINK << 8 | message
