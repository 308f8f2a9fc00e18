"""The CNI Result (SPEC.md section 5), read from and written in any supported version.

Results are emitted in the request's cniVersion: up to 0.4.0 every `ips` entry carries
`version` ("4"/"6"); from 1.0.0 it does not; the 1.1.0 fields (interface `mtu`, `socketPath`,
`pciID`; route `mtu`, `advmss`, `priority`, `table`, `scope`) appear only from 1.1.0.
"""

from __future__ import annotations

from pycni.cni import versions
from pycni.cni.errors import ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.validators.formats import json_kind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


class Interface(Record):
    __slots__ = ("mac", "mtu", "name", "pci_id", "sandbox", "socket_path")
    name: str
    mac: str
    sandbox: str
    mtu: int | None
    socket_path: str
    pci_id: str

    def __init__(
        self,
        name: str,
        mac: str = "",
        sandbox: str = "",
        mtu: int | None = None,
        socket_path: str = "",
        pci_id: str = "",
    ) -> None:
        self._init(
            name=name, mac=mac, sandbox=sandbox, mtu=mtu, socket_path=socket_path, pci_id=pci_id
        )


class IPConfig(Record):
    __slots__ = ("address", "gateway", "interface")
    address: Prefix
    gateway: IP | None
    interface: int | None

    def __init__(
        self, address: Prefix, gateway: IP | None = None, interface: int | None = None
    ) -> None:
        self._init(address=address, gateway=gateway, interface=interface)


class Route(Record):
    __slots__ = ("advmss", "dst", "gw", "mtu", "priority", "scope", "table")
    dst: Prefix
    gw: IP | None
    mtu: int | None
    advmss: int | None
    priority: int | None
    table: int | None
    scope: int | None

    def __init__(
        self,
        dst: Prefix,
        gw: IP | None = None,
        mtu: int | None = None,
        advmss: int | None = None,
        priority: int | None = None,
        table: int | None = None,
        scope: int | None = None,
    ) -> None:
        self._init(
            dst=dst, gw=gw, mtu=mtu, advmss=advmss, priority=priority, table=table, scope=scope
        )


class DNS(Record):
    __slots__ = ("domain", "nameservers", "options", "search")
    nameservers: list[str]
    domain: str
    search: list[str]
    options: list[str]

    def __init__(
        self,
        nameservers: list[str] | None = None,
        domain: str = "",
        search: list[str] | None = None,
        options: list[str] | None = None,
    ) -> None:
        self._init(
            nameservers=nameservers or [], domain=domain, search=search or [], options=options or []
        )

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


class Result(Record):
    __slots__ = ("dns", "interfaces", "ips", "routes")
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS

    def __init__(
        self,
        interfaces: list[Interface] | None = None,
        ips: list[IPConfig] | None = None,
        routes: list[Route] | None = None,
        dns: DNS | None = None,
    ) -> None:
        self._init(
            interfaces=interfaces or [], ips=ips or [], routes=routes or [], dns=dns or DNS()
        )

    def to_json(self, version: str) -> dict[str, object]:
        """The result as the JSON object of spec version `version`."""
        with_ip_version = not versions.at_least(version, "1.0.0")
        with_1_1 = versions.at_least(version, versions.RESULT_1_1_FIELDS_SINCE)
        out: dict[str, object] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [_interface_json(i, with_1_1) for i in self.interfaces]
        if self.ips:
            out["ips"] = [_ip_json(i, with_ip_version) for i in self.ips]
        if self.routes:
            out["routes"] = [_route_json(r, with_1_1) for r in self.routes]
        if not self.dns.is_empty():
            out["dns"] = _dns_json(self.dns)
        return out

    @classmethod
    def from_json(cls, raw: object, path: str = "$") -> Result:
        """Read a result of any supported version (a prevResult, or a delegate's output).
        Raises ConfigError naming the JSON path of anything malformed."""
        obj = _object(raw, path)
        if "ip4" in obj or "ip6" in obj:
            raise ConfigError(path, "results before spec 0.3.0 (ip4/ip6) are not supported")
        return cls(
            interfaces=_list(obj, "interfaces", path, _read_interface),
            ips=_list(obj, "ips", path, _read_ip),
            routes=_list(obj, "routes", path, _read_route),
            dns=_read_dns(obj.get("dns"), f"{path}.dns") if obj.get("dns") is not None else None,
        )


def _interface_json(i: Interface, with_1_1: bool) -> dict[str, object]:
    out: dict[str, object] = {"name": i.name}
    if i.mac:
        out["mac"] = i.mac
    if with_1_1 and i.mtu is not None:
        out["mtu"] = i.mtu
    if i.sandbox:
        out["sandbox"] = i.sandbox
    if with_1_1 and i.socket_path:
        out["socketPath"] = i.socket_path
    if with_1_1 and i.pci_id:
        out["pciID"] = i.pci_id
    return out


def _ip_json(i: IPConfig, with_version: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    if with_version:
        out["version"] = str(i.address.version)
    if i.interface is not None:
        out["interface"] = i.interface
    out["address"] = str(i.address)
    if i.gateway is not None:
        out["gateway"] = str(i.gateway)
    return out


def _route_json(r: Route, with_1_1: bool) -> dict[str, object]:
    out: dict[str, object] = {"dst": str(r.dst)}
    if r.gw is not None:
        out["gw"] = str(r.gw)
    if with_1_1:
        for key, value in (
            ("mtu", r.mtu),
            ("advmss", r.advmss),
            ("priority", r.priority),
            ("table", r.table),
            ("scope", r.scope),
        ):
            if value is not None:
                out[key] = value
    return out


def _dns_json(d: DNS) -> dict[str, object]:
    out: dict[str, object] = {}
    if d.nameservers:
        out["nameservers"] = list(d.nameservers)
    if d.domain:
        out["domain"] = d.domain
    if d.search:
        out["search"] = list(d.search)
    if d.options:
        out["options"] = list(d.options)
    return out


# --- reading ---------------------------------------------------------------------------------


def _object(raw: object, path: str) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected an object, found {json_kind(raw)}")
    return raw


def _list(obj: dict[str, object], key: str, path: str, read: Callable[[object, str], T]) -> list[T]:
    raw = obj.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}.{key}", f"expected an array, found {json_kind(raw)}")
    return [read(item, f"{path}.{key}[{n}]") for n, item in enumerate(raw)]


def _str(obj: dict[str, object], key: str, path: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{path}.{key}", "is required")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{path}.{key}", f"expected a string, found {json_kind(value)}")
    return value


def _int(obj: dict[str, object], key: str, path: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{path}.{key}", f"expected an integer, found {json_kind(value)}")
    return value


def _strings(obj: dict[str, object], key: str, path: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}.{key}", "expected an array of strings")
    return list(value)


def _read_interface(raw: object, path: str) -> Interface:
    obj = _object(raw, path)
    return Interface(
        name=_str(obj, "name", path, required=True),
        mac=_str(obj, "mac", path),
        sandbox=_str(obj, "sandbox", path),
        mtu=_int(obj, "mtu", path),
        socket_path=_str(obj, "socketPath", path),
        pci_id=_str(obj, "pciID", path),
    )


def _read_ip(raw: object, path: str) -> IPConfig:
    obj = _object(raw, path)
    address = parse_prefix(_str(obj, "address", path, required=True), f"{path}.address")
    version = obj.get("version")
    if version is not None and version != str(address.version):
        raise ConfigError(
            f"{path}.version", f"is {version!r} but the address is IPv{address.version}"
        )
    gateway_text = _str(obj, "gateway", path)
    return IPConfig(
        address=address,
        gateway=parse_ip(gateway_text, f"{path}.gateway") if gateway_text else None,
        interface=_int(obj, "interface", path),
    )


def _read_route(raw: object, path: str) -> Route:
    obj = _object(raw, path)
    gw_text = _str(obj, "gw", path)
    return Route(
        dst=parse_prefix(_str(obj, "dst", path, required=True), f"{path}.dst"),
        gw=parse_ip(gw_text, f"{path}.gw") if gw_text else None,
        mtu=_int(obj, "mtu", path),
        advmss=_int(obj, "advmss", path),
        priority=_int(obj, "priority", path),
        table=_int(obj, "table", path),
        scope=_int(obj, "scope", path),
    )


def _read_dns(raw: object, path: str) -> DNS:
    obj = _object(raw, path)
    return DNS(
        nameservers=_strings(obj, "nameservers", path),
        domain=_str(obj, "domain", path),
        search=_strings(obj, "search", path),
        options=_strings(obj, "options", path),
    )


def parse_ip(text: object, path: str) -> IP:
    try:
        return IP.parse(text)
    except ValueError as err:
        raise ConfigError(path, str(err)) from None


def parse_prefix(text: object, path: str) -> Prefix:
    try:
        return Prefix.parse(text)
    except ValueError as err:
        raise ConfigError(path, str(err)) from None
