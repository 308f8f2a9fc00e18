"""host-local's lease store on disk, in the reference host-local's format.

Layout under `<dataDir>/<network name>/` (what the reference plugin reads and writes, so a node
can switch between the two without losing or duplicating a lease):
    lock                     flock(2)ed around every operation
    <ip>                     one file per leased address: "<containerID>\\r\\n<ifname>"
    last_reserved_ip.<N>     the last address reserved from range set N
and pycni's own, which the reference ignores (its files hold no lease text):
    .pycni/attachments/<containerID>:<ifname>   the addresses an attachment holds, one a line
    .pycni/seal                                 the directory's mtime after our last change
    .pycni/boot                                 the kernel's boot_id at our last call
    .pycni/stale                                leases made before the last reboot, one a line

Why the index: the reference finds an attachment's leases by reading every file in the
directory, so its ADD and DEL slow down as pods accumulate. The index makes them O(1). It is
trusted only while the directory's mtime equals the seal we set (with utime, to a value the
kernel's coarse clock will not produce) after our last change: any other writer (the reference
plugin, an operator) or a process of ours killed half-way changes the mtime, and the next call
rebuilds the index from the lease files. Lease files are written to a temporary name and
hard-linked into place, so a kill never leaves an empty (ownerless) lease.

Reboots: the most-reported failure of the reference host-local is a range exhausted by leases
of pods that died with the node (containernetworking/plugins#252, #697). The first call after a
reboot (the kernel's boot_id differs from the recorded one) marks every lease then present as
stale. A stale lease still belongs to its attachment for DEL and CHECK, but an allocation that
finds its address taken by a stale lease reclaims it; a GC that lists the attachment as valid
makes it current again (the runtime says it lives), one that does not releases it. No operator,
no GC needed, and the lease files keep the reference format.
"""

from __future__ import annotations

import _signal
import fcntl
import os
import time

from pycni.cni.errors import TryAgainLater
from pycni.cni.ip import IP
from pycni.cni.skel import Attachment

LOCK_TIMEOUT = 10.0  # seconds; then code 11 (try again later) naming the holder
BOOT_ID = "/proc/sys/kernel/random/boot_id"
_INDEX = ".pycni"
_LEASE_TMP = "lease.tmp"


class _LockTimeout(Exception):
    pass


class DiskStore:
    """A LeaseStore for one network. Use as a context manager: the lock is held inside."""

    def __init__(
        self,
        data_dir: str,
        network: str,
        lock_timeout: float = LOCK_TIMEOUT,
        boot_id: str | None = None,  # None: the kernel's (tests pass one to stage a reboot)
    ) -> None:
        self.dir = os.path.join(data_dir, network)
        self._boot_id = boot_id
        self._stale: set[IP] | None = None  # loaded when first needed
        self._stale_changed = False
        self._index_dir = os.path.join(self.dir, _INDEX, "attachments")
        self._lock_timeout = lock_timeout
        self._lock_fd = -1
        self._index: dict[Attachment, list[IP]] = {}  # loaded lazily, per attachment
        self._index_complete = False  # True after a rebuild: what is not in _index has nothing
        self._dirty: set[Attachment] = set()
        self._changed = False

    # --- lifecycle ---------------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def __enter__(self) -> DiskStore:
        os.makedirs(self._index_dir, mode=0o755, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock()
            if not self._seal_holds():
                self._rebuild_index()
            self._note_reboot()
        except BaseException:
            os.close(self._lock_fd)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._stale_changed and self._stale is not None:
                _write(self._stale_path, "".join(f"{ip}\n" for ip in sorted(self._stale)))
            if self._changed or self._dirty:
                self._write_index()
                self._seal()
        finally:
            os.close(self._lock_fd)  # closing releases the flock

    # --- LeaseStore --------------------------------------------------------------------------

    def reserve(self, ip: IP, owner: Attachment, range_set_index: int) -> bool:
        path = os.path.join(self.dir, str(ip))
        tmp = os.path.join(self.dir, _INDEX, _LEASE_TMP)
        _unlink(tmp)  # a leftover of a killed call may be linked to a lease: never write into it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"{owner.container_id}\r\n{owner.ifname}".encode())
        finally:
            os.close(fd)
        try:
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not self._reclaim(ip):
                    return False
                os.link(tmp, path)
        finally:
            _unlink(tmp)
        self._changed = True
        self._entry(owner).append(ip)
        self._dirty.add(owner)
        _write(os.path.join(self.dir, f"last_reserved_ip.{range_set_index}"), str(ip))
        return True

    def release(self, ip: IP) -> None:
        self._unstale(ip)
        owner = self.owner(ip)
        if _unlink(os.path.join(self.dir, str(ip))):
            self._changed = True
        if owner is not None and ip in self._entry(owner):
            self._entry(owner).remove(ip)
            self._dirty.add(owner)

    def owner(self, ip: IP) -> Attachment | None:
        text = _read(os.path.join(self.dir, str(ip)))
        return _parse_owner(text) if text is not None else None

    def leases_of(self, owner: Attachment) -> list[IP]:
        # Verify against the lease files: cheap (an attachment holds one address per range set)
        # and it keeps a stale index from ever releasing someone else's address.
        return [ip for ip in self._entry(owner) if self._owned_by(ip, owner)]

    def last_reserved(self, range_set_index: int) -> IP | None:
        text = _read(os.path.join(self.dir, f"last_reserved_ip.{range_set_index}"))
        try:
            return IP.parse(text.strip()) if text else None
        except ValueError:
            return None

    def all_leases(self) -> dict[IP, Attachment]:
        leases: dict[IP, Attachment] = {}
        for name in os.listdir(self.dir):
            ip = _ip_or_none(name)
            text = _read(os.path.join(self.dir, name)) if ip is not None else None
            if ip is not None and text is not None:
                leases[ip] = _parse_owner(text)
        return leases

    def leased_addresses(self) -> set[IP]:
        """The addresses in use, from file names alone (STATUS needs no owners): stale leases
        (of an earlier boot) count as free."""
        leased = {ip for ip in map(_ip_or_none, os.listdir(self.dir)) if ip is not None}
        return leased - self._stale_set()

    def keep(self, ip: IP) -> None:
        """The runtime reports the lease's attachment live (GC): it is current, not stale."""
        self._unstale(ip)

    # --- reboots -----------------------------------------------------------------------------

    @property
    def _stale_path(self) -> str:
        return os.path.join(self.dir, _INDEX, "stale")

    def _note_reboot(self) -> None:
        current = self._boot_id or (_read(BOOT_ID) or "").strip()
        boot_file = os.path.join(self.dir, _INDEX, "boot")
        recorded = _read(boot_file)
        if recorded is not None and recorded.strip() != current:
            # Every lease present was made before this boot (and stale ones stay stale).
            leased = {ip for ip in map(_ip_or_none, os.listdir(self.dir)) if ip is not None}
            self._stale = leased | self._stale_set()
            self._stale_changed = True
        if recorded is None or recorded.strip() != current:
            _write(boot_file, current)

    def _stale_set(self) -> set[IP]:
        if self._stale is None:
            text = _read(self._stale_path) or ""
            self._stale = {ip for ip in map(_ip_or_none, text.split()) if ip is not None}
        return self._stale

    def _unstale(self, ip: IP) -> None:
        stale = self._stale_set()
        if ip in stale:
            stale.discard(ip)
            self._stale_changed = True

    def _reclaim(self, ip: IP) -> bool:
        """Free `ip` if its lease dates from before the last reboot."""
        if ip not in self._stale_set():
            return False
        owner = self.owner(ip)
        _unlink(os.path.join(self.dir, str(ip)))
        self._unstale(ip)
        self._changed = True
        if owner is not None and ip in self._entry(owner):
            self._entry(owner).remove(ip)
            self._dirty.add(owner)
        return True

    # --- locking -----------------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        # Wait in the kernel's queue (fair, no polling), bounded by an interval timer.
        previous = _signal.signal(_signal.SIGALRM, _raise_lock_timeout)
        _signal.setitimer(_signal.ITIMER_REAL, self._lock_timeout)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        except _LockTimeout:
            raise TryAgainLater(
                f"failed to lock the lease store '{self.dir}' within {self._lock_timeout:g}s:"
                f" {self._lock_holder()}",
                os.path.join(self.dir, "lock"),
            ) from None
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
            _signal.signal(_signal.SIGALRM, previous)

    def _lock_holder(self) -> str:
        """Who holds the lock, from /proc/locks (only read when we timed out)."""
        st = os.fstat(self._lock_fd)
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in (_read("/proc/locks") or "").splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == key:
                pid = fields[4]
                comm = (_read(f"/proc/{pid}/comm") or "?").strip()
                return f"held by process {pid} ({comm})"
        return "held by another process"

    # --- index -------------------------------------------------------------------------------

    def _seal_holds(self) -> bool:
        seal = _read(os.path.join(self.dir, _INDEX, "seal"))
        return seal is not None and seal.strip() == str(os.stat(self.dir).st_mtime_ns)

    def _entry(self, owner: Attachment) -> list[IP]:
        if owner not in self._index:
            text = "" if self._index_complete else _read(self._index_path(owner)) or ""
            self._index[owner] = [ip for ip in map(_ip_or_none, text.split()) if ip is not None]
        return self._index[owner]

    def _index_path(self, owner: Attachment) -> str:
        return os.path.join(self._index_dir, _index_name(owner))

    def _rebuild_index(self) -> None:
        self._index = {}
        self._index_complete = True
        for ip, owner in sorted(self.all_leases().items(), key=lambda item: item[0]):
            self._index.setdefault(owner, []).append(ip)
        for name in os.listdir(self._index_dir):
            _unlink(os.path.join(self._index_dir, name))
        self._dirty = set(self._index)

    def _write_index(self) -> None:
        for owner in self._dirty:
            path = self._index_path(owner)
            ips = self._index.get(owner)
            if ips:
                _write(path, "".join(f"{ip}\n" for ip in ips))
            else:
                _unlink(path)
                self._index.pop(owner, None)
        self._dirty.clear()

    def _seal(self) -> None:
        marker = time.time_ns()
        os.utime(self.dir, ns=(marker, marker))
        _write(os.path.join(self.dir, _INDEX, "seal"), str(os.stat(self.dir).st_mtime_ns))

    def _owned_by(self, ip: IP, owner: Attachment) -> bool:
        text = _read(os.path.join(self.dir, str(ip)))
        return text is not None and _parse_owner(text) == owner


def _raise_lock_timeout(signum: int, frame: object) -> None:
    raise _LockTimeout


def _index_name(owner: Attachment) -> str:
    # A container ID holds no ':' and an interface name cannot, so the name is unambiguous.
    name = f"{owner.container_id}:{owner.ifname}"
    if len(name.encode()) > 240:
        import _sha256

        name = "sha256-" + _sha256.sha256(name.encode()).hexdigest()
    return name


def _parse_owner(text: str) -> Attachment:
    container_id, _, ifname = text.strip().partition("\r\n")
    # Leases of old reference versions hold the container ID alone.
    return Attachment(container_id.strip(), ifname.strip())


def _ip_or_none(name: str) -> IP | None:
    if not name or not (name[0].isdigit() or ":" in name):
        return None
    try:
        return IP.parse(name)
    except ValueError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode(errors="surrogateescape"))
    finally:
        os.close(fd)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
