"""pycni-bandwidth: per-pod traffic shaping, chained after the plugin that attaches the pod.

The `bandwidth` capability (CONVENTIONS.md; kubelet fills it from the pod's
kubernetes.io/ingress-bandwidth and egress-bandwidth annotations) gives a rate in bits per
second and a burst in bits for each direction, as seen from the pod:
- ingress, traffic towards the pod, leaves the node through the host end of the pod's veth:
  a token bucket filter (tbf) is that veth's root qdisc;
- egress, traffic from the pod, arrives on the host veth, where no qdisc can hold packets
  back: its ingress qdisc redirects every packet (u32 match-all, mirred egress redirect) to an
  IFB device whose root qdisc is a tbf, and the IFB hands the packets back to the stack.
Each tbf queues at most 25 ms of traffic at its rate beyond the burst (`limit`, the
`latency 25ms` of `tc`), as the reference plugin does.

The host veth is the peer of CNI_IFNAME in the pod, and must be a sandbox-less interface of
prevResult. The IFB is named "pbw" + 12 hex digits of sha256(containerID/ifname): DEL finds it
with neither the pod's namespace nor prevResult, every interface of a pod gets its own, 48 bits
make a clash on one node unlikely (about n²/2**49), and the prefix differs from the reference
plugin's "bwp", so both can run on one node. Its alias, "pycni-bandwidth <network>
<containerID> <ifname>", lets GC tell which network and attachment an IFB belongs to.
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.record import Record
from pycni.cni.result import Interface, Result
from pycni.cni.rollback import Rollback
from pycni.netlink import (
    TC_H_INGRESS,
    TC_H_ROOT,
    NamespaceNotFound,
    NetlinkError,
    NetlinkNotFound,
    Rtnl,
    tbf_buffer_ticks,
)
from pycni.validators import bandwidth as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Attachment, Call
    from pycni.netlink import Link, Qdisc

NAME = "pycni-bandwidth"
IFB_PREFIX = "pbw"
ALIAS_PREFIX = "pycni-bandwidth "
MAX_ALIAS = 255  # IFLA_IFALIAS: IFALIASZ (256) bytes, its NUL included
LATENCY_NS = 25_000_000  # how long a packet may wait in a tbf's queue at its rate
MAX_BURST_BYTES = 0xFFFFFFFF  # TCA_TBF_BURST is a u32
KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
DEFAULT_TXQLEN = 1000


class Shaping(Record):
    """One direction's limit: `rate` bits per second, `burst` bits."""

    __slots__ = ("burst", "path", "rate")
    rate: int
    burst: int
    path: str  # where the config set it ("$.runtimeConfig.bandwidth.ingress"), for messages

    def __init__(self, rate: int, burst: int, path: str) -> None:
        self._init(rate=rate, burst=burst, path=path)

    @property
    def rate_bytes(self) -> int:
        return self.rate // 8

    @property
    def burst_bytes(self) -> int:
        return self.burst // 8

    @property
    def limit_bytes(self) -> int:
        return min(self.burst_bytes + self.rate_bytes * LATENCY_NS // 1_000_000_000, 0xFFFFFFFF)

    def describe(self) -> str:
        return f"rate {self.rate} bit/s, burst {self.burst} bits"


class BandwidthConf(Record):
    __slots__ = ("egress", "ingress")
    ingress: Shaping | None  # towards the pod
    egress: Shaping | None  # from the pod

    def __init__(self, ingress: Shaping | None, egress: Shaping | None) -> None:
        self._init(ingress=ingress, egress=egress)


def parse_config(call: Call) -> BandwidthConf:
    """The plugin config's own keys if it has any (as the reference plugin), else the
    runtime's `bandwidth` capability."""
    schema.validate(call.config)
    source: dict[str, object] = call.config
    path = "$"
    if not any(key in source for key in KEYS):
        runtime = call.config.get("runtimeConfig")
        bandwidth = runtime.get("bandwidth") if isinstance(runtime, dict) else None
        if isinstance(bandwidth, dict):
            source, path = bandwidth, "$.runtimeConfig.bandwidth"
    return BandwidthConf(
        ingress=_shaping(source, path, "ingress"), egress=_shaping(source, path, "egress")
    )


def _integer(source: dict[str, object], key: str) -> int:
    """A limit the schema has checked: an integer (JSON may spell it 1e6), or absent."""
    value = source.get(key)
    return int(value) if isinstance(value, (int, float)) else 0


def _shaping(source: dict[str, object], path: str, direction: str) -> Shaping | None:
    rate_key, burst_key = f"{direction}Rate", f"{direction}Burst"
    rate, burst = _integer(source, rate_key), _integer(source, burst_key)
    if rate == 0 and burst == 0:
        return None
    if burst == 0:
        raise ConfigError(f"{path}.{burst_key}", f"is required with {rate_key} (bits, > 0)")
    if rate == 0:
        raise ConfigError(f"{path}.{rate_key}", f"is required with {burst_key} (bit/s, > 0)")
    if rate < 8:
        raise ConfigError(f"{path}.{rate_key}", f"{rate} bit/s is less than a byte per second")
    if burst // 8 > MAX_BURST_BYTES:
        raise ConfigError(
            f"{path}.{burst_key}",
            f"{burst} bits is more than the kernel's tbf holds (2**32 - 1 bytes, "
            f"{MAX_BURST_BYTES * 8} bits)",
        )
    try:
        tbf_buffer_ticks(rate // 8, max(burst // 8, 1))
    except ValueError:
        seconds = burst // rate
        raise ConfigError(
            f"{path}.{burst_key}",
            f"{burst} bits at {rate_key} {rate} bit/s is {seconds} s of traffic; the kernel's "
            f"tbf counts at most {(0xFFFFFFFF << 6) // 10**9} s: lower the burst or raise the rate",
        ) from None
    return Shaping(rate, burst, f"{path}.{direction}")


# --- the verbs -------------------------------------------------------------------------------


def cmd_add(call: Call, conf: BandwidthConf) -> Result:
    prev = _prev_result(call)
    if conf.ingress is None and conf.egress is None:
        return prev
    with Rtnl() as host, Rollback() as undo:  # undo needs the socket open
        host_veth = find_host_veth(host, call, prev)
        for shaping in (conf.ingress, conf.egress):
            _check_burst_fits_a_packet(shaping, host_veth)
        if conf.ingress is not None:
            host.add_tbf(host_veth.index, replace=True, **_tbf(conf.ingress))
            undo.push(lambda: host.delete_qdisc(host_veth.index, missing_ok=True))
        interfaces = list(prev.interfaces)
        if conf.egress is not None:
            ifb = ensure_ifb(host, call, host_veth)
            undo.push(lambda: host.delete_link(ifb.index, missing_ok=True))
            host.add_tbf(ifb.index, replace=True, **_tbf(conf.egress))
            undo.push(lambda: host.delete_qdisc(host_veth.index, TC_H_INGRESS, missing_ok=True))
            redirect_to_ifb(host, host_veth, ifb)
            interfaces.append(Interface(ifb.name, mac=ifb.mac or ""))
        undo.commit()
    return Result(interfaces, prev.ips, prev.routes, prev.dns)


def cmd_del(call: Call, conf: BandwidthConf) -> None:
    """Idempotent: removes the IFB (whatever the config says now) and our qdiscs on the host
    veth if it is still there; what is already gone is success."""
    failures: list[str] = []
    with Rtnl() as host:
        try:
            host.delete_link(ifb_name(call), missing_ok=True)
        except NetlinkError as err:
            failures.append(str(err))
        prev = call.prev_result
        for iface in prev.interfaces if prev is not None else []:
            if iface.sandbox:
                continue
            try:
                _remove_qdiscs(host, iface.name)
            except NetlinkError as err:
                failures.append(str(err))
    if failures:
        raise CniError(Code.KERNEL, f"failed to delete shaping: {'; '.join(failures)}")


def cmd_check(call: Call, conf: BandwidthConf) -> None:
    prev = _prev_result(call)
    with Rtnl() as host:
        try:
            host_veth = find_host_veth(host, call, prev)
        except CniError as err:
            if conf.ingress is None and conf.egress is None and err.code == Code.INVALID_CONFIG:
                return  # nothing to shape, and no veth it could be on (as ADD passes through)
            raise
        _check_tbf(host, host_veth, conf.ingress, f"host veth '{host_veth.name}'", "ingress")
        name = ifb_name(call)
        ifb = host.find_link(name)
        if conf.egress is None:
            if ifb is not None:
                _drift(f"ifb '{name}' exists, the config shapes no egress")
            if _ingress_qdisc(host, host_veth) is not None:
                _drift(f"host veth '{host_veth.name}' has an ingress qdisc, no egress is shaped")
            return
        if ifb is None or ifb.kind != "ifb":
            _drift(f"ifb '{name}' for egress shaping is missing")
        assert ifb is not None
        if not ifb.up:
            _drift(f"ifb '{name}' is down")
        _check_tbf(host, ifb, conf.egress, f"ifb '{name}'", "egress")
        if _ingress_qdisc(host, host_veth) is None:
            _drift(f"host veth '{host_veth.name}' has no ingress qdisc to redirect egress")
        redirects = [
            f for f in host.filters(host_veth.index) if f.match_all and f.redirect == ifb.index
        ]
        if not redirects:
            _drift(f"host veth '{host_veth.name}' has no filter redirecting to ifb '{name}'")


def cmd_status(call: Call, conf: BandwidthConf) -> None:
    """Ready whenever the node can take an ADD: nothing of ours needs to exist beforehand."""


def cmd_gc(call: Call, conf: BandwidthConf) -> None:
    """Delete this network's IFBs (known by their alias) of attachments not in the list
    (known by the IFB's name: it is made from the attachment)."""
    valid = {ifb_name(attachment) for attachment in call.valid_attachments or []}
    failures: list[str] = []
    with Rtnl() as host:
        for link in host.links():
            if not _of_network(link, call.name) or link.name in valid:
                continue
            try:
                host.delete_link(link.index, missing_ok=True)
            except NetlinkError as err:
                failures.append(str(err))
    if failures:
        raise CniError(Code.KERNEL, f"failed to collect stale ifb devices: {'; '.join(failures)}")


# --- steps ---------------------------------------------------------------------------------


def ifb_name(attachment: Call | Attachment) -> str:
    """ "pbw" + 12 hex digits of sha256(containerID/ifname): 15 characters, IFNAMSIZ - 1."""
    return IFB_PREFIX + _sha256_hex(f"{attachment.container_id}/{attachment.ifname}")[:12]


def ifb_alias(call: Call) -> str:
    """Whose IFB it is: "pycni-bandwidth <network> <containerID> <ifname>" for GC and for a
    person reading `ip link`, or only the network when that does not fit the kernel's 255
    bytes (GC needs no more: the attachment is in the IFB's name); a network name too long
    for it is given as sha256:<digest>."""
    full = f"{ALIAS_PREFIX}{call.name} {call.container_id} {call.ifname}"
    return full if len(full.encode()) <= MAX_ALIAS else ALIAS_PREFIX + _network_token(call.name)


def _network_token(network: str) -> str:
    if len(ALIAS_PREFIX) + len(network.encode()) <= MAX_ALIAS:
        return network
    return "sha256:" + _sha256_hex(network)


def _sha256_hex(text: str) -> str:
    import _sha256

    digest: str = _sha256.sha256(text.encode()).hexdigest()
    return digest


def find_host_veth(host: Rtnl, call: Call, prev: Result) -> Link:
    """The host end of CNI_IFNAME's veth: its peer index, read in the pod, names it; it must
    be one of prevResult's interfaces without a sandbox."""
    try:
        with Rtnl(netns=call.netns) as pod:
            link = pod.find_link(call.ifname)
    except NamespaceNotFound as err:
        message = f"failed to open netns '{call.netns}': {err}"
        raise CniError(Code.UNKNOWN_CONTAINER, message) from None
    if link is None:
        raise CniError(Code.INVALID_CONFIG, f"interface '{call.ifname}' is not in {call.netns}")
    if link.kind != "veth" or not link.link:
        raise CniError(
            Code.INVALID_CONFIG,
            f"interface '{call.ifname}' is a {link.kind or 'plain'} device, not a veth: "
            f"{NAME} shapes the host end of a veth pair",
        )
    host_veth = host.find_link(link.link)
    host_names = [i.name for i in prev.interfaces if not i.sandbox]
    if host_veth is None or host_veth.name not in host_names:
        raise CniError(
            Code.INVALID_CONFIG,
            f"the peer of '{call.ifname}' (index {link.link}) is none of prevResult's host "
            f"interfaces {host_names}: chain {NAME} after the plugin that made the veth",
        )
    return host_veth


def ensure_ifb(host: Rtnl, call: Call, host_veth: Link) -> Link:
    """The attachment's IFB, up, with the host veth's MTU and queue length; made anew so
    nothing of an earlier, failed ADD lingers on it."""
    name = ifb_name(call)
    host.delete_link(name, missing_ok=True)
    return host.create_ifb(
        name, mtu=host_veth.mtu, txqlen=DEFAULT_TXQLEN, alias=ifb_alias(call), up=True
    )


def redirect_to_ifb(host: Rtnl, host_veth: Link, ifb: Link) -> None:
    """Everything the host veth receives (what the pod sends) goes through the IFB."""
    host.delete_qdisc(host_veth.index, TC_H_INGRESS, missing_ok=True)
    host.add_ingress_qdisc(host_veth.index)
    host.add_redirect_filter(host_veth.index, ifb.index)


def _tbf(shaping: Shaping) -> dict[str, int]:
    return {
        "rate": shaping.rate_bytes,
        "burst": shaping.burst_bytes,
        "limit": shaping.limit_bytes,
    }


def _check_burst_fits_a_packet(shaping: Shaping | None, host_veth: Link) -> None:
    """A tbf drops every packet larger than its bucket: refuse a burst below one MTU."""
    if shaping is None or shaping.burst_bytes >= host_veth.mtu:
        return
    raise ConfigError(
        shaping.path + "Burst",
        f"{shaping.burst} bits is less than one packet of the pod's MTU {host_veth.mtu} "
        f"(tbf drops larger packets): use at least {host_veth.mtu * 8} bits",
    )


def _check_tbf(host: Rtnl, link: Link, shaping: Shaping | None, what: str, direction: str) -> None:
    root = _root_qdisc(host, link)
    tbf = root.tbf if root is not None else None
    if shaping is None:
        if tbf is not None:
            _drift(f"{what} has a tbf qdisc, the config shapes no {direction}")
        return
    if tbf is None:
        found = root.kind if root is not None else "none"
        _drift(f"{what} has no tbf root qdisc for {direction} shaping (found {found})")
    assert tbf is not None
    differences = []
    if tbf.rate != shaping.rate_bytes:
        differences.append(f"rate {tbf.rate * 8} bit/s, config {shaping.rate_bytes * 8}")
    # the kernel keeps the burst as a time in 64 ns ticks: compare within one tick's bytes
    if abs(tbf.burst - shaping.burst_bytes) > max(1, shaping.rate_bytes * 64 // 10**9 + 1):
        differences.append(f"burst {tbf.burst * 8} bits, config {shaping.burst_bytes * 8}")
    if tbf.limit != shaping.limit_bytes:
        differences.append(f"limit {tbf.limit} bytes, expected {shaping.limit_bytes}")
    if differences:
        _drift(f"{what} shapes {direction} with {', '.join(differences)}")


def _root_qdisc(host: Rtnl, link: Link) -> Qdisc | None:
    return next((q for q in host.qdiscs(link.index) if q.parent == TC_H_ROOT), None)


def _ingress_qdisc(host: Rtnl, link: Link) -> Qdisc | None:
    return next((q for q in host.qdiscs(link.index) if q.kind == "ingress"), None)


def _remove_qdiscs(host: Rtnl, name: str) -> None:
    """Our tbf and ingress qdisc off a host interface, if it and they are still there."""
    link = host.find_link(name)
    if link is None or link.kind != "veth":
        return
    try:
        for qdisc in host.qdiscs(link.index):
            if qdisc.kind == "tbf" and qdisc.tbf is not None:
                host.delete_qdisc(link.index, missing_ok=True)
            elif qdisc.kind == "ingress":
                host.delete_qdisc(link.index, TC_H_INGRESS, missing_ok=True)
    except NetlinkNotFound:
        pass  # the veth went while we looked


def _of_network(link: Link, network: str) -> bool:
    """An IFB of pycni-bandwidth's for this network, by its alias (see ifb_alias)."""
    alias = link.alias or ""
    if link.kind != "ifb" or not alias.startswith(ALIAS_PREFIX):
        return False
    return alias[len(ALIAS_PREFIX) :].split(" ")[0] == _network_token(network)


def _prev_result(call: Call) -> Result:
    if call.prev_result is None:
        raise ConfigError(
            "$.prevResult",
            f"is required: {NAME} is a chained plugin; list it after the plugin that "
            "attaches the pod (e.g. pycni-bridge)",
        )
    return call.prev_result


def _drift(what: str) -> None:
    raise CniError(Code.CHECK_FAILED, f"check failed: {what}")
