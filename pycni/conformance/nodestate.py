"""The node as a CNI plugin's DEL must leave it: a snapshot of the node namespace that two
moments compare equal unless something a plugin did differs.

What is taken, each as the tool a person would use to look (run inside the node namespace):

- link        `ip -d link`: name, kind, master, peer/lower link, MTU, admin state, qdisc, alias,
              address-generation mode, the kind's settings, and the MAC when someone set it
- address     `ip addr`: address/prefix, scope, broadcast, peer, label, nodad/noprefixroute
- route       `ip route show table all`, both families: every table, type, protocol, metric
- rule        `ip rule`, both families
- neighbour   `ip neigh` (permanent and externally learned entries) and `ip neigh show proxy`
- fdb         `bridge fdb` (permanent and static entries)
- qdisc       `tc qdisc`
- nft         `nft -s list ruleset`: tables, chains, sets, maps, their rules and elements
- iptables    `iptables-save` / `ip6tables-save` (ip6tables)
- sysctl      everything under /proc/sys/net as the node sees it
- file        every file under the IPAM data directories, with its content

What is left out, because the kernel changes it on its own and no plugin can be held to it:

- counters and timers: link statistics, rule and set-element counters (`nft -s`, iptables-save
  without -c), bridge timers and the STP state derived from them, promiscuity and allmulti
  reference counts (a packet socket changes them), qdisc reference counts, nf_conntrack_count;
- kernel-assigned identities: ifindex, peer netns ids, automatic qdisc handles (8000: and up),
  the MAC of a link whose address the kernel chose (a bridge takes its lowest port's);
- carrier and DAD: operstate, NO-CARRIER/LOWER_UP, a route's `linkdown`, address flags such as
  `tentative` (a bridge gets carrier asynchronously, DAD finishes when it likes), and IPv6
  link-local addresses (fe80::/10) with their fe80::/64 routes, which the kernel makes for a
  link when it first has carrier;
- routes the kernel derives from addresses (table local, protocol kernel; IPv6 ones appear only
  after DAD), while the addresses themselves are compared;
- traffic-made entries: neighbours in a dynamic state (REACHABLE, STALE, FAILED, NOARP, ...),
  learned FDB entries, an FDB's multicast entries and a link's own-address entries (they mirror
  the link's multicast list and address), conntrack entries (made by traffic, they expire);
- links on their way out with a namespace that is gone (the kernel destroys a veth whose peer's
  namespace was deleted in its own time), and everything on them.

With iptables on its nf_tables backend the tables iptables-save shows are compared there, in
iptables' words, and not again in the nft view.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.lab import netns as netns_mod

KINDS = (
    "link",
    "address",
    "route",
    "rule",
    "neighbour",
    "fdb",
    "qdisc",
    "nft",
    "iptables",
    "ip6tables",
    "sysctl",
    "file",
)
FILE_CONTENT_LIMIT = 64 * 1024  # larger files are compared by size and digest

# ip -d link: the kind's settings that are counters, timers or derived from them
_VOLATILE_LINK_DATA = frozenset(
    {
        "bridge_id",
        "root_id",
        "root_port",
        "root_path_cost",
        "topology_change",
        "topology_change_detected",
        "topology_change_ack",
        "config_pending",
        "state",
        "port_id",
        "port_no",
        "designated_root",
        "designated_bridge",
        "designated_port",
        "designated_cost",
        "id",
        "no",
    }
)
_KEPT_ADDRESS_FLAGS = ("nodad", "noprefixroute")
_KEPT_NEIGHBOUR_STATES = frozenset({"PERMANENT"})
_KEPT_FDB_STATES = frozenset({"permanent", "static"})
_VOLATILE_SYSCTLS = frozenset({"net/netfilter/nf_conntrack_count"})
_NET_ADDR_SET = 3  # /sys/class/net/<link>/addr_assign_type: someone set this MAC
_AUTO_QDISC_HANDLE = 0x8000  # the kernel numbers unnamed qdiscs from here
_LINK_LOCAL = ipaddress.ip_network("fe80::/10")


@dataclass(frozen=True, order=True)
class Item:
    """One thing on the node: its kind, what identifies it, and the link it lives on ("" when
    none), so that a link's addresses, routes and sysctls go where the link goes."""

    kind: str
    key: str
    dev: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


@dataclass
class Snapshot:
    """Items with their values ("" when the key says it all). `dying` are the links whose peer's
    namespace is gone; `unavailable` says which views could not be taken, and why."""

    items: dict[Item, str] = field(default_factory=dict)
    dying: frozenset[str] = frozenset()
    unavailable: list[str] = field(default_factory=list)

    def count(self) -> Counter[str]:
        return Counter(item.kind for item in self.items)

    def summary(self) -> str:
        """'4 links, 3 routes, 965 sysctls, 2 files' (kinds with none left out)."""
        counts = self.count()
        return ", ".join(_counted(counts[kind], kind) for kind in KINDS if counts[kind])


@dataclass(frozen=True)
class Change:
    """An item whose value differs between two snapshots (None: absent), and the items on a
    link that came or went with it (folded into the link's change)."""

    item: Item
    before: str | None
    after: str | None
    with_it: tuple[Item, ...] = ()

    @property
    def added(self) -> bool:
        return self.before is None

    @property
    def removed(self) -> bool:
        return self.after is None


# --- taking a snapshot ---------------------------------------------------------------------

# view -> the command run inside the node (the first word must be installed)
VIEWS: dict[str, list[str]] = {
    "links": ["ip", "-d", "-j", "link", "show"],
    "addresses": ["ip", "-j", "addr", "show"],
    "routes4": ["ip", "-j", "-4", "route", "show", "table", "all"],
    "routes6": ["ip", "-j", "-6", "route", "show", "table", "all"],
    "rules4": ["ip", "-j", "-4", "rule", "show"],
    "rules6": ["ip", "-j", "-6", "rule", "show"],
    "neighbours": ["ip", "-j", "neigh", "show"],
    "proxies": ["ip", "-j", "neigh", "show", "proxy"],
    "nsids": ["ip", "-j", "netns", "list-id"],
    "fdb": ["bridge", "-j", "fdb", "show"],
    "qdiscs": ["tc", "-j", "qdisc", "show"],
    "nft": ["nft", "-s", "list", "ruleset"],
    "iptables": ["iptables-save"],
    "ip6tables": ["ip6tables-save"],
    # grep prints "path:value" for every readable file; unreadable ones (stable_secret) are
    # skipped; ip netns exec mounts the node's own /sys, so the glob sees the node's links
    "sysctls": [
        "sh",
        "-c",
        'grep -r -s "" /proc/sys/net /sys/class/net/*/addr_assign_type; true',
    ],
}


def take(node: netns_mod.Netns, data_dirs: Sequence[Path] = ()) -> Snapshot:
    """The node's state now: every view run inside `node`, files read under `data_dirs`."""
    raw: dict[str, str] = {}
    unavailable = []
    for view, argv in VIEWS.items():
        if shutil.which(argv[0]) is None:
            unavailable.append(f"{view}: {argv[0]} is not installed")
            continue
        done = node.run(argv, check=False)
        if done.returncode != 0:
            unavailable.append(f"{view}: {' '.join(argv)} failed: {done.stderr.strip()[:200]}")
            continue
        raw[view] = done.stdout
    snapshot = build(raw, read_files(data_dirs))
    snapshot.unavailable[:0] = unavailable
    return snapshot


def read_files(data_dirs: Sequence[Path]) -> dict[str, str]:
    """path -> content (text; a digest and size past FILE_CONTENT_LIMIT) of every file under
    each directory, named as `<dir>/<relative path>` with the directory's last part."""
    import hashlib

    found = {}
    for directory in data_dirs:
        if not directory.is_dir():
            continue
        for root, _dirs, files in os.walk(directory):
            for name in files:
                path = Path(root, name)
                shown = f"{directory.name}/{path.relative_to(directory)}"
                try:
                    data = path.read_bytes()
                except OSError as err:
                    found[shown] = f"(unreadable: {err.strerror})"
                    continue
                if len(data) > FILE_CONTENT_LIMIT:
                    digest = hashlib.sha256(data).hexdigest()[:16]
                    found[shown] = f"({len(data)} bytes, sha256 {digest}...)"
                else:
                    found[shown] = data.decode(errors="replace")
    return found


def build(raw: Mapping[str, str], files: Mapping[str, str] | None = None) -> Snapshot:
    """A snapshot from the views' outputs (VIEWS' names; a missing view is left out)."""
    snapshot = Snapshot()
    sysctls, assign_types = _sysctls(raw.get("sysctls", ""))
    links = _json(raw.get("links"))
    macs = {str(link.get("ifname")): str(link.get("address", "")) for link in links}
    if "nsids" in raw:  # without it no link can be told to be dying
        snapshot.dying = _dying_links(links, _json(raw["nsids"]))
    parts: list[Iterable[tuple[Item, str]]] = [
        _link_items(links, assign_types),
        _address_items(_json(raw.get("addresses"))),
        _route_items([*_json(raw.get("routes4")), *_json(raw.get("routes6"))]),
        _rule_items("4", _json(raw.get("rules4"))),
        _rule_items("6", _json(raw.get("rules6"))),
        _neighbour_items(_json(raw.get("neighbours")), _json(raw.get("proxies"))),
        _fdb_items(_json(raw.get("fdb")), macs),
        _qdisc_items(_json(raw.get("qdiscs"))),
        sysctls,
        ((Item("file", path), content) for path, content in sorted((files or {}).items())),
    ]
    iptables_tables: set[tuple[str, str]] = set()
    for view, family in (("iptables", "ip"), ("ip6tables", "ip6")):
        text = raw.get(view, "")
        parts.append(_iptables_items(view, text))
        if "(nf_tables)" in text:
            iptables_tables |= {(family, table) for table in _iptables_tables(text)}
    if "nft" in raw:
        parts.append(_nft_items(raw["nft"], skip=iptables_tables))
    for part in parts:
        for item, value in part:
            snapshot.items[item] = value
    return snapshot


def _json(text: str | None) -> list[dict[str, Any]]:
    if not text or not text.strip():
        return []
    value = json.loads(text)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _copies(items: Iterable[tuple[Item, str]]) -> Iterator[tuple[Item, str]]:
    """Number repeated items ("(copy 2)"), so that a duplicated rule is an item of its own."""
    seen: Counter[Item] = Counter()
    for item, value in items:
        seen[item] += 1
        n = seen[item]
        yield (item if n == 1 else Item(item.kind, f"{item.key} (copy {n})", item.dev)), value


def _dying_links(links: list[dict[str, Any]], nsids: list[dict[str, Any]]) -> frozenset[str]:
    """Links whose peer is in a namespace this node no longer has an id for (deleted; the
    kernel destroys the pair when it gets to it)."""
    alive = {entry.get("nsid") for entry in nsids}
    return frozenset(
        str(link["ifname"])
        for link in links
        if "link_netnsid" in link and link["link_netnsid"] not in alive
    )


# --- links and addresses -----------------------------------------------------------------


def _link_items(
    links: list[dict[str, Any]], assign_types: Mapping[str, int]
) -> Iterator[tuple[Item, str]]:
    for link in links:
        name = str(link.get("ifname"))
        info = link.get("linkinfo") or {}
        words = [str(info.get("info_kind") or link.get("link_type", "?"))]
        if info.get("info_slave_kind"):
            words.append(f"port of a {info['info_slave_kind']}")
        for key, label in (("master", "master"), ("link", "link"), ("ifalias", "alias")):
            if link.get(key):
                words.append(f"{label} {link[key]}")
        words.append(f"mtu {link.get('mtu')}")
        words.append("up" if "UP" in link.get("flags", []) else "down")
        if assign_types.get(name) == _NET_ADDR_SET:
            words.append(f"mac {link.get('address')}")
        for key in ("qdisc", "txqlen", "inet6_addr_gen_mode", "group"):
            if key in link:
                words.append(f"{key} {link[key]}")
        for key in ("info_data", "info_slave_data"):
            data = info.get(key)
            if isinstance(data, dict):
                kept = {k: v for k, v in sorted(data.items()) if _stable_link_setting(k)}
                if kept:
                    words.append(json.dumps(kept, separators=(",", ":")))
        yield Item("link", name, name), ", ".join(words)


def _stable_link_setting(key: str) -> bool:
    return key not in _VOLATILE_LINK_DATA and not key.endswith("_timer")


def _address_items(links: list[dict[str, Any]]) -> Iterator[tuple[Item, str]]:
    for link in links:
        name = str(link.get("ifname"))
        for entry in link.get("addr_info") or []:
            local = entry.get("local")
            if not local:
                continue
            if ipaddress.ip_address(local) in _LINK_LOCAL:
                continue
            key = f"{local}/{entry.get('prefixlen')} dev {name}"
            words = [f"scope {entry.get('scope')}"]
            for field_name, label in (
                ("address", "peer"),
                ("broadcast", "brd"),
                ("label", "label"),
            ):
                if entry.get(field_name) and entry.get(field_name) != name:
                    words.append(f"{label} {entry[field_name]}")
            words += [flag for flag in _KEPT_ADDRESS_FLAGS if entry.get(flag)]
            yield Item("address", key, name), " ".join(words)


# --- routes, rules, neighbours, FDB, qdiscs --------------------------------------------------


def _route_items(routes: list[dict[str, Any]]) -> Iterator[tuple[Item, str]]:
    kept = []
    for route in routes:
        table = str(route.get("table", "main"))
        protocol = str(route.get("protocol", ""))
        dst = str(route.get("dst", ""))
        if protocol == "kernel" and (table == "local" or dst == "fe80::/64"):
            continue  # derived from addresses and link-locals, which are compared themselves
        words = [dst]
        if route.get("type") not in (None, "unicast"):
            words.insert(0, str(route["type"]))
        for key, label in (
            ("gateway", "via"),
            ("via", "via"),
            ("dev", "dev"),
            ("table", "table"),
            ("protocol", "proto"),
            ("scope", "scope"),
            ("metric", "metric"),
            ("prefsrc", "src"),
            ("pref", "pref"),
            ("nhid", "nhid"),
        ):
            value = route.get(key)
            if value not in (None, "", []):
                words.append(f"{label} {_plain(value)}")
        if "onlink" in route.get("flags", []):
            words.append("onlink")
        for key in ("metrics", "encap", "nexthops"):
            if route.get(key):
                words.append(f"{key} {json.dumps(route[key], sort_keys=True)}")
        kept.append((Item("route", " ".join(words), str(route.get("dev", ""))), ""))
    yield from _copies(kept)


def _plain(value: Any) -> str:
    if isinstance(value, dict):  # "via": {"family": "inet6", "host": "fe80::1"}
        return str(value.get("host", value))
    return str(value)


def _rule_items(family: str, rules: list[dict[str, Any]]) -> Iterator[tuple[Item, str]]:
    kept = []
    for rule in rules:
        words = [f"{key} {_plain(value)}" for key, value in rule.items() if value is not None]
        dev = str(rule.get("iif") or rule.get("oif") or "")
        kept.append((Item("rule", f"-{family} " + " ".join(words), dev), ""))
    yield from _copies(kept)


def _neighbour_items(
    entries: list[dict[str, Any]], proxies: list[dict[str, Any]]
) -> Iterator[tuple[Item, str]]:
    for entry in entries:
        states = set(entry.get("state") or [])
        if not states & _KEPT_NEIGHBOUR_STATES and "extern_learn" not in entry:
            continue
        dev = str(entry.get("dev", ""))
        key = f"{entry.get('dst')} dev {dev}"
        words = [f"lladdr {entry['lladdr']}"] if entry.get("lladdr") else []
        words += sorted(states)
        words += [flag for flag in ("router", "extern_learn") if flag in entry]
        yield Item("neighbour", key, dev), " ".join(words)
    for entry in proxies:
        dev = str(entry.get("dev", ""))
        yield Item("neighbour", f"proxy {entry.get('dst')} dev {dev}", dev), ""


def _fdb_items(
    entries: list[dict[str, Any]], macs: Mapping[str, str]
) -> Iterator[tuple[Item, str]]:
    kept = []
    for entry in entries:
        mac = str(entry.get("mac", "")).lower()
        dev = str(entry.get("ifname", ""))
        if entry.get("state") not in _KEPT_FDB_STATES:
            continue  # learned from traffic; ages out
        if _is_group_mac(mac) or mac == macs.get(dev, "").lower():
            continue  # the link's multicast list and its own address, kept by the kernel
        words = [mac, f"dev {dev}"]
        for key, label in (
            ("master", "master"),
            ("dst", "dst"),
            ("vlan", "vlan"),
            ("vni", "vni"),
            ("port", "port"),
            ("via", "via"),
            ("src_vni", "src_vni"),
        ):
            if entry.get(key) is not None:
                words.append(f"{label} {entry[key]}")
        words += list(entry.get("flags") or [])
        words.append(str(entry.get("state")))
        kept.append((Item("fdb", " ".join(words), dev), ""))
    yield from _copies(kept)


def _is_group_mac(mac: str) -> bool:
    try:
        return bool(int(mac.split(":", maxsplit=1)[0], 16) & 1)
    except ValueError:
        return False


def _qdisc_items(qdiscs: list[dict[str, Any]]) -> Iterator[tuple[Item, str]]:
    kept = []
    for qdisc in qdiscs:
        dev = str(qdisc.get("dev", ""))
        words = [str(qdisc.get("kind")), f"dev {dev}"]
        handle = str(qdisc.get("handle", ""))
        if handle and not _automatic_handle(handle):
            words.append(f"handle {handle}")
        words.append("root" if qdisc.get("root") else f"parent {qdisc.get('parent')}")
        if qdisc.get("options"):
            words.append(json.dumps(qdisc["options"], sort_keys=True))
        kept.append((Item("qdisc", " ".join(words), dev), ""))
    yield from _copies(kept)


def _automatic_handle(handle: str) -> bool:
    try:
        return int(handle.split(":", maxsplit=1)[0] or "0", 16) >= _AUTO_QDISC_HANDLE
    except ValueError:
        return False


# --- netfilter -------------------------------------------------------------------------------


def _iptables_tables(text: str) -> list[str]:
    return [line[1:].strip() for line in text.splitlines() if line.startswith("*")]


def _iptables_items(kind: str, text: str) -> Iterator[tuple[Item, str]]:
    """iptables-save: each table's chains (with policy) and rules, in its own words."""
    kept = []
    table = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name, policy = [*line[1:].split(), "", ""][:2]
            kept.append((Item(kind, f"-t {table} chain {name} policy {policy}"), ""))
        else:
            kept.append((Item(kind, f"-t {table} {line}"), ""))
    yield from _copies(kept)


def _nft_items(text: str, skip: set[tuple[str, str]]) -> Iterator[tuple[Item, str]]:
    """`nft -s list ruleset`: every table, every object in it (chain, set, map, flowtable,
    named counter...), each line of an object (chain rules and headers, set properties), and
    each element of a set or map. Tables in `skip` (family, name) are left out."""
    kept = []
    for table, obj, line in _nft_lines(text):
        family_name = tuple(table.split()[:2])
        if len(family_name) == 2 and family_name in skip:
            continue
        if obj is None and line is None:
            kept.append((Item("nft", f"table {table}"), ""))
        elif line is None:
            kept.append((Item("nft", f"{table}: {obj}"), ""))
        elif obj is None:
            kept.append((Item("nft", f"table {table}: {line}"), ""))
        elif line.startswith("elements = "):
            for element in _split_elements(line.removeprefix("elements = ")):
                kept.append((Item("nft", f"{table} {obj}: element {element}"), ""))
        else:
            kept.append((Item("nft", f"{table} {obj}: {line}"), ""))
    yield from _copies(kept)


def _nft_lines(text: str) -> Iterator[tuple[str, str | None, str | None]]:
    """(table, object, line) for the ruleset's statements, multi-line ones joined: (table,
    None, None) opens a table, (table, object, None) an object, (table, None, line) is a line
    directly in a table."""
    table = ""
    obj: str | None = None
    pending = ""
    for raw_line in text.splitlines():
        line = (pending + " " + raw_line.strip()).strip() if pending else raw_line.strip()
        if not line:
            continue
        if _brace_depth(line) > 0 and not line.endswith("{"):
            pending = line  # "elements = { a," continued on the next line
            continue
        pending = ""
        if line == "}":
            if obj is not None:
                obj = None
            else:
                table = ""
        elif line.endswith("{") and not table:
            table = line.removeprefix("table ").removesuffix("{").strip()
            yield table, None, None
        elif line.endswith("{"):
            obj = line.removesuffix("{").strip()
            yield table, obj, None
        else:
            yield table, obj, line
    if pending:
        yield table, obj, pending


def _brace_depth(text: str) -> int:
    depth = 0
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "{":
            depth += 1
        elif not quoted and char == "}":
            depth -= 1
    return depth


def _split_elements(text: str) -> list[str]:
    """'{ a, b . c : jump x, { nested } }' -> ['a', 'b . c : jump x', '{ nested }']."""
    inner = text.strip().removeprefix("{").removesuffix("}")
    elements: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in inner:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "{":
            depth += 1
        elif not quoted and char == "}":
            depth -= 1
        elif char == "," and depth == 0 and not quoted:
            elements.append("".join(current))
            current = []
            continue
        current.append(char)
    elements.append("".join(current))
    return [" ".join(e.split()) for e in elements if e.strip()]


# --- sysctls ---------------------------------------------------------------------------------


def _sysctls(text: str) -> tuple[list[tuple[Item, str]], dict[str, int]]:
    """grep's "path:value" lines -> sysctl items (path under /proc/sys) and the links'
    addr_assign_type."""
    values: dict[str, list[str]] = {}
    assign_types: dict[str, int] = {}
    for line in text.splitlines():
        path, sep, value = line.partition(":")
        if not sep:
            continue
        if path.startswith("/sys/class/net/"):
            try:
                assign_types[path.split("/")[4]] = int(value)
            except (IndexError, ValueError):
                pass
            continue
        name = path.removeprefix("/proc/sys/")
        if name in _VOLATILE_SYSCTLS:
            continue
        values.setdefault(name, []).append(" ".join(value.split()))
    items = []
    for name, lines in sorted(values.items()):
        parts = name.split("/")
        dev = parts[3] if len(parts) > 4 and parts[2] in ("conf", "neigh") else ""
        if dev in ("all", "default"):
            dev = ""
        items.append((Item("sysctl", name, dev), " / ".join(lines)))
    return items, assign_types


# --- comparing -------------------------------------------------------------------------------


def compare(before: Snapshot, after: Snapshot) -> list[Change]:
    """What differs, links first; an added or removed link carries the items on it (its
    addresses, routes, sysctls...) in `with_it` instead of listing them on their own. Items on
    links that are dying in either snapshot are left out."""
    dying = before.dying | after.dying
    changes = []
    for item in sorted(set(before.items) | set(after.items), key=_order):
        if item.dev in dying:
            continue
        old, new = before.items.get(item), after.items.get(item)
        if old != new:
            changes.append(Change(item, old, new))
    links = {c.item.key: c for c in changes if c.item.kind == "link" and c.before != c.after}
    gone_or_new = {name for name, c in links.items() if c.added or c.removed}
    folded: dict[str, list[Item]] = {name: [] for name in gone_or_new}
    kept = []
    for change in changes:
        if change.item.kind != "link" and change.item.dev in gone_or_new:
            folded[change.item.dev].append(change.item)
        else:
            kept.append(change)
    return [
        Change(c.item, c.before, c.after, tuple(folded.get(c.item.key, ())))
        if c.item.kind == "link"
        else c
        for c in kept
    ]


def _order(item: Item) -> tuple[int, str]:
    return KINDS.index(item.kind) if item.kind in KINDS else len(KINDS), item.key


def mentions(text: str, tokens: Iterable[str]) -> str | None:
    """The first of `tokens` (addresses, a container ID, MACs) that `text` names as a whole
    word ("10.1.0.2" in "10.1.0.2/32 dev lo", in "dnat to 10.1.0.2:80", in a file name
    "ipam/net/10.1.0.2"; not in "10.1.0.20"); None if none does."""
    words = set(_SEPARATORS.split(text.lower()))
    words |= {word.rsplit(":", 1)[0] for word in words}  # address:port
    for token in tokens:
        if token and token.lower() in words:
            return token
    return None


_SEPARATORS = re.compile(r"[\s,;{}()\[\]\"'=@/\\]+")


def with_it_summary(items: Sequence[Item]) -> str:
    counts = Counter(item.kind for item in items)
    return ", ".join(_counted(counts[kind], kind) for kind in KINDS if counts[kind])


_PLURALS = {"address": "addresses"}


def _counted(n: int, kind: str) -> str:
    if kind in ("nft", "iptables", "ip6tables"):
        return f"{n} {kind} line{'s' if n != 1 else ''}"
    return f"{n} {kind if n == 1 else _PLURALS.get(kind, kind + 's')}"
