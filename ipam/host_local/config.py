"""host-local's configuration: the `ipam` section, with the reference host-local's keys.

    "ipam": {
      "type": "pycni-host-local",
      "ranges": [                                  # range sets: one address from each
        [{"subnet": "10.244.1.0/24", "rangeStart": "10.244.1.10",
          "rangeEnd": "10.244.1.250", "gateway": "10.244.1.1"}],
        [{"subnet": "fd00:10:244:1::/64"}]
      ],
      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
      "dataDir": "/var/lib/cni/networks",
      "resolvConf": "/etc/resolv.conf"
    }
The legacy one-range form (`subnet`, `rangeStart`, `rangeEnd`, `gateway` directly in `ipam`)
is accepted as a single range set. `runtimeConfig.ipRanges` (the `ipRanges` capability)
replaces `ranges`. Requested addresses come from `runtimeConfig.ips`, `args.cni.ips` and
CNI_ARGS `IP` (comma-separated), as in the reference plugin.

The structure was already checked against conf/schemas/host-local.schema.json (the generated
validator); this module checks what a schema cannot say: that addresses fall in their subnet,
ranges do not overlap, a set holds one address family. Errors name the JSON path.
"""

from __future__ import annotations

from pycni.cni.errors import ConfigError
from pycni.cni.ip import IP, Prefix
from pycni.cni.record import Record
from pycni.cni.result import DNS, Route, parse_ip, parse_prefix
from pycni.ipam.host_local.allocator import Range

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call

DEFAULT_DATA_DIR = "/var/lib/cni/networks"


class HostLocalConf(Record):
    __slots__ = ("data_dir", "range_sets", "requested", "resolv_conf", "routes")
    range_sets: list[list[Range]]
    routes: list[Route]
    data_dir: str
    resolv_conf: str
    requested: list[IP]

    def __init__(
        self,
        range_sets: list[list[Range]],
        routes: list[Route],
        data_dir: str,
        resolv_conf: str,
        requested: list[IP],
    ) -> None:
        self._init(
            range_sets=range_sets,
            routes=routes,
            data_dir=data_dir,
            resolv_conf=resolv_conf,
            requested=requested,
        )


def parse(call: Call) -> HostLocalConf:
    ipam = call.config["ipam"]
    assert isinstance(ipam, dict)  # the generated schema validator guarantees it
    ip_ranges = call.runtime_config.get("ipRanges")
    if ip_ranges:
        range_sets = _range_sets(ip_ranges, "$.runtimeConfig.ipRanges")
    else:
        # As the reference does: the legacy one-range form, if given, is the first range set.
        range_sets = [[_range(ipam, "$.ipam")]] if "subnet" in ipam else []
        if "ranges" in ipam:
            range_sets += _range_sets(ipam["ranges"], "$.ipam.ranges")
    if not range_sets:
        raise ConfigError("$.ipam.ranges", "no IP ranges: set `ranges` (or the legacy `subnet`)")
    _check_overlaps(range_sets)
    return HostLocalConf(
        range_sets=range_sets,
        routes=[_route(r, f"$.ipam.routes[{n}]") for n, r in enumerate(ipam.get("routes") or [])],
        data_dir=str(ipam.get("dataDir") or DEFAULT_DATA_DIR),
        resolv_conf=str(ipam.get("resolvConf") or ""),
        requested=_requested(call),
    )


def _range_sets(raw: object, path: str) -> list[list[Range]]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "expected a non-empty array of range sets")
    sets = []
    for n, raw_set in enumerate(raw):
        set_path = f"{path}[{n}]"
        if not isinstance(raw_set, list) or not raw_set:
            raise ConfigError(set_path, "a range set must be a non-empty array of ranges")
        ranges = [_range(r, f"{set_path}[{m}]") for m, r in enumerate(raw_set)]
        versions = {r.subnet.version for r in ranges}
        if len(versions) > 1:
            raise ConfigError(set_path, "a range set mixes IPv4 and IPv6 subnets")
        sets.append(ranges)
    return sets


def _range(raw: object, path: str) -> Range:
    if not isinstance(raw, dict):
        raise ConfigError(path, "a range must be an object with a `subnet`")
    if "subnet" not in raw:
        raise ConfigError(f"{path}.subnet", "is required")
    subnet = parse_prefix(raw["subnet"], f"{path}.subnet")
    if subnet.has_host_bits():
        raise ConfigError(
            f"{path}.subnet",
            f"'{subnet}' has host bits set: the network address of a /{subnet.length} is"
            f" {subnet.network}",
        )
    if subnet.length > subnet.ip.bits - 2:
        raise ConfigError(f"{path}.subnet", f"'{subnet}' is too small to allocate from")
    network, last = subnet.network, subnet.last
    if subnet.version == 4:
        last = last - 1  # the broadcast address
    start = _address(raw, "rangeStart", path, subnet) or network + 1
    end = _address(raw, "rangeEnd", path, subnet) or last
    if end < start:
        raise ConfigError(f"{path}.rangeEnd", f"{end} is before rangeStart {start}")
    if start == network or (subnet.version == 4 and end == subnet.last):
        which, ip = ("rangeStart", start) if start == network else ("rangeEnd", end)
        raise ConfigError(
            f"{path}.{which}", f"{ip} is the network or broadcast address of {subnet}"
        )
    gateway = _address(raw, "gateway", path, subnet) or network + 1
    return Range(subnet=subnet, start=start, end=end, gateway=gateway)


def _address(raw: dict[str, object], key: str, path: str, subnet: Prefix) -> IP | None:
    if raw.get(key) is None:
        return None
    ip = parse_ip(raw[key], f"{path}.{key}")
    if not subnet.contains(ip):
        raise ConfigError(f"{path}.{key}", f"{ip} is not in subnet {subnet}")
    return ip


def _check_overlaps(range_sets: list[list[Range]]) -> None:
    seen: list[tuple[str, Range]] = []
    for n, range_set in enumerate(range_sets):
        for m, rng in enumerate(range_set):
            for where, other in seen:
                if rng.start <= other.end and other.start <= rng.end:
                    raise ConfigError(
                        f"$.ipam.ranges[{n}][{m}]", f"range {rng} overlaps range {other} ({where})"
                    )
            seen.append((f"ranges[{n}][{m}]", rng))


def _route(raw: object, path: str) -> Route:
    if not isinstance(raw, dict) or "dst" not in raw:
        raise ConfigError(path, "a route must be an object with a `dst`")
    dst = parse_prefix(raw["dst"], f"{path}.dst")
    gw = parse_ip(raw["gw"], f"{path}.gw") if raw.get("gw") is not None else None
    if gw is not None and gw.version != dst.version:
        raise ConfigError(f"{path}.gw", f"{gw} is not of the same family as {dst}")
    return Route(dst=dst, gw=gw)


def _requested(call: Call) -> list[IP]:
    sources: list[tuple[str, object]] = []
    cni_ip = call.cni_args.get("IP", "")
    sources += [("CNI_ARGS IP", text) for text in cni_ip.split(",") if text]
    cni_args = call.args.get("cni")
    if isinstance(cni_args, dict):
        sources += [(f"$.args.cni.ips[{n}]", t) for n, t in enumerate(_list(cni_args, "ips"))]
    sources += [
        (f"$.runtimeConfig.ips[{n}]", t) for n, t in enumerate(_list(call.runtime_config, "ips"))
    ]
    requested: list[IP] = []
    for where, text in sources:
        address = text.partition("/")[0] if isinstance(text, str) else text
        ip = parse_ip(address, where)
        if ip not in requested:
            requested.append(ip)
    return requested


def _list(obj: dict[str, object], key: str) -> list[object]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


def read_resolv_conf(path: str) -> DNS:
    """DNS settings from a resolv.conf, as the reference host-local's `resolvConf` does."""
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    domain = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            key, values = fields[0], fields[1:]
            if key == "nameserver":
                nameservers.append(values[0])
            elif key == "domain":
                domain = values[0]
            elif key == "search":
                search = values
            elif key == "options":
                options += values
    return DNS(nameservers=nameservers, domain=domain, search=search, options=options)
