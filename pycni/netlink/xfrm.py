"""`Xfrm`: the kernel's IPsec tables over NETLINK_XFRM (linux/xfrm.h), as much as pycni's
encryption of its tunnel packets needs: ESP security associations (SAs) in transport mode with
one AEAD, and the security policies (SPs) that send a node pair's tunnel packets through them.

The AEAD is rfc4106(gcm(aes)) with a 128-bit key and the 4-byte salt after it (20 key bytes) and
a 16-byte ICV: the standard ESP AEAD (RFC 4106), fast wherever the CPU has AES instructions
(every x86-64 and arm64 server), and present as modules (gcm, ghash, aes) in the kernel lane's
UML kernel. Its ESP overhead on a transport-mode packet is at most ESP_MAX_OVERHEAD bytes.

Ownership: every SA and every policy template pycni makes carries OWNER_REQID, and every policy
it makes has priority OWNER_PRIORITY. `flush_owned` (and pycni.datapath.ipsec) touch only what
carries both marks, so IPsec state someone else made on the node (an IKE daemon's) is left alone.

The messages are fixed C structs, not attribute lists, so they are packed here with explicit
padding for the LP64 ABIs (x86-64, arm64), where a __u64 is 8-byte aligned. (32-bit x86
userspace on a 64-bit kernel needs the kernel's compat layer; pycni does not run there.)
"""

from __future__ import annotations

import errno
import struct

from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.netlink import kernel as k
from pycni.netlink.socket import NetlinkSocket, ignore_not_found
from pycni.netlink.wire import iter_attrs, pack_attr

NETLINK_XFRM = 6

AEAD_ALGORITHM = "rfc4106(gcm(aes))"
AEAD_KEY_BYTES = 20  # 16 key + 4 salt
AEAD_ICV_BITS = 128
ESP_IV_BYTES = 8
# ESP header 8 (SPI, sequence) + IV 8 + ICV 16 + padding to 4 bytes (at most 3) + pad length
# and next header (2): what transport mode adds to a tunnel packet, IPv4.
ESP_MAX_OVERHEAD = 8 + ESP_IV_BYTES + AEAD_ICV_BITS // 8 + 3 + 2

OWNER_REQID = 0x7079636E  # "pycn": reqid of every pycni SA and policy template
OWNER_PRIORITY = 0x7079  # priority of every pycni policy

IPPROTO_ESP = 50
DIR_IN = 0  # XFRM_POLICY_IN
DIR_OUT = 1  # XFRM_POLICY_OUT
DIR_FWD = 2
MODE_TRANSPORT = 0
POLICY_ALLOW = 0
REPLAY_WINDOW = 32  # the bitmap of a non-ESN SA holds 32 sequence numbers
XFRM_INF = (1 << 64) - 1

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A

XFRMA_TMPL = 5
XFRMA_ALG_AEAD = 18

# struct xfrm_selector (56): daddr, saddr, dport, dport_mask, sport, sport_mask (__be16), family,
# prefixlen_d, prefixlen_s, proto, 3 pad, ifindex, user
_SELECTOR = struct.Struct("=16s16s2s2s2s2sHBBB3xiI")
# struct xfrm_id (24): daddr, spi (__be32), proto, 3 pad
_ID = struct.Struct("=16s4sB3x")
# struct xfrm_lifetime_cfg (64): soft/hard byte, packet, add-expires, use-expires limits
_LIFETIME_CFG = struct.Struct("=8Q")
# struct xfrm_lifetime_cur (32): bytes, packets, add_time, use_time
_LIFETIME_CUR = struct.Struct("=4Q")
# struct xfrm_usersa_info (224): sel, id, saddr, lft, curlft, stats (12), seq, reqid, family,
# mode, replay_window, flags, 7 pad
_SA_INFO_TAIL = struct.Struct("=12xIIHBBB7x")
SA_INFO_SIZE = (
    _SELECTOR.size + _ID.size + 16 + _LIFETIME_CFG.size + _LIFETIME_CUR.size + _SA_INFO_TAIL.size
)
# struct xfrm_usersa_id (24): daddr, spi, family, proto, 1 pad
_SA_ID = struct.Struct("=16s4sHBx")
# struct xfrm_userpolicy_info (168): sel, lft, curlft, priority, index, dir, action, flags,
# share, 4 pad
_POLICY_TAIL = struct.Struct("=IIBBBB4x")
POLICY_INFO_SIZE = _SELECTOR.size + _LIFETIME_CFG.size + _LIFETIME_CUR.size + _POLICY_TAIL.size
# struct xfrm_userpolicy_id (64): sel, index, dir, 3 pad
_POLICY_ID = struct.Struct("=IB3x")
# struct xfrm_user_tmpl (64): id, family, 2 pad, saddr, reqid, mode, share, optional, 1 pad,
# aalgos, ealgos, calgos
_TMPL_TAIL = struct.Struct("=H2x16sIBBBxIII")
# struct xfrm_algo_aead: alg_name[64], alg_key_len (bits), alg_icv_len (bits), key
_AEAD = struct.Struct("=64sII")

SA_GONE = frozenset({errno.ENOENT, errno.ESRCH})
POLICY_GONE = frozenset({errno.ENOENT})

# Rekeying before the ESP sequence number (32 bits without ESN) wraps: the kernel raises a soft
# expiry (XFRM_MSG_EXPIRE) at SOFT_PACKET_LIMIT and refuses to send past HARD_PACKET_LIMIT, which
# leaves room below 2**32 so that the wrap itself is never reached.
SOFT_PACKET_LIMIT = 1 << 31
HARD_PACKET_LIMIT = (1 << 32) - (1 << 20)


class SecurityAssociation(Record):
    """One ESP SA, transport mode, between two IPv4 hosts: packets from `src` to `dst` with
    this SPI are protected with `key`. `packets` and `octets` are the kernel's counters (0 in
    a request)."""

    __slots__ = ("dst", "key", "octets", "packets", "reqid", "spi", "src")
    src: IP
    dst: IP
    spi: int
    reqid: int
    key: bytes  # AEAD_KEY_BYTES: key and salt
    packets: int
    octets: int  # bytes protected

    def __init__(
        self,
        *,
        src: IP,
        dst: IP,
        spi: int,
        key: bytes,
        reqid: int = OWNER_REQID,
        packets: int = 0,
        octets: int = 0,
    ) -> None:
        self._init(src=src, dst=dst, spi=spi, reqid=reqid, key=key, packets=packets, octets=octets)

    @property
    def owned(self) -> bool:
        return self.reqid == OWNER_REQID

    def __str__(self) -> str:
        return f"ESP SA {self.src} -> {self.dst} spi 0x{self.spi:08x}"

    def same(self, other: SecurityAssociation) -> bool:
        """The same SA as the kernel would install (counters aside)."""
        return (self.src, self.dst, self.spi, self.reqid, self.key) == (
            other.src,
            other.dst,
            other.spi,
            other.reqid,
            other.key,
        )


class SecurityPolicy(Record):
    """One policy between two IPv4 hosts for one IP protocol (and UDP destination port):
    `direction` DIR_OUT sends the packets through an ESP transport SA with `reqid`, DIR_IN lets
    in only packets that came through one. `reqid` None: a policy without a template (not one
    of pycni's). `index` is the kernel's (dumps only)."""

    __slots__ = ("direction", "dport", "dst", "index", "priority", "proto", "reqid", "src")
    direction: int
    src: IP
    dst: IP
    proto: int
    dport: int | None
    priority: int
    reqid: int | None
    index: int

    def __init__(
        self,
        *,
        direction: int,
        src: IP,
        dst: IP,
        proto: int,
        dport: int | None = None,
        priority: int = OWNER_PRIORITY,
        reqid: int | None = OWNER_REQID,
        index: int = 0,
    ) -> None:
        self._init(
            direction=direction,
            src=src,
            dst=dst,
            proto=proto,
            dport=dport,
            priority=priority,
            reqid=reqid,
            index=index,
        )

    @property
    def owned(self) -> bool:
        return self.priority == OWNER_PRIORITY and self.reqid == OWNER_REQID

    @property
    def key(self) -> tuple[int, IP, IP, int, int | None]:
        """What identifies the policy in the kernel (its selector and direction)."""
        return (self.direction, self.src, self.dst, self.proto, self.dport)

    def same(self, other: SecurityPolicy) -> bool:
        return self.key == other.key and (self.priority, self.reqid) == (
            other.priority,
            other.reqid,
        )

    def __str__(self) -> str:
        way = {DIR_IN: "in", DIR_OUT: "out", DIR_FWD: "fwd"}.get(self.direction, "?")
        port = f" dport {self.dport}" if self.dport is not None else ""
        return f"xfrm policy {way} {self.src} -> {self.dst} proto {self.proto}{port}"


def _address(ip: IP) -> bytes:
    if ip.version != 4:
        raise ValueError(f"pycni's IPsec speaks IPv4 only, not {ip}")
    return ip.packed + bytes(12)


def _ip(data: bytes, family: int) -> IP:
    if family == k.AF_INET6:
        return IP(int.from_bytes(data[:16], "big"), 6)
    return IP(int.from_bytes(data[:4], "big"), 4)


def _selector(src: IP, dst: IP, proto: int = 0, dport: int | None = None) -> bytes:
    port = (dport or 0).to_bytes(2, "big")
    mask = b"\xff\xff" if dport is not None else b"\0\0"
    return _SELECTOR.pack(
        _address(dst), _address(src), port, mask, b"\0\0", b"\0\0", k.AF_INET, 32, 32, proto, 0, 0
    )


def _pack_sa(sa: SecurityAssociation) -> bytes:
    if len(sa.key) != AEAD_KEY_BYTES:
        raise ValueError(f"{sa}: the key has {len(sa.key)} bytes, {AEAD_KEY_BYTES} expected")
    if not 0x100 <= sa.spi <= 0xFFFFFFFF:  # SPIs 1-255 are reserved (RFC 4303)
        raise ValueError(f"{sa}: SPI out of range 0x100..0xffffffff")
    limits = _LIFETIME_CFG.pack(
        XFRM_INF, XFRM_INF, SOFT_PACKET_LIMIT, HARD_PACKET_LIMIT, 0, 0, 0, 0
    )
    info = b"".join(
        (
            _selector(sa.src, sa.dst),
            _ID.pack(_address(sa.dst), sa.spi.to_bytes(4, "big"), IPPROTO_ESP),
            _address(sa.src),
            limits,
            bytes(_LIFETIME_CUR.size),
            _SA_INFO_TAIL.pack(0, sa.reqid, k.AF_INET, MODE_TRANSPORT, REPLAY_WINDOW, 0),
        )
    )
    aead = _AEAD.pack(AEAD_ALGORITHM.encode(), len(sa.key) * 8, AEAD_ICV_BITS) + sa.key
    return info + pack_attr(XFRMA_ALG_AEAD, aead)


def _sa_from_message(payload: memoryview) -> SecurityAssociation | None:
    if len(payload) < SA_INFO_SIZE:
        return None
    data = bytes(payload[:SA_INFO_SIZE])
    offset = _SELECTOR.size
    daddr, spi, proto = _ID.unpack_from(data, offset)
    offset += _ID.size
    saddr = data[offset : offset + 16]
    offset += 16 + _LIFETIME_CFG.size
    byte_count, packets, _, _ = _LIFETIME_CUR.unpack_from(data, offset)
    offset += _LIFETIME_CUR.size
    _, reqid, family, _mode, _window, _flags = _SA_INFO_TAIL.unpack_from(data, offset)
    if proto != IPPROTO_ESP or family not in (k.AF_INET, k.AF_INET6):
        return None
    key = b""
    for attr_type, value in iter_attrs(payload[SA_INFO_SIZE:]):
        if attr_type == XFRMA_ALG_AEAD and len(value) >= _AEAD.size:
            _, key_bits, _ = _AEAD.unpack_from(value)
            key = bytes(value[_AEAD.size : _AEAD.size + key_bits // 8])
    return SecurityAssociation(
        src=_ip(saddr, family),
        dst=_ip(daddr, family),
        spi=int.from_bytes(spi, "big"),
        reqid=reqid,
        key=key,
        packets=packets,
        octets=byte_count,
    )


def _pack_policy(sp: SecurityPolicy) -> bytes:
    info = b"".join(
        (
            _selector(sp.src, sp.dst, sp.proto, sp.dport),
            _LIFETIME_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0),
            bytes(_LIFETIME_CUR.size),
            _POLICY_TAIL.pack(sp.priority, 0, sp.direction, POLICY_ALLOW, 0, 0),
        )
    )
    if sp.reqid is None:
        return info
    # the template: ESP in transport mode (addresses 0: the packet's own), any algorithm
    template = _ID.pack(bytes(16), b"\0\0\0\0", IPPROTO_ESP) + _TMPL_TAIL.pack(
        k.AF_INET, bytes(16), sp.reqid, MODE_TRANSPORT, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    )
    return info + pack_attr(XFRMA_TMPL, template)


def _policy_from_message(payload: memoryview) -> SecurityPolicy | None:
    if len(payload) < POLICY_INFO_SIZE:
        return None
    data = bytes(payload[:POLICY_INFO_SIZE])
    (daddr, saddr, dport, dport_mask, _, _, family, _plen_d, _plen_s, proto, _, _) = (
        _SELECTOR.unpack_from(data)
    )
    offset = _SELECTOR.size + _LIFETIME_CFG.size + _LIFETIME_CUR.size
    priority, index, direction, _action, _flags, _share = _POLICY_TAIL.unpack_from(data, offset)
    if family not in (k.AF_INET, k.AF_INET6):
        return None
    reqid: int | None = None
    for attr_type, value in iter_attrs(payload[POLICY_INFO_SIZE:]):
        if attr_type == XFRMA_TMPL and len(value) >= _ID.size + _TMPL_TAIL.size:
            reqid = _TMPL_TAIL.unpack_from(value, _ID.size)[2]
            break
    return SecurityPolicy(
        direction=direction,
        src=_ip(saddr, family),
        dst=_ip(daddr, family),
        proto=proto,
        dport=int.from_bytes(dport, "big") if dport_mask != b"\0\0" else None,
        priority=priority,
        reqid=reqid,
        index=index,
    )


class Xfrm(NetlinkSocket):
    """An xfrm netlink socket in the current network namespace (or `netns`; see
    NetlinkSocket). Needs CAP_NET_ADMIN; the kernel needs xfrm_user (and esp4 for SAs)."""

    PROTOCOL = NETLINK_XFRM

    def add_sa(self, sa: SecurityAssociation, *, update: bool = False) -> None:
        """Install `sa` (ESP, transport, the AEAD above). Without `update` an SA with the same
        destination and SPI raises NetlinkExists; with it, that SA's lifetimes are updated,
        but the kernel keeps its algorithm and key: a new key needs a new SPI."""
        msg_type = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        self._request(msg_type, 0, _pack_sa(sa), f"add {sa}")

    def delete_sa(self, dst: IP, spi: int, *, missing_ok: bool = True) -> None:
        body = _SA_ID.pack(_address(dst), spi.to_bytes(4, "big"), k.AF_INET, IPPROTO_ESP)
        with ignore_not_found(missing_ok):
            what = f"delete ESP SA to {dst} spi 0x{spi:08x}"
            self._request(XFRM_MSG_DELSA, 0, body, what, SA_GONE)

    def sas(self) -> list[SecurityAssociation]:
        """Every ESP SA of the namespace (pycni's: `.owned`)."""
        body = bytes(_SA_ID.size)
        return self._dump(XFRM_MSG_GETSA, body, "list xfrm states", _sa_from_message)

    def add_sp(self, sp: SecurityPolicy, *, update: bool = False) -> None:
        msg_type = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        self._request(msg_type, 0, _pack_policy(sp), f"add {sp}")

    def delete_sp(self, sp: SecurityPolicy, *, missing_ok: bool = True) -> None:
        """Delete the policy with `sp`'s selector and direction."""
        body = _selector(sp.src, sp.dst, sp.proto, sp.dport) + _POLICY_ID.pack(0, sp.direction)
        with ignore_not_found(missing_ok):
            self._request(XFRM_MSG_DELPOLICY, 0, body, f"delete {sp}", POLICY_GONE)

    def sps(self) -> list[SecurityPolicy]:
        """Every policy of the namespace (main type; pycni's: `.owned`)."""
        body = bytes(_SELECTOR.size + _POLICY_ID.size)
        return self._dump(XFRM_MSG_GETPOLICY, body, "list xfrm policies", _policy_from_message)

    def flush_owned(self) -> int:
        """Delete every policy and SA that is pycni's (policies first: no SA is ever needed by
        a policy that stays); how many were deleted."""
        count = 0
        for sp in self.sps():
            if sp.owned:
                self.delete_sp(sp)
                count += 1
        for sa in self.sas():
            if sa.owned:
                self.delete_sa(sa.dst, sa.spi)
                count += 1
        return count
