"""pycni-netpol: NetworkPolicy from a pod's first packet, chained last in the node's conflist
(the node agent adds it when --network-policy is on).

The agent (pycni.agent.netpol) programs table `inet pycni-policy`; what it cannot know in time
is a new pod's address: the kubelet reports it only after the sandbox is up, and a pod that
lives for a second may be gone by then. The plugin knows it at ADD, from prevResult, and knows
the pod's namespace and name from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME). Its ADD:

1. records the attachment in <stateDir>/pods/<containerID>@<ifname> (namespace, name, uid,
   addresses): the local agent reads it at once (inotify) and puts the pod into the peer sets
   of this node;
2. if <stateDir>/namespaces/<namespace> exists (the namespace has a NetworkPolicy), gates the
   pod in one nft transaction: when the agent has already made the pod's chains (it does as
   soon as the scheduler binds the pod to this node, long before the sandbox exists), the pod's
   addresses are mapped to them — enforced in full from the first packet; otherwise they go
   into the `pending` sets (everything but established traffic dropped) until the agent takes
   over, in the transaction that maps them.

Pods in namespaces without policies cost one stat() and a small file. Without the agent's
state directory (--network-policy=false, or no agent yet) nothing is gated: a namespace the
agent never saw a policy in cannot hold a policy it knows of.

DEL removes the pod's map entries (only those that still point at its own chains: an address
another pod holds by now is left alone), its pending entries and its record. GC removes the
records of attachments the runtime no longer lists. CHECK verifies the record and, for a gated
namespace, that each address is mapped to the pod's chains or pending.
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.datapath import policy_names as names
from pycni.validators import netpol as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.result import Result
    from pycni.cni.skel import Call
    from pycni.netlink import nftables

NAME = "pycni-netpol"
ATTEMPTS = 3  # the agent may create or remove the pod's chains meanwhile: bounded retries


class NetpolConf(Record):
    __slots__ = ("state_dir",)
    state_dir: str

    def __init__(self, state_dir: str) -> None:
        self._init(state_dir=state_dir)


def parse_config(call: Call) -> NetpolConf:
    schema.validate(call.config)
    state_dir = call.config.get("stateDir", names.STATE_DIR)
    assert isinstance(state_dir, str)
    return NetpolConf(state_dir.rstrip("/") or "/")


def cmd_add(call: Call, conf: NetpolConf) -> Result:
    prev = _prev_result(call)
    pod = _pod(call)
    if pod is None:
        return prev  # not a Kubernetes pod: nothing can select it
    namespace, name = pod
    ips = _pod_ips(prev)
    _write_record(conf, call, namespace, name, ips)
    if not _gated(conf, namespace):
        return prev
    _gate(namespace, name, ips)
    return prev


def cmd_del(call: Call, conf: NetpolConf) -> None:
    record = _read_record(conf, call)
    ips = _pod_ips(call.prev_result) if call.prev_result is not None else []
    pod = _pod(call)
    if record is not None:
        recorded = record.get("ips")
        if not ips and isinstance(recorded, list):
            ips = [IP.parse(ip) for ip in recorded]
        pod = pod or (str(record.get("namespace")), str(record.get("name")))
    if ips and pod is not None:
        _release(pod[0], pod[1], ips)
    _remove_record(conf, call)


def cmd_check(call: Call, conf: NetpolConf) -> None:
    prev = _prev_result(call)
    pod = _pod(call)
    if pod is None:
        return
    record = _read_record(conf, call)
    if record is None:
        raise CniError(Code.CHECK_FAILED, f"check failed: no record of {_record_name(call)}")
    if not _gated(conf, pod[0]):
        return
    from pycni.netlink import nftables as nft

    ips = _pod_ips(prev)
    with nft.Ruleset() as ruleset:
        maps = _read_maps(ruleset, ips)
        pending = _read_pending(ruleset)
    for ip in ips:
        chain = maps.get(("in", str(ip)))
        own = names.pod_chain(pod[0], pod[1], "in")
        if chain != own and str(ip) not in pending:
            raise CniError(
                Code.CHECK_FAILED,
                f"check failed: {ip} of {pod[0]}/{pod[1]} is neither mapped to its policy"
                f" chain '{own}' nor pending (found: {chain or 'nothing'})",
            )


def cmd_status(call: Call, conf: NetpolConf) -> None:
    del call, conf  # nothing to be ready for: the agent programs; the plugin only gates


def cmd_gc(call: Call, conf: NetpolConf) -> None:
    import os

    if call.valid_attachments is None:
        return
    valid = {f"{a.container_id}@{a.ifname}" for a in call.valid_attachments}
    directory = f"{conf.state_dir}/{names.PODS}"
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return
    for entry in entries:
        if "@" in entry and not entry.startswith(".") and entry not in valid:
            try:
                os.unlink(f"{directory}/{entry}")
            except FileNotFoundError:
                pass


# --- gating --------------------------------------------------------------------------------


def _gate(namespace: str, name: str, ips: list[IP]) -> None:
    """Map the addresses to the pod's chains if the agent made them, else make them pending;
    one transaction, retried when the agent changed the chains meanwhile."""
    from pycni.netlink import nftables as nft

    table = nft.Table(names.TABLE_FAMILY, names.TABLE_NAME)
    chains = {d: names.pod_chain(namespace, name, d) for d in names.DIRECTIONS}
    message = ""
    for _attempt in range(ATTEMPTS):
        with nft.Ruleset() as ruleset:
            ready = all(ruleset.chain(table, c) is not None for c in chains.values())
            maps = _read_maps(ruleset, ips) if ready else {}
        script = nft.Script(table)
        for ip in ips:
            if ready:
                for direction, chain in chains.items():
                    spec = _map_spec(direction, ip.version)
                    current = maps.get((direction, str(ip)))
                    if current == chain:
                        continue
                    if current is not None:
                        script.delete_elements(spec, [nft.Element(ip)])
                    script.add_elements(spec, [nft.Element(ip, data=nft.Verdict.jump(chain))])
            else:
                script.add_elements(_pending_spec(ip.version), [nft.Element(ip)])
        if not script:
            return
        try:
            nft.run(script, f"gate pod {namespace}/{name} for its NetworkPolicies")
            return
        except CniError as err:
            message = err.msg
    raise CniError(
        Code.KERNEL,
        f"failed to gate pod {namespace}/{name} for its NetworkPolicies: {message}",
        "is the pycni agent running with --network-policy on this node?",
    )


def _release(namespace: str, name: str, ips: list[IP]) -> None:
    """Forget the pod's addresses: its map entries (if still its own) and pending entries."""
    from pycni.netlink import nftables as nft
    from pycni.netlink.errors import NetlinkError

    table = nft.Table(names.TABLE_FAMILY, names.TABLE_NAME)
    chains = {d: names.pod_chain(namespace, name, d) for d in names.DIRECTIONS}
    for _attempt in range(ATTEMPTS):
        try:
            with nft.Ruleset() as ruleset:
                if not ruleset.chains(table):
                    return  # no table: policy is off on this node
                maps = _read_maps(ruleset, ips)
                pending = _read_pending(ruleset)
        except (NetlinkError, OSError):
            return
        script = nft.Script(table)
        for ip in ips:
            for direction, chain in chains.items():
                if maps.get((direction, str(ip))) == chain:
                    script.delete_elements(_map_spec(direction, ip.version), [nft.Element(ip)])
            if str(ip) in pending:
                script.delete_elements(_pending_spec(ip.version), [nft.Element(ip)])
        if not script:
            return
        try:
            nft.run(script, f"release the addresses of pod {namespace}/{name}")
            return
        except CniError:
            continue  # the agent changed an entry meanwhile: read again


def _read_maps(ruleset: nftables.Ruleset, ips: list[IP]) -> dict[tuple[str, str], str]:
    """(direction, address) -> the chain its map entry jumps to, for `ips`."""
    from pycni.netlink import nftables as nft

    table = nft.Table(names.TABLE_FAMILY, names.TABLE_NAME)
    wanted = {str(ip) for ip in ips}
    found: dict[tuple[str, str], str] = {}
    for version in sorted({ip.version for ip in ips}):
        for direction in names.DIRECTIONS:
            for element in ruleset.elements(table, _map_spec(direction, version)) or []:
                key = str(element.key[0])
                if key in wanted and isinstance(element.data, nft.Verdict):
                    found[(direction, key)] = element.data.chain or ""
    return found


def _read_pending(ruleset: nftables.Ruleset) -> set[str]:
    from pycni.netlink import nftables as nft

    table = nft.Table(names.TABLE_FAMILY, names.TABLE_NAME)
    return {
        str(e.key[0])
        for version in (4, 6)
        for e in ruleset.elements(table, _pending_spec(version)) or []
    }


def _map_spec(direction: str, version: int) -> nftables.SetSpec:
    from pycni.netlink import nftables as nft

    addr = nft.IPV4_ADDR if version == 4 else nft.IPV6_ADDR
    return nft.SetSpec(names.MAPS[(direction, version)], addr, nft.VERDICT)


def _pending_spec(version: int) -> nftables.SetSpec:
    from pycni.netlink import nftables as nft

    return nft.SetSpec(names.PENDING[version], nft.IPV4_ADDR if version == 4 else nft.IPV6_ADDR)


# --- records and markers ------------------------------------------------------------------------


def _gated(conf: NetpolConf, namespace: str) -> bool:
    import os

    return os.path.exists(f"{conf.state_dir}/{names.NAMESPACES}/{namespace}")


def _record_name(call: Call) -> str:
    return f"{call.container_id}@{call.ifname}"


def _write_record(conf: NetpolConf, call: Call, namespace: str, name: str, ips: list[IP]) -> None:
    """Written to a temporary name and renamed: the agent never reads half a record."""
    import os

    from pycni.cni import jsonio

    directory = f"{conf.state_dir}/{names.PODS}"
    record = {
        "namespace": namespace,
        "name": name,
        "uid": call.cni_args.get("K8S_POD_UID", ""),
        "containerID": call.container_id,
        "ifname": call.ifname,
        "ips": [str(ip) for ip in ips],
    }
    path = f"{directory}/{_record_name(call)}"
    tmp = f"{directory}/.{_record_name(call)}.{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(jsonio.dumps(record))
        os.replace(tmp, path)
    except OSError as err:
        raise CniError(
            Code.IO_FAILURE, f"failed to record pod {namespace}/{name} in '{path}': {err.strerror}"
        ) from None


def _read_record(conf: NetpolConf, call: Call) -> dict[str, object] | None:
    from pycni.cni import jsonio

    try:
        with open(f"{conf.state_dir}/{names.PODS}/{_record_name(call)}") as f:
            value = jsonio.loads(f.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _remove_record(conf: NetpolConf, call: Call) -> None:
    import os

    try:
        os.unlink(f"{conf.state_dir}/{names.PODS}/{_record_name(call)}")
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CniError(
            Code.IO_FAILURE, f"failed to remove the record of {_record_name(call)}: {err.strerror}"
        ) from None


# --- internals ---------------------------------------------------------------------------------


def _pod(call: Call) -> tuple[str, str] | None:
    namespace = call.cni_args.get("K8S_POD_NAMESPACE")
    name = call.cni_args.get("K8S_POD_NAME")
    return (namespace, name) if namespace and name else None


def _prev_result(call: Call) -> Result:
    if call.prev_result is None:
        raise ConfigError(
            "$.prevResult", f"is required: {NAME} is chained after the plugin that adds the pod"
        )
    return call.prev_result


def _pod_ips(prev: Result) -> list[IP]:
    """The addresses on the pod's interfaces (those with a sandbox) of prevResult, or all of
    them when prevResult names no interface."""
    sandboxed = {n for n, i in enumerate(prev.interfaces) if i.sandbox}
    out = []
    for ip in prev.ips:
        if sandboxed and ip.interface is not None and ip.interface not in sandboxed:
            continue
        if ip.address.ip not in out:
            out.append(ip.address.ip)
    return out
