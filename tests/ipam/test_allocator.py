"""The allocation logic, driven through an in-memory LeaseStore (no disk, no kernel)."""

from __future__ import annotations

import pytest

from pycni.cni.errors import CniError, Code
from pycni.cni.ip import IP, Prefix
from pycni.cni.skel import Attachment
from pycni.ipam.host_local import allocator
from pycni.ipam.host_local.allocator import Range


class MemoryStore:
    def __init__(self) -> None:
        self.leases: dict[IP, Attachment] = {}
        self.last: dict[int, IP] = {}

    def reserve(self, ip: IP, owner: Attachment, range_set_index: int) -> bool:
        if ip in self.leases:
            return False
        self.leases[ip] = owner
        self.last[range_set_index] = ip
        return True

    def release(self, ip: IP) -> None:
        self.leases.pop(ip, None)

    def owner(self, ip: IP) -> Attachment | None:
        return self.leases.get(ip)

    def leases_of(self, owner: Attachment) -> list[IP]:
        return [ip for ip, o in self.leases.items() if o == owner]

    def last_reserved(self, range_set_index: int) -> IP | None:
        return self.last.get(range_set_index)

    def all_leases(self) -> dict[IP, Attachment]:
        return dict(self.leases)

    def keep(self, ip: IP) -> None:
        pass


def rng(
    subnet: str, start: str | None = None, end: str | None = None, gw: str | None = None
) -> Range:
    p = Prefix.parse(subnet)
    last = p.last - 1 if p.version == 4 else p.last
    return Range(
        subnet=p,
        start=IP.parse(start) if start else p.network + 1,
        end=IP.parse(end) if end else last,
        gateway=IP.parse(gw) if gw else p.network + 1,
    )


def pod(n: int, ifname: str = "eth0") -> Attachment:
    return Attachment(f"pod{n}", ifname)


def test_first_address_skips_the_gateway() -> None:
    store = MemoryStore()
    leases = allocator.allocate(store, pod(1), [[rng("10.1.0.0/24")]], [])
    assert [str(lease.ip) for lease in leases] == ["10.1.0.2"]


def test_round_robin_does_not_hand_back_a_just_released_address() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/24")]]
    first = allocator.allocate(store, pod(1), sets, [])[0].ip
    allocator.release(store, pod(1))
    second = allocator.allocate(store, pod(2), sets, [])[0].ip
    assert second != first
    assert second == first + 1


def test_wraps_around_and_exhausts_with_the_range_named() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/29", start="10.1.0.4", end="10.1.0.6")]]
    got = [allocator.allocate(store, pod(n), sets, [])[0].ip for n in range(3)]
    assert sorted(map(str, got)) == ["10.1.0.4", "10.1.0.5", "10.1.0.6"]
    allocator.release(store, pod(0))  # frees 10.1.0.4; the pointer sits at .6: wraps to .4
    assert str(allocator.allocate(store, pod(9), sets, [])[0].ip) == "10.1.0.4"
    with pytest.raises(CniError) as err:
        allocator.allocate(store, pod(10), sets, [])
    assert err.value.code == Code.RANGE_EXHAUSTED
    assert "10.1.0.0/29 (10.1.0.4-10.1.0.6)" in err.value.msg


def test_several_ranges_in_a_set_are_one_sequence() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/30"), rng("10.2.0.0/30")]]  # .1 is each gateway: .2 and .2
    got = [str(allocator.allocate(store, pod(n), sets, [])[0].ip) for n in range(2)]
    assert got == ["10.1.0.2", "10.2.0.2"]


def test_dual_stack_gets_one_address_per_set() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/24")], [rng("fd00::/64")]]
    leases = allocator.allocate(store, pod(1), sets, [])
    assert [str(lease.ip) for lease in leases] == ["10.1.0.2", "fd00::2"]


def test_duplicate_attachment_is_an_error_and_changes_nothing() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/24")]]
    allocator.allocate(store, pod(1), sets, [])
    before = dict(store.leases)
    with pytest.raises(CniError) as err:
        allocator.allocate(store, pod(1), sets, [])
    assert err.value.code == Code.DUPLICATE_ATTACHMENT
    assert store.leases == before
    # the same container with another interface is a different attachment
    allocator.allocate(store, pod(1, "net1"), sets, [])


def test_requested_address_is_reserved_exactly_or_fails_naming_the_holder() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/24")]]
    lease = allocator.allocate(store, pod(1), sets, [IP.parse("10.1.0.77")])[0]
    assert str(lease.ip) == "10.1.0.77"
    with pytest.raises(CniError) as err:
        allocator.allocate(store, pod(2), sets, [IP.parse("10.1.0.77")])
    assert err.value.code == Code.ADDRESS_IN_USE
    assert "pod1" in err.value.msg


def test_requested_address_outside_every_range_fails_and_rolls_back() -> None:
    store = MemoryStore()
    sets = [[rng("10.1.0.0/24")], [rng("fd00::/64")]]
    with pytest.raises(CniError) as err:
        allocator.allocate(store, pod(1), sets, [IP.parse("192.168.5.5")])
    assert err.value.code == Code.INVALID_CONFIG
    assert store.leases == {}


def test_failure_in_a_later_set_releases_the_earlier_sets() -> None:
    store = MemoryStore()
    full = rng("fd00::/120", start="fd00::2", end="fd00::2")
    sets = [[rng("10.1.0.0/24")], [full]]
    allocator.allocate(store, pod(1), sets, [])
    with pytest.raises(CniError):
        allocator.allocate(store, pod(2), sets, [])
    assert set(store.leases.values()) == {pod(1)}


def test_release_of_nothing_is_success() -> None:
    assert allocator.release(MemoryStore(), pod(1)) == []


def test_free_addresses_counts_capacity_minus_leases() -> None:
    r = rng("10.1.0.0/29")  # .1-.6, gateway .1 → 5 allocatable
    assert allocator.free_addresses([r], set()) == 5
    assert allocator.free_addresses([r], {IP.parse("10.1.0.2"), IP.parse("10.9.9.9")}) == 4
