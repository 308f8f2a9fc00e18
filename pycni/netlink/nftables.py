"""nftables, spoken once: find nft, change the ruleset in one transaction, retry the races, read
chains and sets back over nfnetlink, set and map elements as typed records.

Writing. A `Script` is built by typed calls (table, chains, rules, sets and maps, elements) and
`run` hands it to one `nft -f -`, started through pycni.cni.spawn: the kernel applies the whole
script or none of it, so parallel plugin calls never see half a change, and a failed call leaves
the ruleset as it was. Rules stay in nft's own syntax; what surrounds them is typed.

    script = Script(TABLE).add_table().add_set(PODS)
    script.add_elements(PODS, [Element(IP.parse("10.22.0.5"))]).delete_elements(PODS, gone)
    run(script, "update the pods of selector 'app=web'")

Races. A script that must not fail when something is gone already adds it, then deletes it, in
the same transaction (`remove_elements`, `add_chain` + `delete_chain`): a no-op when it was gone.
A map element added with another verdict than the one the kernel holds is refused with EEXIST
("File exists"): another owner holds the key by now. `commit` runs a script built from what the
kernel holds and, when it is refused that way, builds it again from what the kernel holds then,
a bounded number of times. It is the one retry loop; nothing else matches nft's messages.

Reading. `Ruleset` asks the kernel over nfnetlink (NETLINK_NETFILTER, subsystem nf_tables) for
a chain, the chains of a table, the elements of a set or map; no nft is started (its start alone
costs ≈ 15 ms). Elements come back decoded by the `SetSpec` the set was declared with: IPs,
protocol names, ports, verdicts. pycni writes two kinds of chain comment, read back by
`Chain.comment`: a fingerprint of the rules (`fingerprint`; the chain is rewritten only when its
comment is not today's) and the attachment that owns the chain (`Owner`).

Types. `Table`; `Datatype` (NF_PROTO, INET_PROTO, INET_SERVICE, IPV4_ADDR, IPV6_ADDR, VERDICT):
how a value reads in a script and in the kernel's key bytes; `SetSpec`: a set or map's name,
key (one datatype, or a concatenation), data; `Element`: one key (and its data in a map),
hashable, so the difference between two sets of elements is a set operation; `Verdict`.

Start-up: importing this module loads nothing beyond pycni.cni.errors and .record. Running nft
loads pycni.cni.spawn (os and pipes, not `subprocess`); reading the ruleset loads the netlink
exchange (pycni.netlink.rtnl's NetlinkSocket) and wire codecs, when a Ruleset is opened.

Not here: reading interval sets back (NetworkPolicy's ipBlocks will be written, not read), and
rule expressions (CHECK reads a chain's rules as nft prints them: `list_chain`).
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code
from pycni.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Self

    from pycni.netlink.socket import NetlinkSocket

NFT_CANDIDATES = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft")
NFT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
RACE = "File exists"  # how nft reports EEXIST: a map key that jumps elsewhere by now

# --- numbers: linux/netfilter/nfnetlink.h, nf_tables.h, netfilter.h; libnftnl's udata.h -------
# (tests/netlink/test_nftables.py checks them against the installed headers)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNETLINK_V0 = 0
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN = 3, 4
NFT_MSG_NEWRULE, NFT_MSG_GETRULE = 6, 7
NFT_MSG_NEWSET, NFT_MSG_GETSET = 9, 10
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM = 12, 13
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_USERDATA = 1, 2, 3, 7
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE = 1, 2, 3, 4
NFTA_SET_KEY_LEN, NFTA_SET_DATA_TYPE = 5, 6
NFT_SET_ANONYMOUS = 0x1
NFTA_CHAIN_TABLE, NFTA_CHAIN_HANDLE, NFTA_CHAIN_NAME, NFTA_CHAIN_USERDATA = 1, 2, 3, 12
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS = 1, 2, 3
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFT_SET_ELEM_CATCHALL = 0x2
NF_DROP, NF_ACCEPT = 0, 1
NFT_CONTINUE, NFT_BREAK, NFT_JUMP, NFT_GOTO, NFT_RETURN = -1, -2, -3, -4, -5
NFPROTO = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
NFTNL_UDATA_COMMENT = 0  # a chain's, a rule's, an element's comment (NUL-terminated)
NFT_REG32_SIZE = 4  # each field of a concatenated key takes a multiple of 4 bytes
_VERDICTS = {
    NF_DROP: "drop",
    NF_ACCEPT: "accept",
    NFT_CONTINUE: "continue",
    NFT_BREAK: "break",
    NFT_JUMP: "jump",
    NFT_GOTO: "goto",
    NFT_RETURN: "return",
}
_NFPROTO_OF_VERSION = {4: (2, "ipv4"), 6: (10, "ipv6")}  # NFPROTO_IPV4, NFPROTO_IPV6
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


def _name(name: str) -> str:
    """A table, chain or set name as nft takes it unquoted (which pycni's names all are)."""
    if not (name[:1].isascii() and name[:1].isalpha() and all(c in _NAME_CHARS for c in name)):
        raise ValueError(f"'{name}' is not an nftables name pycni writes (a letter, then [\\w.-])")
    return name


def _comment(text: str) -> str:
    """A comment nft can take between double quotes: one line without a quote. (Its length nft
    checks itself, and says so: "comment too long".)"""
    if '"' in text or "\n" in text:
        raise ValueError(f"an nftables comment is one line without '\"': {text!r}")
    return text


# --- the ruleset's objects ---------------------------------------------------------------------


class Table(Record):
    """A table: its family (inet, ip, ip6, ...) and name; reads "inet pycni" in a script."""

    __slots__ = ("family", "name")
    family: str
    name: str

    def __init__(self, family: str, name: str) -> None:
        if family not in NFPROTO:
            raise ValueError(f"'{family}' is not an nftables family ({', '.join(NFPROTO)})")
        self._init(family=family, name=_name(name))

    def __str__(self) -> str:
        return f"{self.family} {self.name}"


TABLE = Table("inet", "pycni")  # pycni's node-level NAT: ipMasq and hostPorts share it


class Verdict(Record):
    """What a verdict map's element does: "accept", "drop", "return", or "jump"/"goto" a chain."""

    __slots__ = ("chain", "kind")
    kind: str
    chain: str | None

    def __init__(self, kind: str, chain: str | None = None) -> None:
        if kind not in _VERDICTS.values() or (chain is not None) != (kind in ("jump", "goto")):
            raise ValueError(f"not a verdict: {kind} {chain or ''}".rstrip())
        self._init(kind=kind, chain=chain)

    @classmethod
    def jump(cls, chain: str) -> Verdict:
        return cls("jump", _name(chain))

    @classmethod
    def goto(cls, chain: str) -> Verdict:
        return cls("goto", _name(chain))

    def __str__(self) -> str:
        return self.kind if self.chain is None else f"{self.kind} {self.chain}"


class Datatype(Record):
    """One of nft's types, as a set's declaration names it ("ipv4_addr"): its number in nft's
    type table (a concatenated key's type packs them 6 bits each), its size in the kernel's
    key, and how a value of it reads in a script (`format`) and in the kernel's bytes (`parse`).
    Values are Python's: an IP for addresses, an int for ports, a name for protocols."""

    __slots__ = ("id", "name", "size")
    name: str
    id: int
    size: int

    def __init__(self, name: str, id: int, size: int) -> None:
        self._init(name=name, id=id, size=size)

    def format(self, value: Any) -> str:
        return str(value)

    def parse(self, data: bytes) -> Any:
        raise NotImplementedError


class _NfProto(Datatype):
    """`meta nfproto`: the IP version, 4 or 6 ("ipv4" / "ipv6")."""

    __slots__ = ()

    def format(self, value: Any) -> str:
        return _NFPROTO_OF_VERSION[value][1]

    def parse(self, data: bytes) -> Any:
        return next(v for v, (number, _) in _NFPROTO_OF_VERSION.items() if number == data[0])


class _InetProto(Datatype):
    """`meta l4proto`: a protocol by name ("tcp"), or its number when it has none here."""

    __slots__ = ()

    def parse(self, data: bytes) -> Any:
        return _PROTOCOLS.get(data[0], str(data[0]))


class _InetService(Datatype):
    """A port, an int (big-endian in the key)."""

    __slots__ = ()

    def parse(self, data: bytes) -> Any:
        return int.from_bytes(data[:2], "big")


class _Address(Datatype):
    """An IPv4 or IPv6 address, a pycni.cni.ip.IP."""

    __slots__ = ()

    def format(self, value: Any) -> str:
        if value.bits // 8 != self.size:
            raise ValueError(f"{value} is not an {self.name}")
        return str(value)

    def parse(self, data: bytes) -> Any:
        from pycni.cni.ip import IP

        return IP(int.from_bytes(data[: self.size], "big"), 4 if self.size == 4 else 6)


class _Verdict(Datatype):
    """A verdict map's data: a Verdict (the kernel sends it as attributes, not key bytes)."""

    __slots__ = ()

    def parse(self, data: bytes) -> Any:
        raise ValueError("a verdict is decoded from NFTA_DATA_VERDICT, not from bytes")


NF_PROTO = _NfProto("nf_proto", 2, 1)
INET_PROTO = _InetProto("inet_proto", 12, 1)
INET_SERVICE = _InetService("inet_service", 13, 2)
IPV4_ADDR = _Address("ipv4_addr", 7, 4)
IPV6_ADDR = _Address("ipv6_addr", 8, 16)
VERDICT = _Verdict("verdict", 1, 0)
TYPE_BITS = 6  # nft's concatenated type: (type << TYPE_BITS) | next type, first type highest


class SetSpec(Record):
    """A named set (no `data`) or map, as declared: its key is one datatype or a concatenation
    ("nf_proto . inet_proto . inet_service"); `flags` as nft spells them ("interval")."""

    __slots__ = ("data", "flags", "key", "name")
    name: str
    key: tuple[Datatype, ...]
    data: Datatype | None
    flags: tuple[str, ...]

    def __init__(
        self,
        name: str,
        key: Datatype | tuple[Datatype, ...],
        data: Datatype | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        key = key if isinstance(key, tuple) else (key,)
        if not key or VERDICT in key:
            raise ValueError(f"set '{name}': a key is one or more datatypes, not a verdict")
        self._init(name=_name(name), key=key, data=data, flags=flags)

    @property
    def kind(self) -> str:
        return "set" if self.data is None else "map"

    @property
    def key_type(self) -> int:
        """The key's type as the kernel holds it (NFTA_SET_KEY_TYPE)."""
        number = 0
        for datatype in self.key:
            number = number << TYPE_BITS | datatype.id
        return number

    @property
    def key_len(self) -> int:
        """The key's length in bytes (NFTA_SET_KEY_LEN): a concatenation's fields are padded."""
        if len(self.key) == 1:
            return self.key[0].size
        return sum(-(-t.size // NFT_REG32_SIZE) * NFT_REG32_SIZE for t in self.key)

    def declaration(self) -> str:
        """What goes between the braces of `add set`/`add map`."""
        spelled = " . ".join(t.name for t in self.key)
        if self.data is not None:
            spelled += f" : {self.data.name}"
        flags = f" flags {', '.join(self.flags)};" if self.flags else ""
        return f"type {spelled};{flags}"

    def key_text(self, element: Element) -> str:
        """The element's key as a script spells it: "ipv4 . tcp . 8080"."""
        if len(element.key) != len(self.key):
            raise ValueError(
                f"{self.kind} '{self.name}' has keys of {len(self.key)} fields,"
                f" not {len(element.key)}: {element.key!r}"
            )
        return " . ".join(t.format(v) for t, v in zip(self.key, element.key, strict=True))

    def element_text(self, element: Element) -> str:
        """The element as `add element` spells it: "ipv4 . tcp . 8080 : jump hp_1a2b"."""
        if (self.data is None) != (element.data is None):
            wants = "no data" if self.data is None else f"a {self.data.name}"
            raise ValueError(f"an element of {self.kind} '{self.name}' has {wants}: {element!r}")
        if self.data is None:
            return self.key_text(element)
        return f"{self.key_text(element)} : {self.data.format(element.data)}"

    def parse_key(self, data: bytes) -> tuple[Any, ...]:
        """A key from the kernel's bytes; ValueError if their length is not this set's."""
        if len(data) != self.key_len:
            raise ValueError(
                f"{self.kind} '{self.name}' holds keys of {len(data)} bytes, not {self.key_len}:"
                f" it was declared with another type than {self.declaration()}"
            )
        if len(self.key) == 1:
            return (self.key[0].parse(data),)
        values, offset = [], 0
        for datatype in self.key:
            values.append(datatype.parse(data[offset : offset + datatype.size]))
            offset += -(-datatype.size // NFT_REG32_SIZE) * NFT_REG32_SIZE
        return tuple(values)


class Element(Record):
    """One element of a set (`key` only) or a map (`key` and `data`): the key's fields as
    Python values, in the order of the set's key datatypes. Hashable."""

    __slots__ = ("data", "key")
    key: tuple[Any, ...]
    data: Any

    def __init__(self, *key: Any, data: Any = None) -> None:
        self._init(key=key, data=data)


class Chain(Record):
    """A chain as the kernel holds it: `comment` is "" when it has none."""

    __slots__ = ("comment", "handle", "name", "table")
    table: str
    name: str
    handle: int
    comment: str

    def __init__(self, table: str, name: str, handle: int, comment: str) -> None:
        self._init(table=table, name=name, handle=handle, comment=comment)

    @property
    def owner(self) -> Owner | None:
        """The attachment its comment names, if it names one."""
        return Owner.parse(self.comment)


class Owner(Record):
    """The attachment an object (a pod's chain) belongs to, as its comment says it:
    "<network> <containerID>/<ifname>" (the spec allows no space in a network name or container
    ID, and no '/' in an interface name)."""

    __slots__ = ("container_id", "ifname", "network")
    network: str
    container_id: str
    ifname: str

    def __init__(self, network: str, container_id: str, ifname: str) -> None:
        self._init(network=network, container_id=container_id, ifname=ifname)

    def __str__(self) -> str:
        return f"{self.network} {self.container_id}/{self.ifname}"

    @classmethod
    def parse(cls, comment: str | None) -> Owner | None:
        network, space, attachment = (comment or "").partition(" ")
        container_id, slash, ifname = attachment.rpartition("/")
        if not (space and slash and container_id):
            return None
        return cls(network, container_id, ifname)


class RuleNote(Record):
    """A rule as far as pycni reads rules back: its chain, handle and comment ("" if none)."""

    __slots__ = ("chain", "comment", "handle")
    chain: str
    handle: int
    comment: str

    def __init__(self, chain: str, handle: int, comment: str) -> None:
        self._init(chain=chain, handle=handle, comment=comment)


class SetInfo(Record):
    """A named set or map as the kernel declares it: its key type and length as numbers (see
    SetSpec.key_type, key_len), whether it has data (a map)."""

    __slots__ = ("flags", "is_map", "key_len", "key_type", "name")
    name: str
    key_type: int
    key_len: int
    flags: int
    is_map: bool

    def __init__(self, name: str, key_type: int, key_len: int, flags: int, is_map: bool) -> None:
        self._init(name=name, key_type=key_type, key_len=key_len, flags=flags, is_map=is_map)

    def declared_as(self, spec: SetSpec) -> bool:
        """Whether the kernel's set has the key `spec` declares (and is a map iff it is)."""
        return (
            self.key_type == spec.key_type
            and self.key_len == spec.key_len
            and self.is_map == (spec.data is not None)
        )


def fingerprint(text: str) -> str:
    """16 hex digits of SHA-256: what a chain's comment holds to say which rules it has."""
    import _sha256

    digest: str = _sha256.sha256(text.encode()).hexdigest()
    return digest[:16]


# --- writing: a script, run as one transaction -------------------------------------------------


class Script:
    """One transaction for `nft -f -`, in one table, built by the calls below (each returns
    the script, so they chain). Every statement is one line, in the order of the calls."""

    __slots__ = ("_lines", "table")

    def __init__(self, table: Table) -> None:
        self.table = table
        self._lines: list[str] = []

    def __str__(self) -> str:
        return "".join(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def copy(self) -> Script:
        script = Script(self.table)
        script._lines = list(self._lines)
        return script

    def extend(self, other: Script) -> Script:
        """Append another script's statements (of its own table)."""
        self._lines += other._lines
        return self

    def add_table(self) -> Script:
        return self._add(f"add table {self.table}")

    def delete_table(self) -> Script:
        """Fails the transaction if the table does not exist: add it first when it may not."""
        return self._add(f"delete table {self.table}")

    def add_chain(self, name: str, *, hook: str = "", comment: str | None = None) -> Script:
        """A regular chain, or with `hook` ("type nat hook postrouting priority srcnat") a base
        chain with policy accept. Adding a chain that exists changes nothing."""
        parts = [hook, "policy accept"] if hook else []
        if comment is not None:
            parts.append(f'comment "{_comment(comment)}"')
        body = f" {{ {'; '.join(parts)}; }}" if parts else ""
        return self._add(f"add chain {self.table} {_name(name)}{body}")

    def recreate_chain(self, name: str, *, hook: str = "", comment: str | None = None) -> Script:
        """The chain, empty and made anew (not only flushed, so that its hook and comment can
        change): add, flush, delete, add. Follow with its rules."""
        self.add_chain(name).flush_chain(name).delete_chain(name)
        return self.add_chain(name, hook=hook, comment=comment)

    def flush_chain(self, name: str) -> Script:
        return self._add(f"flush chain {self.table} {_name(name)}")

    def delete_chain(self, name: str) -> Script:
        """Fails the transaction if the chain does not exist or is not empty: add and flush it
        first when it may be gone already."""
        return self._add(f"delete chain {self.table} {_name(name)}")

    def add_rule(self, chain: str, rule: str) -> Script:
        """A rule in nft's syntax ("ip saddr 10.0.0.0/8 masquerade"), appended to `chain`."""
        if "\n" in rule or ";" in rule:
            raise ValueError(f"a rule is one statement, not {rule!r}")
        return self._add(f"add rule {self.table} {_name(chain)} {rule}")

    def delete_set(self, name: str) -> Script:
        """Fails the transaction if the set does not exist or a rule still uses it."""
        return self._add(f"delete set {self.table} {_name(name)}")

    def add_set(self, spec: SetSpec) -> Script:
        """The set or map, if it is not there (one that is, with another type, fails)."""
        return self._add(f"add {spec.kind} {self.table} {spec.name} {{ {spec.declaration()} }}")

    def add_elements(self, spec: SetSpec, elements: Iterable[Element]) -> Script:
        """One statement per element. Adding one that is there with the same data changes
        nothing; a map's key that is there with other data fails the transaction (EEXIST)."""
        for element in elements:
            self._add(f"add element {self.table} {spec.name} {{ {spec.element_text(element)} }}")
        return self

    def delete_elements(self, spec: SetSpec, elements: Iterable[Element]) -> Script:
        """One statement per element (its key). Fails the transaction for a key not there."""
        for element in elements:
            self._add(f"delete element {self.table} {spec.name} {{ {spec.key_text(element)} }}")
        return self

    def remove_elements(self, spec: SetSpec, elements: Iterable[Element]) -> Script:
        """Delete the elements whether or not they are there: each is added, then deleted. One
        whose key another owner holds by now (a map key with other data) fails the transaction
        with EEXIST: build the script again without it (`commit`)."""
        elements = list(elements)
        return self.add_elements(spec, elements).delete_elements(spec, elements)

    def _add(self, statement: str) -> Script:
        self._lines.append(statement + "\n")
        return self


def nft_path() -> str | None:
    """The nft executable, or None when nftables is not installed."""
    import os

    return next((p for p in NFT_CANDIDATES if os.access(p, os.X_OK)), None)


def run(script: Script, doing: str, *, remedy: str = "", check: bool = False) -> None:
    """Apply `script` in one transaction; a refusal raises CniError (KERNEL) "failed to
    <doing>: nft: <nft's message>" with the script as details. `remedy` is the details when
    nft is not installed at all. With `check`, the kernel validates the transaction and
    applies nothing (`nft -c`): whether it would be refused, and why."""
    args = ["-c", "-f", "-"] if check else ["-f", "-"]
    status, message = _nft(args, str(script).encode(), doing, remedy)
    if status != 0:
        raise _refused(doing, message, script)


def commit(
    build: Callable[[], Script | None],
    doing: str,
    *,
    attempts: int,
    on_conflict: Callable[[], None] | None = None,
) -> None:
    """Run the script `build` makes from what the kernel holds now, until one is applied: when
    nft refuses it because a key it adds then deletes is held by another owner by now (EEXIST),
    `on_conflict` runs (it may raise a better error, or note what changed hands) and `build`
    makes the script again, `attempts` times at most. Any other refusal raises at once, as
    `run`. `build` returns None (or an empty script) when there is nothing to do."""
    message, script = "", None
    for _attempt in range(attempts):
        script = build()
        if not script:
            return
        status, message = _nft(["-f", "-"], str(script).encode(), doing, "")
        if status == 0:
            return
        if RACE not in message:
            break
        if on_conflict is not None:
            on_conflict()
    raise _refused(doing, message, script)


def list_chain(table: Table, name: str, doing: str) -> str | None:
    """The chain's rules as nft prints them (`nft list chain`), or None when there is no such
    chain: the one read that starts nft, for rules (their expressions are not decoded here)."""
    status, listing = _nft(["list", "chain", table.family, table.name, _name(name)], b"", doing)
    return listing if status == 0 else None


def _nft(args: list[str], stdin: bytes, doing: str, remedy: str = "") -> tuple[int, str]:
    from pycni.cni import spawn

    nft = nft_path()
    if nft is None:
        raise CniError(
            Code.KERNEL,
            f"failed to {doing}: nft (nftables) is not installed in {', '.join(NFT_CANDIDATES)}",
            remedy,
        )
    status, out = spawn.run([nft, *args], NFT_ENV, stdin, stderr_to_stdout=True)
    return status, out.decode(errors="replace")


def _refused(doing: str, message: str, script: Script | None) -> CniError:
    return CniError(Code.KERNEL, f"failed to {doing}: nft: {message.strip()}", str(script or ""))


# --- reading: the ruleset over nfnetlink -------------------------------------------------------


class Ruleset:
    """What the kernel holds, read over one nfnetlink socket in the current network namespace
    (or `netns`: a path or an open namespace fd). No nft is started. Use it in a `with` block.

    Errors: an object that is not there is None; any other refusal raises NetlinkError."""

    def __init__(self, netns: str | int | None = None) -> None:
        self._socket = _nfnetlink(netns)

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def chain(self, table: Table, name: str) -> Chain | None:
        """The chain, or None when the table or the chain does not exist."""
        import errno

        from pycni.netlink.errors import NetlinkNotFound

        body = _nfgenmsg(table) + _attrs(
            (NFTA_CHAIN_TABLE, _nul(table.name)), (NFTA_CHAIN_NAME, _nul(name))
        )
        what = f"get chain '{name}' of table {table}"
        try:
            found = self._socket._request(
                _message_type(NFT_MSG_GETCHAIN), 0, body, what, frozenset({errno.ENOENT}), _chain
            )
        except NetlinkNotFound:
            return None
        return found[0] if found else None

    def chains(self, table: Table) -> list[Chain]:
        """The chains of the table (none when there is no such table)."""
        body = _nfgenmsg(table) + _attrs((NFTA_CHAIN_TABLE, _nul(table.name)))
        what = f"list the chains of table {table}"
        found = self._dump(NFT_MSG_GETCHAIN, body, what, _chain)
        return [c for c in found or () if c.table == table.name]

    def rules(self, table: Table, chain: str | None = None) -> list[RuleNote]:
        """Every rule of the table, or of one of its chains (the kernel filters the dump):
        chain, handle, comment (expressions are not decoded)."""
        attrs = [(NFTA_RULE_TABLE, _nul(table.name))]
        if chain is not None:
            attrs.append((NFTA_RULE_CHAIN, _nul(chain)))
        body = _nfgenmsg(table) + _attrs(*attrs)
        found = self._dump(NFT_MSG_GETRULE, body, f"list the rules of table {table}", _rule)
        return [r for r in found or () if r is not None]

    def sets(self, table: Table) -> list[SetInfo]:
        """The named sets and maps of the table (anonymous ones, which rules own, left out)."""
        body = _nfgenmsg(table) + _attrs((NFTA_SET_TABLE, _nul(table.name)))
        found = self._dump(NFT_MSG_GETSET, body, f"list the sets of table {table}", _set_info)
        return [s for s in found or () if s is not None]

    def elements(self, table: Table, spec: SetSpec) -> list[Element] | None:
        """The elements of the set or map `spec` names, decoded by its declared types, or None
        when there is no such set (or table). ValueError when the kernel's keys do not have
        the length `spec`'s type gives them."""
        if "interval" in spec.flags:
            raise ValueError(f"reading interval set '{spec.name}' back is not supported")
        body = _nfgenmsg(table) + _attrs(
            (NFTA_SET_ELEM_LIST_TABLE, _nul(table.name)), (NFTA_SET_ELEM_LIST_SET, _nul(spec.name))
        )
        what = f"list the elements of {spec.kind} '{spec.name}' in table {table}"

        def parse(payload: memoryview) -> list[Element] | None:
            return _elements(payload, spec)

        found = self._dump(NFT_MSG_GETSETELEM, body, what, parse)
        return None if found is None else [e for batch in found for e in batch]

    def _dump(
        self, message: int, body: bytes, what: str, parse: Callable[[memoryview], Any]
    ) -> list[Any] | None:
        """A dump; None when the kernel answers ENOENT (no such table or set)."""
        import errno

        from pycni.netlink.errors import NetlinkError

        try:
            return self._socket._dump(_message_type(message), body, what, parse)
        except NetlinkError as err:
            if err.errno == errno.ENOENT:
                return None
            raise


def chain_comment(table: Table, name: str, *, netns: str | int | None = None) -> str | None:
    """The comment of the chain ("" when it has none), or None when there is no such chain or
    no answer: the caller then writes the chain, and nft says what is wrong if anything is."""
    from pycni.netlink.errors import NetlinkError

    try:
        with Ruleset(netns) as ruleset:
            found = ruleset.chain(table, name)
    except (NetlinkError, OSError):
        return None
    return None if found is None else found.comment


_SOCKET_CLASS: dict[int, type[NetlinkSocket]] = {}


def _nfnetlink(netns: str | int | None) -> NetlinkSocket:
    """A NETLINK_NETFILTER socket on the exchange every pycni netlink protocol shares; its
    class is made the first time, so that importing this module does not load the exchange."""
    if NETLINK_NETFILTER not in _SOCKET_CLASS:
        from pycni.netlink.socket import NetlinkSocket

        class Nfnetlink(NetlinkSocket):
            PROTOCOL = NETLINK_NETFILTER

        _SOCKET_CLASS[NETLINK_NETFILTER] = Nfnetlink
    return _SOCKET_CLASS[NETLINK_NETFILTER](netns)


def _message_type(message: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | message


def _nfgenmsg(table: Table) -> bytes:
    """struct nfgenmsg: family, version, res_id (__be16, 0)."""
    return bytes((NFPROTO[table.family], NFNETLINK_V0, 0, 0))


def _nul(text: str) -> bytes:
    return text.encode() + b"\0"


def _attrs(*attrs: tuple[int, bytes]) -> bytes:
    from pycni.netlink.wire import pack_attr

    return b"".join(pack_attr(kind, value) for kind, value in attrs)


def _string(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode(errors="replace")


def _chain(payload: memoryview) -> Chain | None:
    """A NFT_MSG_NEWCHAIN answer."""
    from pycni.netlink.wire import iter_attrs

    table = name = comment = ""
    handle = 0
    for kind, value in iter_attrs(payload[4:]):
        if kind == NFTA_CHAIN_TABLE:
            table = _string(value)
        elif kind == NFTA_CHAIN_NAME:
            name = _string(value)
        elif kind == NFTA_CHAIN_HANDLE:
            handle = int.from_bytes(value, "big")
        elif kind == NFTA_CHAIN_USERDATA:
            comment = udata_comment(bytes(value)) or ""
    return Chain(table, name, handle, comment) if name else None


def _rule(payload: memoryview) -> RuleNote | None:
    """A NFT_MSG_NEWRULE answer: chain, handle, comment."""
    from pycni.netlink.wire import iter_attrs

    chain, handle, comment = "", 0, ""
    for kind, value in iter_attrs(payload[4:]):
        if kind == NFTA_RULE_CHAIN:
            chain = _string(value)
        elif kind == NFTA_RULE_HANDLE:
            handle = int.from_bytes(value, "big")
        elif kind == NFTA_RULE_USERDATA:
            comment = udata_comment(bytes(value)) or ""
    return RuleNote(chain, handle, comment) if chain else None


def _set_info(payload: memoryview) -> SetInfo | None:
    """A NFT_MSG_NEWSET answer; None for an anonymous set."""
    from pycni.netlink.wire import iter_attrs

    name, flags, key_type, key_len, is_map = "", 0, 0, 0, False
    for kind, value in iter_attrs(payload[4:]):
        if kind == NFTA_SET_NAME:
            name = _string(value)
        elif kind == NFTA_SET_FLAGS:
            flags = int.from_bytes(value, "big")
        elif kind == NFTA_SET_KEY_TYPE:
            key_type = int.from_bytes(value, "big")
        elif kind == NFTA_SET_KEY_LEN:
            key_len = int.from_bytes(value, "big")
        elif kind == NFTA_SET_DATA_TYPE:
            is_map = True
    if not name or flags & NFT_SET_ANONYMOUS:
        return None
    return SetInfo(name, key_type, key_len, flags, is_map)


def udata_comment(udata: bytes) -> str | None:
    """The comment in libnftnl's userdata (type u8, length u8, value; repeated), or None."""
    offset = 0
    while offset + 2 <= len(udata):
        kind, length = udata[offset], udata[offset + 1]
        value = udata[offset + 2 : offset + 2 + length]
        if kind == NFTNL_UDATA_COMMENT:
            return value.rstrip(b"\0").decode(errors="replace")
        offset += 2 + length
    return None


def _elements(payload: memoryview, spec: SetSpec) -> list[Element]:
    """The elements of one NFT_MSG_NEWSETELEM answer (a catch-all element has no key: skipped)."""
    from pycni.netlink.wire import iter_attrs

    found = []
    for kind, elements in iter_attrs(payload[4:]):
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS:
            continue
        for item, element in iter_attrs(elements):
            if item != NFTA_LIST_ELEM:
                continue
            attrs = dict(iter_attrs(element))
            flags = int.from_bytes(attrs.get(NFTA_SET_ELEM_FLAGS, b""), "big")
            if flags & NFT_SET_ELEM_CATCHALL or NFTA_SET_ELEM_KEY not in attrs:
                continue
            key = dict(iter_attrs(attrs[NFTA_SET_ELEM_KEY])).get(NFTA_DATA_VALUE, b"")
            data = None
            if spec.data is not None and NFTA_SET_ELEM_DATA in attrs:
                data = _data(attrs[NFTA_SET_ELEM_DATA], spec.data)
            found.append(Element(*spec.parse_key(bytes(key)), data=data))
    return found


def _data(payload: memoryview, datatype: Datatype) -> Any:
    """A map element's data (NFTA_DATA_*): a Verdict, or a value of `datatype`."""
    from pycni.netlink.wire import iter_attrs

    attrs = dict(iter_attrs(payload))
    if NFTA_DATA_VERDICT in attrs:
        verdict = dict(iter_attrs(attrs[NFTA_DATA_VERDICT]))
        code = int.from_bytes(verdict.get(NFTA_VERDICT_CODE, b""), "big", signed=True)
        chain = verdict.get(NFTA_VERDICT_CHAIN)
        return Verdict(_VERDICTS[code], None if chain is None else _string(chain))
    return datatype.parse(bytes(attrs.get(NFTA_DATA_VALUE, b"")))
