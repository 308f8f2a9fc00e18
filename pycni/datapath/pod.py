"""The pod's end of an attachment, the same for every datapath: a veth pair whose pod end is
created inside the pod's network namespace as CNI_IFNAME.

The steps the plugins' verbs are told in: the pair (`create_veth`, with the kernel's answers
translated into the spec's codes), the pod's side (`pod_netns`, `configure`), the ADD's result
(`result`), the one DEL of an attachment (`delete_attachment`), and CHECK's drift checks
(`find_host_veth`, `check_interface`, `check_routes`, `drift`). What differs between datapaths
— the bridge port, the routed host end — is in pycni.datapath.bridge and the plugins.

The host end's name is derived from the attachment (`host_veth_name`), so DEL finds it even
when the pod's namespace is gone.
"""

from __future__ import annotations

from pycni.cni import delegate
from pycni.cni.errors import CniError, Code, NotFound
from pycni.cni.result import Interface, IPConfig, Result
from pycni.netlink import NamespaceNotFound, NetlinkExists, NetlinkNotFound, Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from pycni.cni.ip import IP, Prefix
    from pycni.cni.result import DNS, Route
    from pycni.cni.skel import Call
    from pycni.netlink import Link


def host_veth_name(call: Call) -> str:
    """A name derived from the attachment, so DEL finds the host end even when the pod's
    namespace is gone: "veth" + 11 hex digits of sha256(containerID/ifname)."""
    import _sha256

    digest: str = _sha256.sha256(f"{call.container_id}/{call.ifname}".encode()).hexdigest()
    return "veth" + digest[:11]


def create_veth(host: Rtnl, call: Call, mtu: int, *, mac: str | None = None) -> Link:
    """The pair: the pod end created inside the pod's namespace as CNI_IFNAME, the host end
    (`host_veth_name`, with `mac` if given) here; both down. A namespace that vanished is
    code 3; an interface of that name already there is code 10 (a duplicate attachment)."""
    name = host_veth_name(call)
    try:
        return host.create_veth(name, call.ifname, peer_netns=call.netns, mtu=mtu, mac=mac)
    except NamespaceNotFound:
        raise CniError(
            Code.UNKNOWN_CONTAINER, f"container network namespace '{call.netns}' is gone"
        ) from None
    except NetlinkExists:
        raise CniError(
            Code.DUPLICATE_ATTACHMENT,
            f"failed to create interface '{call.ifname}' in {call.netns}: an interface of"
            f" that name (or host veth '{name}') already exists",
        ) from None


def configure(call: Call, ips: list[IPConfig], routes: list[Route]) -> Link:
    """Inside the pod: the addresses (no IPv6 DAD wait), the link up, the routes in order
    (an on-link gateway's own route first, then the routes through it)."""
    with pod_netns(call) as pod:
        link = pod.get_link(call.ifname)
        for ip in ips:
            pod.add_address(link.index, ip.address, nodad=True)
        pod.set_link(link.index, up=True)
        for route in routes:
            pod.add_route(route.dst, gateway=route.gw, oif=link.index, mtu=route.mtu)
        return pod.get_link(link.index)


def order_ips(ips: list[IPConfig], prefer_ipv6: bool) -> list[IPConfig]:
    """IPv4 first (kubelet takes the first IP as the pod IP), unless preferIPv6."""
    first = 6 if prefer_ipv6 else 4
    return sorted(ips, key=lambda ip: ip.address.version != first)


def result(
    call: Call,
    host_links: list[Link],
    pod_link: Link,
    ips: list[IPConfig],
    routes: list[Route],
    dns: DNS | None,
) -> Result:
    """The ADD's result: prevResult's, then the host's links of the attachment, the pod's
    interface, and the pod's addresses (on that interface) and routes."""
    prev = call.prev_result or Result()
    interfaces = [
        *prev.interfaces,
        *(Interface(name=link.name, mac=link.mac or "") for link in host_links),
        Interface(name=pod_link.name, mac=pod_link.mac or "", sandbox=call.netns, mtu=pod_link.mtu),
    ]
    pod_index = len(interfaces) - 1
    return Result(
        interfaces=interfaces,
        ips=[*prev.ips, *(IPConfig(ip.address, ip.gateway, pod_index) for ip in ips)],
        routes=[*prev.routes, *routes],
        dns=dns,
    )


# --- DEL ---------------------------------------------------------------------------------------


def delete_attachment(call: Call) -> None:
    """The DEL of an attachment: the lease and the veth (what the kernel hung on the host end
    — bridge port, routes — goes with it). Best effort and idempotent: every step runs,
    whatever is already gone."""
    failures: list[str] = []
    try:
        delegate.ipam(call, "DEL")
    except CniError as err:
        failures.append(f"IPAM: {err}")
    try:
        remove_veth(call)
    except CniError as err:
        failures.append(str(err))
    if failures:
        raise CniError(Code.KERNEL, f"failed to delete attachment: {'; '.join(failures)}")


def remove_veth(call: Call) -> None:
    """Delete the pair from the pod's side if its namespace is there, else the host end."""
    try:
        if call.netns:
            with pod_netns(call) as pod:
                pod.delete_link(call.ifname, missing_ok=True)
                return
    except NotFound:
        pass  # the namespace is gone: so is the pod end, and with it the pair, usually
    try:
        with Rtnl() as host:
            host.delete_link(host_veth_name(call), missing_ok=True)
    except NetlinkNotFound:
        pass


class pod_netns:  # noqa: N801 - reads as a function at the call site
    """An Rtnl inside the pod's namespace; a namespace that vanished is code 3 (for ADD/CHECK)
    or NotFound (which DEL treats as done)."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self._rtnl: Rtnl | None = None

    def __enter__(self) -> Rtnl:
        try:
            self._rtnl = Rtnl(netns=self._call.netns)
        except NamespaceNotFound:
            if self._call.command == "DEL":
                raise NotFound(self._call.netns) from None
            raise CniError(
                Code.UNKNOWN_CONTAINER,
                f"container network namespace '{self._call.netns}' is gone",
                "CNI_NETNS",
            ) from None
        return self._rtnl

    def __exit__(self, *exc: object) -> None:
        if self._rtnl is not None:
            self._rtnl.close()


# --- CHECK -------------------------------------------------------------------------------------


def drift(what: str) -> NoReturn:
    """CHECK's answer when the attachment is not what the ADD made: code 110."""
    raise CniError(Code.CHECK_FAILED, f"check failed: {what}")


def find_host_veth(host: Rtnl, call: Call) -> Link:
    """The host end of the pair, or drift."""
    name = host_veth_name(call)
    veth = host.find_link(name)
    if veth is None:
        drift(f"host veth '{name}' is missing")
    return veth


def check_interface(
    pod: Rtnl, call: Call, mtu: int, ips: list[IPConfig], *, mac: str | None = None
) -> Link:
    """The pod's interface (seen through `pod`, an Rtnl in its namespace) is there, with the
    ADD's MAC (when `mac` is given) and `mtu`, holding each of `ips`; else drift."""
    link = pod.find_link(call.ifname)
    if link is None:
        drift(f"interface '{call.ifname}' is missing in {call.netns}")
    if mac and (link.mac or "").lower() != mac.lower():
        drift(f"interface '{call.ifname}' has MAC {link.mac}, the ADD said {mac}")
    if link.mtu != mtu:
        drift(f"interface '{call.ifname}' has MTU {link.mtu}, expected {mtu}")
    have = {a.prefix for a in pod.addresses(link.index)}
    for ip in ips:
        if ip.address not in have:
            drift(f"address {ip.address} is missing from '{call.ifname}'")
    return link


def check_routes(call: Call, have: set[tuple[Prefix, IP | None]], routes: list[Route]) -> None:
    """Each of `routes` (the ADD's) is among `have`, the pod's routes as (destination
    network, gateway); else drift."""
    for route in routes:
        if (route.dst.masked(), route.gw) not in have:
            via = f" via {route.gw}" if route.gw else ""
            drift(f"route {route.dst}{via} is missing in {call.netns}")
