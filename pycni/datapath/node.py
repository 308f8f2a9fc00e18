"""Node-level settings the plugins ensure: sysctls, and kubenet's MTU rule.

Sysctls are files under /proc/sys, which shows the network namespace of the process: the
plugin runs in the node's namespace (that is where the runtime execs it), so these are the
node's settings. Each is read first and written only when it differs.
"""

from __future__ import annotations

from pycni.cni.errors import CniError, Code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.netlink import Rtnl

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
FALLBACK_MTU = 1460  # kubenet's, when no link qualifies


def ensure_sysctl(path: str, value: str, *, required: bool = True) -> bool:
    """Set /proc/sys/<path> to `value` unless it already is. False if the sysctl does not
    exist and is not `required` (e.g. bridge-nf-call-iptables without br_netfilter)."""
    full = "/proc/sys/" + path
    try:
        # Bytes, not text: a text open loads a codec module (encodings.ascii) on every call.
        with open(full, "rb") as f:
            if f.read().strip() == value.encode():
                return True
        with open(full, "wb") as f:
            f.write(value.encode())
        return True
    except FileNotFoundError:
        if required:
            raise CniError(
                Code.KERNEL, f"failed to set sysctl {path.replace('/', '.')}: it does not exist"
            ) from None
        return False
    except OSError as err:
        raise CniError(
            Code.KERNEL, f"failed to set sysctl {path.replace('/', '.')}={value}: {err.strerror}"
        ) from err


def enable_forwarding(versions: set[int]) -> None:
    if 4 in versions:
        ensure_sysctl("net/ipv4/ip_forward", "1")
    if 6 in versions:
        ensure_sysctl("net/ipv6/conf/all/forwarding", "1")


def smallest_mtu(rtnl: Rtnl) -> int:
    """kubenet's rule: the smallest MTU of the node's links that are up, not loopback and not
    point-to-point, so pods never send what some link would have to fragment."""
    mtus = [
        link.mtu
        for link in rtnl.links()
        if link.flags & IFF_UP and not link.flags & (IFF_LOOPBACK | IFF_POINTOPOINT)
    ]
    return min(mtus) if mtus else FALLBACK_MTU
