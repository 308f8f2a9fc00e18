"""Kubernetes objects as the policy model reads them: NetworkPolicies, Pods and Namespaces
parsed once into frozen records, and label selectors that can say whether they match.

Semantics, as the API documents them and kube-apiserver defaults them (networking/v1):

- `policyTypes`: when the object has none, Ingress always, and Egress when `egress` has at least
  one rule (SetDefaults_NetworkPolicySpec: `len(spec.Egress) != 0`; a live API server has
  always filled it in by the time a watcher sees the object). A listed type with no rules
  isolates and allows nothing; a type not listed is not enforced even if it has rules.
- A rule with no peers (`from`/`to` absent or empty) matches every peer; with no `ports`,
  every port of every protocol. A peer with only `podSelector` means pods of the policy's own
  namespace; only `namespaceSelector`, every pod of the matching namespaces; both, the pods
  that match in those namespaces (AND); separate peers OR. `ipBlock` is a CIDR minus its
  `except`s, tested against any address (pods' too).
- A port is a number, or a name resolved against the *destination* pod's container ports (name
  and protocol must both match); `endPort` makes a number a range. `protocol` defaults to TCP.
- hostNetwork pods are never selected (not as targets, not as peers); pods that have ended
  (Succeeded, Failed) hold no address any more.

Errors: an object the model cannot use raises ObjectError with a message a person can act on;
the caller reports it (an Event on the NetworkPolicy) and never crashes on it.

Long-lived path (the agent), never a plugin's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
TERMINAL_PHASES = ("Succeeded", "Failed")


class ObjectError(ValueError):
    """An object the model cannot use; the message says which field and why."""


# --- label selectors -----------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class Selector:
    """A metav1.LabelSelector: every matchLabels pair and every requirement must hold; the
    empty selector matches everything."""

    labels: tuple[tuple[str, str], ...] = ()
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels) and all(
            r.matches(labels) for r in self.requirements
        )

    @property
    def everything(self) -> bool:
        return not self.labels and not self.requirements

    def canonical(self) -> str:
        """One spelling per meaning (sorted), for naming the set of what it selects."""
        parts = [f"{k}={v}" for k, v in self.labels]
        parts += [f"{r.key} {r.operator} ({','.join(r.values)})" for r in self.requirements]
        return "{" + ";".join(parts) + "}"

    @classmethod
    def parse(cls, obj: object, where: str) -> Selector:
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise ObjectError(f"{where}: a label selector is an object, not {_kind(obj)}")
        match_labels = obj.get("matchLabels") or {}
        if not isinstance(match_labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in match_labels.items()
        ):
            raise ObjectError(f"{where}.matchLabels: expected a map of strings")
        requirements = []
        for i, expr in enumerate(obj.get("matchExpressions") or []):
            at = f"{where}.matchExpressions[{i}]"
            if not isinstance(expr, dict):
                raise ObjectError(f"{at}: expected an object, not {_kind(expr)}")
            key, operator = expr.get("key"), expr.get("operator")
            values = expr.get("values") or []
            if not isinstance(key, str) or not key:
                raise ObjectError(f"{at}.key: expected a label key")
            if operator not in OPERATORS:
                raise ObjectError(
                    f"{at}.operator: {operator!r} is not one of {', '.join(OPERATORS)}"
                )
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ObjectError(f"{at}.values: expected a list of strings")
            if operator in ("In", "NotIn") and not values:
                raise ObjectError(f"{at}.values: {operator} needs at least one value")
            if operator in ("Exists", "DoesNotExist") and values:
                raise ObjectError(f"{at}.values: {operator} takes no values")
            requirements.append(Requirement(key, operator, tuple(sorted(set(values)))))
        return cls(
            tuple(sorted(match_labels.items())),
            tuple(sorted(requirements, key=lambda r: (r.key, r.operator, r.values))),
        )


# --- NetworkPolicy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IpBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    @property
    def version(self) -> int:
        return self.cidr.version

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip.version != self.cidr.version or ip not in self.cidr:
            return False
        return not any(ip in e for e in self.excepts)


@dataclass(frozen=True)
class Peer:
    """One entry of `from`/`to`: a pod selector scoped to the policy's namespace (`namespaces`
    None), a namespace selector with an optional pod selector, or an ipBlock."""

    pods: Selector | None = None
    namespaces: Selector | None = None
    block: IpBlock | None = None

    def key(self, policy_namespace: str) -> str:
        """The set of pods this peer names, the same for every policy that names it (so two
        policies share one kernel set): the namespace scope, then the pod selector."""
        assert self.block is None
        scope = (
            f"ns={policy_namespace}"
            if self.namespaces is None
            else f"nssel={self.namespaces.canonical()}"
        )
        pods = (self.pods or Selector()).canonical()
        return f"{scope} pods={pods}"


@dataclass(frozen=True)
class PortSpec:
    protocol: str  # tcp, udp, sctp
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None

    @property
    def named(self) -> bool:
        return isinstance(self.port, str)


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...] = ()  # empty: every peer
    ports: tuple[PortSpec, ...] = ()  # empty: every port and protocol


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    uid: str
    resource_version: str
    pod_selector: Selector
    ingress: tuple[Rule, ...] | None  # None: does not isolate for ingress
    egress: tuple[Rule, ...] | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: PodInfo) -> bool:
        return (
            pod.namespace == self.namespace
            and not pod.host_network
            and self.pod_selector.matches(pod.labels)
        )

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Policy:
        meta = _mapping(obj.get("metadata"), "metadata")
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not namespace or not isinstance(name, str):
            raise ObjectError("metadata: a NetworkPolicy needs a namespace and a name")
        spec = _mapping(obj.get("spec"), "spec")
        selector = Selector.parse(spec.get("podSelector"), "spec.podSelector")
        types = spec.get("policyTypes")
        ingress_rules = spec.get("ingress")
        egress_rules = spec.get("egress")
        if types is None or types == []:
            types = ["Ingress"] + (["Egress"] if egress_rules else [])
        if not isinstance(types, list) or not all(t in ("Ingress", "Egress") for t in types):
            raise ObjectError(f"spec.policyTypes: {types!r}: expected Ingress and/or Egress")
        ingress = egress = None
        if "Ingress" in types:
            ingress = _rules(ingress_rules, "spec.ingress", "from")
        if "Egress" in types:
            egress = _rules(egress_rules, "spec.egress", "to")
        return cls(
            namespace,
            name,
            str(meta.get("uid") or ""),
            str(meta.get("resourceVersion") or ""),
            selector,
            ingress,
            egress,
        )


def _rules(obj: object, where: str, peers_field: str) -> tuple[Rule, ...]:
    if obj is None:
        return ()
    if not isinstance(obj, list):
        raise ObjectError(f"{where}: expected a list of rules, not {_kind(obj)}")
    rules = []
    for i, item in enumerate(obj):
        at = f"{where}[{i}]"
        rule = _mapping(item, at)
        peers = rule.get(peers_field) or []
        ports = rule.get("ports") or []
        if not isinstance(peers, list):
            raise ObjectError(f"{at}.{peers_field}: expected a list of peers")
        if not isinstance(ports, list):
            raise ObjectError(f"{at}.ports: expected a list of ports")
        rules.append(
            Rule(
                tuple(_peer(p, f"{at}.{peers_field}[{j}]") for j, p in enumerate(peers)),
                tuple(_port(p, f"{at}.ports[{j}]") for j, p in enumerate(ports)),
            )
        )
    return tuple(rules)


def _peer(obj: object, where: str) -> Peer:
    peer = _mapping(obj, where)
    block = peer.get("ipBlock")
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if block is not None:
        if pods is not None or namespaces is not None:
            raise ObjectError(f"{where}: ipBlock cannot be combined with a selector")
        return Peer(block=_ip_block(block, f"{where}.ipBlock"))
    if pods is None and namespaces is None:
        raise ObjectError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return Peer(
        Selector.parse(pods, f"{where}.podSelector") if pods is not None else None,
        Selector.parse(namespaces, f"{where}.namespaceSelector")
        if namespaces is not None
        else None,
    )


def _ip_block(obj: object, where: str) -> IpBlock:
    block = _mapping(obj, where)
    cidr = _network(block.get("cidr"), f"{where}.cidr")
    excepts = []
    for i, text in enumerate(block.get("except") or []):
        network = _network(text, f"{where}.except[{i}]")
        if network.version != cidr.version or not network.subnet_of(cidr):  # type: ignore[arg-type]
            raise ObjectError(f"{where}.except[{i}]: {text} is not inside the cidr {cidr}")
        excepts.append(network)
    return IpBlock(
        cidr, tuple(sorted(set(excepts), key=lambda n: (n.network_address, n.prefixlen)))
    )


def _network(text: object, where: str) -> IPNetwork:
    if not isinstance(text, str):
        raise ObjectError(f"{where}: expected a CIDR string, not {_kind(text)}")
    try:
        # strict=False: the API server (net.ParseCIDR) accepts host bits and keeps the network
        return ipaddress.ip_network(text, strict=False)
    except ValueError as err:
        raise ObjectError(f"{where}: {text!r} is not a CIDR: {err}") from None


def _port(obj: object, where: str) -> PortSpec:
    port = _mapping(obj, where)
    protocol_name = port.get("protocol") or "TCP"
    if protocol_name not in PROTOCOLS:
        raise ObjectError(f"{where}.protocol: {protocol_name!r} is not TCP, UDP or SCTP")
    protocol = PROTOCOLS[protocol_name]
    number = port.get("port")
    end = port.get("endPort")
    if number is None:
        if end is not None:
            raise ObjectError(f"{where}.endPort: needs a port")
        return PortSpec(protocol)
    if isinstance(number, str) and not number.isdigit():
        if not number or len(number) > 15:
            raise ObjectError(f"{where}.port: {number!r} is not a port name (1-15 characters)")
        if end is not None:
            raise ObjectError(f"{where}.endPort: not allowed with a named port")
        return PortSpec(protocol, number)
    if isinstance(number, str):
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
        raise ObjectError(f"{where}.port: {number!r} is not a port (1-65535) or a port name")
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int) or not number <= end <= 65535:
            raise ObjectError(f"{where}.endPort: {end!r} is not a port from {number} to 65535")
        if end == number:
            end = None
    return PortSpec(protocol, number, end)


# --- Pods and Namespaces -----------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPort:
    name: str
    protocol: str  # tcp, udp, sctp
    number: int


@dataclass(frozen=True)
class PodInfo:
    """What the model needs of a Pod: kept small (the agent holds every pod of the cluster)."""

    namespace: str
    name: str
    uid: str
    node: str
    labels: Mapping[str, str]
    ips: tuple[str, ...]
    host_network: bool = False
    ports: tuple[ContainerPort, ...] = ()
    terminal: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def addressable(self) -> bool:
        """Whether selectors may put its addresses in a set: a pod network pod that has not
        ended."""
        return not self.host_network and not self.terminal

    def resolve(self, name: str, protocol: str) -> tuple[int, ...]:
        """The numbers of its container ports called `name` with `protocol`."""
        return tuple(
            sorted({p.number for p in self.ports if p.name == name and p.protocol == protocol})
        )

    def with_ips(self, ips: tuple[str, ...]) -> PodInfo:
        return PodInfo(
            self.namespace,
            self.name,
            self.uid,
            self.node,
            self.labels,
            ips,
            self.host_network,
            self.ports,
            self.terminal,
        )

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> PodInfo:
        meta = _mapping(obj.get("metadata"), "metadata")
        spec = _mapping(obj.get("spec") or {}, "spec")
        status = _mapping(obj.get("status") or {}, "status")
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str) or not name:
            raise ObjectError("metadata: a Pod needs a namespace and a name")
        ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
        if not ips and status.get("podIP"):
            ips = [status.get("podIP")]
        clean = []
        for ip in ips:
            try:
                clean.append(str(ipaddress.ip_address(str(ip))))
            except ValueError:
                raise ObjectError(f"status.podIPs: {ip!r} is not an IP address") from None
        ports = []
        for container in spec.get("containers") or []:
            if not isinstance(container, dict):
                continue
            for port in container.get("ports") or []:
                if not isinstance(port, dict) or not port.get("name"):
                    continue
                protocol = PROTOCOLS.get(str(port.get("protocol") or "TCP"))
                number = port.get("containerPort")
                if protocol and isinstance(number, int) and 0 < number < 65536:
                    ports.append(ContainerPort(str(port["name"]), protocol, number))
        return cls(
            namespace,
            name,
            str(meta.get("uid") or ""),
            str(spec.get("nodeName") or ""),
            _labels(meta.get("labels"), "metadata.labels"),
            tuple(clean),
            bool(spec.get("hostNetwork")),
            tuple(sorted(set(ports), key=lambda p: (p.name, p.protocol, p.number))),
            status.get("phase") in TERMINAL_PHASES,
        )


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str]

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> NamespaceInfo:
        meta = _mapping(obj.get("metadata"), "metadata")
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ObjectError("metadata: a Namespace needs a name")
        return cls(name, _labels(meta.get("labels"), "metadata.labels"))


# --- helpers ------------------------------------------------------------------------------


class FrozenLabels(dict[str, str]):
    """Labels that hash (records holding them stay hashable) and cannot change."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _immutable(self, *args: object, **kwargs: object) -> None:
        raise TypeError("labels are immutable")

    __setitem__ = __delitem__ = clear = update = pop = popitem = setdefault = _immutable  # type: ignore[assignment]


def _labels(obj: object, where: str) -> FrozenLabels:
    if obj is None:
        return FrozenLabels()
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise ObjectError(f"{where}: expected a map of strings")
    return FrozenLabels(obj)


def labels(values: Mapping[str, str] | None = None) -> FrozenLabels:
    return FrozenLabels(values or {})


def _mapping(obj: object, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ObjectError(f"{where}: expected an object, not {_kind(obj)}")
    return obj


def _kind(obj: object) -> str:
    return "null" if obj is None else type(obj).__name__
