"""The netlink wire format: message framing and attribute codecs, with no rtnetlink knowledge.

From linux/netlink.h:
- a message is `struct nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid}` and its
  payload, the whole padded to 4 bytes (NLMSG_ALIGN);
- an attribute is `struct nlattr {u16 len; u16 type}` and its payload, padded to 4 (NLA_ALIGN);
  the two top bits of the type are flags (NLA_F_NESTED, NLA_F_NET_BYTEORDER).

An attribute space (one enum of a kernel header, e.g. IFLA_* in linux/if_link.h) is an `Attrs`
table: our field name -> (attribute type, codec). Encoding walks a dict of values through the
table (None means "leave it out"); decoding walks the attributes through the reverse table and
skips the types it does not know, so a newer kernel's extra attributes are harmless. Integers are
in host byte order unless the header says `__be16`/`__be32` (BE16, BE32).
"""

from __future__ import annotations

import struct

from pycni.cni.ip import IP

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")  # len, type
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF


def align(length: int) -> int:
    return (length + 3) & ~3


def pack_message(msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One request; nlmsg_pid 0 lets the kernel fill in our port id."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, 0) + payload


def iter_messages(data: memoryview) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """(type, flags, seq, pid, payload) for each message of one received datagram."""
    offset, end = 0, len(data)
    while offset + NLMSG_HDR.size <= end:
        length, msg_type, flags, seq, pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size or offset + length > end:
            raise ValueError(f"malformed netlink message: length {length} at offset {offset}")
        yield msg_type, flags, seq, pid, data[offset + NLMSG_HDR.size : offset + length]
        offset += align(length)


def pack_attr(attr_type: int, payload: bytes) -> bytes:
    length = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(length, attr_type) + payload + b"\0" * (align(length) - length)


def iter_attrs(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(type without flag bits, payload) for each attribute; stops at a truncated one."""
    offset, end = 0, len(data)
    while offset + NLA_HDR.size <= end:
        length, attr_type = NLA_HDR.unpack_from(data, offset)
        if length < NLA_HDR.size or offset + length > end:
            return
        yield attr_type & NLA_TYPE_MASK, data[offset + NLA_HDR.size : offset + length]
        offset += align(length)


# --- codecs: one attribute payload <-> one Python value -------------------------------------


class Codec:
    """How one attribute's payload maps to a Python value. `nested` payloads are attribute
    lists themselves (sent with NLA_F_NESTED)."""

    __slots__ = ()
    nested = False

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: memoryview) -> Any:
        raise NotImplementedError


class Int(Codec):
    """A fixed-size integer, given as a `struct` format ("=I" u32, ">H" __be16, ...)."""

    __slots__ = ("_struct",)

    def __init__(self, fmt: str) -> None:
        self._struct = struct.Struct(fmt)

    def encode(self, value: Any) -> bytes:
        return self._struct.pack(value)

    def decode(self, data: memoryview) -> Any:
        return self._struct.unpack_from(data)[0]


class Bool8(Codec):
    """A u8 used as a boolean (IFLA_VXLAN_LEARNING, IFLA_BRPORT_MODE, ...)."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return b"\1" if value else b"\0"

    def decode(self, data: memoryview) -> Any:
        return bool(data[0]) if len(data) else False


class Flag(Codec):
    """An attribute whose presence is the value (NLA_FLAG): sent only when true."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return b""

    def decode(self, data: memoryview) -> Any:
        return True


class String(Codec):
    """A NUL-terminated string (NLA_NUL_STRING / NLA_STRING); bytes that are not UTF-8 come
    back as surrogate escapes, so a name read can be sent back unchanged."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return str(value).encode("utf-8", "surrogateescape") + b"\0"

    def decode(self, data: memoryview) -> Any:
        return bytes(data).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class HwAddr(Codec):
    """A link-layer address as "aa:bb:cc:dd:ee:ff" (any length: tunnels carry 4 or 16 bytes)."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        text = str(value)
        parts = text.split(":")
        if not all(len(p) == 2 for p in parts):
            raise ValueError(f"'{text}' is not a link-layer address like 02:42:ac:11:00:02")
        return bytes.fromhex("".join(parts))

    def decode(self, data: memoryview) -> Any:
        return ":".join(f"{b:02x}" for b in bytes(data))


class Address(Codec):
    """An IPv4 (4 bytes) or IPv6 (16 bytes) address as a pycni.cni.ip.IP, network byte order."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, IP):
            raise ValueError(f"expected a pycni.cni.ip.IP, got {value!r}")
        return value.packed

    def decode(self, data: memoryview) -> Any:
        if len(data) not in (4, 16):
            raise ValueError(f"an IP address has 4 or 16 bytes, not {len(data)}")
        return IP(int.from_bytes(data, "big"), 4 if len(data) == 4 else 6)


class Raw(Codec):
    """Bytes as they are (structs nothing here needs to look into)."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return bytes(value)

    def decode(self, data: memoryview) -> Any:
        return bytes(data)


class NestedRaw(Raw):
    """An attribute list as bytes, already encoded (or left for a table chosen by a sibling
    attribute, as TCA_OPTIONS by TCA_KIND); sent with NLA_F_NESTED."""

    __slots__ = ()
    nested = True


class Nested(Codec):
    """A list of attributes of another space, as a dict."""

    __slots__ = ("attrs",)
    nested = True

    def __init__(self, attrs: Attrs) -> None:
        self.attrs = attrs

    def encode(self, value: Any) -> bytes:
        return self.attrs.encode(value)

    def decode(self, data: memoryview) -> Any:
        return self.attrs.decode(data)


U8 = Int("=B")
U16 = Int("=H")
U32 = Int("=I")
S32 = Int("=i")
U64 = Int("=Q")
BE16 = Int(">H")
BE32 = Int(">I")
BOOL8 = Bool8()
FLAG = Flag()
STRING = String()
HWADDR = HwAddr()
ADDRESS = Address()
RAW = Raw()
NESTED_RAW = NestedRaw()


class Attrs:
    """One attribute space: field name -> (attribute type, codec), and back."""

    __slots__ = ("_by_name", "_by_type", "space")

    def __init__(self, space: str, fields: Mapping[str, tuple[int, Codec]]) -> None:
        self.space = space
        self._by_name: dict[str, tuple[int, Codec]] = dict(fields)
        self._by_type = {number: (name, codec) for name, (number, codec) in fields.items()}

    def add(self, name: str, number: int, codec: Codec) -> None:
        """Add a field (for tables that refer to each other, e.g. a veth peer's IFLA_*)."""
        self._by_name[name] = (number, codec)
        self._by_type[number] = (name, codec)

    def number(self, name: str) -> int:
        return self._by_name[name][0]

    def fields(self) -> dict[str, int]:
        return {name: number for name, (number, _) in self._by_name.items()}

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The attributes for the values that are not None (nor False, for flags)."""
        out = []
        for name, value in values.items():
            if value is None:
                continue
            try:
                number, codec = self._by_name[name]
            except KeyError:
                raise ValueError(f"{self.space} has no attribute '{name}'") from None
            if codec is FLAG and not value:
                continue
            try:
                payload = codec.encode(value)
            except (ValueError, TypeError, OverflowError, struct.error) as err:
                raise ValueError(
                    f"cannot encode {self.space} '{name}' = {value!r}: {err}"
                ) from None
            out.append(pack_attr(number | NLA_F_NESTED if codec.nested else number, payload))
        return b"".join(out)

    def decode(self, data: memoryview) -> dict[str, Any]:
        """The known attributes as {name: value}; unknown types are skipped."""
        values: dict[str, Any] = {}
        by_type = self._by_type
        for number, payload in iter_attrs(data):
            field = by_type.get(number)
            if field is not None:
                values[field[0]] = field[1].decode(payload)
        return values
