"""pycni.netlink.socket's `ignore_not_found`: the one spelling of a delete's `missing_ok`.

The exchange itself (sequence numbers, ports, acks, interrupted dumps) is tested through Rtnl
with a scripted socket in tests/netlink/test_exchange.py; this is the helper every delete shares.
"""

from __future__ import annotations

import errno

import pytest

from pycni.netlink import NamespaceNotFound, NetlinkError, NetlinkExists, NetlinkNotFound
from pycni.netlink.socket import ignore_not_found


def test_missing_ok_swallows_not_found() -> None:
    reached = []
    with ignore_not_found(True):
        reached.append("before")
        raise NetlinkNotFound(errno.ENODEV, "delete link 'x'")
    assert reached == ["before"]


def test_not_missing_ok_raises_the_same_exception() -> None:
    error = NetlinkNotFound(errno.ENODEV, "delete link 'x'")
    with pytest.raises(NetlinkNotFound) as caught, ignore_not_found(False):
        raise error
    assert caught.value is error


@pytest.mark.parametrize(
    "error",
    [
        NetlinkError(errno.EPERM, "delete link 'x'"),
        NetlinkExists(errno.EEXIST, "add route '10.0.0.0/8'"),
        # a NotFound, but of a namespace, not of the object deleted: never "already gone"
        NamespaceNotFound("/run/netns/gone"),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("missing_ok", [True, False])
def test_other_errors_always_pass(error: Exception, missing_ok: bool) -> None:
    with pytest.raises(type(error)) as caught, ignore_not_found(missing_ok):
        raise error
    assert caught.value is error


def test_nothing_raised_is_nothing_raised() -> None:
    for missing_ok in (True, False):
        with ignore_not_found(missing_ok):
            pass
