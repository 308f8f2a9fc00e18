"""A small rtnetlink client of our own, for the per-call path of the plugins.

pyroute2 costs 150-280 ms of imports per call (asyncio included) and forks a helper per
namespace. Using Rtnl costs ≈ 2.3 ms of imports in a frozen plugin (≈ 1.7 ms unfrozen; about
0.1 ms of that is per module of the package) and loads only `_socket`, `struct`, `os`, `errno`
and, the first time a namespace is entered on Python 3.11, `_ctypes` (≈ 0.7 ms frozen; see
pycni.netlink.namespace for why and what the alternatives cost). An ADD's netlink work (veth
into the pod, enslave, address, link up, default route) then takes ≈ 1 ms. The package imports
its names the first time one is used, so a call that needs only `nftables` pays for nftables.

    with Rtnl() as host, Rtnl(netns=call.netns) as pod:
        veth = host.create_veth("veth1a2b", "eth0", peer_netns=call.netns, mtu=1450)
        host.set_link(veth.index, master="cni0", up=True)
        eth0 = pod.get_link("eth0")
        pod.add_address(eth0.index, Prefix.parse("10.22.0.5/24"), nodad=True)
        pod.set_link(eth0.index, up=True)
        pod.add_route(Prefix.parse("0.0.0.0/0"), gateway=IP.parse("10.22.0.1"))

The layout:
- `socket`     NetlinkSocket: the exchange any netlink protocol needs (send, match the
               answers by sequence number and port id, ack or the kernel's errno, dumps read
               to their end and run again when interrupted);
- `rtnl`       Rtnl: the rtnetlink socket and every request (links, addresses, routes,
               neighbours, FDB, qdiscs and filters: a tbf, the ingress qdisc, a u32 redirect
               to an IFB);
- `conntrack`  Conntrack (ctnetlink): list connection-tracking entries, delete them;
- `nftables`   the one module that speaks nftables: run a script atomically (one retry helper
               for races), build scripts, read chains and sets over nfnetlink, typed elements;
- `records`    Link (with VxlanInfo, IpipInfo, BridgeInfo, BridgePort), Address, Route,
               Neighbour, Qdisc (with TbfInfo), Filter;
- `errors`     NetlinkError (exact errno), NetlinkNotFound, NetlinkExists, NamespaceNotFound;
- `namespace`  sockets inside another namespace without moving the process (setns);
- `kernel`     every number, from the uapi headers, as tables;
- `wire`       netlink framing and attribute codecs.

Errnos the kernel uses for "not there", which raise NetlinkNotFound (a pycni.cni.errors.NotFound):
| request                                          | errno                              |
|--------------------------------------------------|------------------------------------|
| anything naming a link that does not exist       | ENODEV                             |
| delete_address of an address the link lacks     | EADDRNOTAVAIL                      |
| delete_route of a route not in the table         | ESRCH (ENOENT for IPv6 ::/0)       |
| delete_neighbour / delete_fdb_entry, no entry    | ENOENT                             |
| delete_qdisc: none there, or only the default    | ENOENT                             |
| a namespace path that does not exist (or is not  | NamespaceNotFound (code 3, unknown |
|   a network namespace any more)                  |   container)                       |
Creating something that exists raises NetlinkExists (EEXIST). Every other refusal is a
NetlinkError with the kernel's errno and, when it gives one, its reason: e.g. EOPNOTSUPP
"Unknown device type" for a link kind the kernel lacks (IPIP without CONFIG_NET_IPIP),
EOPNOTSUPP for IFLA_BR_VLAN_FILTERING without CONFIG_BRIDGE_VLAN_FILTERING, ERANGE "Attribute
failed policy validation" for a name longer than 15 bytes, EINVAL for a bad MTU.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.netlink.errors import (
        NamespaceError,
        NamespaceNotFound,
        NetlinkError,
        NetlinkExists,
        NetlinkNotFound,
    )
    from pycni.netlink.kernel import (
        AF_BRIDGE,
        AF_INET,
        AF_INET6,
        AF_UNSPEC,
        IFA_F_NODAD,
        IFA_F_NOPREFIXROUTE,
        NUD_PERMANENT,
        NUD_REACHABLE,
        RT_SCOPE_HOST,
        RT_SCOPE_LINK,
        RT_SCOPE_UNIVERSE,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RTPROT_STATIC,
        TC_H_INGRESS,
        TC_H_INGRESS_HANDLE,
        TC_H_ROOT,
    )
    from pycni.netlink.records import (
        Address,
        BridgeInfo,
        BridgePort,
        Filter,
        IpipInfo,
        Link,
        Neighbour,
        Qdisc,
        Route,
        TbfInfo,
        VxlanInfo,
    )
    from pycni.netlink.rtnl import Rtnl, tbf_buffer_ticks

# The names below are imported the first time one is asked for (PEP 562), from the first of
# these modules that has it (each needs the ones before it, so nothing more is loaded than the
# name needs): `import pycni.netlink.nftables` or `.conntrack` loads what that module needs,
# not rtnetlink's tables.
_MODULES = ("errors", "kernel", "records", "rtnl")


def __getattr__(name: str) -> object:
    if name in __all__:
        for module in _MODULES:
            value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name, __all__)
            if value is not __all__:
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AF_BRIDGE",
    "AF_INET",
    "AF_INET6",
    "AF_UNSPEC",
    "IFA_F_NODAD",
    "IFA_F_NOPREFIXROUTE",
    "NUD_PERMANENT",
    "NUD_REACHABLE",
    "RTPROT_BOOT",
    "RTPROT_STATIC",
    "RT_SCOPE_HOST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "RT_TABLE_MAIN",
    "TC_H_INGRESS",
    "TC_H_INGRESS_HANDLE",
    "TC_H_ROOT",
    "Address",
    "BridgeInfo",
    "BridgePort",
    "Filter",
    "IpipInfo",
    "Link",
    "NamespaceError",
    "NamespaceNotFound",
    "Neighbour",
    "NetlinkError",
    "NetlinkExists",
    "NetlinkNotFound",
    "Qdisc",
    "Route",
    "Rtnl",
    "TbfInfo",
    "VxlanInfo",
    "tbf_buffer_ticks",
]
