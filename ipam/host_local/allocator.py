"""Address allocation for host-local: pure logic over a `LeaseStore`.

Semantics follow the reference host-local so a node can switch between the two:
- a network has range sets (one address per set per attachment: a dual-stack network has a v4
  set and a v6 set); a set is an ordered list of ranges of one address family;
- allocation is round-robin: it starts after the set's last reserved address (recorded per set
  index), wraps around, and skips the ranges' gateways — so a just-released address is not
  handed straight back;
- requested addresses (the `ips` capability, `args.cni.ips`, CNI_ARGS `IP`) are reserved
  exactly, or the ADD fails;
- one attachment (container ID, ifname) holds at most one lease per set; a second ADD for the
  same attachment is an error;
- a failed ADD releases whatever it reserved.
The store does the I/O (ipam/host_local/store.py on disk, an in-memory one in the tests).
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code
from pycni.cni.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycni.cni.ip import IP, Prefix
    from pycni.cni.plugin import LeaseStore
    from pycni.cni.skel import Attachment


class Range(Record):
    """One allocatable range inside a subnet; `start`..`end` inclusive."""

    __slots__ = ("end", "gateway", "start", "subnet")
    subnet: Prefix
    start: IP
    end: IP
    gateway: IP | None

    def __init__(self, subnet: Prefix, start: IP, end: IP, gateway: IP | None) -> None:
        self._init(subnet=subnet, start=start, end=end, gateway=gateway)

    def contains(self, ip: IP) -> bool:
        return ip.version == self.start.version and self.start <= ip <= self.end

    def capacity(self) -> int:
        inside = self.gateway is not None and self.contains(self.gateway)
        return self.end.value - self.start.value + 1 - (1 if inside else 0)

    def __str__(self) -> str:
        return f"{self.subnet} ({self.start}-{self.end})"


class Lease(Record):
    """An address reserved for an attachment, with the range it came from."""

    __slots__ = ("ip", "range")
    ip: IP
    range: Range

    def __init__(self, ip: IP, range: Range) -> None:
        self._init(ip=ip, range=range)


def allocate(
    store: LeaseStore, owner: Attachment, range_sets: list[list[Range]], requested: list[IP]
) -> list[Lease]:
    """Reserve one address per range set for `owner`. All or nothing."""
    existing = store.leases_of(owner)
    if existing:
        raise CniError(
            Code.DUPLICATE_ATTACHMENT,
            f"container '{owner.container_id}' interface '{owner.ifname}' already holds"
            f" {', '.join(str(ip) for ip in existing)}: duplicate allocation is not allowed",
            "the runtime must DEL an attachment before adding it again",
        )
    leases: list[Lease] = []
    unused = list(requested)
    try:
        for index, range_set in enumerate(range_sets):
            wanted = next((ip for ip in unused if _find(range_set, ip)), None)
            if wanted is not None:
                unused.remove(wanted)
                leases.append(_reserve_requested(store, owner, index, range_set, wanted))
            else:
                leases.append(_reserve_next(store, owner, index, range_set))
        if unused:
            raise CniError(
                Code.INVALID_CONFIG,
                f"requested IP {unused[0]} is not in any range of this network"
                f" ({'; '.join(_describe(s) for s in range_sets)})",
                "ips",
            )
    except BaseException:
        for lease in leases:
            store.release(lease.ip)
        raise
    return leases


def release(store: LeaseStore, owner: Attachment) -> list[IP]:
    """Release every lease of `owner`; releasing nothing is success (DEL is idempotent)."""
    ips = store.leases_of(owner)
    for ip in ips:
        store.release(ip)
    return ips


def free_addresses(range_set: list[Range], leased: set[IP]) -> int:
    """How many addresses of a set are still free (for STATUS)."""
    capacity = sum(r.capacity() for r in range_set)
    used = sum(1 for ip in leased if _find(range_set, ip) and not _is_gateway(range_set, ip))
    return capacity - used


def _reserve_requested(
    store: LeaseStore, owner: Attachment, index: int, range_set: list[Range], ip: IP
) -> Lease:
    rng = _find(range_set, ip)
    assert rng is not None
    if not store.reserve(ip, owner, index):
        holder = store.owner(ip)
        held_by = f" by container '{holder.container_id}' ({holder.ifname})" if holder else ""
        raise CniError(
            Code.ADDRESS_IN_USE, f"requested IP {ip} is already allocated{held_by}", str(ip)
        )
    return Lease(ip, rng)


def _reserve_next(
    store: LeaseStore, owner: Attachment, index: int, range_set: list[Range]
) -> Lease:
    for ip, rng in _candidates(range_set, store.last_reserved(index)):
        if store.reserve(ip, owner, index):
            return Lease(ip, rng)
    raise CniError(
        Code.RANGE_EXHAUSTED,
        f"no IP addresses available in range set {_describe(range_set)}",
        "every address of the range set is leased; release leases (DEL/GC) or widen the range",
    )


def _candidates(range_set: list[Range], last: IP | None) -> Iterator[tuple[IP, Range]]:
    """Every address of the set once, starting after `last` (round-robin), gateways skipped.

    The set's ranges are seen as one sequence of addresses; `position` is the index in it of the
    first candidate."""
    sizes = [r.end.value - r.start.value + 1 for r in range_set]
    total = sum(sizes)
    position = 0
    offset = 0
    for rng, size in zip(range_set, sizes, strict=True):
        if last is not None and rng.contains(last):
            position = offset + (last.value - rng.start.value) + 1
            break
        offset += size
    for step in range(total):
        rng, ip = _at(range_set, sizes, (position + step) % total)
        if ip != rng.gateway:
            yield ip, rng


def _at(range_set: list[Range], sizes: list[int], index: int) -> tuple[Range, IP]:
    for rng, size in zip(range_set, sizes, strict=True):
        if index < size:
            return rng, rng.start + index
        index -= size
    raise IndexError(index)


def _find(range_set: list[Range], ip: IP) -> Range | None:
    return next((r for r in range_set if r.contains(ip)), None)


def _is_gateway(range_set: list[Range], ip: IP) -> bool:
    return any(r.gateway == ip for r in range_set)


def _describe(range_set: list[Range]) -> str:
    return ", ".join(str(r) for r in range_set)
