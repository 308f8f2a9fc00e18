"""IP addresses and prefixes as integers, for the per-call path.

The standard library's `ipaddress` costs ~4 ms of a frozen plugin's start-up (it pulls
`functools` and `collections`); what a CNI plugin needs from it is small: parse, format the way
Go's net.IP.String() does (RFC 5952, so lease file names match the reference host-local's),
compare, add, mask. `_socket.inet_pton` parses; IPv4 is formatted by `inet_ntop`, IPv6 here.
tests/cni/test_ip.py cross-checks every operation against `ipaddress`.
"""

from __future__ import annotations

import _socket

_FAMILY = {4: _socket.AF_INET, 6: _socket.AF_INET6}
_BITS = {4: 32, 6: 128}


class IP:
    """One IPv4 or IPv6 address. Immutable, hashable, ordered within a family."""

    __slots__ = ("value", "version")
    value: int
    version: int

    def __init__(self, value: int, version: int) -> None:
        if version not in _BITS:
            raise ValueError(f"IP version must be 4 or 6, not {version}")
        if not 0 <= value < (1 << _BITS[version]):
            raise ValueError(f"{value} is out of range for IPv{version}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "version", version)

    @classmethod
    def parse(cls, text: object) -> IP:
        """Parse a dotted-quad IPv4 or an RFC 4291 IPv6 address (no zone, no prefix)."""
        if not isinstance(text, str):
            raise ValueError(f"an IP address must be a string, not {type(text).__name__}")
        version = 6 if ":" in text else 4
        try:
            packed = _socket.inet_pton(_FAMILY[version], text)
        except (OSError, ValueError):
            raise ValueError(f"'{text}' is not a valid IP address") from None
        return cls(int.from_bytes(packed, "big"), version)

    @property
    def bits(self) -> int:
        return _BITS[self.version]

    @property
    def packed(self) -> bytes:
        return self.value.to_bytes(self.bits // 8, "big")

    def __str__(self) -> str:
        if self.version == 4:
            return str(_socket.inet_ntop(_socket.AF_INET, self.packed))
        return _format_v6(self.value)

    def __repr__(self) -> str:
        return f"IP('{self}')"

    def __add__(self, offset: int) -> IP:
        return IP(self.value + offset, self.version)

    def __sub__(self, offset: int) -> IP:
        return IP(self.value - offset, self.version)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IP) and (self.value, self.version) == (other.value, other.version)

    def __lt__(self, other: IP) -> bool:
        return (self.version, self.value) < (other.version, other.value)

    def __le__(self, other: IP) -> bool:
        return (self.version, self.value) <= (other.version, other.value)

    def __hash__(self) -> int:
        return hash((self.value, self.version))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("IP is immutable")


def _format_v6(value: int) -> str:
    """RFC 5952 text, all hex (glibc's inet_ntop prints ::a.b.c.d in dotted form; Go and
    `ipaddress` do not, and lease file names must match what the reference plugin writes)."""
    groups = [(value >> shift) & 0xFFFF for shift in range(112, -1, -16)]
    best_start, best_len, start = -1, 1, -1
    for n, group in enumerate([*groups, 1]):
        if group == 0 and start < 0:
            start = n
        elif group != 0 and start >= 0:
            if n - start > best_len:
                best_start, best_len = start, n - start
            start = -1
    hexes = [f"{g:x}" for g in groups]
    if best_start < 0:
        return ":".join(hexes)
    head = ":".join(hexes[:best_start])
    tail = ":".join(hexes[best_start + best_len :])
    return f"{head}::{tail}"


class Prefix:
    """An address with a prefix length, as in "10.1.0.5/24" (host bits allowed; see `network`)."""

    __slots__ = ("ip", "length")
    ip: IP
    length: int

    def __init__(self, ip: IP, length: int) -> None:
        if not 0 <= length <= ip.bits:
            raise ValueError(f"prefix length {length} is out of range for IPv{ip.version}")
        object.__setattr__(self, "ip", ip)
        object.__setattr__(self, "length", length)

    @classmethod
    def parse(cls, text: object) -> Prefix:
        if not isinstance(text, str):
            raise ValueError(f"a CIDR must be a string, not {type(text).__name__}")
        addr, sep, length = text.partition("/")
        if not sep:
            raise ValueError(f"'{text}' is not in CIDR notation (address/length)")
        ip = IP.parse(addr)
        if not (length.isdigit() and length.isascii() and len(length) <= 3):
            raise ValueError(f"'{text}' has an invalid prefix length")
        if int(length) > ip.bits:
            raise ValueError(f"'{text}': prefix length exceeds {ip.bits} for IPv{ip.version}")
        return cls(ip, int(length))

    @property
    def version(self) -> int:
        return self.ip.version

    @property
    def mask(self) -> int:
        bits = self.ip.bits
        return ((1 << bits) - 1) ^ ((1 << (bits - self.length)) - 1)

    @property
    def network(self) -> IP:
        return IP(self.ip.value & self.mask, self.ip.version)

    @property
    def last(self) -> IP:
        """The highest address of the prefix (the IPv4 broadcast address)."""
        return IP(self.network.value | ((1 << (self.ip.bits - self.length)) - 1), self.version)

    @property
    def size(self) -> int:
        return 1 << (self.ip.bits - self.length)

    def has_host_bits(self) -> bool:
        return self.ip != self.network

    def masked(self) -> Prefix:
        return Prefix(self.network, self.length)

    def contains(self, ip: IP) -> bool:
        return ip.version == self.version and (ip.value & self.mask) == self.network.value

    def overlaps(self, other: Prefix) -> bool:
        return self.version == other.version and (
            self.contains(other.network) or other.contains(self.network)
        )

    def with_ip(self, ip: IP) -> Prefix:
        return Prefix(ip, self.length)

    def __str__(self) -> str:
        return f"{self.ip}/{self.length}"

    def __repr__(self) -> str:
        return f"Prefix('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prefix) and (self.ip, self.length) == (other.ip, other.length)

    def __hash__(self) -> int:
        return hash((self.ip, self.length))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Prefix is immutable")
