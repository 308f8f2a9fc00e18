"""pycni-host-local: IP addresses from local ranges, leases on the node's disk.

A drop-in for the reference host-local (same keys, same on-disk format) whose ADD and DEL cost
does not grow with the number of leases, that releases what GC says is gone, and that reports
an exhausted range through STATUS before an ADD fails on it.
"""

from __future__ import annotations

import os

from pycni.cni.errors import CniError, Code
from pycni.cni.result import IPConfig, Result
from pycni.ipam.host_local import allocator, config
from pycni.ipam.host_local.store import DiskStore
from pycni.validators import host_local as schema

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.skel import Call
    from pycni.ipam.host_local.config import HostLocalConf

NAME = "pycni-host-local"
CNI_ARGS_KEYS = ("IP",)


def parse_config(call: Call) -> HostLocalConf:
    schema.validate(call.config)
    return config.parse(call)


def cmd_add(call: Call, conf: HostLocalConf) -> Result:
    dns = config.read_resolv_conf(conf.resolv_conf) if conf.resolv_conf else None
    with _store(call, conf, "allocate an address") as store:
        leases = allocator.allocate(store, call.attachment, conf.range_sets, conf.requested)
    ips = [
        IPConfig(address=lease.range.subnet.with_ip(lease.ip), gateway=lease.range.gateway)
        for lease in leases
    ]
    return Result(ips=ips, routes=list(conf.routes), dns=dns)


def cmd_del(call: Call, conf: HostLocalConf) -> None:
    store = DiskStore(conf.data_dir, call.name)
    if not store.exists():
        return  # this network never leased anything on this node
    with _store(call, conf, "release the addresses", store) as store:
        allocator.release(store, call.attachment)


def cmd_check(call: Call, conf: HostLocalConf) -> None:
    store = DiskStore(conf.data_dir, call.name)
    with _store(call, conf, "check the lease", store) as store:
        held = store.leases_of(call.attachment)
    who = f"container '{call.container_id}' interface '{call.ifname}'"
    if not held:
        raise CniError(Code.CHECK_FAILED, f"{who} holds no address in network '{call.name}'")
    if call.prev_result is not None:
        ours = [
            ip.address.ip
            for ip in call.prev_result.ips
            if any(r.subnet.contains(ip.address.ip) for s in conf.range_sets for r in s)
        ]
        missing = [str(ip) for ip in ours if ip not in held]
        if missing:
            raise CniError(
                Code.CHECK_FAILED,
                f"{who} no longer holds {', '.join(missing)} (it holds"
                f" {', '.join(str(ip) for ip in held)})",
            )


def cmd_status(call: Call, conf: HostLocalConf) -> None:
    store = DiskStore(conf.data_dir, call.name)
    if not store.exists():
        _require_writable_ancestor(conf.data_dir)
        return
    try:
        with _store(call, conf, "read the leases", store) as store:
            leased = store.leased_addresses()
    except CniError as err:
        if err.code != Code.IO_FAILURE:
            raise
        # An ADD could not write its lease either: not ready, and why.
        raise CniError(Code.NOT_AVAILABLE, err.msg, err.details) from err
    for range_set in conf.range_sets:
        if allocator.free_addresses(range_set, leased) <= 0:
            raise CniError(
                Code.NOT_AVAILABLE,
                f"network '{call.name}': no IP addresses left in range set"
                f" {', '.join(str(r) for r in range_set)}",
                "release leases (DEL or GC) or widen the range",
            )


def cmd_gc(call: Call, conf: HostLocalConf) -> None:
    store = DiskStore(conf.data_dir, call.name)
    if not store.exists():
        return
    valid = set(call.valid_attachments or ())
    valid_ids = {a.container_id for a in valid}
    with _store(call, conf, "collect stale leases", store) as store:
        for ip, owner in store.all_leases().items():
            legacy = not owner.ifname  # old reference leases name only the container
            if (owner.container_id in valid_ids) if legacy else (owner in valid):
                store.keep(ip)  # live, says the runtime: not stale even if made before a reboot
                continue
            store.release(ip)


class _store:  # noqa: N801 - reads as a function at the call site
    """DiskStore under its lock; OS errors become code 5 naming the directory."""

    def __init__(
        self, call: Call, conf: HostLocalConf, doing: str, store: DiskStore | None = None
    ) -> None:
        self._store = store or DiskStore(conf.data_dir, call.name)
        self._doing = doing

    def __enter__(self) -> DiskStore:
        try:
            return self._store.__enter__()
        except OSError as err:
            raise _io_error(self._doing, self._store.dir, err) from err

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._store.__exit__(exc_type, exc, tb)
        except OSError as err:
            raise _io_error(self._doing, self._store.dir, err) from err
        if isinstance(exc, OSError):
            raise _io_error(self._doing, self._store.dir, exc) from exc


def _io_error(doing: str, where: str, err: OSError) -> CniError:
    return CniError(
        Code.IO_FAILURE,
        f"failed to {doing} in '{where}': {err.strerror or err}",
        err.filename or where,
    )


def _require_writable_ancestor(path: str) -> None:
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK):
        raise CniError(
            Code.NOT_AVAILABLE, f"dataDir '{path}' cannot be created: '{probe}' is not writable"
        )
