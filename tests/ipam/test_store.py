"""The on-disk lease store: the reference host-local's format, the index and its seal, locking."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from pycni.cni.errors import Code, TryAgainLater
from pycni.cni.ip import IP
from pycni.cni.skel import Attachment
from pycni.ipam.host_local.store import DiskStore
from tests.support.flock import flock_held

A = Attachment("c1", "eth0")
B = Attachment("c2", "eth0")


def ip(text: str) -> IP:
    return IP.parse(text)


def test_lease_files_are_in_the_reference_format(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net") as store:
        assert store.reserve(ip("10.1.0.2"), A, 0)
        assert store.reserve(ip("fd00::2"), A, 1)
    net = tmp_path / "net"
    assert (net / "10.1.0.2").read_bytes() == b"c1\r\neth0"
    assert (net / "fd00::2").read_bytes() == b"c1\r\neth0"
    assert (net / "last_reserved_ip.0").read_text() == "10.1.0.2"
    assert (net / "last_reserved_ip.1").read_text() == "fd00::2"
    assert (net / "lock").exists()
    # nothing else a reference plugin would take for a lease: only IP-named files hold lease text
    texts = {p.name for p in net.rglob("*") if p.is_file() and p.read_bytes() == b"c1\r\neth0"}
    assert texts == {"10.1.0.2", "fd00::2"}


def test_reserve_refuses_a_taken_address_and_release_is_idempotent(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net") as store:
        assert store.reserve(ip("10.1.0.2"), A, 0)
        assert not store.reserve(ip("10.1.0.2"), B, 0)
        assert store.owner(ip("10.1.0.2")) == A
        store.release(ip("10.1.0.2"))
        store.release(ip("10.1.0.2"))
        assert store.leases_of(A) == []


def test_index_survives_across_calls_and_follows_foreign_writers(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net") as store:
        store.reserve(ip("10.1.0.2"), A, 0)
    with DiskStore(str(tmp_path), "net") as store:
        assert store.leases_of(A) == [ip("10.1.0.2")]
    # the reference plugin (or an operator) adds and removes leases behind our back
    net = tmp_path / "net"
    (net / "10.1.0.9").write_bytes(b"c2\r\neth0")
    (net / "10.1.0.2").unlink()
    with DiskStore(str(tmp_path), "net") as store:
        assert store.leases_of(A) == []
        assert store.leases_of(B) == [ip("10.1.0.9")]


def test_foreign_write_within_the_same_clock_tick_is_still_seen(tmp_path: Path) -> None:
    for n in range(20):
        with DiskStore(str(tmp_path), "net") as store:
            store.reserve(ip(f"10.1.0.{10 + n}"), A if n % 2 else B, 0)
        (tmp_path / "net" / f"10.1.1.{n}").write_bytes(f"x{n}\r\neth0".encode())  # immediately
        with DiskStore(str(tmp_path), "net") as store:
            assert store.leases_of(Attachment(f"x{n}", "eth0")) == [ip(f"10.1.1.{n}")]


def test_a_leftover_temporary_file_never_corrupts_a_lease(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net") as store:
        store.reserve(ip("10.1.0.2"), A, 0)
    # a call killed between link() and unlink() leaves the temp name linked to the lease
    os.link(tmp_path / "net" / "10.1.0.2", tmp_path / "net" / ".pycni" / "lease.tmp")
    with DiskStore(str(tmp_path), "net") as store:
        assert store.reserve(ip("10.1.0.3"), B, 0)
    assert (tmp_path / "net" / "10.1.0.2").read_bytes() == b"c1\r\neth0"


def test_all_leases_and_legacy_files(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net") as store:
        store.reserve(ip("10.1.0.2"), A, 0)
    (tmp_path / "net" / "10.1.0.3").write_text("legacy-id")
    with DiskStore(str(tmp_path), "net") as store:
        assert store.all_leases() == {
            ip("10.1.0.2"): A,
            ip("10.1.0.3"): Attachment("legacy-id", ""),
        }
        assert store.leased_addresses() == {ip("10.1.0.2"), ip("10.1.0.3")}


def test_lock_held_elsewhere_gives_code_11_naming_the_holder(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    with flock_held(net / "lock") as holder:
        started = time.monotonic()
        with pytest.raises(TryAgainLater) as err, DiskStore(str(tmp_path), "net", lock_timeout=0.5):
            pass
        assert 0.4 < time.monotonic() - started < 5
        assert err.value.code == Code.TRY_AGAIN_LATER
        assert f"process {holder}" in err.value.msg
    # the holder is gone: the kernel dropped its lock, nothing stale blocks
    with DiskStore(str(tmp_path), "net", lock_timeout=0.5):
        pass


def test_lock_is_exclusive_between_stores(tmp_path: Path) -> None:
    with DiskStore(str(tmp_path), "net"):
        fd = os.open(tmp_path / "net" / "lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


# --- reboots ---------------------------------------------------------------------------------


def fill(tmp_path: Path, boot: str, owners: list[Attachment], first: int = 2) -> None:
    with DiskStore(str(tmp_path), "net", boot_id=boot) as store:
        for n, owner in enumerate(owners):
            assert store.reserve(ip(f"10.1.0.{first + n}"), owner, 0)


def test_leases_of_an_earlier_boot_are_reclaimed_by_allocation(tmp_path: Path) -> None:
    fill(tmp_path, "boot-1", [A, B])
    with DiskStore(str(tmp_path), "net", boot_id="boot-2") as store:
        # still the old attachment's, for its DEL or CHECK ...
        assert store.leases_of(A) == [ip("10.1.0.2")]
        # ... but free for a new one: STATUS counts it free, and a reservation takes it over
        assert store.leased_addresses() == set()
        new = Attachment("after-reboot", "eth0")
        assert store.reserve(ip("10.1.0.2"), new, 0)
        assert store.owner(ip("10.1.0.2")) == new
        assert store.leases_of(A) == []  # the old owner's DEL will not release the new lease
    with DiskStore(str(tmp_path), "net", boot_id="boot-2") as store:
        assert store.leased_addresses() == {ip("10.1.0.2")}  # the reclaimed lease is current
        assert store.leases_of(B) == [ip("10.1.0.3")]  # B's is stale still, until reclaimed


def test_a_current_lease_is_never_reclaimed(tmp_path: Path) -> None:
    fill(tmp_path, "boot-1", [A])
    with DiskStore(str(tmp_path), "net", boot_id="boot-1") as store:
        assert not store.reserve(ip("10.1.0.2"), B, 0)
        assert store.leased_addresses() == {ip("10.1.0.2")}


def test_gc_listing_a_lease_as_live_makes_it_current_again(tmp_path: Path) -> None:
    fill(tmp_path, "boot-1", [A, B])
    with DiskStore(str(tmp_path), "net", boot_id="boot-2") as store:
        store.keep(ip("10.1.0.2"))  # what GC does for an attachment in the valid list
    with DiskStore(str(tmp_path), "net", boot_id="boot-2") as store:
        assert not store.reserve(ip("10.1.0.2"), Attachment("x", "eth0"), 0)
        assert store.reserve(ip("10.1.0.3"), Attachment("x", "eth0"), 0)  # B's was stale


def test_a_second_reboot_keeps_what_was_stale_stale(tmp_path: Path) -> None:
    fill(tmp_path, "boot-1", [A])
    with DiskStore(str(tmp_path), "net", boot_id="boot-2") as store:
        assert store.reserve(ip("10.1.0.9"), B, 0)
    with DiskStore(str(tmp_path), "net", boot_id="boot-3") as store:
        assert store.leased_addresses() == set()  # both from earlier boots now


def test_first_use_by_pycni_keeps_leases_of_unknown_age(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    (net / "10.1.0.5").write_bytes(b"made-by-the-reference\r\neth0")
    with DiskStore(str(tmp_path), "net", boot_id="boot-9") as store:
        assert store.leased_addresses() == {ip("10.1.0.5")}
        assert not store.reserve(ip("10.1.0.5"), A, 0)
