"""The shape of a pycni plugin, for the type checker.

Imported only under TYPE_CHECKING: `typing` costs a frozen plugin ~9 ms of start-up. A plugin is
a module with a row in the registry (pycni.cni.registry); the skel (pycni.cni.skel) calls its
functions with a validated Call and the config the plugin parsed from it. tests/cni/test_registry.py
has mypy check every row's module against `Plugin`.
"""

from __future__ import annotations

from typing import Any, Protocol

from pycni.cni.ip import IP
from pycni.cni.result import Result
from pycni.cni.skel import Attachment, Call


class Plugin(Protocol):
    NAME: str  # the executable's name, e.g. "pycni-host-local"

    def parse_config(self, call: Call) -> Any:
        """Validate and parse call.config (raise ConfigError / UnsupportedField)."""

    def cmd_add(self, call: Call, conf: Any) -> Result: ...

    def cmd_del(self, call: Call, conf: Any) -> None: ...

    def cmd_check(self, call: Call, conf: Any) -> None: ...


# Optional module attributes the skel looks up with getattr:
#   SUPPORTED_VERSIONS: tuple[str, ...]   (default: pycni.cni.versions.SUPPORTED)
#   CNI_ARGS_KEYS: tuple[str, ...]        (CNI_ARGS keys the plugin understands)
#   cmd_status(call, conf) -> None        (absent: STATUS succeeds)
#   cmd_gc(call, conf) -> None            (absent: GC succeeds)


class LeaseStore(Protocol):
    """What the host-local allocator needs from storage. Every method runs under the store's
    lock (ipam/host_local/store.py takes it around a whole verb)."""

    def reserve(self, ip: IP, owner: Attachment, range_set_index: int) -> bool:
        """Lease `ip` to `owner` and remember it as the set's last reserved address.
        False if the address is already leased."""

    def release(self, ip: IP) -> None:
        """Forget the lease of `ip`; no error if there is none."""

    def owner(self, ip: IP) -> Attachment | None: ...

    def leases_of(self, owner: Attachment) -> list[IP]: ...

    def last_reserved(self, range_set_index: int) -> IP | None: ...

    def all_leases(self) -> dict[IP, Attachment]:
        """Every lease (for GC and STATUS; may cost a directory scan)."""

    def keep(self, ip: IP) -> None:
        """The runtime reports the lease's attachment live (GC)."""
